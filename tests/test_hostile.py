"""Hostile and awkward input a shop's export or a new user brings: each class is read right or
refused in one line that says what is wrong and how to fix it, never with a traceback."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pandas as pd
import pytest

from tests.conftest import run_cli
from winback.config import load_config
from winback.errors import ConfigError, DataError
from winback.orders import load_orders

AS_OF = datetime(2024, 12, 31)
HEADER = "customer_id,order_id,order_ts,amount\n"


def _load(path, *overrides):
    return load_orders(path, load_config(None, list(overrides)).orders, as_of=AS_OF)


def _one_clean_line(res: subprocess.CompletedProcess, code: int, *says: str) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr, res.stderr
    for text in says:
        assert text in last, last
    return last


# --- dates -----------------------------------------------------------------------------------


def test_unix_epoch_numbers_read_in_any_unit(tmp_path):
    # 1704067200 s is 2024-01-01 00:00:00 UTC; 1706745600 s is 2024-02-01 00:00:00 UTC.
    p = tmp_path / "o.csv"
    p.write_text(
        HEADER + "a,1,1704067200,10\n"
        "b,2,1706745600123,5\n"  # ms: 2024-02-01 00:00:00.123
        "c,3,1706745600123456,5\n"  # µs
        "d,4,1706745600123456789,5\n"  # ns, read to the µs
        "e,5,20240301,5\n"  # eight digits stay YYYYMMDD
    )
    ts = _load(p).to_pandas().set_index("customer_id")["order_ts"]
    assert ts["a"] == pd.Timestamp("2024-01-01 00:00:00", tz="UTC")
    assert ts["b"] == pd.Timestamp("2024-02-01 00:00:00.123", tz="UTC")
    assert ts["c"] == pd.Timestamp("2024-02-01 00:00:00.123456", tz="UTC")
    assert ts["d"] == pd.Timestamp("2024-02-01 00:00:00.123456", tz="UTC")
    assert ts["e"] == pd.Timestamp("2024-03-01", tz="UTC")


def test_epoch_integers_in_parquet_are_read_too(tmp_path):
    p = tmp_path / "o.parquet"
    pd.DataFrame(
        {"customer_id": ["a"], "order_id": ["1"], "order_ts": [1704067200000], "amount": [1.0]}
    ).to_parquet(p)
    assert _load(p).to_pandas()["order_ts"][0] == pd.Timestamp("2024-01-01", tz="UTC")


@pytest.mark.parametrize(
    ("fmt", "says"),
    [
        ("%Q-%d", "%Q, not a date directive"),
        ("dd/MM/yyyy", "dd/MM/yyyy is spelled %d/%m/%Y"),
    ],
)
def test_an_invalid_date_format_is_a_config_error(fmt, says):
    with pytest.raises(ConfigError, match="orders.date_format") as err:
        load_config(None, [f"orders.date_format={fmt}"])
    assert says in str(err.value)


def test_the_hint_for_dates_names_the_format_that_did_not_match(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text(HEADER + "a,1,2024-01-05,10\nb,2,06/01/2024,10\n")
    o = _load(p, "orders.date_format=%d/%m/%Y")
    (problem,) = o.report.problems
    assert problem.count == 1
    assert "do not match orders.date_format '%d/%m/%Y'" in problem.fix
    assert "dropped by orders.policies.unparsable_date=drop" in problem.fix


# --- amounts -----------------------------------------------------------------------------------


def test_a_nan_amount_is_one_problem_counted_once(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text(HEADER + "a,1,2024-01-01,NaN\nb,2,2024-01-02,5\nc,3,2024-01-03,\n")
    o = _load(p)
    assert [(x.check, x.count) for x in o.report.problems] == [("bad_amount", 2)]
    assert o.report.rows_dropped == 2 and o.report.n_orders == 1
    # the fix does not ask for the policy already in force
    assert "set orders.policies.bad_amount=drop" not in o.report.problems[0].fix
    assert "dropped by orders.policies.bad_amount=drop" in o.report.problems[0].fix


def test_a_failing_policy_says_how_to_drop_instead(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text(HEADER + "a,1,2024-01-01,x\nb,2,2024-01-02,5\n")
    with pytest.raises(DataError, match="or set orders.policies.bad_amount=drop"):
        _load(p, "orders.policies.bad_amount=fail")


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "name"), [("latin-1", "José"), ("cp1252", "Zoë €")])
def test_a_file_in_another_encoding_reads_with_orders_csv_encoding(tmp_path, encoding, name):
    p = tmp_path / "o.csv"
    p.write_bytes((HEADER + f"{name},1,2024-01-01,10\nb,2,2024-01-02,5\n").encode(encoding))
    with pytest.raises(DataError, match="is not UTF-8 text.*orders.csv.encoding"):
        _load(p)
    ids = _load(p, f"orders.csv.encoding={encoding}").to_pandas()["customer_id"]
    assert sorted(ids) == sorted([name, "b"])


def test_a_bad_byte_far_into_the_file_is_found_too(tmp_path):
    # past the rows the CSV sniffer samples, so the reader meets it only while reading through
    rows = "".join(f"c{i},{i},2024-01-01,1\n" for i in range(30_000))
    p = tmp_path / "o.csv"
    p.write_bytes((HEADER + rows).encode() + "Jos\xe9,x,2024-01-02,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8 text.*orders.csv.encoding=latin-1"):
        _load(p)


def test_columns_split_by_a_tab_and_aligned_with_spaces(tmp_path):
    p = tmp_path / "o.txt"
    p.write_text("customer_id\torder_ts  amount\n1\t20240101  10.5\n2\t20240102   5\n")
    o = _load(p)
    assert o.to_pandas()["amount"].tolist() == [10.5, 5.0]


def test_a_tab_separated_file_with_blanks_inside_values_stays_tab_separated(tmp_path):
    p = tmp_path / "o.tsv"
    p.write_text("customer_id\torder_ts\tamount\nann lee\t2024-01-01 10:00\t10.5\n")
    o = _load(p)
    assert o.to_pandas()["customer_id"].tolist() == ["ann lee"]


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", r"the file is empty \(0 bytes\)"), (b"\n  \n\n", "holds only blank lines")],
)
def test_an_empty_file_is_called_empty_not_missing_columns(tmp_path, content, says):
    p = tmp_path / "o.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=says):
        _load(p)


def test_a_damaged_parquet_file_is_named_and_refused(tmp_path):
    good = tmp_path / "good.parquet"
    pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(20_000)],
            "order_ts": pd.date_range("2023-01-01", periods=20_000, freq="15min"),
            "amount": range(20_000),
        }
    ).to_parquet(good)
    data = bytearray(good.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 400):  # a damaged page, footer intact
        data[i] ^= 0x5A
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="bad.parquet: could not read it.*damaged"):
        _load(bad)


# --- through the command line ------------------------------------------------------------------


def test_configs_and_outputs_that_cannot_work_are_refused_in_one_line(tmp_path):
    orders = tmp_path / "o.csv"
    orders.write_text(HEADER + "a,1,2024-01-01,10\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"orders:\n  date_format: '%d/%m/%Y'\n  # caf\xe9\n")
    folder = tmp_path / "configs"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    o = str(orders)
    cases = [
        (["validate", o, "--config", str(latin)], 1, "not UTF-8 text (byte 0xe9 on line 3)"),
        (["validate", o, "--config", str(folder)], 1, "is a folder; pass the YAML file"),
        (["validate", o, "--set", "orders.date_format=%Q"], 1, "%Q, not a date directive"),
        (["validate", o, "--set", "orders.csv.encoding=klingon"], 1, "not a known text encoding"),
        (
            ["backtest", "--orders", o, "--as-of", "2024-01-01", "--out", str(a_file)],
            2,
            "is a file, not a folder",
        ),
        (["report", "--orders", o, "--out", str(a_file)], 2, "is a file, not a folder"),
        (["synth", "--out", str(folder)], 2, "is a folder; give a file name"),
        (
            ["features", "--orders", o, "--as-of", "2024-01-01", "--out", str(folder)],
            2,
            "is a folder; give a file name",
        ),
        (
            ["train", "--orders", o, "--set", f"models_dir={a_file}/models"],
            1,
            f"models_dir {a_file}/models: cannot write in {a_file}",
        ),
    ]
    for args, code, says in cases:
        _one_clean_line(run_cli(*args), code, says)
    assert not (tmp_path / "backtest").exists()


def test_a_model_file_that_is_not_a_model_is_refused_before_any_work(tmp_path):
    orders = tmp_path / "o.csv"
    orders.write_text(HEADER + "a,1,2024-01-01,10\n")
    model = tmp_path / "model.joblib"
    model.write_text("not a pickle")
    meta = tmp_path / "model.joblib.json"
    args = ["score", "--orders", str(orders), "--model", str(model), "--out", str(tmp_path / "x")]

    meta.write_text("{not json")
    last = _one_clean_line(run_cli(*args), 1, "model.joblib.json is not the JSON winback writes")
    assert "restore it" in last
    meta.write_text(json.dumps({"version": 1}))
    _one_clean_line(run_cli(*args), 1, "holds no sha256")
    import hashlib

    meta.write_text(json.dumps({"sha256": hashlib.sha256(model.read_bytes()).hexdigest()}))
    _one_clean_line(run_cli(*args), 1, "cannot be loaded as a winback model", "retrain")
    assert not (tmp_path / "x").exists()


def test_epoch_dates_are_read_through_the_cli_with_the_summary(tmp_path):
    p = tmp_path / "o.csv"
    p.write_text(HEADER + "a,1,1704067200,10\nb,2,1706745600,5\n")
    res = run_cli("validate", str(p))
    assert res.returncode == 0, res.stderr
    assert "2 orders (0 returns or cancellations) from 2 customers, 2024-01-01 to 2024-02-01" in (
        res.stdout
    )
    assert datetime(2024, 2, 1, tzinfo=UTC).timestamp() == 1706745600


def test_a_tracking_store_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    orders = tmp_path / "o.csv"
    orders.write_text(HEADER + "a,1,2024-01-01,10\n")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "taken" / "mlflow.db").mkdir(parents=True)  # a folder where the file should be
    for store, says in (
        (tmp_path / "a_file" / "mlflow.db", "its folder"),
        (tmp_path / "taken" / "mlflow.db", "cannot be written (Is a directory)"),
    ):
        uri = f"tracking.uri=sqlite:///{store}"
        for command in (
            ["train", "--orders", str(orders), "--set", uri],
            ["backtest", "--orders", str(orders), "--as-of", "2024-01-01", "--set", uri],
        ):
            # the orders are far too few to train on: refused for the store, it never got there
            _one_clean_line(run_cli(*command, cwd=tmp_path), 1, "MLflow store", says)
    assert not (tmp_path / "backtest").exists() and not (tmp_path / "models").exists()
