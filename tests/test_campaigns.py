"""Campaign steps: segments, control groups, list size, reasons, CSV safety (by hand)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from winback.campaigns import control_flags, expected_gain, incremental_gain, size_list
from winback.errors import UsageError
from winback.explain import reasons
from winback.export import neutralize_csv
from winback.segments import rfm_segments


def test_expected_profit_list_by_hand():
    # gain = p x 0.2 x value - 1 (contact) - 4 (offer) x P(buys), P(buys) = 1 - p + 0.2 p:
    # the offer is paid by the contacted customers who buy, as measure counts it
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "p_churn": [0.9, 0.5, 0.8, 0.3, 0.5],
            "value": [100.0, 200.0, 5.0, 500.0, 50.0],
        }
    )
    scores["expected_gain"] = expected_gain(scores["p_churn"], scores["value"], 0.2, 1.0, 4.0)
    # a: 18 - 1 - 4 x 0.28 = 15.88; b: 20 - 1 - 4 x 0.6 = 16.6; c: 0.8 - 1 - 4 x 0.36 = -1.64;
    # d: 30 - 1 - 4 x 0.76 = 25.96; e: 5 - 1 - 4 x 0.6 = 1.6
    assert scores["expected_gain"].round(6).tolist() == [15.88, 16.6, -1.64, 25.96, 1.6]
    chosen = size_list(scores)
    assert chosen["customer_id"].tolist() == ["d", "b", "a", "e"]  # positive gains, best first
    assert chosen["cumulative_gain"].round(6).tolist() == [25.96, 42.56, 58.44, 60.04]
    assert size_list(scores, capacity=2)["customer_id"].tolist() == ["d", "b"]
    assert size_list(scores, "top_k", k=2)["customer_id"].tolist() == ["a", "c"]
    # ties on p_churn (b, e at 0.5) are broken by id, so the list is stable
    assert size_list(scores, "threshold", threshold=0.5)["customer_id"].tolist() == [
        "a",
        "c",
        "b",
        "e",
    ]
    with pytest.raises(UsageError, match="one of 'profit', 'top_k' or 'threshold'"):
        size_list(scores, "random")


def test_incremental_profit_of_an_uplift_list_by_hand():
    # gain = uplift x value - 1 (contact) - 4 (offer) x P(buys | contacted), where
    # P(buys | contacted) = 1 - p_churn + uplift
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "p_churn": [0.9, 0.5, 0.8, 0.3],
            "value": [100.0, 200.0, 50.0, 500.0],
        }
    )
    uplift = np.array([0.10, 0.02, -0.05, 0.01])
    scores["expected_gain"] = incremental_gain(uplift, scores["p_churn"], scores["value"], 1, 4)
    # a: 10 - 1 - 4 x 0.2 = 8.2; b: 4 - 1 - 4 x 0.52 = 0.92; c: -2.5 - 1 - 4 x 0.15 = -4.1;
    # d: 5 - 1 - 4 x 0.71 = 1.16
    assert scores["expected_gain"].round(6).tolist() == [8.2, 0.92, -4.1, 1.16]
    # a sleeping dog (c) is never contacted; the others most profitable first
    assert size_list(scores)["customer_id"].tolist() == ["a", "d", "b"]
    assert size_list(scores, "top_k", k=2, by="expected_gain")["customer_id"].tolist() == ["a", "d"]
    # p_churn x save_rate is the uplift the save-rate model assumes
    assert expected_gain(0.5, 200.0, 0.2, 1, 4) == pytest.approx(
        incremental_gain(0.1, 0.5, 200.0, 1, 4)
    )


def test_control_group_share_and_stability():
    ids = [f"C{i:06d}" for i in range(100_000)]
    flags = control_flags(ids, "at_risk", "salt-1", 0.10)
    assert abs(flags.mean() - 0.10) < 0.005  # 3 standard errors of a 10% share at n=100k
    np.testing.assert_array_equal(flags, control_flags(ids, "at_risk", "salt-1", 0.10))
    other = control_flags(ids, "lapsed", "salt-1", 0.10)
    assert 0.005 < (flags & other).mean() < 0.015  # independent across campaigns (about 1%)
    # a larger share keeps everyone already in control
    assert (control_flags(ids, "at_risk", "salt-1", 0.2) | ~flags).all()
    with pytest.raises(UsageError, match="control share"):
        control_flags(ids[:3], "x", "s", 1.0)


def test_quintiles_in_sql_rank_ties_by_their_average_rank():
    # ceil(5 x average rank / count), worked by hand
    from winback.engines.duckdb import connect
    from winback.segments import quintile_sql

    con = connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (0, 'a', 10), (1, 'a', 20), (2, 'a', 30), "
        "(3, 'b', 1), (4, 'b', 1), (5, 'b', 2), (6, 'b', 3)) v(i, g, x)"
    )

    def scores(order: str, partition: str | None) -> list[int]:
        sql = f"SELECT {quintile_sql('x', order, partition)} FROM t ORDER BY i"
        return [r[0] for r in con.execute(sql).fetchall()]

    # a: ranks 1, 2, 3 of 3 -> 5/3, 10/3, 5 -> 2, 4, 5
    # b: 1 and 1 share (1 + 2) / 2 = 1.5 of 4 -> 1.875 -> 2; 2 -> 3 of 4 -> 4; 3 -> 5
    assert scores("ASC", "g") == [2, 4, 5, 2, 2, 4, 5]
    # b, largest first: 3 -> 1 of 4 -> 2; 2 -> 2 of 4 -> 3; 1 and 1 share 3.5 -> 4.375 -> 5
    assert scores("DESC", "g") == [5, 4, 2, 5, 5, 3, 2]
    # all 7: 1, 1 -> 1.5/7 -> 2; 2 -> 3/7 -> 3; 3 -> 4/7 -> 3; 10 -> 4; 20 -> 5; 30 -> 5
    assert scores("ASC", None) == [4, 5, 5, 2, 2, 3, 3]


def test_rfm_segments_from_the_grid():
    # 10 customers: R quintile from recency (lower = better), F quintile from order count
    recency = pd.Series([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    orders = pd.Series([10, 9, 1, 2, 8, 7, 3, 4, 1, 6], dtype=float)
    seg = rfm_segments(recency, orders)
    # R: customers 0-1 -> 5, 2-3 -> 4, 4-5 -> 3, 6-7 -> 2, 8-9 -> 1 (pct rank x 5, rounded up)
    # customer 2: R 4, F 1 -> Promising ("New" needs R 5)
    # F (ranks of orders, ties averaged): 10,9 -> 5; 8,7 -> 4; 6,4 -> 3; 3,2 -> 2; 1,1 -> 1
    assert seg.tolist() == [
        "Champions",
        "Champions",
        "Promising",
        "Potential loyalist",
        "Loyal",
        "Loyal",
        "Hibernating",
        "At risk",
        "Lost",
        "At risk",
    ]
    # the same customers as a lapsed list: R 5-4 read as R 2, R 3-1 as R 1, so
    # 0 (R 5, F 5) and 1 (F 5): Can't lose them; 2 (R 4, F 1): Hibernating; 3 (R 4, F 2):
    # Hibernating; 4, 5 (R 3, F 4): At risk; 6 (R 2, F 2): Lost; 7 (R 2, F 3): At risk;
    # 8 (R 1, F 1): Lost; 9 (R 1, F 3): At risk
    assert rfm_segments(recency, orders, lapsed=True).tolist() == [
        "Can't lose them", "Can't lose them", "Hibernating", "Hibernating", "At risk", "At risk",
        "Lost", "At risk", "Lost", "At risk",
    ]  # fmt: skip
    # as the at-risk list (all bought within the horizon): R 1-2 with F 1-2 read as R 3, so
    # 6 (R 2, F 2) and 8 (R 1, F 1) are About to sleep, not Hibernating or Lost; the rest stay
    assert rfm_segments(recency, orders, lapsed=False).tolist() == [
        "Champions", "Champions", "Promising", "Potential loyalist", "Loyal", "Loyal",
        "About to sleep", "At risk", "About to sleep", "At risk",
    ]  # fmt: skip


def test_reasons_in_plain_language():
    feats = pd.DataFrame(
        {
            "recency_days": [142.0, 120.0],
            "gap_mean_days": [59.0, np.nan],
            "n_order_days": [5, 1],
            "n_orders": [6, 1],
            "spend_change_90d": [-0.6, np.nan],
            "n_returns": [0, 1],
            "return_rate": [0.0, 0.5],
        }
    )
    contrib = pd.DataFrame(
        {
            "recency_days": [0.9, 0.7],
            "gap_mean_days": [0.0, 0.0],
            "n_order_days": [0.0, 0.0],
            "n_orders": [-0.2, 0.5],
            "spend_change_90d": [0.4, 0.0],
            "n_returns": [0.0, 0.0],
            "return_rate": [0.0, 0.3],
        }
    )
    population = {"n_orders": 3.0, "monetary_total": 120.0, "gap_mean_days": 40.0}
    got = reasons(contrib, feats, population=population)
    assert (
        got[0]
        == "no order for 142 days, 2.4x their usual gap; spend down 60% vs the previous 90 days"
    )
    assert got[1] == (
        "bought once, 120 days ago; 1 order so far, fewer than most customers (typical: 3); "
        "returned 1 order(s)"
    )
    # without the population to compare with, no comparison is made
    assert reasons(contrib, feats)[1] == "bought once, 120 days ago; returned 1 order(s)"


def test_comparisons_with_the_population_are_made_only_when_true():
    # three customers against medians of 4 orders, 100 spent, a 30-day gap, 400 days of tenure
    population = {"n_orders": 4.0, "monetary_total": 100.0, "gap_mean_days": 30.0,
                  "tenure_days": 400.0}  # fmt: skip
    feats = pd.DataFrame(
        {
            "recency_days": [10.0, 10.0, 20.0],
            "gap_mean_days": [60.0, 20.0, 25.0],
            "n_order_days": [5, 9, 2],
            "n_orders": [5, 36, 2],
            "monetary_total": [40.0, 1464.0, 90.0],
            "tenure_days": [300.0, 900.0, 45.0],
        }
    )
    contrib = pd.DataFrame(1.0, index=feats.index, columns=feats.columns)
    got = reasons(contrib, feats, top=6, population=population)
    # a: above the median on orders (no "fewer"), below on spend and tenure, slower than most
    assert got[0] == (
        "buys less often than most customers: about every 60 days (typical: 30 days); "
        "spent 40 so far, less than most customers (typical: 100); "
        "a newer customer: first order 300 days ago (typical: 400 days)"
    )
    # b: 36 orders and 1,464 spent are above typical: neither is called low; nothing else
    # raises b's risk truly, so b gets the plain fact of the last order
    assert got[1] == "last order 10 days ago"
    # c: two orders 25 days apart is one interval, not a habit
    assert got[2].startswith("bought twice, 25 days apart; 2 orders so far, fewer than most")


def test_csv_injection_is_neutralised():
    df = pd.DataFrame(
        {
            "name": ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "ok"],
            "amount": [-5.0, 1.0, 2.0, 3.0, 4.0],
        }
    )
    out = neutralize_csv(df)
    assert out["name"].tolist() == ['\'=HYPERLINK("x")', "'+1", "'-2", "'@SUM(A1)", "ok"]
    assert out["amount"].tolist() == [-5.0, 1.0, 2.0, 3.0, 4.0]  # numbers untouched


def test_an_infrequent_buyer_is_not_called_overdue():
    feats = pd.DataFrame(
        {"recency_days": [35.0], "gap_mean_days": [700.0], "n_order_days": [2], "n_orders": [2]}
    )
    contrib = pd.DataFrame(
        {"recency_days": [0.5], "gap_mean_days": [0.0], "n_order_days": [0.0], "n_orders": [0.0]}
    )
    assert reasons(contrib, feats)[0] == "bought twice, 700 days apart"


def test_window_reasons_name_real_windows_only():
    feats = pd.DataFrame({"orders_90d": [0], "orders_prev_90d": [0], "recency_days": [100.0]})
    contrib = pd.DataFrame({"orders_90d": [0.3], "orders_prev_90d": [0.5], "recency_days": [0.0]})
    assert reasons(contrib, feats)[0] == "no order in the last 90 days"


def test_reason_table_by_hand():
    """Customers' sentences told in two blocks, out of row order: each distinct sentence held
    once, each customer's run as a code into the distinct texts in the order the rows first
    say them, a row never told left without reasons."""
    import pyarrow as pa

    from winback.explain import ReasonTable

    def runs(*customers):
        return pa.array(list(customers), type=pa.list_(pa.large_string()))

    table = ReasonTable(6, top=3)
    # rows 5 and 1 first (a later block, finished first), then rows 0, 2 and 4; row 3 never
    table.add(np.array([5, 1]), runs(["b", "c"], ["a"]))
    table.add(np.array([0, 2, 4]), runs(["a", "b", "c"], ["a"], ["b", "c"]))
    # sentences numbered as first told: b 0, c 1, a 2
    assert table.said.tolist() == [
        [2, 0, 1], [2, -1, -1], [2, -1, -1], [-1, -1, -1], [0, 1, -1], [0, 1, -1]
    ]  # fmt: skip
    code, texts = table.dictionary()
    # by row: 0 "a; b; c" (first said, 0), 1 "a" (1), 2 "a" (1), 3 none, 4 and 5 "b; c" (2)
    assert code.tolist() == [0, 1, 1, -1, 2, 2]
    assert texts.to_pylist() == ["a; b; c", "a", "b; c"]
    with pytest.raises(ValueError, match="more than 3 sentences"):
        table.add(np.array([3]), runs(["a", "b", "c", "d"]))


def test_reason_table_of_no_customer_told():
    from winback.explain import ReasonTable

    code, texts = ReasonTable(2).dictionary()
    assert code.tolist() == [-1, -1] and texts.to_pylist() == []


def test_suppression_by_hand():
    from winback.campaigns import suppressed

    ids = pd.Series(["a", "b", "c", "d"])
    contacts = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c"],
            "contacted_at": ["2024-01-01", "2024-01-25", "2023-12-01", "2024-02-05"],
        }
    )
    why = suppressed(
        ids, pd.Timestamp("2024-01-31"), contacts, cooldown_days=30, opted_out=["d", "c"]
    )
    # a: last contact 6 days before; b: 61 days before (free); c: opted out (its contact is
    # after the as-of and ignored); d: opted out
    assert why.tolist()[0] == "contacted on 2024-01-25"
    assert pd.isna(why[1])
    assert why.tolist()[2:] == ["opted out", "opted out"]


def test_delta_by_hand():
    from winback.scoring import delta

    def lst(ids):
        return pd.DataFrame(
            {
                "customer_id": ids,
                "p_churn": [0.5] * len(ids),
                "campaign": ["x"] * len(ids),
                "reasons": ["r"] * len(ids),
            }
        )

    d = delta({"at_risk": lst(["a", "b", "c"])}, {"at_risk": lst(["b", "d"])})
    assert d[["change", "customer_id"]].values.tolist() == [
        ["entered", "a"],
        ["entered", "c"],
        ["left", "d"],
    ]
    first = delta({"at_risk": lst(["a"])}, None)
    assert first["change"].tolist() == ["entered"]
    # lists in rank order, not by id, and not in name order: the delta by list, change, id
    d = delta(
        {"lapsed": lst(["q", "p"]), "at_risk": lst(["c", "a", "b"])},
        {"at_risk": lst(["z", "b", "y"])},
    )
    assert d[["list", "change", "customer_id"]].values.tolist() == [
        ["at_risk", "entered", "a"],
        ["at_risk", "entered", "c"],
        ["at_risk", "left", "y"],
        ["at_risk", "left", "z"],
        ["lapsed", "entered", "p"],
        ["lapsed", "entered", "q"],
    ]
    assert d.index.tolist() == list(range(6))


def test_the_delta_is_read_as_it_is_written_a_block_at_a_time(tmp_path, monkeypatch):
    """The delta holds where its rows are, not the rows: the new lists' rows that entered are
    read when asked, in blocks that cross from one list and change to the next; the file is
    pandas' CSV of the whole frame, byte for byte."""
    import csv

    from winback import export
    from winback.scoring import DELTA_COLUMNS, DELTA_FILE_COLUMNS, CampaignList, delta_rows

    asked = []  # the rows of the lists read for the delta's columns
    take = CampaignList.take

    def spy(self, at, columns=None):
        if columns == DELTA_COLUMNS:
            asked.append(np.asarray(at).tolist())
        return take(self, at, columns)

    monkeypatch.setattr(CampaignList, "take", spy)

    def lst(ids, p, spy=True):
        frame = pd.DataFrame(
            {
                "customer_id": pd.array(ids, dtype="str"),
                "p_churn": p,
                "campaign": ["x"] * len(ids),
                "reasons": [f"r{i}" for i in ids],
            }
        )
        if not spy:
            return frame
        # a list of the rows of a score table, the rows in reverse (list order is not row order)
        table = frame.iloc[::-1].reset_index(drop=True)
        rows = np.arange(len(ids))[::-1].copy()
        return CampaignList(table, rows, np.zeros(len(ids), dtype=bool))

    new = {"lapsed": lst(["q", "p"], [0.9, 0.8]), "at_risk": lst(["c", "a", "b"], [0.5, 0.25, 1.0])}
    old = {"at_risk": lst(["z", "b", "y"], [0.75, 0.5, 0.5], spy=False)}
    d = delta_rows(new, old)
    assert asked == []  # nothing of the new lists read yet
    assert len(d) == 6 and d.shape == (6, 6) and d.columns == DELTA_FILE_COLUMNS
    assert (d.count("entered"), d.count("left")) == (4, 2)
    # by (list, change, id): at_risk entered a, c; at_risk left y, z; lapsed entered p, q
    block = d.take(np.array([4, 1, 2]))
    assert block[["list", "change", "customer_id"]].values.tolist() == [
        ["lapsed", "entered", "p"],
        ["at_risk", "entered", "c"],
        ["at_risk", "left", "y"],
    ]
    assert block["reasons"].tolist() == ["rp", "rc", "ry"]
    assert block["p_churn"].tolist() == [0.8, 0.5, 0.5]
    # p's row is 1 of the lapsed list, c's 0 of the at_risk list: only those read
    assert sorted(asked) == [[0], [1]]
    monkeypatch.setattr(export, "CSV_BLOCK_ROWS", 4)
    export.write_csv(d, tmp_path / "delta.csv")
    d.frame().to_csv(tmp_path / "frame.csv", index=False, lineterminator="\n",
                     quoting=csv.QUOTE_NONNUMERIC, encoding="utf-8")  # fmt: skip
    assert (tmp_path / "delta.csv").read_bytes() == (tmp_path / "frame.csv").read_bytes()
    lines = (tmp_path / "delta.csv").read_text().splitlines()
    assert lines[0] == '"list","change","customer_id","p_churn","campaign","reasons"'
    assert lines[1] == '"at_risk","entered","a",0.25,"x","ra"'
    assert lines[4] == '"at_risk","left","z",0.75,"x","rz"'


