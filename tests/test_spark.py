"""The Spark engine, in local mode: the same orders, features, labels and scores as DuckDB.

Parity is checked column by column: counts, dates and ids exactly, floats to 1e-9 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from winback.config import OrdersConfig, load_config
from winback.engines.spark import SparkEngine, spark_session
from winback.errors import DataError, UsageError
from winback.features import build_features, write_features
from winback.labels import build_labels
from winback.model import ChurnModel
from winback.orders import load_orders
from winback.scoring import score_customers
from winback.snapshots import build_snapshots

from .conftest import ROOT, learned_uplift

SYNTH_CFG = OrdersConfig.model_validate({"columns": {"category": "category", "channel": "channel"}})
AS_OF = datetime(2024, 6, 1)


@pytest.fixture(scope="module")
def spark():
    return spark_session("local[2]", {"spark.sql.shuffle.partitions": "4"})


@pytest.fixture(scope="module")
def synth_parquet(synth_frame, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spark") / "orders.parquet"
    synth_frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def synth_pair(spark, synth_parquet):
    duck = load_orders(synth_parquet, SYNTH_CFG, as_of=AS_OF)
    sprk = load_orders(synth_parquet, SYNTH_CFG, as_of=AS_OF, engine=SparkEngine(spark))
    return duck, sprk


@pytest.fixture(scope="module")
def cdnow_pair(spark, cdnow_dir):
    cfg = load_config(ROOT / "configs" / "cdnow.yaml").orders
    path = cdnow_dir / "CDNOW_master.txt"
    return load_orders(path, cfg), load_orders(path, cfg, engine=SparkEngine(spark))


def assert_same(duck: pd.DataFrame, sprk: pd.DataFrame, keys=("cutoff_ts", "customer_id")):
    """Same rows and columns; exact for everything but floats, 1e-9 relative for floats."""
    assert list(sprk.columns) == list(duck.columns)
    assert len(sprk) == len(duck) > 0
    a = duck.sort_values(list(keys)).reset_index(drop=True)
    b = sprk.sort_values(list(keys)).reset_index(drop=True)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x):
            xs, ys = x.to_numpy(float), y.to_numpy(float)
            assert np.array_equal(np.isnan(xs), np.isnan(ys)), col
            ok = ~np.isnan(xs)
            np.testing.assert_allclose(ys[ok], xs[ok], rtol=1e-9, atol=0, err_msg=col)
        elif pd.api.types.is_datetime64_any_dtype(x):
            assert (x == y).all(), col
        else:
            assert x.astype(object).tolist() == y.astype(object).tolist(), col


def test_both_engines_are_engines_and_import_nothing_above_them(synth_pair):
    import ast

    from winback.engines import Engine

    duck, sprk = synth_pair
    assert isinstance(duck.engine(), Engine) and isinstance(sprk.engine(), Engine)
    assert duck.engine().name == "duckdb" and sprk.engine().name == "spark"
    # the ground floor: engines/ imports nothing of winback's but errors, atomic and itself
    for path in (ROOT / "src" / "winback" / "engines").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("winback"):
                ok = node.module in ("winback.errors", "winback.atomic")
                assert ok or node.module.startswith("winback.engines"), (path.name, node.module)


def test_orders_read_and_validated_alike(synth_pair):
    duck, sprk = synth_pair
    assert sprk.report.summary_lines() == duck.report.summary_lines()
    assert (sprk.has_category, sprk.has_channel) == (True, True)
    assert_same(duck.to_pandas(), sprk.to_pandas(), keys=("customer_id", "order_ts", "order_id"))


def test_bad_rows_get_the_same_report(spark, tmp_path):
    # 2 bad dates, 1 missing customer, 1 non-numeric amount, 1 future date, 1 repeated id
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "customer_id,order_id,order_ts,amount\n"
        "a,1,2024-01-05,10.5\n"
        "a,2,not a date,3\n"
        "b,3,2024-02-30,4\n"
        ",4,2024-01-06,5\n"
        "c,5,2024-01-07,abc\n"
        "c,6,2031-01-01,7\n"
        "c,7,2024-01-08 10:30:00,-2\n"
        "c,7,2024-01-08 10:30:00,-2\n"
    )
    cfg = OrdersConfig()
    duck = load_orders(csv, cfg, as_of=AS_OF)
    sprk = load_orders(csv, cfg, as_of=AS_OF, engine=SparkEngine(spark))
    assert sprk.report.summary_lines() == duck.report.summary_lines()
    # 8 rows - 2 dates - 1 customer - 1 amount - 1 future - 1 copy = 2 orders, 1 a return
    assert (sprk.report.n_orders, sprk.report.n_returns) == (2, 1)
    assert_same(duck.to_pandas(), sprk.to_pandas(), keys=("customer_id", "order_id"))


def test_synthetic_features_and_labels_match_duckdb(synth_pair):
    duck, sprk = synth_pair
    cuts = ["2023-03-31", "2023-06-30", "2023-09-30", "2023-12-31"]
    assert_same(build_features(duck, cuts), build_features(sprk, cuts))
    assert_same(build_labels(duck, cuts, 90), build_labels(sprk, cuts, 90))


def test_cdnow_snapshots_match_duckdb(cdnow_pair):
    duck, sprk = cdnow_pair
    assert sprk.report.summary_lines() == duck.report.summary_lines()
    cuts = ["1997-09-30", "1997-12-31", "1998-03-31"]
    # features, labels and the BG/NBD features fitted on each engine's summaries
    assert_same(build_snapshots(duck, cuts, 91), build_snapshots(sprk, cuts, 91))


def test_written_features_match(synth_pair, tmp_path):
    duck, sprk = synth_pair
    cuts = ["2023-06-30", "2023-09-30"]
    n_duck = write_features(duck, cuts, tmp_path / "duck.parquet", horizon_days=90)
    n_spark = write_features(sprk, cuts, tmp_path / "spark.parquet", horizon_days=90)
    assert n_spark == n_duck
    assert (tmp_path / "spark.parquet").is_dir()  # Spark writes a folder of parts
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
    a = pd.read_parquet(tmp_path / "duck.parquet")
    b = pd.read_parquet(tmp_path / "spark.parquet")
    assert str(b["cutoff_ts"].dtype) == str(a["cutoff_ts"].dtype) == "datetime64[us, UTC]"
    assert_same(a, b)


def test_distributed_scores_equal_duckdb_scores(synth_pair, monkeypatch):
    from winback.campaigns import suppressed
    from winback.scoring import build_lists, listed_groups

    duck, sprk = synth_pair
    cuts = [f"2023-0{m}-01" for m in (3, 5, 7, 9)]
    snaps = build_snapshots(duck, cuts, 90)
    model = ChurnModel(horizon_days=90, n_estimators=40)
    model.fit(snaps, snaps["churned"])
    camp = load_config(None).campaigns
    t = datetime(2023, 12, 31)
    on_duck = score_customers(duck, model, t, camp)
    a = on_duck.scores
    # the rows Spark hands the driver by each call that collects, once the snapshot is scored
    # (BG/NBD's fit before it reads at most BGNBD_FIT_MAX_CUSTOMERS customers' three numbers)
    import winback.scoring

    collected: list[int] = []
    scoring_snapshot = winback.scoring._score_on_spark

    def scored_snapshot(*args, **kwargs):
        got = scoring_snapshot(*args, **kwargs)
        collected.clear()
        return got

    monkeypatch.setattr(winback.scoring, "_score_on_spark", scored_snapshot)
    DataFrame = type(sprk.engine().spark.range(1))  # the session's own DataFrame class
    for name in ("collect", "toPandas"):
        real = getattr(DataFrame, name)

        def spy(self, *args, _real=real, **kwargs):
            got = _real(self, *args, **kwargs)
            collected.append(len(got))
            return got

        monkeypatch.setattr(DataFrame, name, spy)
    on_spark = score_customers(sprk, model, t, camp)
    population = on_spark.population
    assert on_spark.scores.empty and len(population) == len(a) > 0
    assert on_spark.drift == pytest.approx(on_duck.drift, rel=1e-12)
    listed = population.choose()  # no suppression files: who bought lately only
    monkeypatch.undo()
    # the scored snapshot is still cached for the reasons, not computed again from the orders
    assert on_spark.remote.frame.storageLevel.useMemory
    # the lists Spark sized are the lists of the whole score table, in the same order
    why = suppressed(
        a["customer_id"], pd.Timestamp(t), None, camp.cooldown_days, None,
        a["days_since_last_order"], camp.recent_days,
    ).astype("category")  # fmt: skip
    want = build_lists(a, camp, why)
    got = build_lists(listed, camp, listed["suppressed"])
    for name in ("at_risk", "lapsed"):
        assert got[name]["customer_id"].tolist() == want[name]["customer_id"].tolist()
        assert (got[name].control == want[name].control).all()
    assert len(listed) == sum(len(x) for x in want.values()) > 0
    # the driver never got more rows than the listed customers at once
    assert max(collected) <= len(listed) < len(a)
    # the score table of every customer, read back from the executors a block at a time
    a = a.assign(suppressed=why, group=listed_groups(a, want))
    listed["group"] = listed_groups(listed, got)
    table = population.rows(listed)
    assert table.columns == list(a.columns) and len(table) == len(a)
    whole = table.frame()
    assert_same(a, whole, keys=("customer_id",))
    assert whole["customer_id"].tolist() == a["customer_id"].tolist()  # customer id order
    block = table.take(np.arange(7, 19))
    assert_same(a.iloc[7:19], block, keys=("customer_id",))
    # the snapshot stays on the executors: the driver holds no feature rows, and reads the
    # full rows of the customers it asks for only
    assert on_spark.features.empty and on_spark.remote is not None
    wanted = listed["customer_id"].iloc[[3, 1, 4]]
    rows = on_spark.remote.rows(wanted)
    assert sorted(rows["customer_id"]) == sorted(wanted) and len(rows.columns) > 50
    lookback = max(model.lookback_days, 91, camp.reactivation_days)  # as scoring's population
    full = build_snapshots(duck, [t], 90, lookback, labels=False).set_index("customer_id")
    got = rows.set_index("customer_id")
    assert len(got) == 3
    # the snapshot's columns, and what was worked out from them as it was scored
    assert set(got.columns) - set(full.columns) == {"p_churn", "value", "expected_value"}
    want = full.loc[got.index, [c for c in got.columns if c in full.columns]]
    assert_same(want.reset_index(), got[want.columns].reset_index(), keys=("customer_id",))


def test_master_url_comes_from_the_environment(synth_parquet, tmp_path):
    exe = Path(sys.executable).with_name("winback")
    env = {**os.environ, "WINBACK_SPARK_MASTER": "nonsense"}
    res = subprocess.run(
        [str(exe), "validate", str(synth_parquet), "--engine", "spark"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert res.returncode == 2  # a usage error: the setting is wrong
    assert "Could not start Spark with master 'nonsense'" in res.stderr
    assert "Traceback" not in res.stderr


def test_without_pyspark_the_engine_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from winback.cli import main\n"
        "sys.argv = ['winback', 'features', '--engine', 'spark', '--orders', 'x.parquet', '--as-of', '2024-01-01']\n"
        "main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode != 0
    assert "pip install 'winback[spark]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_engine_error_is_a_usage_error_without_pyspark(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    from winback.engines.spark import require_pyspark

    with pytest.raises(UsageError, match=r"winback\[spark\]"):
        require_pyspark()


@pytest.mark.slow
def test_cli_features_on_spark_equal_duckdb(synth_parquet, tmp_path):
    exe = Path(sys.executable).with_name("winback")
    common = [
        "features",
        "--orders",
        str(synth_parquet),
        "--cutoffs",
        "2023-06-30,2023-12-31",
        "--set",
        "orders.columns.category=category",
        "--set",
        "orders.columns.channel=channel",
    ]
    env_out = {}
    for engine in ("duckdb", "spark"):
        out = tmp_path / f"{engine}.parquet"
        res = subprocess.run(
            [str(exe), *common, "--engine", engine, "--out", str(out)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert "2023-12-31:" in res.stdout
        env_out[engine] = pd.read_parquet(out)
    assert_same(env_out["duckdb"], env_out["spark"])


@pytest.mark.slow
def test_cli_score_on_spark_exports_the_same_lists(synth_pair, synth_parquet, tmp_path):
    from winback.model import save_model

    duck, _ = synth_pair
    snaps = build_snapshots(duck, ["2023-03-01", "2023-06-01", "2023-09-01"], 90)
    model = ChurnModel(horizon_days=90, n_estimators=30)
    path = save_model(model.fit(snaps, snaps["churned"]), tmp_path / "m.joblib")
    exe = Path(sys.executable).with_name("winback")
    # ranked by an uplift model of past campaigns: its features are read back from Spark's
    # executors for the customers who may be listed, as the reasons' are
    learned, _ = learned_uplift(synth_parquet, tmp_path / "learned", beats=True)
    common = [
        "score",
        "--set",
        f"campaigns.learned={learned}",
        "--orders",
        str(synth_parquet),
        "--model",
        str(path),
        "--as-of",
        "2023-12-31",
        "--set",
        "orders.columns.category=category",
        "--set",
        "orders.columns.channel=channel",
    ]
    common += ["--set", "engine.compiled_trees=false"]  # LightGBM's predictor on both
    lists, files = {}, {}
    for engine in ("duckdb", "spark"):
        res = subprocess.run(
            [str(exe), *common, "--engine", engine, "--out", str(tmp_path / engine)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        folder = tmp_path / engine / "2023-12-31"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["ranking"]["by"] == "uplift"
        files[engine] = manifest["files"] | {
            k: manifest[k] for k in ("rows", "suppressed", "below_min_p_churn", "delta")
        }
        lists[engine] = {
            name: pd.read_parquet(folder / f"{name}.parquet")
            for name in ("at_risk", "lapsed", "scores")
        }
    for name in ("at_risk", "lapsed"):
        assert len(lists["spark"][name]) == len(lists["duckdb"][name]) > 0
        assert_same(lists["duckdb"][name], lists["spark"][name], keys=("customer_id",))
    assert_same(lists["duckdb"]["scores"], lists["spark"]["scores"], keys=("customer_id",))
    # every file of the export byte for byte (the lists, scores, the profit curve and its
    # plot, the delta, the README) and the manifest's counts
    assert files["spark"] == files["duckdb"]


def test_strftime_formats_become_java_patterns():
    from winback.engines.dialect import java_pattern

    assert java_pattern("%d/%m/%Y %H:%M") == "dd/MM/yyyy HH:mm"
    assert java_pattern("%Y%m%d") == "yyyyMMdd"
    assert java_pattern("%Y-%m-%dT%H:%M:%S") == "yyyy-MM-dd'T'HH:mm:ss"  # letters are quoted
    with pytest.raises(ValueError, match="%Q"):
        java_pattern("%Q")


def test_a_custom_date_format_parses_alike(spark, tmp_path):
    csv = tmp_path / "orders.csv"
    csv.write_text("customer_id;order_ts;amount\na;05/01/2024 10:30;10\nb;31/01/2024 23:59;5\n")
    cfg = OrdersConfig.model_validate(
        {
            "date_format": "%d/%m/%Y %H:%M",
            "timezone": "Europe/Berlin",
            "columns": {"order_id": None},
        }
    )
    duck = load_orders(csv, cfg, as_of=AS_OF)
    sprk = load_orders(csv, cfg, as_of=AS_OF, engine=SparkEngine(spark))
    a, b = duck.to_pandas(), sprk.to_pandas()
    # 10:30 in Berlin in January is 09:30 UTC
    assert a["order_ts"].iloc[0] == pd.Timestamp("2024-01-05 09:30", tz="UTC")
    assert_same(a, b, keys=("customer_id",))


def test_a_customer_sample_on_spark_equals_duckdb(synth_pair):
    from winback.snapshots import customers_only

    duck, sprk = synth_pair
    ids = sorted(duck.to_pandas()["customer_id"].unique())[::4]
    cuts = [datetime(2023, 6, 1), datetime(2023, 12, 1)]
    with customers_only(duck, ids) as d, customers_only(sprk, ids) as s:
        assert_same(build_features(d, cuts), build_features(s, cuts))


@pytest.mark.parametrize(
    ("name", "data", "settings"),
    [
        # Unix epoch seconds and milliseconds: 2024-01-01 and 2024-02-01 00:00:00.250 UTC
        ("epoch.csv", b"customer_id,order_ts,amount\na,1704067200,10\nb,1706745600250,5\n", {}),
        # a tab after the id, blanks between the rest
        ("aligned.txt", b"customer_id\torder_ts  amount\na\t20240101  10\nb\t20240201   5\n", {}),
        (
            "latin.csv",
            "customer_id;order_ts;amount\nJosé;2024-01-01;10\nb;2024-02-01;5\n".encode("latin-1"),
            {"csv": {"encoding": "latin-1"}},
        ),
        (
            "windows.csv",
            "customer_id;order_ts;amount\n€1;2024-01-01;10\nb;2024-02-01;5\n".encode("cp1252"),
            {"csv": {"encoding": "cp1252"}},
        ),
    ],
)
def test_awkward_exports_read_alike(spark, tmp_path, name, data, settings):
    path = tmp_path / name
    path.write_bytes(data)
    cfg = OrdersConfig.model_validate({"columns": {"order_id": None}, **settings})
    duck = load_orders(path, cfg, as_of=AS_OF)
    sprk = load_orders(path, cfg, as_of=AS_OF, engine=SparkEngine(spark))
    a, b = duck.to_pandas().sort_values("order_ts"), sprk.to_pandas()
    assert len(a) == 2 and a["amount"].tolist() == [10.0, 5.0]
    assert a["order_ts"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert_same(a, b, keys=("customer_id",))


def test_a_latin_1_file_read_as_utf_8_on_spark_is_refused(spark, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("customer_id;order_ts;amount\nJosé;2024-01-01;10\n".encode("latin-1"))
    cfg = OrdersConfig.model_validate({"columns": {"order_id": None}})
    with pytest.raises(DataError, match="not UTF-8 text.*orders.csv.encoding"):
        load_orders(path, cfg, as_of=AS_OF, engine=SparkEngine(spark))


def test_campaign_outcomes_are_read_alike_on_both_engines(synth_pair):
    from winback.measure import customer_outcomes

    duck, sprk = synth_pair
    ids = duck.to_pandas()["customer_id"].drop_duplicates().head(300).tolist() + ["nobody"]
    start, end = datetime(2023, 6, 30), datetime(2023, 9, 28)
    a = customer_outcomes(duck, pd.Series(ids), start, end)
    b = customer_outcomes(sprk, pd.Series(ids), start, end)
    assert len(a) == 301 and a["bought"].any() and not a["bought"].all()
    assert a.set_index("customer_id").loc["nobody"].tolist() == [False, 0.0]
    assert_same(a, b, keys=("customer_id",))
