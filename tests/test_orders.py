"""Reading sources, mapping columns, order lines, returns, time zones, and every validation problem."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.conftest import run_cli
from winback.config import load_config
from winback.errors import ConfigError, DataError
from winback.orders import load_orders

AS_OF = datetime(2024, 12, 31)


def _load(path, *overrides, as_of=AS_OF):
    return load_orders(path, load_config(None, list(overrides)).orders, as_of=as_of)


def _write(tmp_path: Path, text: str, name="orders.csv", newline="\n") -> Path:
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode())
    return p


GOOD = """customer_id,order_id,order_ts,amount
c1,o1,2024-01-05,10.00
c1,o2,2024-02-05 13:30:00,20.50
c2,o3,2024-03-01,5.25
"""


# --- sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_csv_any_delimiter_and_line_ending(tmp_path, delim, newline):
    p = _write(tmp_path, GOOD.replace(",", delim), newline=newline)
    o = _load(p)
    assert (o.report.n_orders, o.report.n_customers) == (3, 2)
    assert o.to_pandas()["amount"].tolist() == [10.0, 20.5, 5.25]


def test_whitespace_separated_text_with_header(tmp_path):
    text = "  cust   day   value\n 001 20240105   10.00\n 001 20240205  20.50\n 002 20240301 5.25\n"
    p = _write(tmp_path, text, name="orders.txt", newline="\r\n")
    o = _load(
        p,
        "orders.columns.customer_id=cust",
        "orders.columns.order_ts=day",
        "orders.columns.amount=value",
        "orders.columns.order_id=null",
    )
    df = o.to_pandas()
    assert df["customer_id"].tolist() == ["001", "001", "002"]  # leading zeros kept
    assert df["order_ts"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-01-05",
        "2024-02-05",
        "2024-03-01",
    ]


def test_parquet_file_and_folder(tmp_path):
    df = pd.read_csv(_write(tmp_path, GOOD))
    df["order_ts"] = pd.to_datetime(df["order_ts"], format="ISO8601", utc=True)
    folder = tmp_path / "pq"
    folder.mkdir()
    df.iloc[:2].to_parquet(folder / "part-0.parquet")
    df.iloc[2:].to_parquet(folder / "part-1.parquet")
    assert _load(folder).report.n_orders == 3
    df.to_parquet(tmp_path / "one.parquet")
    assert _load(tmp_path / "one.parquet").report.n_customers == 2


def test_duckdb_table_source(tmp_path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE sales AS SELECT * FROM read_csv('{_write(tmp_path, GOOD)}')")
    con.close()
    assert _load(db, "orders.table=sales").report.n_orders == 3
    with pytest.raises(ConfigError, match="orders.table"):
        _load(db)
    with pytest.raises(DataError, match="no table 'nope'.*sales"):
        _load(db, "orders.table=nope")


def test_column_mapping_and_date_formats(tmp_path):
    text = "Customer ID;Invoice;InvoiceDate;Total\nx;1;05/01/2024 10:00;3\ny;2;31/12/2023 23:59;4\n"
    o = _load(
        _write(tmp_path, text),
        "orders.columns.customer_id=Customer ID",
        "orders.columns.order_id=Invoice",
        "orders.columns.order_ts=InvoiceDate",
        "orders.columns.amount=Total",
        "orders.date_format=%d/%m/%Y %H:%M",
    )
    ts = o.to_pandas().set_index("customer_id")["order_ts"]
    assert ts["x"] == pd.Timestamp("2024-01-05 10:00", tz="UTC")
    assert ts["y"] == pd.Timestamp("2023-12-31 23:59", tz="UTC")


def test_timezone_is_converted_to_utc(tmp_path):
    text = "customer_id,order_id,order_ts,amount\na,1,2024-07-01 12:00:00,1\nb,2,2024-01-01T12:00:00+05:00,1\n"
    o = _load(_write(tmp_path, text), "orders.timezone=Europe/Berlin")
    ts = o.to_pandas().set_index("customer_id")["order_ts"]
    assert ts["a"] == pd.Timestamp("2024-07-01 10:00", tz="UTC")  # CEST is UTC+2
    assert ts["b"] == pd.Timestamp("2024-01-01 07:00", tz="UTC")  # its own offset wins
    with pytest.raises(ConfigError, match="orders.timezone"):
        _load(_write(tmp_path, text), "orders.timezone=Mars/Olympus")


def test_order_lines_are_aggregated_and_prefix_marks_cancellations(tmp_path):
    text = """Invoice,StockCode,Quantity,Price,Customer,InvoiceDate