def test_delta_reads_the_rows_of_the_customers_who_left_only(tmp_path):
    from winback.export import read_list_rows, read_lists
    from winback.scoring import DELTA_COLUMNS, delta

    # the earlier export: at_risk's treatment file (a, b) and control file (c, d), lapsed (e)
    def file(name, ids, said, p):
        pd.DataFrame(
            {
                "customer_id": pd.Series(ids, dtype="str"),
                "p_churn": p,
                "campaign": pd.Series(["x"] * len(ids), dtype="string"),
                "reasons": pd.Series(said, dtype="string"),
                "rank": range(1, len(ids) + 1),
            }
        ).to_parquet(tmp_path / f"{name}.parquet")

    file("at_risk", ["a", "b"], ["ra", "rb"], [0.9, 0.8])
    file("at_risk_control", ["c", "d"], ["rc", "rd"], [0.85, 0.6])
    file("lapsed", ["e"], ["re"], [0.5])
    # rows of a list in any order, across its two files, as read_lists' frame has them
    got = read_list_rows(tmp_path, "at_risk", np.array([3, 0, 2]), ["reasons", "p_churn"])
    assert got.to_dict("list") == {"reasons": ["rd", "ra", "rc"], "p_churn": [0.6, 0.9, 0.85]}
    whole = read_lists(tmp_path, ["reasons", "p_churn"])["at_risk"]
    pd.testing.assert_frame_equal(got, whole.iloc[[3, 0, 2]].reset_index(drop=True))
    assert read_list_rows(tmp_path, "lapsed", np.array([], dtype=int), ["reasons"]).empty
    (tmp_path / "none").mkdir()  # an export whose at_risk list had no one: columns, no rows
    file("none/at_risk", [], [], [])
    none = tmp_path / "none"
    nobody = read_list_rows(none, "at_risk", np.array([], dtype=int), ["p_churn", "reasons"])
    assert nobody.columns.tolist() == ["p_churn", "reasons"] and nobody.empty
    new = {
        "at_risk": pd.DataFrame(
            {
                "customer_id": pd.Series(["b", "z", "c"], dtype="str"),
                "p_churn": [0.8, 0.7, 0.6],
                "campaign": pd.Series(["x"] * 3, dtype="string"),
                "reasons": pd.Categorical(["nb", "nz", "nc"]),
            }
        )
    }
    asked = []

    def rows_of(name, rows, columns):
        asked.append((name, rows.tolist(), columns))
        return read_list_rows(tmp_path, name, rows, columns)

    got = delta(new, read_lists(tmp_path, ["customer_id"]), rows_of)
    # a and d left at_risk: only their rows are read, and only the columns not read before
    assert asked == [("at_risk", [0, 3], ["p_churn", "campaign", "reasons"])]
    assert got.values.tolist() == [
        ["at_risk", "entered", "z", 0.7, "x", "nz"],
        ["at_risk", "left", "a", 0.9, "x", "ra"],
        ["at_risk", "left", "d", 0.6, "x", "rd"],
    ]
    pd.testing.assert_frame_equal(got, delta(new, read_lists(tmp_path, DELTA_COLUMNS)))
    assert got["reasons"].dtype == "string"  # the categories spelled out


