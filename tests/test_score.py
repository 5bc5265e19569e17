"""The nightly job: score, lists, atomic exports, locks, and refusing bad models."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import check_reasons, learned_uplift, orders_of, record_order_splits
from winback.atomic import sha256_file
from winback.campaigns import suppressed
from winback.config import CampaignsConfig
from winback.cutoffs import training_cutoffs
from winback.errors import WinbackError
from winback.export import export_lock, read_manifest
from winback.model import ChurnModel, save_model
from winback.scoring import (
    LIST_COLUMNS,
    PROFIT_CURVE_COLUMNS,
    add_reasons,
    build_lists,
    delta,
    listed_groups,
    score_customers,
)
from winback.segments import rfm_segments
from winback.snapshots import build_snapshots

AS_OF = "2023-12-31"
MAP = ["--set", "orders.columns.category=category", "--set", "orders.columns.channel=channel"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synth_frame):
    d = tmp_path_factory.mktemp("score")
    synth_frame.to_parquet(d / "orders.parquet")
    o = orders_of(synth_frame, category="category", channel="channel")
    cuts = training_cutoffs(datetime(2023, 12, 31), 60, 30, 6, o.first_ts)
    snaps = build_snapshots(o, cuts, 60)
    model = ChurnModel(horizon_days=60, n_estimators=200).fit(snaps, snaps["churned"])
    save_model(model, d / "model.joblib")
    boosted = ChurnModel(horizon_days=60, n_estimators=100, candidate="boosted")
    save_model(boosted.fit(snaps, snaps["churned"]), d / "boosted.joblib")
    return d, o, model


def test_score_compiles_the_trees_once_and_scores_as_lightgbm_does(setup):
    d, _, _ = setup
    runs = {}
    for name, extra in [
        ("compiled", []),
        ("again", []),
        ("lightgbm", ["--set", "engine.compiled_trees=false"]),
    ]:
        cmd = [a if a != "model.joblib" else "boosted.joblib" for a in _score_cmd(name, *extra)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=d)
        assert res.returncode == 0, res.stderr
        runs[name] = read_manifest(d / name / AS_OF)
        if name == "compiled":  # cached next to the model file, with the cache's checksum
            (cache,) = d.glob("boosted.trees-*.bin")
            stamp = cache.stat().st_mtime_ns
            assert cache.with_suffix(".sha256").read_text().strip() == sha256_file(cache)
    assert cache.stat().st_mtime_ns == stamp  # the second run loaded it
    # the dev install has lleaves; the setting turns it off
    assert runs["compiled"]["predictor"] == runs["again"]["predictor"] == "compiled (lleaves 1.3.0)"
    assert runs["lightgbm"]["predictor"].startswith("lightgbm ")
    compiled = pd.read_parquet(d / "compiled" / AS_OF / "scores.parquet")
    plain = pd.read_parquet(d / "lightgbm" / AS_OF / "scores.parquet")
    assert len(compiled) > 1000 and compiled["customer_id"].equals(plain["customer_id"])
    np.testing.assert_allclose(compiled["p_churn"], plain["p_churn"], rtol=0, atol=1e-9)


def _score_cmd(out: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "winback", "score", "--orders", "orders.parquet", "--as-of", AS_OF,
        "--model", "model.joblib", "--out", out, *MAP, *extra,
    ]  # fmt: skip


def _score(d: Path, *extra: str, out: str = "exports") -> subprocess.CompletedProcess:
    return subprocess.run(
        _score_cmd(out, *extra), capture_output=True, text=True, timeout=300, cwd=d,
        env={**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/unreachable"},
    )  # fmt: skip


def test_every_reason_is_true_of_its_customer_and_the_population(setup):
    _, o, model = setup
    cfg = CampaignsConfig()
    scored = score_customers(o, model, datetime(2023, 12, 31), cfg)
    lists = add_reasons(scored, model, build_lists(scored.scores, cfg))
    assert scored.features_path is None  # all features at hand, to check against
    n_listed = sum(len(f) for f in lists.values())
    assert check_reasons(lists, scored.features) >= n_listed > 500


def test_lists_have_every_column_and_follow_the_rules(setup):
    _, o, model = setup
    cfg = CampaignsConfig()
    scored = score_customers(o, model, datetime(2023, 12, 31), cfg, model_version="7")
    scores, drift = scored.scores, scored.drift
    assert set(drift) >= {"recency_days", "p_churn"} and all(v >= 0 for v in drift.values())
    why = suppressed(
        scores["customer_id"], pd.Timestamp("2023-12-31"),
        days_since_last_order=scores["days_since_last_order"], recent_days=cfg.recent_days,
    )  # fmt: skip
    assert (
        why.eq("bought in the last 14 days").sum() == (scores["days_since_last_order"] < 14).sum()
    )
    lists = add_reasons(scored, model, build_lists(scores, cfg, why))
    for name, frame in lists.items():
        assert list(frame.columns) == LIST_COLUMNS
        assert (frame["list"] == name).all()
        assert frame["rank"].tolist() == list(range(1, len(frame) + 1))
        assert frame["p_churn"].is_monotonic_decreasing and (frame["p_churn"] >= 0.5).all()
        assert (frame["days_since_last_order"] >= 14).all()  # recent buyers left out
        assert frame["model_version"].eq("7").all()
    at_risk, lapsed = lists["at_risk"], lists["lapsed"]
    assert len(at_risk) > 0 and len(lapsed) > 0
    assert (at_risk["expected_gain"] > 0).all()  # maximum expected profit: positive gains only
    assert set(at_risk["campaign"]) <= {"high_spenders", "repeat_buyers", "one_time_buyers"}
    assert set(lapsed["campaign"]) == {"lapsed"}
    assert set(at_risk["group"]) == {"treatment", "control"}
    assert (at_risk["value_at_risk"] - at_risk["p_churn"] * at_risk["value"]).abs().max() < 1e-9
    assert at_risk["reasons"].str.len().gt(0).all()
    # reasons are worked out for the exported customers only
    listed = scores["customer_id"].isin(at_risk["customer_id"]) | scores["customer_id"].isin(
        lapsed["customer_id"]
    )
    assert (
        scores.loc[listed, "reasons"].notna().all() and scores.loc[~listed, "reasons"].isna().all()
    )
    # each distinct text held once, the score table and the lists coding into the same texts
    # each distinct text held once: the score table holds a code for each customer into one
    # set of texts, in the order the table first says them; the lists read them as text
    import pyarrow as pa

    coded = pa.chunked_array(pa.array(scores["reasons"].array)).combine_chunks()
    said = coded.dictionary.to_pylist()
    assert len(said) == len(set(said)) and set(said) == set(scores.loc[listed, "reasons"])
    assert said == list(dict.fromkeys(scores.loc[listed, "reasons"]))
    assert coded.indices.null_count == (~listed).sum()
    for frame in lists.values():
        assert frame["reasons"].dtype == "string"
        mine = scores.set_index("customer_id").loc[frame["customer_id"], "reasons"]
        assert mine.tolist() == frame["reasons"].tolist()
    # each list is its rows of the score table: as a frame, the values its customers have
    # there, ranked 1..n, with the group the score table gives them
    scores["group"] = listed_groups(scores, lists)
    by_id = scores.set_index("customer_id")
    for lst in lists.values():
        frame = lst.frame()
        assert list(frame.columns) == LIST_COLUMNS and len(frame) == len(lst) > 0
        theirs = by_id.loc[frame["customer_id"]].reset_index()
        theirs["rank"] = np.arange(1, len(frame) + 1)
        theirs["group"] = theirs["group"].astype("str")
        theirs["reasons"] = theirs["reasons"].astype("string")  # the list's as text
        pd.testing.assert_frame_equal(frame, theirs[LIST_COLUMNS])
        # a block of rows, a column: the same as the whole list's
        at = np.array([len(lst) - 1, 0])
        pd.testing.assert_frame_equal(lst.take(at), frame.iloc[at].reset_index(drop=True))
        pd.testing.assert_series_equal(lst["segment"], frame["segment"])
    # the delta reads only the rows that entered: the same as from the whole lists' frames
    frames = {name: lst.frame() for name, lst in lists.items()}
    before = {name: frame.iloc[::2] for name, frame in frames.items()}  # half of them, and
    before["at_risk"] = pd.concat([before["at_risk"], frames["lapsed"].head(3)])  # 3 who left
    changes = delta(lists, before)
    pd.testing.assert_frame_equal(changes, delta(frames, before))
    assert changes["change"].value_counts().to_dict() == {
        "entered": sum(len(f) - len(f.iloc[::2]) for f in frames.values()),
        "left": 3,
    }
    assert (scores["risk_decile"].between(1, 10)).all()
    # when the next order is due: chances that fall with the horizon and meet p_churn at
    # H = 60 days, and dates in order
    curve = scores[["p_no_order_30d", "p_no_order_60d", "p_no_order_90d"]].to_numpy()
    assert (np.diff(curve, axis=1) <= 1e-12).all()
    assert np.allclose(scores["p_no_order_60d"], scores["p_churn"])
    dates = scores[["next_order_from", "next_order_date", "next_order_until"]].dropna()
    assert len(dates) > 100 and (dates["next_order_from"] <= dates["next_order_date"]).all()
    assert (dates["next_order_date"] <= dates["next_order_until"]).all()
    assert (dates["next_order_from"] > pd.Timestamp("2023-12-31").date()).all()


def test_score_table_ranks_deciles_and_segments_follow_their_definitions(setup):
    # computed on the rows the engine orders; checked here against the pandas definitions,
    # on real ties
    _, o, model = setup
    scored = score_customers(o, model, datetime(2023, 12, 31), CampaignsConfig())
    s, snap = scored.scores, scored.features
    assert (s["customer_id"].to_numpy() == snap["customer_id"].to_numpy()).all()
    assert s["customer_id"].is_monotonic_increasing
    assert snap["n_orders"].duplicated().any()  # ties share their average rank
    # segments are quintiles within each list: they describe the list they are on
    for name, part in s.groupby("list", observed=True):
        rows = snap.loc[part.index]
        want = rfm_segments(rows["recency_days"], rows["n_orders"], lapsed=name == "lapsed")
        pd.testing.assert_series_equal(
            part["segment"], want, check_names=False, check_categorical=False
        )
    lapsed = s.loc[s["list"] == "lapsed", "segment"].astype(str)
    assert set(lapsed) <= {"At risk", "Can't lose them", "Hibernating", "Lost"}
    at_risk = s.loc[s["list"] == "at_risk", "segment"].astype(str)
    assert at_risk.isin(["At risk", "Can't lose them"]).any()
    assert not at_risk.isin(["Hibernating", "Lost"]).any()  # they bought within the horizon
    assert (at_risk == "Champions").mean() < 0.3
    for name, part in s.groupby("list"):
        ranked = part.sort_values(["p_churn", "customer_id"], ascending=[False, True])
        assert ranked["rank"].tolist() == list(range(1, len(part) + 1))
        expected = np.ceil(np.arange(1, len(part) + 1) * 10 / len(part)).astype(int)
        assert (ranked["risk_decile"].to_numpy() == expected).all()
        h = model.horizon_days
        recency = snap.loc[part.index, "recency_days"]
        assert (recency <= h).all() if name == "at_risk" else (recency > h).all()


def test_ranks_deciles_and_quintiles_within_each_list_by_hand():
    from winback.scoring import _ranks_within_lists

    # six customers in id order; rows 0, 2, 4 are at risk, rows 1, 3, 5 lapsed
    p = np.array([0.5, 0.9, 0.5, 0.2, 0.7, 0.7])
    recency = np.array([10.0, 100.0, 30.0, 200.0, 10.0, 150.0])
    n_orders = np.array([1.0, 3.0, 1.0, 2.0, 5.0, 2.0])
    lapsed = np.array([False, True, False, True, False, True])
    rank, decile, r, f = _ranks_within_lists(p, recency, n_orders, lapsed)
    # at risk: row 4 (0.7) first; rows 0 and 2 tie at 0.5 and keep their id order
    # lapsed: row 1 (0.9), row 5 (0.7), row 3 (0.2)
    assert rank.tolist() == [2, 1, 3, 3, 1, 2]
    # ceil(10 x rank / 3): 1 -> 4, 2 -> 7, 3 -> 10
    assert decile.tolist() == [7, 4, 10, 10, 4, 7]
    # R, at risk: recency 30 ranks 1, the two 10s share 2.5: ceil(5 x 1/3) = 2, ceil(5 x
    # 2.5/3) = 5; lapsed: 200, 150, 100 rank 1, 2, 3: 2, 4, 5
    assert r.tolist() == [5, 5, 2, 2, 5, 4]
    # F, at risk: the two 1s share 1.5: ceil(5 x 1.5/3) = 3, the 5: 5; lapsed: the two 2s
    # share 1.5: 3, the 3: 5
    assert f.tolist() == [3, 5, 3, 3, 5, 3]


@pytest.mark.parametrize("split_from", [2, 10**9], ids=["orders-set-apart", "orders-hashed"])
def test_scoring_in_partitions_gives_the_same_scores_lists_and_reasons(
    setup, monkeypatch, tmp_path, split_from
):
    # large populations are scored in customer hash partitions, their snapshots on disk; from
    # split_from partitions on, their orders are set apart by partition first
    import winback.features as features
    import winback.scoring as scoring
    import winback.snapshots as snapshots

    _, o, model = setup
    cfg = CampaignsConfig()
    t = datetime(2023, 12, 31)
    # BG/NBD fitted on a seeded sample (of 500 customers here): the same sample either way
    monkeypatch.setattr(snapshots, "BGNBD_FIT_MAX_CUSTOMERS", 500)
    monkeypatch.setattr(scoring, "REASON_BLOCK_ROWS", 100)  # reasons a block at a time
    whole = score_customers(o, model, t, cfg)
    whole_lists = add_reasons(whole, model, build_lists(whole.scores, cfg))
    monkeypatch.setattr(scoring, "SCORE_PARTITION_CUSTOMERS", 100)
    monkeypatch.setattr(scoring, "SCORE_PARTITION_ROWS", 300)  # 1,500 customers: 5 parts
    monkeypatch.setattr(features, "SPLIT_FROM_PARTITIONS", split_from)
    tables = record_order_splits(monkeypatch, snapshots)
    parts = score_customers(o, model, t, cfg)
    assert parts.features_path is not None and len(list(parts.features_path.glob("*"))) == 5
    assert tables[0][0] == 5 and (tables[0][1] is not None) == (split_from <= 5)
    # the first night that keeps its features computes them from the same orders
    kept = score_customers(o, model, t, cfg, keep_in=tmp_path / "kept")
    assert [k for k, _, _ in tables] == [5, 5] and kept.carry.n_computed == len(kept.scores)
    pd.testing.assert_frame_equal(kept.scores, parts.scores)
    del kept
    parts_lists = add_reasons(parts, model, build_lists(parts.scores, cfg))
    pd.testing.assert_frame_equal(parts.scores, whole.scores)
    assert parts.drift == whole.drift
    for name in whole_lists:
        pd.testing.assert_frame_equal(parts_lists[name].frame(), whole_lists[name].frame())
    assert whole_lists["at_risk"]["reasons"].notna().all()
    folder = parts.features_path
    del parts
    import gc

    gc.collect()
    assert not folder.exists()  # the snapshot parts go with the scores


def test_median_by_hand():
    from winback.scoring import _median

    assert _median(np.array([3.0, 1.0, 2.0])) == 2.0
    assert _median(np.array([4.0, 1.0, 3.0, 2.0])) == 2.5  # 2 + 0.5 (3 - 2)
    assert _median(np.array([7.0])) == 7.0
    assert _median(np.array([])) is None


def test_score_job_lends_duckdb_memory_to_the_lists_of_a_large_population(
    setup, tmp_path, monkeypatch
):
    # past SCORE_PARTITION_CUSTOMERS, DuckDB is held small while pandas builds the lists
    import winback.jobs as jobs
    import winback.scoring as scoring
    import winback.snapshots as snapshots
    from winback.config import load_config
    from winback.engines.duckdb import connect
    from winback.orders import load_orders

    d, _, _ = setup
    cfg = load_config(None, ["orders.columns.category=category", "orders.columns.channel=channel"])
    con = connect("1GB", temp_directory=str(tmp_path / "spill"))
    o = load_orders(d / "orders.parquet", cfg.orders, as_of=datetime(2024, 1, 1), con=con)
    limit = "SELECT current_setting('memory_limit')"
    before = con.execute(limit).fetchall()[0][0]
    seen = []
    build = jobs.build_lists

    def spy(*args, **kwargs):
        seen.append(con.execute(limit).fetchall()[0][0])
        return build(*args, **kwargs)

    monkeypatch.setattr(jobs, "build_lists", spy)
    monkeypatch.setattr(snapshots, "BGNBD_FIT_MAX_CUSTOMERS", 500)  # the same fit either way
    t, model = datetime(2023, 12, 31), str(d / "model.joblib")
    small = jobs.score_job(o, cfg, tmp_path / "small", as_of=t, model=model)
    monkeypatch.setattr(scoring, "SCORE_PARTITION_CUSTOMERS", 100)
    large = jobs.score_job(o, cfg, tmp_path / "large", as_of=t, model=model)
    assert seen[0] == before and seen[1] != before and seen[1].endswith("MiB")
    # LENT_MEMORY (32MB: 32,000,000 bytes, 30.5 MiB) while the lists were built
    assert abs(float(seen[1].split()[0]) - 30.5) < 0.1
    after = con.execute(limit).fetchall()[0][0]  # given back (to DuckDB's 0.1 MiB display)
    assert after.endswith("MiB") and abs(float(after.split()[0]) - float(before.split()[0])) < 0.2
    for name in small.lists:
        pd.testing.assert_frame_equal(large.lists[name].frame(), small.lists[name].frame())
    assert len(small.lists["at_risk"]) > 0


def test_score_cli_exports_atomically_and_reruns_byte_identical(setup):
    d, _, _ = setup
    first = _score(d)  # the tracking store is unreachable: a model path needs none
    assert first.returncode == 0, first.stderr
    folder = d / "exports" / AS_OF
    assert folder.is_symlink()
    doc = read_manifest(folder)
    assert doc["predictor"] == "BG/NBD alone (no trees)"  # what this shop's model chose
    assert set(doc["files"]) == {
        "at_risk.csv",
        "at_risk.parquet",
        "at_risk_control.csv",
        "at_risk_control.parquet",
        "lapsed.csv",
        "lapsed.parquet",
        "lapsed_control.csv",
        "lapsed_control.parquet",
        "scores.parquet",
        "delta.csv",
        "profit_curve.csv",
        "profit_curve.png",
        "README.txt",
    }
    assert doc["rows"]["at_risk"] == sum(
        len(pd.read_parquet(folder / f)) for f in ("at_risk.parquet", "at_risk_control.parquet")
    )
    assert doc["input"]["rows"] > 0 and len(doc["config_sha256"]) == 64
    before = {n: m["sha256"] for n, m in doc["files"].items()}
    second = _score(d)
    assert second.returncode == 0, second.stderr
    after = {n: m["sha256"] for n, m in read_manifest(folder)["files"].items()}
    assert after == before
    # only the current version is kept
    assert len(list((d / "exports" / ".versions").iterdir())) == 1


def test_a_second_run_on_the_same_folder_is_refused(setup):
    d, _, _ = setup
    with export_lock(d / "locked"):
        res = _score(d, out="locked")
    assert res.returncode == 1
    assert "Another winback run" in res.stderr and "--wait" in res.stderr


def test_tampered_or_missing_model_is_refused(setup, tmp_path):
    d, _, model = setup
    bad = d / "bad.joblib"
    save_model(model, bad)
    data = bytearray(bad.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "winback",
            "score",
            "--orders",
            "orders.parquet",
            "--model",
            "bad.joblib",
            "--out",
            "x",
        ],
        capture_output=True,
        text=True,
        cwd=d,
        timeout=120,
    )
    assert res.returncode == 1 and "does not match its checksum" in res.stderr
    assert not (d / "x").exists()  # nothing written


def test_kill_9_never_leaves_a_partial_or_mixed_export(setup):
    d, _, _ = setup
    out = "killed"
    assert _score(d, out=out).returncode == 0
    folder = d / out / AS_OF
    rng = random.Random(5)
    for _ in range(8):
        proc = subprocess.Popen(
            _score_cmd(out, "--wait", "30"),
            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        doc = read_manifest(folder)  # every file matches the manifest: complete, not mixed
        assert doc["rows"]["scores"] > 0
    assert _score(d, out=out).returncode == 0
    assert len(list((d / out / ".versions").iterdir())) == 1


def test_each_scored_customer_gets_the_group_of_the_list_they_are_on():
    from winback.scoring import CampaignList, listed_groups

    ids = pd.Series(["a", "b", "c", "d", "e"], index=[10, 11, 12, 13, 14], dtype="str")
    scores = pd.DataFrame({"customer_id": ids})
    lists = {  # b (control), then a (treatment); e (control); none
        "at_risk": CampaignList(scores, np.array([1, 0]), np.array([True, False])),
        "lapsed": CampaignList(scores, np.array([4]), np.array([True])),
        "empty": CampaignList(scores, np.array([], dtype=np.intp), np.array([], dtype=bool)),
    }
    got = listed_groups(scores, lists)
    # categories of string: each word held once, a code per customer
    assert got.cat.categories.tolist() == ["treatment", "control"]
    assert got.cat.categories.dtype == "string" and got.cat.codes.tolist() == [0, 1, -1, -1, 1]
    assert list(got.index) == [10, 11, 12, 13, 14]
    assert [g if pd.notna(g) else "-" for g in got] == ["treatment", "control", "-", "-", "control"]
    assert listed_groups(scores, {}).isna().all()


def test_csv_cells_are_neutralised_in_exports(tmp_path):
    from winback.export import export_lists

    frame = pd.DataFrame(
        {"customer_id": ["=1+2", "ok"], "p_churn": [0.5, 0.4], "group": ["treatment"] * 2}
    )
    folder = export_lists(tmp_path, "2024-01-01", {"at_risk": frame}, frame, {"as_of": "x"})
    text = (folder / "at_risk.csv").read_text()
    assert "'=1+2" in text and "\n=1+2" not in text
    assert json.loads((folder / "manifest.json").read_text())["files"]["at_risk.csv"]["rows"] == 2


def test_an_export_failing_in_one_file_keeps_the_previous_one_whole(tmp_path, monkeypatch):
    # the files are written two at a time: one failing must still publish nothing
    from winback import export

    frame = pd.DataFrame(
        {"customer_id": ["a", "b"], "p_churn": [0.5, 0.4], "group": ["treatment", "control"]}
    )
    kept = export.export_lists(tmp_path, "2024-01-01", {"at_risk": frame}, frame, {"run": 1})
    before = read_manifest(kept)
    write = export.write_parquet

    def failing(frame, path, **rows):
        if path.name == "scores.parquet":
            raise OSError("No space left on device")
        write(frame, path, **rows)

    monkeypatch.setattr(export, "write_parquet", failing)
    newer = frame.assign(p_churn=[0.9, 0.1])
    with pytest.raises(OSError, match="No space"):
        export.export_lists(tmp_path, "2024-01-01", {"at_risk": newer}, newer, {"run": 2})
    assert read_manifest(tmp_path / "2024-01-01") == before  # still the first run's, whole
    assert len(list((tmp_path / ".versions").iterdir())) == 2  # the failed run's folder
    monkeypatch.setattr(export, "write_parquet", write)
    export.export_lists(tmp_path, "2024-01-01", {"at_risk": newer}, newer, {"run": 3})
    assert read_manifest(tmp_path / "2024-01-01")["run"] == 3
    assert len(list((tmp_path / ".versions").iterdir())) == 1  # the failed one cleaned up


def test_export_refuses_to_replace_a_plain_folder(tmp_path):
    from winback.export import export_lists

    (tmp_path / "2024-01-01").mkdir()
    frame = pd.DataFrame({"customer_id": ["a"]})
    with pytest.raises(WinbackError, match="plain folder"):
        export_lists(tmp_path, "2024-01-01", {"at_risk": frame}, frame, {})


def test_suppression_delta_and_profit_curve_through_the_cli(setup):
    d, _, _ = setup
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "winback",
            "score",
            "--orders",
            "orders.parquet",
            "--as-of",
            "2023-11-30",
            "--model",
            "model.joblib",
            "--out",
            "nightly",
            *MAP,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=d,
    )
    assert res.returncode == 0, res.stderr
    nov = pd.read_parquet(d / "nightly" / "2023-11-30" / "at_risk.parquet")
    # suppress two customers of November's list: one contacted 5 days before the as-of, one
    # opted out; a contact 40 days before (outside the 30-day cooldown) suppresses nobody
    a, b, c = nov["customer_id"].iloc[:3]
    pd.DataFrame({"customer_id": [a, c], "contacted_at": ["2023-12-26", "2023-11-21"]}).to_csv(
        d / "contacts.csv", index=False
    )
    pd.DataFrame({"customer_id": [b]}).to_csv(d / "optout.csv", index=False)
    res = _score(
        d,
        "--set",
        "campaigns.contact_history=contacts.csv",
        "--set",
        "campaigns.opt_out=optout.csv",
        out="nightly",
    )
    assert res.returncode == 0, res.stderr
    dec = d / "nightly" / AS_OF
    doc = read_manifest(dec)
    assert doc["previous_export"] == "2023-11-30"
    assert doc["suppressed"]["opted_out"] == 1 and doc["suppressed"]["cooldown"] == 1
    at_risk = pd.read_parquet(dec / "at_risk.parquet")
    assert a not in set(at_risk["customer_id"]) and b not in set(at_risk["customer_id"])
    scores = pd.read_parquet(dec / "scores.parquet").set_index("customer_id")
    assert scores.loc[a, "suppressed"] == "contacted on 2023-12-26"
    assert scores.loc[b, "suppressed"] == "opted out"
    assert pd.isna(scores.loc[c, "suppressed"])
    changes = pd.read_csv(dec / "delta.csv", dtype={"customer_id": str})
    left = changes[(changes["list"] == "at_risk") & (changes["change"] == "left")]
    assert {a, b} <= set(left["customer_id"])
    assert doc["delta"]["left"] == len(changes[changes["change"] == "left"])
    curve = pd.read_csv(dec / "profit_curve.csv")
    best = curve[curve["list"] == "at_risk"]["cumulative_gain"].max()
    assert best == pytest.approx(
        curve[curve["list"] == "at_risk"].query("expected_gain > 0")["expected_gain"].sum()
    )
    assert (dec / "profit_curve.png").stat().st_size > 0


def test_a_contact_file_without_the_columns_is_a_clear_error(setup):
    d, _, _ = setup
    pd.DataFrame({"id": ["x"]}).to_csv(d / "bad_contacts.csv", index=False)
    res = _score(d, "--set", "campaigns.contact_history=bad_contacts.csv", out="badc")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "lacks column(s) ['customer_id', 'contacted_at']" in res.stderr


def test_drift_guard_refuses_to_publish_unless_forced(setup):
    d, _, _ = setup
    # a threshold of 0 means any difference at all is too much
    res = _score(d, "--set", "drift.fail_psi=0", out="drifted")
    assert res.returncode == 1 and "Not published: the data drifted" in res.stderr
    assert "--force" in res.stderr
    assert not (d / "drifted" / AS_OF).exists()  # nothing published
    res = _score(d, "--set", "drift.fail_psi=0", "--force", out="drifted")
    assert res.returncode == 0, res.stderr
    doc = read_manifest(d / "drifted" / AS_OF)
    assert doc["drift_forced"] is True and "p_churn" in doc["drift_psi"]


def test_two_concurrent_runs_queue_on_the_lock_and_both_finish(setup):
    d, _, _ = setup
    cmd = _score_cmd("together", "--wait", "120")
    procs = [
        subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    doc = read_manifest(d / "together" / AS_OF)
    assert doc["rows"]["scores"] > 0
    assert len(list((d / "together" / ".versions").iterdir())) == 1


def test_profit_curve_by_hand():
    # best gain first within each list, ties by customer id; suppressed and ungrouped left out
    from winback.scoring import profit_curve

    scores = pd.DataFrame(
        {
            "customer_id": ["d", "c", "b", "a", "e", "f"],
            "list": ["at_risk", "at_risk", "at_risk", "lapsed", "lapsed", "at_risk"],
            "expected_gain": [2.0, 5.0, 2.0, -1.0, 3.0, np.nan],
        }
    )
    why = pd.Series([pd.NA, pd.NA, pd.NA, pd.NA, "opted out", pd.NA], dtype="string")
    curve = profit_curve(scores, why)
    assert curve["list"].tolist() == ["at_risk"] * 3 + ["lapsed"]
    assert curve["customer_id"].tolist() == ["c", "b", "d", "a"]
    assert curve["n_contacted"].tolist() == [1, 2, 3, 1]
    assert curve["cumulative_gain"].tolist() == [5.0, 7.0, 9.0, -1.0]
    # each row is its customer's row of the score table, read as asked: a block in any order
    assert curve.rows.tolist() == [1, 2, 0, 3]
    block = curve.take(np.array([3, 0, 2]), ["n_contacted", "list", "expected_gain"])
    assert block.to_dict("list") == {
        "n_contacted": [1, 1, 3],
        "list": ["lapsed", "at_risk", "at_risk"],
        "expected_gain": [-1.0, 5.0, 2.0],
    }
    assert [(n, x.tolist(), y.tolist()) for n, x, y in curve.lines()] == [
        ("at_risk", [1, 2, 3], [5.0, 7.0, 9.0]),
        ("lapsed", [1], [-1.0]),
    ]


def test_the_profit_curve_file_is_written_a_block_at_a_time_as_its_frame(tmp_path, monkeypatch):
    # blocks of 2 rows cross from one list to the next; the file is pandas' CSV of the frame
    from winback import export
    from winback.scoring import profit_curve

    scores = pd.DataFrame(
        {
            "customer_id": pd.array(["a", "b", "c", "d", "e"], dtype="str"),
            "list": ["lapsed", "at_risk", "lapsed", "at_risk", "at_risk"],
            "expected_gain": [0.5, 1.25, -2.0, 1.25, 3.0],
        }
    )
    curve = profit_curve(scores)
    frame = curve.frame()
    assert frame.columns.tolist() == PROFIT_CURVE_COLUMNS
    assert frame["customer_id"].tolist() == ["e", "b", "d", "a", "c"]
    assert frame["n_contacted"].tolist() == [1, 2, 3, 1, 2]
    assert frame["cumulative_gain"].tolist() == [3.0, 4.25, 5.5, 0.5, -1.5]
    monkeypatch.setattr(export, "CSV_BLOCK_ROWS", 2)
    export.write_csv(curve, tmp_path / "curve.csv")
    frame.to_csv(tmp_path / "frame.csv", index=False, lineterminator="\n",
                 quoting=csv.QUOTE_NONNUMERIC, encoding="utf-8")  # fmt: skip
    assert (tmp_path / "curve.csv").read_bytes() == (tmp_path / "frame.csv").read_bytes()
    assert (tmp_path / "curve.csv").read_text().splitlines()[1] == '"at_risk",1,"e",3.0,3.0'


def test_campaign_groups_by_hand():
    # first group whose rules hold wins; spend share is the top of the whole list
    from winback.config import CampaignGroupConfig
    from winback.score_table import _assign_groups

    out = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "list": ["at_risk"] * 4 + ["lapsed"] * 2,
            "n_order_days": [1, 3, 1, 2, 1, 4],
            "value": [100.0, 50.0, 10.0, 0.0, 20.0, 5.0],
            "p_churn": [0.5, 0.8, 0.3, 0.9, 0.4, 1.0],
        }
    )
    groups = [
        CampaignGroupConfig(name="vip", min_spend_share=0.5, offer="=gift", save_rate=0.2,
                            contact_cost=1.0, offer_cost=4.0),
        CampaignGroupConfig(name="repeat", min_order_days=2, offer="points", save_rate=0.1,
                            contact_cost=0.0, offer_cost=0.0),
        CampaignGroupConfig(name="back", list="lapsed", offer="points", channel="sms",
                            save_rate=0.5, contact_cost=1.0, offer_cost=0.0),
    ]  # fmt: skip
    _assign_groups(out, groups)
    # at_risk values 100, 50, 10, 0: median 30, so a and b are vip; b's 3 order days come second
    assert out["campaign"].tolist()[:2] == ["vip", "vip"] and out["campaign"].isna()[2]
    assert out["campaign"].tolist()[3:] == ["repeat", "back", "back"]
    assert out["offer"].astype(object).tolist() == ["=gift"] * 2 + [np.nan] + ["points"] * 3
    assert out["channel"].astype(object).tolist() == ["email"] * 2 + [np.nan, "email"] + ["sms"] * 2
    # gain = p x save x value - contact - offer x (1 - p + p x save):
    # a 10 - 1 - 4 x 0.6 = 6.6, b 8 - 1 - 4 x 0.36 = 5.56, d 0, e 4 - 1, f 2.5 - 1
    np.testing.assert_allclose(out["expected_gain"], [6.6, 5.56, np.nan, 0.0, 3.0, 1.5])
    # each text is kept once (categories), however many customers carry it
    assert out["offer"].cat.categories.tolist() == ["=gift", "points"]


def test_list_files_are_taken_from_their_list_a_block_at_a_time_and_ranked_1_to_n(
    tmp_path, monkeypatch
):
    import winback.export as export

    # blocks of 2 rows: the treatment file's 3 customers span two blocks of each writer
    monkeypatch.setattr(export, "PARQUET_SLICE_ROWS", 2)
    monkeypatch.setattr(export, "CSV_BLOCK_ROWS", 2)
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "rank": [1, 2, 3, 4, 5],
            "p_churn": [0.91234, 0.8, 0.75, 0.6, 0.55555],
            "offer": ["=gift", "points", "points", "=gift", "points"],
            "group": ["treatment", "control", "treatment", "control", "treatment"],
        }
    )
    folder = export.export_lists(tmp_path, "2024-01-01", {"at_risk": frame}, frame, {})
    treated = pd.read_parquet(folder / "at_risk.parquet")
    assert treated["customer_id"].tolist() == ["a", "c", "e"]
    assert treated["rank"].tolist() == [1, 2, 3]  # within the file, not the list's 1, 3, 5
    assert treated["p_churn"].tolist() == [0.91234, 0.75, 0.55555]  # Parquet: full precision
    control = pd.read_parquet(folder / "at_risk_control.parquet")
    assert (control["customer_id"].tolist(), control["rank"].tolist()) == (["b", "d"], [1, 2])
    # the CSV: p_churn to 3 decimals (0.91234 -> 0.912, 0.55555 -> 0.556), the formula quoted
    assert (folder / "at_risk.csv").read_text().splitlines() == [
        '"customer_id","rank","p_churn","offer","group"',
        '"a",1,0.912,"\'=gift","treatment"',
        '"c",2,0.75,"points","treatment"',
        '"e",3,0.556,"points","treatment"',
    ]
    assert (folder / "at_risk_control.csv").read_text().splitlines()[1:] == [
        '"b",1,0.8,"points","control"',
        '"d",2,0.6,"\'=gift","control"',
    ]
    rows = read_manifest(folder)["files"]
    assert (rows["at_risk.csv"]["rows"], rows["at_risk_control.parquet"]["rows"]) == (3, 2)
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5]  # the list itself is left as it was


def test_exported_files_hold_texts_not_categories_and_scores_go_in_row_groups(
    tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    import winback.export as export

    monkeypatch.setattr(export, "PARQUET_SLICE_ROWS", 2)  # 5 rows: row groups of 2, 2 and 1
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "offer": pd.Categorical.from_codes(
                [0, 1, -1, 0, 1], categories=pd.Index(["=gift", "points"], dtype="str")
            ),
            "campaign": pd.Categorical.from_codes(
                [0, 0, -1, 0, 0], categories=pd.Index(["vip"], dtype="string")
            ),
            "p_churn": [0.5, 0.4, 0.3, 0.2, 0.1],
            "group": pd.array(["treatment"] * 5, dtype="str"),
        }
    )
    folder = export.export_lists(tmp_path, "2024-01-01", {"at_risk": frame}, frame, {})
    back = pd.read_parquet(folder / "scores.parquet")
    assert pq.ParquetFile(folder / "scores.parquet").metadata.num_row_groups == 3
    assert back["offer"].dtype == "str" and back["campaign"].dtype == "string"
    assert back["offer"].tolist()[:2] == ["=gift", "points"] and pd.isna(back["offer"][2])
    assert back["campaign"].isna().tolist() == [False, False, True, False, False]
    pd.testing.assert_frame_equal(back, pd.read_parquet(folder / "at_risk.parquet"))
    lines = (folder / "at_risk.csv").read_text().splitlines()
    assert lines[1:4] == [
        '"a","\'=gift","vip",0.5,"treatment"',
        '"b","points","vip",0.4,"treatment"',
        '"c","","",0.3,"treatment"',
    ]


def test_impossible_dates_are_refused_in_one_line(setup):
    d, _, _ = setup
    for as_of, says in (("2019-01-01", "is dated after the as-of 2019-01-01"),
                        ("2031-06-30", "would be empty")):  # fmt: skip
        cmd = _score_cmd("never", *MAP)
        cmd[cmd.index("--as-of") + 1] = as_of
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=d)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode == 1 and len(errors) == 1 and says in errors[0], res.stderr
        assert not (d / "never").exists()


def test_the_manifest_tells_what_reading_the_orders_found_and_what_to_beware_of(setup):
    d, o, _ = setup
    # the model saw labels up to 2023-12-01 (last cutoff 2023-10-02 + 60 days); score earlier
    res = _score(d, "--as-of", "2023-11-15", out="early")
    assert res.returncode == 0, res.stderr
    assert "orders: read" in res.stderr  # the validation summary, as every command prints it
    doc = read_manifest(d / "early" / "2023-11-15")
    v = doc["validation"]
    assert v["rows_read"] == len(pd.read_parquet(d / "orders.parquet"))
    # orders after the as-of are future dates to it: dropped, counted, and said
    assert [p["check"] for p in v["problems"]] == ["future_date"]
    assert v["rows_dropped"] == v["problems"][0]["rows"] > 0
    assert v["orders"] + v["rows_dropped"] == v["rows_read"]
    assert any("scores know what happened next" in w for w in doc["warnings"])
    assert any("over 60 days, labels.horizon_days says 90" in w for w in doc["warnings"])
    assert "warning:" in res.stderr
    # with future_date: fail, the same request is refused
    res = _score(d, "--as-of", "2023-12-01", "--set", "orders.policies.future_date=fail",
                 out="strict")  # fmt: skip
    assert res.returncode == 1 and "dated after the as-of 2023-12-01" in res.stderr


def test_profile_and_report_refuse_spark_in_one_line(setup):
    d, _, _ = setup
    for cmd in ("profile", "report"):
        res = subprocess.run(
            [sys.executable, "-m", "winback", cmd, "orders.parquet" if cmd == "profile" else
             "--orders=orders.parquet", "--set", "engine.name=spark"],
            capture_output=True, text=True, timeout=120, cwd=d,
        )  # fmt: skip
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and f"'{cmd}' runs on the DuckDB engine only" in lines[0]


def test_hostile_ids_cannot_run_as_formulas_or_break_rows(setup):
    import csv

    d, _, _ = setup
    df = pd.read_parquet(d / "orders.parquet")
    ids = df["customer_id"].astype(str)
    hostile = ["\r=1+1+cmd|' /C calc'!A0", "+SUM(A1)", "\n-2+3", "@x", "\t=HYPERLINK(1)"]
    top = ids.value_counts().index[: len(hostile)]  # active customers, likely to be listed
    df["customer_id"] = ids.replace(dict(zip(top, hostile, strict=True)))
    df.to_parquet(d / "hostile.parquet")
    cmd = _score_cmd("hostile", "--set", "campaigns.size_by=top_k", "--set", "campaigns.top_k=400",
                     "--set", "campaigns.recent_days=0", "--set", "campaigns.min_p_churn=null")  # fmt: skip
    cmd[cmd.index("--orders") + 1] = "hostile.parquet"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=d)
    assert res.returncode == 0, res.stderr
    assert "hold a control character" in res.stderr or "holding a control character" in res.stderr
    folder = d / "hostile" / AS_OF
    doc = read_manifest(folder)
    seen = set()
    lists = ("at_risk.csv", "at_risk_control.csv", "lapsed.csv", "lapsed_control.csv")
    for name in (*lists, "delta.csv", "profit_curve.csv"):
        with open(folder / name, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) - 1 == doc["files"][name]["rows"], name  # a standard reader agrees
        for row in rows[1:]:
            for cell in row:
                try:
                    float(cell)
                    continue  # a number: a negative gain stays a number
                except ValueError:
                    pass
                bare = cell.lstrip("".join(chr(i) for i in range(33)) + "\x7f")
                assert bare[:1] not in ("=", "+", "-", "@") or cell.startswith("'"), (name, cell)
                seen.add(cell)
    assert any(c.startswith("'\r=1+1") for c in seen)  # the hostile id is there, made safe


def test_customer_value_by_hand():
    from winback.scoring import customer_value

    snap = pd.DataFrame(
        {  # A bought in the last year; B and C did not
            "spend_365d": [120.0, 0.0, 0.0],
            "orders_365d": [2, 0, 0],
            "monetary_total": [500.0, 300.0, 1460.0],
            "tenure_days": [600.0, 700.0, 1100.0],
            "recency_days": [30.0, 500.0, 370.0],
        }
    )
    # A: its last year's spend; B: first to last order 200 days (< 365): all of its 300;
    # C: 1460 over 730 days of buying = 730 a year
    assert customer_value(snap, 365).tolist() == [120.0, 300.0, 730.0]


def test_the_files_a_crm_imports(setup):
    import csv
    import re

    d, _, _ = setup
    res = _score(d, "--set", "campaigns.currency=EUR", out="crm")
    assert res.returncode == 0, res.stderr
    folder = d / "crm" / AS_OF
    doc = read_manifest(folder)
    scores = pd.read_parquet(folder / "scores.parquet")
    readme = (folder / "README.txt").read_text()
    assert "DO NOT CONTACT" in readme and "Amounts are in EUR" in readme
    for name in ("at_risk", "lapsed"):
        mail = pd.read_parquet(folder / f"{name}.parquet")
        control = pd.read_parquet(folder / f"{name}_control.parquet")
        # the mailing file holds only the customers to contact; the control group its own file
        assert set(mail["group"]) == {"treatment"} and set(control["group"]) == {"control"}
        assert len(mail) > 0 and len(control) > 0
        assert doc["rows"][name] == len(mail) + len(control)
        on_list = scores[scores["list"] == name].dropna(subset=["group"])
        assert sorted(on_list["customer_id"]) == sorted(
            [*mail["customer_id"], *control["customer_id"]]
        )
        assert set(on_list.set_index("customer_id").loc[control["customer_id"], "group"]) == {
            "control"
        }
        for stem, full in ((name, mail), (f"{name}_control", control)):
            assert full["rank"].tolist() == list(range(1, len(full) + 1))
            assert full["p_churn"].is_monotonic_decreasing and (full["p_churn"] >= 0.5).all()
            assert (full["days_since_last_order"] >= 14).all()
            assert set(full["currency"]) == {"EUR"}
            bands = full["risk_decile"].map(
                lambda x: "high" if x <= 3 else "medium" if x <= 7 else "low"
            )
            assert full["risk_band"].tolist() == bands.tolist()
            text = (folder / f"{stem}.csv").read_text(encoding="utf-8")
            lines = text.splitlines()
            header = next(csv.reader([lines[0]]))
            assert all(f"  {c} " in readme for c in header)  # every column documented
            assert all(line.startswith('"') for line in lines[1:])  # the id is quoted text
            rows = pd.read_csv(folder / f"{stem}.csv", dtype={"customer_id": str})
            assert rows["customer_id"].tolist() == full["customer_id"].tolist()
            for col, decimals in (("p_churn", 3), ("value", 2), ("expected_gain", 2)):
                cells = [r[header.index(col)] for r in csv.reader(lines[1:])]
                assert all(len(re.sub(r"^[^.]*\.?", "", c)) <= decimals for c in cells), col
                assert np.allclose(rows[col], full[col], atol=0.5 * 10**-decimals + 1e-12)
    # long-lapsed customers are valued by their history, listed, and their risk is flagged
    lapsed = pd.read_parquet(folder / "lapsed.parquet")
    old = lapsed[lapsed["days_since_last_order"] >= 365]
    assert len(old) > 0 and (old["value"] > 0).all() and old["extrapolated"].all()
    assert not lapsed.loc[lapsed["days_since_last_order"] < 365, "extrapolated"].any()
    assert doc["sizing"]["groups"]["lapsed"]["save_rate"] == 0.05
    assert doc["suppressed"]["recent_buyer"] == int((scores["days_since_last_order"] < 14).sum())


def test_the_score_job_tells_its_stages_to_a_hook(setup, tmp_path):
    from winback.config import load_config
    from winback.jobs import SCORE_STAGES, score_job

    d, o, _ = setup
    told = []
    cfg = load_config(None, MAP[1::2])
    res = score_job(o, cfg, tmp_path / "x", model=str(d / "model.joblib"), on_stage=told.append)
    assert [s.name for s in told] == list(SCORE_STAGES)
    assert all(s.seconds >= 0 for s in told)
    peaks = [s.peak_rss_mb for s in told]
    assert peaks == sorted(peaks) and peaks[0] > 50  # the process's peak so far, in MB
    assert (res.folder / "manifest.json").is_file()


def test_score_sizes_lists_with_learned_save_rates_and_says_so(setup, tmp_path):
    d, _, _ = setup
    row = {
        "n_campaigns": 3, "n_treatment": 900, "n_control": 800, "prior": 0.1,
        "save_rate": 0.4, "save_rate_lo": 0.3, "save_rate_hi": 0.5, "weight": 0.9,
    }  # fmt: skip
    learned = tmp_path / "learned.json"
    learned.write_text(
        json.dumps({"learned_at": "2024-01-05T00:00:00+00:00", "groups": {"repeat_buyers": row}})
    )
    r = _score(d, "--set", f"campaigns.learned={learned}", out=str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    groups = read_manifest(tmp_path / "x" / AS_OF)["sizing"]["groups"]
    assert groups["repeat_buyers"]["save_rate"] == 0.4
    assert groups["repeat_buyers"]["save_rate_source"].startswith(
        f"learned: {learned} (2024-01-05), 3 campaign(s)"
    )
    assert groups["one_time_buyers"]["save_rate"] == 0.08
    assert "learned nothing about this group" in groups["one_time_buyers"]["save_rate_source"]
    assert "learned: " in (tmp_path / "x" / AS_OF / "README.txt").read_text()
    # a learned file that is not there stops the job before any work
    bad = _score(d, "--set", f"campaigns.learned={tmp_path / 'gone.json'}", out=str(tmp_path / "y"))
    assert bad.returncode == 1 and "run 'winback learn' first" in bad.stderr
    assert not (tmp_path / "y").exists()


def test_score_ranks_by_an_uplift_model_only_when_it_was_judged_better(setup, tmp_path):
    d, o, _ = setup
    good, model = learned_uplift(d / "orders.parquet", tmp_path / "good", beats=True)
    r = _score(d, "--set", f"campaigns.learned={good}", out=str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "x" / AS_OF
    ranking = read_manifest(folder)["ranking"]
    assert (ranking["by"], ranking["requested"]) == ("uplift", "auto")
    assert "beat p_churn on 2023-09-30" in ranking["why"] and "0.0200" in ranking["why"]
    assert "HOW THE LISTS WERE RANKED" in (folder / "README.txt").read_text()
    lists = pd.read_parquet(folder / "at_risk.parquet")
    assert len(lists) > 20 and lists["expected_gain"].is_monotonic_decreasing
    assert (lists["expected_gain"] > 0).all()  # sized by profit: no one expected to cost
    # the uplift is the model's for each listed customer's features tonight
    snap = build_snapshots(o, [datetime(2023, 12, 31)], 60, 730, labels=False)
    feats = snap.set_index("customer_id").loc[lists["customer_id"]].reset_index()
    assert np.allclose(lists["uplift"], model.predict(feats), rtol=0, atol=1e-9)
    # expected_gain = uplift x value - contact_cost - offer_cost x (1 - p_churn + uplift)
    costs = {g.name: (g.contact_cost, g.offer_cost) for g in CampaignsConfig().groups}
    c = lists["campaign"].map(lambda g: costs[g][0])
    offer = lists["campaign"].map(lambda g: costs[g][1])
    by_hand = (
        lists["uplift"] * lists["value"] - c - offer * (1 - lists["p_churn"] + lists["uplift"])
    )
    assert np.allclose(lists["expected_gain"], by_hand)
    # asked for p_churn, the same model is left alone
    r = _score(d, "--set", f"campaigns.learned={good}", "--set", "campaigns.rank_by=p_churn",
               out=str(tmp_path / "p"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert read_manifest(tmp_path / "p" / AS_OF)["ranking"]["by"] == "p_churn"
    assert pd.read_parquet(tmp_path / "p" / AS_OF / "at_risk.parquet")["uplift"].isna().all()
    # a model that did not beat p_churn: auto keeps p_churn and says why; uplift refuses
    weak, _ = learned_uplift(d / "orders.parquet", tmp_path / "weak", beats=False)
    r = _score(d, "--set", f"campaigns.learned={weak}", out=str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    ranking = read_manifest(tmp_path / "a" / AS_OF)["ranking"]
    assert ranking["by"] == "p_churn" and "does not lie above p_churn's Qini" in ranking["why"]
    r = _score(d, "--set", f"campaigns.learned={weak}", "--set", "campaigns.rank_by=uplift",
               out=str(tmp_path / "u"))  # fmt: skip
    assert r.returncode == 1 and "campaigns.rank_by is uplift, but" in r.stderr
    assert not (tmp_path / "u").exists()  # stopped before any work
    # a model file that is not the one learn judged is refused
    with open(good.parent / "learned.uplift.joblib", "ab") as f:
        f.write(b"\0")
    r = _score(d, "--set", f"campaigns.learned={good}", out=str(tmp_path / "t"))
    assert r.returncode == 1 and "does not match the checksum" in r.stderr
    assert not (tmp_path / "t").exists()
