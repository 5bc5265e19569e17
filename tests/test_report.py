"""Retention KPIs, cohorts and losses by group, worked out by hand; the HTML report end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import frame, hidden_in_browser, orders_of
from winback.errors import UsageError
from winback.report import (
    active_window_days,
    cohort_table,
    overall_repeat_rate,
    period_bounds,
    retention_by,
    retention_kpis,
)
from winback.segments import rfm_segments


def _seed_log() -> pd.DataFrame:
    """March 2023 with a 31-day active window: 100 customers active on March 1 (a purchase on
    Feb 15), 60 of them buy again in March (15 of those twice), 30 new customers in March.
    One retained customer returns 5 in March, one lost customer returns 10 (returns are never
    activity)."""
    rows = []
    for i in range(100):
        rows.append((f"s{i:03}", "2023-02-15 10:00", 10.0))
    for i in range(60):
        rows.append((f"s{i:03}", "2023-03-10 10:00", 20.0))
    for i in range(15):
        rows.append((f"s{i:03}", "2023-03-25 10:00", 20.0))
    for i in range(30):
        rows.append((f"n{i:02}", "2023-03-20 10:00", 50.0))
    rows.append(("s000", "2023-03-12 10:00", -5.0))
    rows.append(("s099", "2023-03-05 10:00", -10.0))
    return frame(rows)


def test_seed_example_100_at_start_30_new_90_at_end_is_60_percent_retention():
    k = retention_kpis(
        orders_of(_seed_log()), "month", lookback_days=31, as_of=datetime(2023, 3, 31)
    )
    assert list(k["period"]) == ["2023-02", "2023-03"]
    mar = k.iloc[1]
    assert (mar["S"], mar["E"], mar["N"], mar["retained"], mar["reactivated"]) == (
        100,
        90,
        30,
        60,
        0,
    )
    assert mar["retention_rate"] == pytest.approx(0.60)
    assert mar["churn_rate"] == pytest.approx(0.40)
    assert mar["strict_retention_rate"] == pytest.approx(0.60)
    # 90 buyers in March, 15 of them twice
    assert (mar["buyers"], mar["repeat_buyers"]) == (90, 15)
    assert mar["repeat_purchase_rate"] == pytest.approx(15 / 90)
    # net March revenue of the 100: 60 x 20 + 15 x 20 - 5 - 10 = 1485, against 100 x 10 in Feb
    assert mar["revenue_from_start_customers"] == pytest.approx(1485.0)
    assert mar["their_revenue_prev_period"] == pytest.approx(1000.0)
    assert mar["revenue_retention"] == pytest.approx(1.485)
    assert mar["revenue"] == pytest.approx(1485.0 + 30 * 50)


def test_a_period_with_nobody_active_at_the_start_has_empty_rates():
    k = retention_kpis(
        orders_of(_seed_log()), "month", lookback_days=31, as_of=datetime(2023, 3, 31)
    )
    feb = k.iloc[0]
    assert (feb["S"], feb["N"], feb["E"]) == (0, 100, 100)
    assert math.isnan(feb["retention_rate"]) and math.isnan(feb["churn_rate"])
    assert math.isnan(feb["revenue_retention"])
    assert feb["repeat_purchase_rate"] == 0.0


def test_incomplete_last_period_is_left_out_and_orders_after_the_as_of_change_nothing():
    log = _seed_log()
    k = retention_kpis(orders_of(log), "month", lookback_days=31, as_of=datetime(2023, 3, 30))
    assert list(k["period"]) == ["2023-02"]
    later = pd.concat([log, frame([("s050", "2023-04-02", 99.0), ("x", "2023-04-03", 5.0)])])
    a = retention_kpis(orders_of(log), "month", 31, datetime(2023, 3, 31))
    b = retention_kpis(orders_of(later), "month", 31, datetime(2023, 3, 31))
    pd.testing.assert_frame_equal(a, b)


def test_customers_coming_back_after_a_lapse_count_as_reactivated():
    # z bought in December 2022 only: not active on March 1 (31-day window), back on March 15
    log = pd.concat([_seed_log(), frame([("z", "2022-12-01", 10.0), ("z", "2023-03-15", 10.0)])])
    k = retention_kpis(orders_of(log), "month", lookback_days=31, as_of=datetime(2023, 3, 31))
    mar = k.set_index("period").loc["2023-03"]
    assert (mar["S"], mar["E"], mar["N"], mar["retained"], mar["reactivated"]) == (
        100,
        91,
        30,
        60,
        1,
    )
    assert mar["retention_rate"] == pytest.approx(0.61)
    assert mar["strict_retention_rate"] == pytest.approx(0.60)


def test_active_window_never_shorter_than_the_period():
    assert active_window_days(365, "month") == 365
    assert active_window_days(30, "month") == 31
    assert active_window_days(365, "year") == 366
    with pytest.raises(UsageError, match="period must be one of"):
        active_window_days(365, "week")


def test_quarters_and_years_are_calendar_periods():
    q = period_bounds(datetime(2023, 2, 10), datetime(2024, 1, 1), "quarter")
    assert list(q["period"]) == ["2023-Q1", "2023-Q2", "2023-Q3", "2023-Q4"]
    assert q["prev_start"].iloc[0] == pd.Timestamp("2022-10-01")
    y = period_bounds(datetime(2023, 2, 10), datetime(2024, 6, 1), "year")
    assert list(y["period"]) == ["2023"]


def test_overall_repeat_purchase_rate():
    n, rep, rate = overall_repeat_rate(orders_of(_seed_log()), datetime(2023, 3, 31))
    # 130 customers bought; the 60 retained bought twice or more (returns do not count)
    assert (n, rep) == (130, 60)
    assert rate == pytest.approx(60 / 130)


def test_cohort_cells_are_shares_and_empty_when_the_cohort_is_too_young():
    log = frame(
        [
            ("a", "2023-01-05", 10.0), ("a", "2023-01-20", 10.0), ("a", "2023-02-03", 10.0),
            ("b", "2023-01-10", 10.0), ("b", "2023-02-11", 10.0), ("b", "2023-02-12", 10.0),
            ("c", "2023-01-15", 10.0), ("c", "2023-03-01", 10.0),
            ("d", "2023-01-31", 10.0), ("d", "2023-02-01", -10.0),
            ("e", "2023-02-02", 10.0), ("e", "2023-03-30", 10.0),
            ("f", "2023-02-27", 10.0),
            ("g", "2023-03-03", 10.0),
        ]
    )  # fmt: skip
    c = cohort_table(orders_of(log), datetime(2023, 3, 31))
    assert list(c.index) == ["2023-01", "2023-02", "2023-03"]
    assert list(c["customers"]) == [4, 2, 1]
    # January: a and b bought in February (d's February row is a return), c in March
    assert c.loc["2023-01", "1"] == pytest.approx(0.5)
    assert c.loc["2023-01", "2"] == pytest.approx(0.25)
    assert c.loc["2023-02", "1"] == pytest.approx(0.5)
    assert math.isnan(c.loc["2023-02", "2"])  # April is not over: empty, not zero
    assert math.isnan(c.loc["2023-03", "1"])
    mid = cohort_table(orders_of(log), datetime(2023, 3, 15))
    assert list(mid.columns) == ["customers", "1"]  # no cohort is two months old yet
    assert math.isnan(mid.loc["2023-02", "1"])
    assert mid.loc["2023-01", "1"] == pytest.approx(0.5)


def test_retention_by_channel_uses_the_last_channel_before_the_period():
    log = frame(
        [
            ("a", "2023-02-10", 10.0, "web"), ("a", "2023-02-20", 10.0, "app"),
            ("a", "2023-03-05", 10.0, "web"),
            ("b", "2023-02-11", 10.0, "app"),
            ("c", "2023-02-12", 10.0, "web"), ("c", "2023-03-09", 10.0, "app"),
            ("d", "2023-02-13", 10.0, "web"),
        ],
        columns=("customer_id", "order_ts", "amount", "channel"),
    )  # fmt: skip
    by = retention_by(
        orders_of(log, channel="channel"), "channel", "month", 31, datetime(2023, 3, 31)
    )
    mar = by[by["period"] == "2023-03"].set_index("channel")
    # app: a (kept), b (lost); web: c (kept), d (lost)
    assert mar.loc["app", ["S", "retained", "lost"]].tolist() == [2, 1, 1]
    assert mar.loc["web", ["S", "retained", "lost"]].tolist() == [2, 1, 1]
    assert mar.loc["app", "churn_rate"] == pytest.approx(0.5)
    assert retention_by(orders_of(log), "channel", "month", 31, datetime(2023, 3, 31)).empty


def test_segments_at_the_period_start_match_the_lists_segments(synth_frame):
    o = orders_of(synth_frame)
    by = retention_by(o, "segment", "quarter", 365, datetime(2023, 12, 31))
    start = pd.Timestamp("2023-07-01", tz="UTC")
    df = synth_frame[synth_frame["amount"] > 0].copy()
    df["customer_id"] = df["customer_id"].astype(str)
    before = df[df["order_ts"] < start].sort_values("order_ts")
    last = before.groupby("customer_id").agg(last=("order_ts", "max"), n=("order_ts", "size"))
    active = last[last["last"] >= start - pd.Timedelta(days=365)]
    recency = (start - active["last"]).dt.total_seconds() / 86400
    seg = rfm_segments(recency, active["n"])
    end = pd.Timestamp("2023-10-01", tz="UTC")
    inq = df[(df["order_ts"] >= end - pd.Timedelta(days=365)) & (df["order_ts"] < end)]
    kept = active.index.isin(inq["customer_id"].unique())
    expected = (
        pd.DataFrame({"segment": seg.to_numpy(), "kept": kept})
        .groupby("segment")
        .agg(S=("kept", "size"), retained=("kept", "sum"))
    )
    got = by[by["period"] == "2023-Q3"].set_index("segment")[["S", "retained"]]
    pd.testing.assert_frame_equal(
        got.sort_index().astype("int64"), expected.sort_index().astype("int64"), check_names=False
    )


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.refs, self.stack = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.images.append((self.sections[-1] if self.sections else None, a.get("src", "")))
        for key in ("src", "href"):
            if key in a:
                self.refs.append(a[key])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "winback", *args], capture_output=True, text=True, timeout=600,
        cwd=cwd, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"},
    )  # fmt: skip


def test_report_html_is_valid_self_contained_and_has_every_section(tmp_path, synth_frame):
    synth_frame.to_parquet(tmp_path / "orders.parquet")
    cut = synth_frame[synth_frame["order_ts"] <= pd.Timestamp("2023-10-31 23:59", tz="UTC")]
    cut.to_parquet(tmp_path / "orders_oct.parquet")
    m = ["--set", "orders.columns.channel=channel", "--set", "labels.horizon_days=60"]
    m += ["--set", "training.n_cutoffs=4", "--set", "models_dir=models"]
    steps = [
        ["train", "--orders", "orders_oct.parquet", "--as-of", "2023-10-31", *m],
        [
            "score",
            "--orders",
            "orders_oct.parquet",
            "--as-of",
            "2023-10-31",
            "--out",
            "exports",
            *m,
        ],
        ["report", "--orders", "orders.parquet", "--out", "reports", "--exports", "exports", *m],
    ]
    for args in steps:
        if args[0] == "report":  # a link of the user's beside the exports is not an export
            (tmp_path / "exports" / "latest").symlink_to("2023-10-31")
        r = _run(args, tmp_path)
        assert r.returncode == 0, r.stderr
    assert "retention" in r.stdout and "reports/report.html" in r.stdout
    assert "active customers bought nothing in the next 60 days" in r.stdout
    page = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
    p = _Page()
    p.feed(page)
    p.close()
    assert p.stack == [], "unclosed tags"
    assert p.sections == [
        "horizon", "retention", "cohorts", "losses", "campaigns", "learned", "lists", "model"
    ]  # fmt: skip
    assert hidden_in_browser(tmp_path / "reports" / "report.html") == []
    with_images = {s for s, src in p.images}
    # nothing was learned from these exports yet: that section says how to, without a plot
    assert with_images == set(p.sections) - {"learned"}
    assert "campaigns.learned is not set: nothing learned yet" in page
    assert all(src.startswith("data:image/png;base64,") for _, src in p.images)
    assert all(ref.startswith(("#", "data:")) for ref in p.refs), "a network or file reference"
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    for name in ("kpis.csv", "cohorts.csv", "retention_by_segment.csv", "retention_by_channel.csv",
                 "list_sizes.csv", "campaign_2023-10-31.csv", "churn_horizon.csv"):  # fmt: skip
        assert (tmp_path / "reports" / name).is_file(), name
    kpis = pd.read_csv(tmp_path / "reports" / "kpis.csv")
    assert kpis["period"].iloc[-1] == "2023-11"  # the last order is on Dec 30: December is open
    assert np.isfinite(kpis["retention_rate"].iloc[1:]).all()


def test_report_without_exports_or_model_says_so_and_bad_period_is_a_usage_error(
    tmp_path, synth_frame
):
    synth_frame.to_parquet(tmp_path / "orders.parquet")
    r = _run(
        ["report", "--orders", "orders.parquet", "--out", "r", "--period", "quarter"], tmp_path
    )
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    assert "No exports in exports" in page and "No champion of" in page
    assert not (tmp_path / "mlflow.db").exists()  # looking for a champion creates no store
    bad = _run(["report", "--orders", "orders.parquet", "--period", "week"], tmp_path)
    assert bad.returncode == 2 and "month, quarter or year" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_browser_check_sees_a_table_too_wide_for_the_window(tmp_path):
    from winback.html import Section, render_page, table_tag

    wide = pd.DataFrame({f"column_{i:02d}": [12345.678] for i in range(40)})
    narrow = pd.DataFrame({"scope": ["all"], "p": ["< 0.001"]})
    sec = Section("wide", "Wide").add(table_tag(wide))
    ok = Section("narrow", "Narrow").add(table_tag(narrow))
    (tmp_path / "page.html").write_text(render_page("t", "s", [ok, sec]))
    cut = hidden_in_browser(tmp_path / "page.html")
    assert len(cut) == 1 and cut[0].startswith("wide:table:")


def test_readout_tables_and_p_values_by_hand():
    from winback.report import p_value, readout_tables

    assert [p_value(x) for x in (0.0000997, 0.0841, 0.001, float("nan"))] == [
        "< 0.001", "0.084", "0.001", ""
    ]  # fmt: skip
    t = pd.DataFrame(
        {
            "scope": ["all"], "n_treatment": [900], "n_control": [100],
            "retention_treatment": [0.30], "retention_control": [0.20],
            "incremental_retention": [0.10], "incremental_retention_lo": [0.02],
            "incremental_retention_hi": [0.18], "incremental_retention_p": [0.0123],
            "incremental_retention_p_adjusted": [0.0369],
            "revenue_per_customer_treatment": [12.0], "revenue_per_customer_control": [10.0],
            "incremental_revenue": [1800.0], "incremental_revenue_lo": [-200.0],
            "incremental_revenue_hi": [3800.0], "cost": [500.0], "net_revenue": [1300.0],
            "net_revenue_lo": [-700.0], "net_revenue_hi": [3300.0],
        }
    )  # fmt: skip
    bought, money = readout_tables(t)
    assert bought.iloc[0].tolist() == [
        "all", 900, 100, "30.0%", "20.0%", "+10.0 [+2.0, +18.0]", "0.012", "0.037"
    ]  # fmt: skip
    assert money.iloc[0].tolist() == [
        "all", 12.0, 10.0, "1,800 [-200, 3,800]", 500.0, "1,300 [-700, 3,300]"
    ]  # fmt: skip


def test_churn_over_the_model_horizon_by_hand():
    from winback.report import horizon_churn

    log = frame(
        [
            ("A", "2024-01-10 10:00", 10.0),
            ("A", "2024-03-05 10:00", 10.0),
            ("B", "2024-01-20 10:00", 10.0),
            ("C", "2024-02-15 10:00", 10.0),
            ("C", "2024-04-03 10:00", -10.0),  # a return is not a purchase
        ]
    )
    h = horizon_churn(orders_of(log), "month", 30, 365, as_of=datetime(2024, 4, 30))
    # Feb 1: A and B active, neither buys by Mar 2; Mar 1: A, B, C active, A buys on Mar 5;
    # Apr 1: all three active, nobody buys by May 1 (the end of the as-of day: included)
    assert h["period"].tolist() == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert h["active"].tolist() == [0, 2, 3, 3]
    assert h["churned"].tolist() == [0, 2, 2, 3]
    assert np.isnan(h["churn_rate"].iloc[0])
    assert h["churn_rate"].iloc[1:].tolist() == pytest.approx([1.0, 2 / 3, 1.0])
    # over 45 days, April (complete) is left out: its 45 days have not passed by May 1;
    # March's have (Apr 15), and A's order on Mar 5 falls in them
    longer = horizon_churn(orders_of(log), "month", 45, 365, as_of=datetime(2024, 4, 30))
    assert longer["period"].tolist() == ["2024-01", "2024-02", "2024-03"]
    assert longer["churned"].tolist() == [0, 1, 2]  # Feb 1 + 45 days reaches A's Mar 5