def test_csv_injection_is_neutralised_in_categories():
    risky = pd.Categorical(["=A1", "ok", "=A1", None])
    clash = pd.Categorical(["=x", "'=x", "ok"])  # both would become '=x as categories
    out = neutralize_csv(pd.DataFrame({"offer": risky}))
    assert out["offer"].astype(object).tolist()[:3] == ["'=A1", "ok", "'=A1"]
    assert pd.isna(out["offer"][3])
    got = neutralize_csv(pd.DataFrame({"offer": clash}))["offer"].tolist()
    assert got == ["'=x", "'=x", "ok"]


def test_best_first_orders_by_value_then_id_with_missing_last():
    from winback.campaigns import best_first

    scores = pd.DataFrame(
        {
            "customer_id": pd.Series(["b", "é", "a", "Z", "c", "d"], dtype="str"),
            "expected_gain": [1.0, 1.0, np.nan, 2.0, 1.0, -3.0],
        }
    )
    got = best_first(scores, "expected_gain")
    # 2 first; the ties at 1 by id as Python compares them (b < c < é); then -3; NaN last
    assert got["customer_id"].tolist() == ["Z", "b", "c", "é", "d", "a"]
    assert got.index.tolist() == [3, 0, 4, 1, 5, 2]  # rows keep their index


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and x != x)


