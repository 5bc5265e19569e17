"""The synthetic generator: seeded, realistic in shape, and in the orders contract."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.errors import UsageError
from winback.synth import (
    SynthParams,
    chance_of_buying,
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


def _tiny_shop():
    """Four listed customers, each with one purchase on 2024-03-02 at noon (29.5 days before the as-of);
    b and d buy again in the window, a and c do not."""
    ts = pd.Timestamp("2024-03-02 12:00", tz="UTC")
    rows = [
        (1, "a", ts, 10.0), (2, "b", ts, 20.0), (3, "c", ts, 30.0), (4, "d", ts, 40.0),
        (5, "b", ts + pd.Timedelta(days=40), 25.0), (6, "d", ts + pd.Timedelta(days=45), 45.0),
    ]  # fmt: skip
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_ts", "amount"])
    orders = orders.assign(quantity=1, category="books", channel="web")
    lists = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "group": ["treatment", "treatment", "control", "control"],
        }
    )
    return orders, lists, pd.Timestamp("2024-04-01", tz="UTC")


def test_heterogeneous_campaign_moves_each_kind_as_its_definition_says():
    from winback.synth import CampaignEffects, campaign_kinds, simulate_campaign

    orders, lists, as_of = _tiny_shop()
    # every one-order customer is a regular here and last bought 29.5 days ago, at the peak
    # of the bell: certain persuadables and sleeping dogs
    certain = CampaignEffects(
        persuadable=1.0, sleeping_dog=1.0, regular_orders=1, lapse_days=29.5, lapse_width_days=10
    )
    kinds = campaign_kinds(orders, lists, as_of, 60, certain).set_index("customer_id")
    assert kinds["kind"].to_dict() == {
        "a": "persuadable", "b": "sleeping_dog", "c": "persuadable", "d": "sleeping_dog"
    }  # fmt: skip
    assert kinds["true_uplift"].to_dict() == {"a": 1, "b": -1, "c": 1, "d": -1}
    assert kinds["recency_days"].tolist() == [29.5] * 4 and kinds["n_orders"].tolist() == [1] * 4
    after, truth = simulate_campaign(orders, lists, as_of, 60, effects=certain)
    bought = after[after["order_ts"] > as_of].groupby("customer_id")["amount"].sum().to_dict()
    # a (treated persuadable) buys its median order, 10; b (treated sleeping dog) stays away;
    # c and d are held out: c still does not buy, d buys its 45 as before
    assert bought == {"a": 10.0, "d": 45.0}
    assert truth == {
        "n_treatment": 2.0,
        "won_back": 1.0,
        "pushed_away": 1.0,
        "incremental_retention": 0.0,  # (1 - 1) / 2
        "incremental_revenue_per_customer": -7.5,  # (10 - 25) / 2
    }
    # nobody moved: lost causes and sure things
    none = CampaignEffects(persuadable=0.0, sleeping_dog=0.0)
    kinds = campaign_kinds(orders, lists, as_of, 60, none).set_index("customer_id")["kind"]
    assert kinds.to_dict() == {
        "a": "lost_cause", "b": "sure_thing", "c": "lost_cause", "d": "sure_thing"
    }  # fmt: skip
    same, truth = simulate_campaign(orders, lists, as_of, 60, effects=none)
    pd.testing.assert_frame_equal(
        same, orders.sort_values("order_ts", kind="stable").reset_index(drop=True)
    )
    assert truth["incremental_retention"] == 0.0
    with pytest.raises(UsageError, match="either one uplift or heterogeneous effects"):
        simulate_campaign(orders, lists, as_of, 60, 0.1, effects=none)
    with pytest.raises(UsageError, match="sleeping_dog share"):
        CampaignEffects(sleeping_dog=1.5)


def test_heterogeneous_kinds_follow_the_history_they_are_drawn_from():
    from winback.synth import CampaignEffects, SynthParams, campaign_kinds, generate_orders

    orders = generate_orders(SynthParams(n_customers=20_000, seed=11))
    as_of = pd.Timestamp("2023-10-01", tz="UTC")
    last = orders[orders["order_ts"] <= as_of].groupby("customer_id")["order_ts"].max()
    ids = last.index.astype(str)
    lists = pd.DataFrame(
        {
            "customer_id": ids,
            "group": ["treatment", "control"] * (len(ids) // 2) + ["control"] * (len(ids) % 2),
        }
    )
    kinds = campaign_kinds(orders, lists, as_of, 60, CampaignEffects())
    # persuadables only among those who would not buy anyway, sleeping dogs only among buyers
    assert not kinds.loc[kinds["kind"] == "persuadable", "buys_anyway"].any()
    assert kinds.loc[kinds["kind"] == "sleeping_dog", "buys_anyway"].all()
    # the shares follow the chances the history gave: within 4 standard errors
    for kind, p in (("persuadable", "p_persuadable"), ("sleeping_dog", "p_sleeping_dog")):
        n, expected = (kinds["kind"] == kind).sum(), kinds[p].sum()
        assert abs(n - expected) < 4 * (kinds[p] * (1 - kinds[p])).sum() ** 0.5 + 1
    # regulars lapsed about 90 days are the most persuadable
    near = kinds["recency_days"].between(60, 120) & (kinds["n_orders"] >= 3)
    far = kinds["recency_days"] > 300
    assert kinds.loc[near & ~kinds["buys_anyway"], "p_persuadable"].mean() > 0.4
    assert kinds.loc[far & ~kinds["buys_anyway"], "p_persuadable"].mean() < 0.05


def test_chance_of_buying_is_the_hidden_state_s_and_comes_true_on_average():
    import numpy as np

    from winback.synth import _simulate

    # no season and no fading: a customer still buying buys in 90 days with 1 - exp(-90 rate)
    params = SynthParams(n_customers=20_000, seed=5, season_peak=1.0)
    orders = generate_orders(params)
    as_of = pd.Timestamp("2024-06-30", tz="UTC")
    ids = np.sort(orders.loc[orders["order_ts"] <= as_of, "customer_id"].unique())
    got = chance_of_buying(params, ids, as_of, 90)
    sim = _simulate(params)
    who = ids - 100_000
    t0 = (as_of - sim.begin).total_seconds() / 86400
    alive = sim.left[who] > t0
    assert 0 < alive.mean() < 1  # both kinds are there
    assert np.allclose(got[alive], 1 - np.exp(-90 * sim.rate[who][alive]), rtol=1e-12)
    assert (got[~alive] == 0).all()
    # what the orders then did agrees with it: within 4 standard deviations of the sum
    window = orders[(orders["order_ts"] > as_of) & (orders["amount"] > 0)]
    window = window[window["order_ts"] <= as_of + pd.Timedelta(days=90)]
    bought = np.isin(ids, window["customer_id"].unique())
    assert abs(bought.sum() - got.sum()) < 4 * np.sqrt((got * (1 - got)).sum())
    # with the default shop's peak season and a window across it, the same holds
    shop = SynthParams(n_customers=20_000, seed=6)
    orders = generate_orders(shop)
    as_of = pd.Timestamp("2023-10-15", tz="UTC")
    ids = np.sort(orders.loc[orders["order_ts"] <= as_of, "customer_id"].unique())
    got = chance_of_buying(shop, ids, as_of, 120)
    window = orders[(orders["order_ts"] > as_of) & (orders["amount"] > 0)]
    window = window[window["order_ts"] <= as_of + pd.Timedelta(days=120)]
    bought = np.isin(ids, window["customer_id"].unique())
    assert abs(bought.sum() - got.sum()) < 4 * np.sqrt((got * (1 - got)).sum())
    with pytest.raises(UsageError, match="Customer ids must be those"):
        chance_of_buying(shop, [5], as_of, 30)
