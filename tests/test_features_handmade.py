"""Five customers whose features and labels are worked out by hand, cell by cell.

Cutoff T = 2024-01-01 00:00 UTC, lookback 365 days, horizon H = 30 days (T + H = 2024-01-31).

a: 2023-07-01 (Sat) 40 books, 2023-10-01 (Sun) 60 books, 2024-01-01 00:00 (exactly T) 20,
   2024-01-31 00:00 (exactly T + H) 15.  -> active; not churned (the order at T + H counts).
b: 2023-12-02 12:00 (Sat) 25.50 toys; a return of 25.50 on 2023-12-10.  -> active; churned.
c: 2022-12-15 30; a return on 2023-06-01.  -> last purchase 382 days ago: not active (a return is
   not a purchase).
d: 2023-01-01 00:00 (exactly T - 365) 10; 2024-01-15 8.  -> not active: the window is (T-365, T].
e: 2022-11-20 (Sun) 100 books, 2023-03-10 (Fri) 30 music + 50 books at the same instant,
   2023-12-20 (Wed) 10 books + 70 music at the same instant, 2024-01-20 5.  -> active; not churned.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.conftest import frame, orders_of
from winback.features import build_features
from winback.labels import build_labels

T = "2024-01-01"
ROWS = [
    ("a", "2023-07-01", 40.0, "books"),
    ("a", "2023-10-01", 60.0, "books"),
    ("a", "2024-01-01 00:00:00", 20.0, None),
    ("a", "2024-01-31 00:00:00", 15.0, "books"),
    ("b", "2023-12-02 12:00:00", 25.5, "toys"),
    ("b", "2023-12-10", -25.5, "toys"),
    ("c", "2022-12-15", 30.0, "music"),
    ("c", "2023-06-01", -30.0, "music"),
    ("d", "2023-01-01 00:00:00", 10.0, "books"),
    ("d", "2024-01-15", 8.0, "books"),
    ("e", "2022-11-20", 100.0, "books"),
    ("e", "2023-03-10", 30.0, "music"),
    ("e", "2023-03-10", 50.0, "books"),
    ("e", "2023-12-20", 10.0, "books"),
    ("e", "2023-12-20", 70.0, "music"),
    ("e", "2024-01-20", 5.0, "books"),
]

NAN = float("nan")
EXPECTED = {
    "a": dict(
        recency_days=0.0,
        tenure_days=184.0,
        n_orders=3,
        n_order_days=3,
        monetary_total=120.0,
        monetary_mean=40.0,
        max_order_amount=60.0,
        last_order_amount=20.0,
        orders_30d=1,
        spend_30d=20.0,
        orders_90d=1,
        spend_90d=20.0,
        orders_180d=2,
        spend_180d=80.0,
        orders_365d=3,
        spend_365d=120.0,
        orders_prev_90d=1,
        spend_prev_90d=60.0,
        orders_trend_90d=0.0,
        spend_change_90d=20 / 60 - 1,
        orders_trend_180d=1 / 3,
        gap_mean_days=92.0,
        gap_median_days=92.0,
        gap_std_days=0.0,
        last_gap_days=92.0,
        overdue_ratio=0.0,
        orders_per_year=3 * 365 / 184,
        n_returns=0,
        return_amount=0.0,
        return_rate=0.0,
        net_spend=120.0,
        weekend_share=2 / 3,
        orders_ahead_90d_last_year=0,
        n_categories=1,
        top_category_share=1.0,
        first_order_amount=40.0,
        last_vs_first_amount=0.5,
        last_vs_mean_amount=0.5,
        returns_90d=0,
        days_since_return=NAN,
        returned_since_last_order=0,
        cutoff_season_sin=0.0,  # T is January 1: the angle of the year is 0
        cutoff_season_cos=1.0,
        history_days=407.0,  # the data starts with e's order of 2022-11-20
    ),
    "b": dict(
        recency_days=29.5,
        tenure_days=29.5,
        n_orders=1,
        n_order_days=1,
        monetary_total=25.5,
        monetary_mean=25.5,
        max_order_amount=25.5,
        last_order_amount=25.5,
        orders_30d=1,
        spend_30d=25.5,
        orders_90d=1,
        spend_90d=25.5,
        orders_180d=1,
        spend_180d=25.5,
        orders_365d=1,
        spend_365d=25.5,
        orders_prev_90d=0,
        spend_prev_90d=0.0,
        orders_trend_90d=1.0,
        spend_change_90d=NAN,
        orders_trend_180d=1.0,
        gap_mean_days=NAN,
        gap_median_days=NAN,
        gap_std_days=NAN,
        last_gap_days=NAN,
        overdue_ratio=NAN,
        orders_per_year=365 / 30,
        n_returns=1,
        return_amount=25.5,
        return_rate=0.5,
        net_spend=0.0,
        weekend_share=1.0,
        orders_ahead_90d_last_year=0,
        n_categories=1,
        top_category_share=1.0,
        first_order_amount=25.5,
        last_vs_first_amount=1.0,
        last_vs_mean_amount=1.0,
        returns_90d=1,
        days_since_return=22.0,
        returned_since_last_order=1,
        cutoff_season_sin=0.0,  # T is January 1: the angle of the year is 0
        cutoff_season_cos=1.0,
        history_days=407.0,  # the data starts with e's order of 2022-11-20
    ),
    "e": dict(
        recency_days=12.0,
        tenure_days=407.0,
        n_orders=5,
        n_order_days=3,
        monetary_total=260.0,
        monetary_mean=52.0,
        max_order_amount=100.0,
        last_order_amount=70.0,
        orders_30d=2,
        spend_30d=80.0,
        orders_90d=2,
        spend_90d=80.0,
        orders_180d=2,
        spend_180d=80.0,
        orders_365d=4,
        spend_365d=160.0,
        orders_prev_90d=0,
        spend_prev_90d=0.0,
        orders_trend_90d=1.0,
        spend_change_90d=NAN,
        orders_trend_180d=0.0,
        gap_mean_days=197.5,
        gap_median_days=197.5,
        gap_std_days=175 / math.sqrt(2),
        last_gap_days=285.0,
        overdue_ratio=12 / 197.5,
        orders_per_year=5 * 365 / 407,
        n_returns=0,
        return_amount=0.0,
        return_rate=0.0,
        net_spend=260.0,
        weekend_share=0.2,
        orders_ahead_90d_last_year=2,
        n_categories=2,
        top_category_share=0.6,
        first_order_amount=100.0,
        last_vs_first_amount=0.7,
        last_vs_mean_amount=70 / 52,
        returns_90d=0,
        days_since_return=NAN,
        returned_since_last_order=0,
        cutoff_season_sin=0.0,  # T is January 1: the angle of the year is 0
        cutoff_season_cos=1.0,
        history_days=407.0,  # the data starts with e's order of 2022-11-20
    ),
}


@pytest.fixture(scope="module")
def orders():
    df = frame(ROWS, columns=("customer_id", "order_ts", "amount", "category"))
    return orders_of(df, category="category")


@pytest.fixture(scope="module")
def feats(orders):
    return build_features(orders, [T], lookback_days=365).set_index("customer_id")


def test_population_is_customers_with_a_purchase_in_the_lookback_window(feats):
    # c has only a return in the window, d's order is exactly at T - 365 (outside (T-365, T]).
    assert sorted(feats.index) == ["a", "b", "e"]
    assert (feats["cutoff_ts"] == pd.Timestamp(T, tz="UTC")).all()


@pytest.mark.parametrize("customer", sorted(EXPECTED))
def test_features_match_hand_computed_values(feats, customer):
    row = feats.loc[customer]
    for name, want in EXPECTED[customer].items():
        got = row[name]
        if isinstance(want, float) and math.isnan(want):
            assert pd.isna(got), f"{customer}.{name}: expected missing, got {got}"
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), f"{customer}.{name}"


def test_every_feature_column_is_checked(feats):
    checked = set(EXPECTED["a"])
    assert set(feats.columns) - {"cutoff_ts"} == checked


def test_order_exactly_at_cutoff_counts_for_features_not_label(orders, feats):
    assert feats.loc["a", "recency_days"] == 0.0
    labels = build_labels(orders, [T], horizon_days=1, lookback_days=365).set_index("customer_id")
    # a's order at T is not in (T, T + 1 day]: churned over one day.
    assert bool(labels.loc["a", "churned"]) is True


def test_labels_count_an_order_exactly_at_cutoff_plus_horizon(orders):
    labels = build_labels(orders, [T], horizon_days=30, lookback_days=365).set_index("customer_id")
    assert sorted(labels.index) == ["a", "b", "e"]
    assert labels.loc["a", "orders_in_horizon"] == 1  # 2024-01-31 00:00 = T + 30 days
    assert not labels.loc["a", "churned"]
    assert labels.loc["b", "churned"]  # only a return, then nothing
    assert labels.loc["e", "orders_in_horizon"] == 1
    assert not labels.loc["e", "churned"]
    # one day shorter, a's order at T + 30 falls outside, e's on day 19 stays inside
    short = build_labels(orders, [T], horizon_days=29, lookback_days=365).set_index("customer_id")
    assert short.loc["a", "churned"] and not short.loc["e", "churned"]


def test_cutoffs_whose_horizon_runs_past_the_data_get_no_labels(orders, caplog):
    # the data ends 2024-01-31; 2024-01-15 + 30 days is past it
    labels = build_labels(orders, [T, "2024-01-15"], horizon_days=30, lookback_days=365)
    assert set(labels["cutoff_ts"]) == {pd.Timestamp(T, tz="UTC")}
    assert "2024-01-15" in caplog.text


def test_many_cutoffs_in_one_pass_equal_one_at_a_time(orders):
    cuts = ["2023-11-01", "2023-12-15", T]
    together = build_features(orders, cuts)
    apart = pd.concat([build_features(orders, [c]) for c in cuts], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart)