def _days(x: float) -> str:
    return f"{x:.0f} day" + ("" if round(x) == 1 else "s")


def _ago(x: float) -> str:
    return _days(float(np.floor(x)))


def _reason_one(name: str, row, population: dict[str, float] | None = None) -> str | None:
    """The sentence of one feature for one customer, or None: the definition the reasons of all
    customers at once are checked against."""
    v = row.get(name)
    if _missing(v):
        return None
    pop = population or {}
    rec = row.get("recency_days")
    gap = row.get("gap_mean_days")
    days = row.get("n_order_days", 0)
    if name in ("recency_days", "overdue_ratio", "bgnbd_p_no_purchase", "bgnbd_p_alive"):
        if days == 1 and rec is not None:
            return f"bought once, {_ago(rec)} ago"
        if not _missing(gap) and gap > 0 and rec is not None:
            if rec >= gap:
                return f"no order for {_ago(rec)}, {rec / gap:.1f}x their usual gap"
            if days == 2:  # one interval is not a habit
                return f"bought twice, {_days(gap)} apart"
            typical = pop.get("gap_mean_days")
            if typical is not None and gap > typical:
                return (
                    f"buys less often than most customers: about every {_days(gap)} "
                    f"(typical: {_days(typical)})"
                )
            return None
        return f"no order for {_ago(rec)}" if rec is not None else None
    if name == "spend_change_90d" and v < 0:
        return f"spend down {-v:.0%} vs the previous 90 days"
    if name in ("orders_trend_90d", "orders_trend_180d") and v < 0:
        return "ordering less often than before"
    if name in ("return_rate", "n_returns") and row.get("n_returns", 0) > 0:
        return f"returned {int(row['n_returns'])} order(s)"
    if name in ("n_orders", "n_order_days", "orders_per_year", "bgnbd_expected_purchases"):
        n, typical = row.get("n_orders"), pop.get("n_orders")
        if _missing(n) or typical is None or not n < typical:
            return None
        n = int(n)
        return (
            f"{n} order{'' if n == 1 else 's'} so far, fewer than most customers "
            f"(typical: {typical:g})"
        )
    window = re.fullmatch(r"orders_(\d+)d", name)
    if window and v == 0:
        return f"no order in the last {window.group(1)} days"
    if name in ("monetary_total", "monetary_mean", "net_spend", "last_order_amount"):
        spent, typical = row.get("monetary_total"), pop.get("monetary_total")
        if _missing(spent) or typical is None or not spent < typical:
            return None
        return f"spent {spent:,.0f} so far, less than most customers (typical: {typical:,.0f})"
    if name == "tenure_days":
        typical = pop.get("tenure_days")
        if typical is None or not v < typical:
            return None
        return f"a newer customer: first order {_ago(v)} ago (typical: {_days(typical)})"
    return None


