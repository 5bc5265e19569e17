"""The synthetic generator: seeded, realistic in shape, and in the orders contract."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.errors import UsageError
from winback.synth import SynthParams, customers_for_orders, generate_orders


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