536365,A,6,2.55,17850,2010-12-01 08:26
536365,B,6,3.39,17850,2010-12-01 08:26
536366,A,2,1.50,17850,2010-12-01 08:28
C536379,A,-1,27.50,14527,2010-12-01 09:41
536380,A,4,1.00,14527,2010-12-02 10:00
"""
    o = _load(
        _write(tmp_path, text),
        "orders.columns.order_id=Invoice",
        "orders.columns.customer_id=Customer",
        "orders.columns.order_ts=InvoiceDate",
        "orders.columns.amount=null",
        "orders.columns.quantity=Quantity",
        "orders.columns.unit_price=Price",
        "orders.returns.order_id_prefix=C",
    )
    assert o.report.lines_aggregated
    df = o.to_pandas().set_index("order_id")
    assert len(df) == 4
    assert df.loc["536365", "amount"] == pytest.approx(6 * 2.55 + 6 * 3.39)
    assert bool(df.loc["C536379", "is_return"]) and df.loc["C536379", "amount"] == -27.5
    assert not df.loc["536380", "is_return"]


def test_status_column_marks_returns_with_positive_amounts(tmp_path):
    text = "customer_id,order_id,order_ts,amount,state\na,1,2024-01-01,10,paid\na,2,2024-01-03,10,refunded\n"
    o = _load(
        _write(tmp_path, text),
        "orders.columns.status=state",
        "orders.returns.status_values=[refunded]",
    )
    df = o.to_pandas().set_index("order_id")
    assert df.loc["2", "is_return"] and df.loc["2", "amount"] == -10.0
    assert o.report.n_returns == 1


# --- validation problems: each names the column and the count ---------------------------------


BAD_CASES = {
    "unparsable_date": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,2,yesterday,1\nb,3,2024-13-45,1\n",
        "column 'order_ts': 2 of 3 rows have a missing or unparsable date",
    ),
    "null_customer_id": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\n,2,2024-01-02,1\n",
        "column 'customer_id': 1 of 2 rows have no customer id",
    ),
    "duplicate_order_id": (  # the same id, not a copy of the line (that is duplicate_line)
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,1,2024-01-01,2\nb,2,2024-01-02,1\n",
        "column 'order_id': 1 of 3 rows repeat an order id",
    ),
    "duplicate_line": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,1,2024-01-01,1\nb,2,2024-01-02,1\n",
        "column 'all columns': 1 of 3 rows are exact copies of another line",
    ),
    "future_date": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,2,2031-01-01,1\n",
        "column 'order_ts': 1 of 2 rows are dated after the as-of 2024-12-31",
    ),
    "bad_amount": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,2,2024-01-02,ten\nb,3,2024-01-03,\n",
        "column 'amount': 2 of 3 rows have a missing or non-numeric amount",
    ),
    "absurd_amount": (
        "customer_id,order_id,order_ts,amount\na,1,2024-01-01,1\na,2,2024-01-02,80995000\n",
        "column 'amount': 1 of 2 rows have an absurd amount",
    ),
}


@pytest.mark.parametrize("check", sorted(BAD_CASES))
def test_problem_with_fail_policy_names_column_and_count(tmp_path, check):
    text, message = BAD_CASES[check]
    with pytest.raises(DataError, match=message.replace("(", r"\(")) as err:
        _load(_write(tmp_path, text), f"orders.policies.{check}=fail")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("check", sorted(BAD_CASES))
def test_problem_with_default_policy_is_dropped_and_counted(tmp_path, check):
    text, message = BAD_CASES[check]
    o = _load(_write(tmp_path, text))
    [p] = [p for p in o.report.problems if p.check == check]
    assert p.policy == "drop" and message in p.describe()
    assert o.report.n_orders == o.report.rows_read - p.count
    assert any(line.startswith("dropped: ") for line in o.report.summary_lines())


def test_all_problems_are_reported_at_once(tmp_path):
    text = "customer_id,order_id,order_ts,amount\na,1,never,1\n,2,2024-01-02,1\nc,3,2024-01-03,abc\nd,4,2024-01-04,2\n"
    with pytest.raises(DataError) as err:
        _load(
            _write(tmp_path, text),
            "orders.policies.unparsable_date=fail",
            "orders.policies.null_customer_id=fail",
            "orders.policies.bad_amount=fail",
        )
    msg = str(err.value)
    assert "3 problem(s)" in msg
    for part in (
        "'order_ts': 1 of 4",
        "'customer_id': 1 of 4",
        "'amount': 1 of 4",
        "'abc'",
        "'never'",
    ):
        assert part in msg


def test_missing_columns_are_named_with_the_fix(tmp_path):
    p = _write(tmp_path, "who,when,amount\na,2024-01-01,1\n")
    with pytest.raises(
        DataError,
        match=r"missing column\(s\) 'customer_id' \(for customer_id\), 'order_ts'.*orders.columns",
    ):
        _load(p)


def test_empty_input_is_refused(tmp_path):
    with pytest.raises(DataError, match="empty"):
        _load(_write(tmp_path, "customer_id,order_id,order_ts,amount\n"))


def test_nothing_left_after_drops_is_refused(tmp_path):
    with pytest.raises(DataError, match="no orders left"):
        _load(_write(tmp_path, "customer_id,order_id,order_ts,amount\na,1,soon,1\n"))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "nope.csv")


@pytest.mark.parametrize("check", ["unparsable_date", "null_customer_id", "bad_amount"])
def test_cli_exits_1_with_one_line_and_no_traceback(tmp_path, check):
    text, message = BAD_CASES[check]
    p = _write(tmp_path, text)
    res = run_cli("validate", str(p), "--set", f"orders.policies.{check}={'fail'}")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_cli_validate_prints_summary(tmp_path):
    res = run_cli(
        "validate", str(_write(tmp_path, BAD_CASES["null_customer_id"][0])), "--as-of", "2024-12-31"
    )
    assert res.returncode == 0, res.stderr
    assert "dropped: column 'customer_id': 1 of 2 rows have no customer id" in res.stdout
    assert "1 orders (0 returns or cancellations) from 1 customers" in res.stdout


def test_cli_bad_config_key_is_a_one_line_error(tmp_path):
    res = run_cli("validate", str(_write(tmp_path, GOOD)), "--set", "orders.polices.x=drop")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "'orders.polices' is not a known setting" in res.stderr


def test_order_lines_without_an_order_id_are_dropped_and_counted(tmp_path):
    text = "order_id,customer_id,order_ts,qty,price\n1,a,2024-01-01,2,5\n1,a,2024-01-01,1,4\n,a,2024-01-02,1,9\n"
    o = _load(
        _write(tmp_path, text),
        "orders.columns.amount=null",
        "orders.columns.quantity=qty",
        "orders.columns.unit_price=price",
    )
    assert o.report.lines_aggregated and o.report.n_orders == 1
    [p] = [p for p in o.report.problems if p.check == "null_order_id"]
    assert (
        p.count == 1
        and "column 'order_id': 1 of 3 rows are order lines without an order id" in p.describe()
    )
    assert o.to_pandas()["amount"].tolist() == [14.0]


def test_conflicting_customers_in_one_order_fail_by_default(tmp_path):
    text = "order_id,customer_id,order_ts,qty,price\n1,a,2024-01-01,2,5\n1,b,2024-01-01,1,4\n2,a,2024-01-03,1,1\n"
    args = (
        "orders.columns.amount=null",
        "orders.columns.quantity=qty",
        "orders.columns.unit_price=price",
    )
    with pytest.raises(
        DataError,
        match="column 'order_id': 2 of 3 rows are lines of an order id that carries more than one customer id",
    ):
        _load(_write(tmp_path, text), *args)
    o = _load(_write(tmp_path, text), *args, "orders.policies.conflicting_customer=drop")
    assert o.report.n_orders == 1


# --- raw exports: overlapping files, ids written as floats -------------------------------------


def test_exact_copies_of_lines_are_dropped_counted_and_shown(tmp_path):
    text = (
        "customer_id,order_id,order_ts,amount\n"
        "a,1,2024-01-01,10\na,1,2024-01-01,10\nb,2,2024-01-02,5\nb,2,2024-01-02,5\n"
        "b,2,2024-01-02,5\nc,3,2024-01-03,7\n"
    )
    p = _write(tmp_path, text)
    o = _load(p)
    (dup,) = [x for x in o.report.problems if x.check == "duplicate_line"]
    assert (dup.count, dup.total, dup.policy) == (3, 6, "drop")  # one copy of a, two of b
    assert dup.examples == ("a | 1 | 2024-01-01 | 10", "b | 2 | 2024-01-02 | 5")
    assert o.report.n_orders == 3 and o.to_pandas()["amount"].sum() == 22.0  # not 10+10+5+5+5+7
    assert o.report.rows_dropped == 3
    kept = _load(
        p, "orders.policies.duplicate_line=keep", "orders.policies.duplicate_order_id=keep"
    )
    assert kept.report.n_orders == 6
    with pytest.raises(DataError, match="3 of 6 rows are exact copies"):
        _load(p, "orders.policies.duplicate_line=fail")


def test_lines_whose_hashes_collide_are_compared_themselves(tmp_path, monkeypatch):
    # the copies are first looked for by each line's hash; a collision must not count as a copy
    from dataclasses import replace

    from winback.engines.dialect import DUCKDB
    from winback.engines.duckdb import DuckDBEngine

    monkeypatch.setattr(DuckDBEngine, "dialect", replace(DUCKDB, row_hash="0"))  # all collide
    text = "customer_id,order_id,order_ts,amount\na,1,2024-01-01,10\nb,2,2024-01-02,5\n"
    o = _load(_write(tmp_path, text))
    assert not [x for x in o.report.problems if x.check == "duplicate_line"]
    assert o.report.n_orders == 2
    o = _load(_write(tmp_path, text + "b,2,2024-01-02,5\n"))
    (dup,) = [x for x in o.report.problems if x.check == "duplicate_line"]
    assert (dup.count, dup.total) == (1, 3) and o.report.n_orders == 2


def test_with_distinct_order_ids_copies_are_sought_among_the_lines_without_one(tmp_path):
    # ids 1 and 2 are each on one line, so no copy can carry one; the two lines without an id
    # are copies of each other, and only the search among lines without an id can find them
    text = (
        "customer_id,order_id,order_ts,amount\n"
        "a,1,2024-01-01,10\nb,2,2024-01-02,5\nc,,2024-01-03,7\nc,,2024-01-03,7\n"
    )
    o = _load(_write(tmp_path, text))
    (dup,) = [x for x in o.report.problems if x.check == "duplicate_line"]
    assert (dup.count, dup.total) == (1, 4)
    assert o.report.n_orders == 3 and o.to_pandas()["amount"].sum() == 22.0  # 10 + 5 + 7


def test_order_ids_distinct_as_text_but_equal_once_read_are_still_repeats(tmp_path):
    # ' 7' and '7' are two texts but one id once trimmed; '12.0' and '12.00' are two texts but
    # one id once read as the integer they spell: each pair is a repeated order id, not two
    rows = {
        "trimmed": ("a, 7,2024-01-01,10\nb,7,2024-01-02,5\nc,8,2024-01-03,7\n", 1),
        "floats": ("a,12.0,2024-01-01,10\nb,12.00,2024-01-02,5\nc,13.0,2024-01-03,7\n", 1),
    }
    for name, (body, repeats) in rows.items():
        o = _load(_write(tmp_path, "customer_id,order_id,order_ts,amount\n" + body))
        (dup,) = [x for x in o.report.problems if x.check == "duplicate_order_id"]
        assert dup.count == repeats, name
        assert o.report.n_orders == 2, name  # the second line of the repeated id is dropped
        assert not [x for x in o.report.problems if x.check == "duplicate_line"], name


def test_overlapping_files_of_a_folder_are_deduplicated(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    rows = [
        ("a", "o1", "2023-12-30", 10.0),
        ("a", "o2", "2024-01-02", 20.0),
        ("b", "o3", "2024-01-03", 5.0),
    ]
    cols = ["customer_id", "order_id", "order_ts", "amount"]
    pd.DataFrame(rows[:2], columns=cols).to_parquet(folder / "2023.parquet")  # o2 is in both
    pd.DataFrame(rows[1:], columns=cols).to_parquet(folder / "2024.parquet")
    o = _load(folder)
    assert o.report.n_orders == 3 and o.to_pandas()["amount"].sum() == 35.0
    (dup,) = [x for x in o.report.problems if x.check == "duplicate_line"]
    assert dup.count == 1 and dup.examples == ("a | o2 | 2024-01-02 | 20.0",)


def test_ids_written_as_floats_are_read_as_the_integers_they_spell(tmp_path):
    text = "customer_id,order_id,order_ts,amount\n13085.0,1.0,2024-01-01,10\n17850.0,2.0,2024-01-02,5\n"
    o = _load(_write(tmp_path, text))
    got = o.to_pandas()
    assert sorted(got["customer_id"]) == ["13085", "17850"] and sorted(got["order_id"]) == [
        "1",
        "2",
    ]
    assert any("13085.0" in n and "customer_id" in n for n in o.report.notes)
    # a float column from pandas, as a spreadsheet export gives it
    df = pd.DataFrame(
        {"customer_id": [13085.0, None, 12.0], "order_ts": ["2024-01-01"] * 3, "amount": [1.0] * 3}
    )
    got = _load(df, "orders.columns.order_id=null").to_pandas()
    assert sorted(got["customer_id"]) == ["12", "13085"]


def test_textual_ids_are_never_touched(tmp_path):
    for ids, want in (
        (["02987", "13085"], ["02987", "13085"]),  # leading zeros stay
        (["13085.0", "A-1"], ["13085.0", "A-1"]),  # not every id is a float: leave them all
        (["1.50", "2.0"], ["1.50", "2.0"]),  # 1.50 is no whole number
    ):
        text = "customer_id,order_ts,amount\n" + "".join(
            f"{i},2024-01-0{k + 1},1\n" for k, i in enumerate(ids)
        )
        o = _load(_write(tmp_path, text), "orders.columns.order_id=null")
        assert sorted(o.to_pandas()["customer_id"]) == sorted(want) and o.report.notes == []


def test_cli_validate_says_what_it_normalised_and_dropped(tmp_path):
    text = (
        "customer_id,order_id,order_ts,amount\n13085.0,1,2024-01-01,10\n13085.0,1,2024-01-01,10\n"
    )
    res = run_cli("validate", str(_write(tmp_path, text)), "--as-of", "2024-12-31")
    assert res.returncode == 0, res.stderr
    assert "normalised: column 'customer_id'" in res.stdout
    assert (
        "dropped: column 'all columns': 1 of 2 rows are exact copies of another line" in res.stdout
    )
    assert "1 orders (0 returns or cancellations) from 1 customers" in res.stdout


def test_the_dropped_count_is_rows_read_minus_rows_kept(tmp_path):
    # line 3 fails two checks (a bad date and a bad amount): dropped once, counted in both
    text = (
        "customer_id,order_id,order_ts,amount\n"
        "a,1,2024-01-01,10\na,2,yesterday,5\nb,3,not-a-date,ten\nb,4,2024-01-04,\n"
    )
    o = _load(_write(tmp_path, text))
    counts = {p.check: p.count for p in o.report.problems}
    assert counts == {"unparsable_date": 2, "bad_amount": 2}
    assert (o.report.rows_read, o.report.rows_kept, o.report.rows_dropped) == (4, 1, 3)
    assert "3 of them dropped" in o.report.summary_lines()[1]