def test_reasons_chosen_for_all_customers_at_once_match_the_walk_one_by_one(monkeypatch):
    # the definition: walk each customer's features by contribution, keep the first `top`
    # true sentences, never the same one twice, else the plain fact of the last order
    import winback.explain as explain
    from winback.explain import _can_speak, _last_order, _Row

    def one_by_one(contrib, feats, top, population):
        c = contrib.to_numpy(dtype=float)
        names = list(contrib.columns)
        cols = {name: feats[name].to_numpy() for name in feats.columns}
        order = np.argsort(-c, axis=1, kind="stable")[:, : min(3 * top + 3, c.shape[1])]
        out = []
        for i in range(len(c)):
            said = []
            for j in order[i]:
                if c[i, j] <= 0:
                    break
                text = _can_speak(names[j]) and _reason_one(names[j], _Row(cols, i), population)
                if text and text not in said:
                    said.append(text)
                    if len(said) == top:
                        break
            out.append("; ".join(said) if said else _last_order(_Row(cols, i)))
        return out

    rng = np.random.default_rng(5)
    n = 3000
    days = rng.integers(1, 8, n)
    feats = pd.DataFrame(
        {
            "recency_days": np.where(
                rng.random(n) < 0.5, rng.integers(0, 400, n), rng.uniform(0, 400, n)
            ),  # fmt: skip
            "gap_mean_days": np.where(days > 1, rng.choice([0.0, 30.0, 45.5, 90.0], n), np.nan),
            "n_order_days": days,
            "n_orders": days + rng.integers(0, 3, n),
            "overdue_ratio": np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 5, n)),
            "bgnbd_p_alive": rng.random(n),
            "spend_change_90d": rng.uniform(-1, 1, n),
            "orders_trend_90d": rng.integers(-2, 3, n).astype(float),
            "orders_trend_180d": rng.integers(-2, 3, n).astype(float),
            "n_returns": rng.integers(0, 3, n),
            "return_rate": rng.random(n),
            "orders_30d": rng.integers(0, 2, n),
            "orders_90d": rng.integers(0, 3, n),
            "orders_prev_90d": rng.integers(0, 3, n),
            "monetary_total": rng.uniform(0, 500, n),
            "monetary_mean": rng.uniform(0, 100, n),
            "tenure_days": rng.uniform(0, 900, n),
            "weekend_share": rng.random(n),
        }
    )
    # contributions with ties, zeros and negatives, so the walk stops and skips as it should
    contrib = pd.DataFrame(
        rng.choice([-0.5, 0.0, 0.1, 0.2, 0.2, 0.7, 1.3], size=feats.shape), columns=feats.columns
    )
    population = {"n_orders": 3.0, "monetary_total": 150.0, "gap_mean_days": 40.0,
                  "tenure_days": 400.0}  # fmt: skip
    for top, pop in ((3, population), (3, None), (1, population), (6, population)):
        got = reasons(contrib, feats, top=top, population=pop)
        assert got.tolist() == one_by_one(contrib, feats, top, pop)
    assert got.str.contains("; ").mean() > 0.5  # the case is rich: most get several reasons
    # contributions sorted a few customers at a time (3,000 = 428 x 7 + 4): the same reasons
    monkeypatch.setattr(explain, "SORT_ROWS", 7)
    assert reasons(contrib, feats, top=3, population=population).tolist() == one_by_one(
        contrib, feats, 3, population
    )


