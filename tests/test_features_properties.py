"""Properties of the point-in-time boundary, checked on generated order logs (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import orders_of
from winback.features import build_features
from winback.labels import build_labels

T = datetime(2024, 6, 1)
START = T - timedelta(days=500)

order_row = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 500 * 24),  # hours after START: up to T, and the cutoff itself is hit
    st.sampled_from([-12.5, 0.0, 5.0, 19.99, 40.0, 120.0]),
    st.sampled_from(["books", "music", None]),
)
future_row = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "z"]),
    st.integers(1, 400 * 24),  # hours after T: strictly after the cutoff
    st.sampled_from([-3.0, 7.0, 55.0]),
    st.sampled_from(["books", "toys"]),
)


def _frame(rows, base: datetime) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "hours", "amount", "category"])
    df["order_ts"] = pd.to_datetime(base, utc=True) + pd.to_timedelta(df.pop("hours"), unit="h")
    return df


def _features(df: pd.DataFrame) -> pd.DataFrame:
    return build_features(orders_of(df, category="category"), [T], lookback_days=180)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    past=st.lists(order_row, min_size=1, max_size=25),
    future=st.lists(future_row, min_size=1, max_size=10),
)
def test_orders_after_cutoff_do_not_change_features(past, future):
    before = _frame(past, START)
    after = pd.concat([before, _frame(future, T)], ignore_index=True)
    pd.testing.assert_frame_equal(_features(before), _features(after), check_exact=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=st.lists(order_row, min_size=1, max_size=25), seed=st.integers(0, 2**16))
def test_shuffling_the_input_changes_nothing(past, seed):
    df = _frame(past, START)
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    o1, o2 = orders_of(df, category="category"), orders_of(shuffled, category="category")
    pd.testing.assert_frame_equal(
        build_features(o1, [T, T - timedelta(days=45)]),
        build_features(o2, [T, T - timedelta(days=45)]),
        check_exact=True,
    )
    pd.testing.assert_frame_equal(o1.to_pandas(), o2.to_pandas(), check_exact=True)
    end = T + timedelta(days=400)
    pd.testing.assert_frame_equal(
        build_labels(o1, [T - timedelta(days=90)], 60, 180, observed_until=end),
        build_labels(o2, [T - timedelta(days=90)], 60, 180, observed_until=end),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    past=st.lists(order_row, min_size=1, max_size=20),
    future=st.lists(future_row, min_size=1, max_size=10),
)
def test_removing_orders_after_cutoff_keeps_features(past, future):
    full = pd.concat([_frame(past, START), _frame(future, T)], ignore_index=True)
    cut = full[full["order_ts"] <= pd.Timestamp(T, tz="UTC")]
    got_full, got_cut = _features(full), _features(cut)
    pd.testing.assert_frame_equal(got_full, got_cut, check_exact=True)
    assert np.isfinite(got_full["recency_days"]).all()
