"""The synthetic generator: seeded, realistic in shape, and in the orders contract."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.errors import UsageError
from winback.synth import (
    SynthParams,
    customers_for_orders,
    generate_history,
    generate_orders,
    scenario_params,
)


def test_same_seed_same_orders_other_seed_other_orders():
    a = generate_orders(SynthParams(n_customers=300, seed=1))
    b = generate_orders(SynthParams(n_customers=300, seed=1))
    c = generate_orders(SynthParams(n_customers=300, seed=2))
    pd.testing.assert_frame_equal(a, b)
    assert not a["amount"].equals(c["amount"])


def test_shape_of_the_history():
    df = generate_orders(SynthParams(n_customers=4000, start="2022-01-01", end="2024-12-31"))
    assert df["order_id"].is_unique and df["order_ts"].is_monotonic_increasing
    assert df["order_ts"].min() >= pd.Timestamp("2022-01-01", tz="UTC")
    assert df["order_ts"].max() < pd.Timestamp("2024-12-31", tz="UTC")
    assert df["customer_id"].nunique() == 4000  # every customer buys at least once
    ret = df["amount"] < 0
    assert 0.02 < ret.mean() < 0.06  # about 4% of orders come back
    purchases = df[~ret]
    per_customer = purchases.groupby("customer_id").size()
    assert 0.2 < (per_customer == 1).mean() < 0.6  # many one-time buyers
    monthly = purchases.groupby(purchases["order_ts"].dt.month).size() / 3
    assert monthly[[11, 12]].mean() > 1.3 * monthly[[3, 4, 5, 6]].mean()  # the seasonal peak
    first = purchases.groupby("customer_id")["order_ts"].min()
    assert (first.dt.year == 2024).sum() > (first.dt.year == 2022).sum()  # growing arrivals
    assert set(df["category"].cat.categories) >= {"books", "music"}
    assert df["amount"].abs().min() >= 0.49


def test_validates_cleanly_as_orders():
    df = generate_orders(SynthParams(n_customers=500))
    o = orders_of(df, category="category", channel="channel")
    assert o.report.problems == [] and o.report.n_orders == len(df)
    assert o.report.n_returns == int((df["amount"] < 0).sum())


def test_customers_for_orders_hits_the_target_roughly():
    n = customers_for_orders(50_000)
    got = len(generate_orders(SynthParams(n_customers=n)))
    assert abs(got - 50_000) / 50_000 < 0.1


def test_bad_parameters_are_refused():
    with pytest.raises(UsageError, match="customers"):
        generate_orders(SynthParams(n_customers=0))
    with pytest.raises(UsageError, match="30 days"):
        generate_orders(SynthParams(start="2024-01-01", end="2024-01-10"))


# Scenarios: each one's defining property, asserted on what it generates.


def _repeats(history: pd.DataFrame) -> pd.DataFrame:
    purchases = history[history["amount"] > 0]
    return purchases[purchases.duplicated("customer_id")]


def test_btyd_scenario_is_bgnbd_exactly():
    from winback.btyd import BGNBD, summarize

    p = scenario_params("btyd", n_customers=20_000)
    df = generate_orders(p)
    s = summarize(df.assign(is_return=df["amount"] < 0), pd.Timestamp(p.end, tz="UTC"))
    bg = BGNBD().fit(s["frequency"], s["recency"], s["T"])
    # BG/NBD fitted on the file finds the parameters it was drawn with (rates per day) ...
    truth = {"r": p.rate_shape, "alpha": 1 / p.rate_scale, "a": p.dropout_a, "b": p.dropout_b}
    for name, want in truth.items():
        assert bg.params_[name] == pytest.approx(want, rel=0.1), name
    # ... and explains it better than MBG/NBD, whose customers may leave after a first order
    mbg = BGNBD(variant="mbg").fit(s["frequency"], s["recency"], s["T"])
    assert bg.log_likelihood_ > mbg.log_likelihood_ + 100
    months = _repeats(generate_history(p))["order_ts"].dt.month
    assert months.isin([11, 12]).mean() < 0.25  # no peak: Nov-Dec hold about 2 months in 12


def test_seasonal_scenario_has_a_peak_and_customers_who_buy_only_in_it():
    h = generate_history(scenario_params("seasonal", n_customers=8_000))
    repeats = _repeats(h)
    in_peak = repeats["order_ts"].dt.month.isin([11, 12])
    assert in_peak.mean() > 0.5  # Nov-Dec: 2 months of 12 hold most repeat purchases
    only = repeats["season_only"]
    assert 0.2 < h.drop_duplicates("customer_id")["season_only"].mean() < 0.4
    assert in_peak[only].all() and not in_peak[~only].all()


def test_censored_scenario_hides_history_from_before_the_file():
    p = scenario_params("censored", n_customers=8_000)
    h = generate_history(p)
    start = pd.Timestamp(p.start, tz="UTC")
    assert h["order_ts"].min() < start - pd.Timedelta(days=4 * 365)  # the shop ran for years
    df = generate_orders(p)
    assert df["order_ts"].min() >= start
    first = h[h["amount"] > 0].groupby("customer_id")["order_ts"].min()
    in_file = df["customer_id"].unique()
    # a third of the file's customers had bought before its first day
    assert (first.loc[in_file] < start).mean() > 0.3


def _later_gaps_longer(history: pd.DataFrame) -> float:
    """Share of customers with 5+ gaps whose later half of gaps is longer on average."""
    p = history[history["amount"] > 0].sort_values(["customer_id", "order_ts"])
    gap = p.groupby("customer_id")["order_ts"].diff().dt.total_seconds()
    p = p.assign(gap=gap).dropna(subset=["gap"])
    p = p[p.groupby("customer_id")["gap"].transform("size") >= 5]
    k = p.groupby("customer_id").cumcount()
    n = p.groupby("customer_id")["gap"].transform("size")
    early = p[k < n // 2].groupby("customer_id")["gap"].mean()
    late = p[k >= n - n // 2].groupby("customer_id")["gap"].mean()
    return float((late > early).mean())


def test_fading_scenario_slows_down_instead_of_stopping():
    fading = _later_gaps_longer(generate_history(scenario_params("fading", n_customers=8_000)))
    steady = _later_gaps_longer(generate_history(scenario_params("btyd", n_customers=8_000)))
    assert fading > 0.7 and 0.4 < steady < 0.6  # a steady Poisson buyer: a coin flip


def _bought_again(history: pd.DataFrame, end: str) -> pd.Series:
    """Share of purchases (a year or more before the end) followed by another, by returned."""
    p = history[history["amount"] > 0].sort_values(["customer_id", "order_ts"])
    again = p.groupby("customer_id")["order_ts"].shift(-1).notna()
    early = p["order_ts"] < pd.Timestamp(end, tz="UTC") - pd.Timedelta(days=365)
    return again[early].groupby(p.loc[early, "returned"]).mean()


def test_unhappy_scenario_loses_customers_after_returns():
    p = scenario_params("unhappy", n_customers=8_000)
    unhappy = _bought_again(generate_history(p), p.end)
    assert unhappy[True] < unhappy[False] - 0.15  # a return makes leaving far likelier
    b = scenario_params("btyd", n_customers=8_000)
    steady = _bought_again(generate_history(b), b.end)
    assert abs(steady[True] - steady[False]) < 0.03
    df = generate_orders(p)
    assert 0.12 < (df["amount"] < 0).mean() < 0.2


def test_unknown_scenario_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="btyd, seasonal, censored"):
        scenario_params("mystery")