def test_csv_files_are_written_byte_for_byte_as_pandas_writes_them(tmp_path, monkeypatch):
    import csv

    import pyarrow as pa

    from winback.export import neutralize_csv, write_csv

    rng = np.random.default_rng(3)
    n = 5000
    texts = np.array(['a"b', "", "x,y", "line\nbreak", "cr\r\nlf", "=SUM(1)", "ünï", " -2"],
                     dtype=object)  # fmt: skip
    floats = np.concatenate([rng.random(n - 13).round(3), [0.0, -0.0, 5.0, 1e-5, 1e-4, 1e-7,
                             1e9, 123456789012.5, 1e16, 0.1 + 0.2, np.inf, -np.inf, np.nan]])  # fmt: skip
    frame = pd.DataFrame(
        {
            "id": pd.Series(rng.integers(0, 10**6, n).astype(str), dtype="str"),
            "text": pd.Series(rng.choice(texts, n), dtype="str").mask(rng.random(n) < 0.1),
            "plain": pd.Series(
                rng.choice(np.array(["q", None, 'say "hi"'], dtype=object), n), dtype=object
            ),  # fmt: skip
            "rank": np.arange(1, n + 1),
            "maybe": pd.array(
                np.where(rng.random(n) < 0.1, None, rng.integers(-3, 5, n)), dtype="Int64"
            ),  # fmt: skip
            "flag": rng.random(n) < 0.3,
            "maybe_flag": pd.array(
                np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean"
            ),  # fmt: skip
            "p": rng.permutation(floats),
            "money": np.where(rng.random(n) < 0.05, np.nan, rng.normal(0, 1e4, n)).round(2),
            "raw": rng.normal(0, 1, n) * 10.0 ** rng.integers(-12, 18, n),
            "segment": pd.Categorical(rng.choice(["About to sleep", 'Q"uote', None], n)),
            "numbers_as_categories": pd.Categorical(rng.choice([1, 2, 3], n)),
            # nearly a text a row, as the reasons: more categories than most blocks have rows
            "said": pd.Categorical(
                [f"{t} {i % 900}" for t, i in zip(rng.choice(texts, n), range(n), strict=True)]
            ),
            "day": pd.array(  # an Arrow date, as the next-order dates are held
                pa.array(
                    np.datetime64("2024-12-30") + rng.integers(0, 900, n).astype("timedelta64[D]"),
                    mask=rng.random(n) < 0.2,
                    type=pa.date32(),
                ),
                dtype=pd.ArrowDtype(pa.date32()),
            ),
        }
    )

    def pandas_bytes(f: pd.DataFrame) -> bytes:
        path = tmp_path / "pandas.csv"
        neutralize_csv(f).to_csv(path, index=False, lineterminator="\n",
                                 quoting=csv.QUOTE_NONNUMERIC, encoding="utf-8")  # fmt: skip
        return path.read_bytes()

    cases = {
        "every kind": frame,
        "no rows": frame.head(0),
        "one column": frame[["text"]],
        "a slice": frame.iloc[1234:1300],
        # types written by pandas itself: dates, objects holding numbers
        "dates": frame.assign(
            when=pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["rank"], "h")
        ),
        "objects": frame.assign(mixed=pd.Series([1, "a", 2.5, None] * (n // 4), dtype=object)),
    }
    for name, case in cases.items():
        write_csv(case, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == pandas_bytes(case), name
    # built a block of rows at a time: the same bytes, whatever the block
    import winback.export

    some = frame.head(600)
    for rows in (1, 7, 599, 600):
        monkeypatch.setattr(winback.export, "CSV_BLOCK_ROWS", rows)
        write_csv(some, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == pandas_bytes(some), rows
    # an Arrow dictionary of texts, as the score table holds the reasons: written as the texts
    # (CSV and Parquet byte for byte as the same column held as text)
    from winback.export import write_parquet

    codes = frame["said"].cat.codes.to_numpy().astype(np.int32)
    texts = pa.array(frame["said"].cat.categories.astype(str), type=pa.large_string())
    coded = frame.assign(
        said=pd.arrays.ArrowExtensionArray(
            pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), texts)
        )
    )
    as_text = frame.assign(said=frame["said"].astype("string"))
    for rows in (7, 600):
        monkeypatch.setattr(winback.export, "CSV_BLOCK_ROWS", rows)
        write_csv(coded, tmp_path / "ours.csv")
        assert (tmp_path / "ours.csv").read_bytes() == pandas_bytes(as_text), rows
    write_parquet(coded, tmp_path / "coded.parquet")
    write_parquet(as_text, tmp_path / "text.parquet")
    assert (tmp_path / "coded.parquet").read_bytes() == (tmp_path / "text.parquet").read_bytes()


def test_control_flags_follow_the_documented_digest():
    import hashlib

    ids = ["C000001", "42", "kunde-ä", "0007", "x" * 300]
    # the rule, by hand: the first 8 bytes of sha256("salt|campaign|id") over 2**64 < share
    want = [
        int.from_bytes(hashlib.sha256(f"s|at_risk|{c}".encode()).digest()[:8], "big") / 2**64
        for c in ids
    ]
    for share in (0.2, 0.5, 0.8):
        got = control_flags(pd.Series(ids, dtype="str"), "at_risk", "s", share)
        np.testing.assert_array_equal(got, np.array(want) < share)
        np.testing.assert_array_equal(control_flags(iter(ids), "at_risk", "s", share), got)
    assert control_flags([], "at_risk", "s", 0.1).shape == (0,)


def test_plain_columns_spell_out_categories_in_their_categories_dtype():
    from winback.export import plain_columns

    codes = np.array([0, 1, 2, -1, 1])
    frame = pd.DataFrame(
        {
            "arrow": pd.Categorical.from_codes(codes, pd.Index(["a", "b", 'x"y'], dtype="str")),
            "n": range(5),
            "objects": pd.Categorical.from_codes(codes, pd.Index(["a", "b", "c"], dtype=object)),
        },
        index=[5, 6, 7, 8, 9],
    )
    out = plain_columns(frame)
    assert out["arrow"].dtype == "str" and out["objects"].dtype == object
    assert out.index.tolist() == [5, 6, 7, 8, 9]
    assert out["arrow"].tolist()[:3] == ["a", "b", 'x"y'] and out["arrow"].isna().tolist() == [
        False, False, False, True, False
    ]  # fmt: skip
    assert out["arrow"].iloc[4] == "b" and out["objects"].tolist()[:3] == ["a", "b", "c"]
    assert out["n"].tolist() == list(range(5))
