"""The DuckDB engine agrees with the independent plain-pandas reference on synthetic data."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.engines.reference import reference_features, reference_labels
from winback.features import FeatureSpec, build_features, cutoff_schedule
from winback.labels import build_labels

CUTOFFS = cutoff_schedule(datetime(2022, 9, 1), datetime(2023, 9, 1), 61)


@pytest.fixture(scope="module")
def synth_orders(synth_frame):
    return orders_of(synth_frame, category="category", channel="channel")


def test_duckdb_features_equal_pandas_reference(synth_orders):
    got = build_features(synth_orders, CUTOFFS, lookback_days=365)
    spec = FeatureSpec(365, (30, 90, 180, 365), has_category=True, has_channel=True)
    want = reference_features(synth_orders.to_pandas(), CUTOFFS, spec)
    assert len(got) > 3000 and got["cutoff_ts"].nunique() == len(CUTOFFS)
    assert list(got.columns) == list(want.columns)
    assert (got["customer_id"].to_numpy() == want["customer_id"].to_numpy()).all()
    for col in got.columns[2:]:
        a = got[col].to_numpy(dtype=float, na_value=np.nan)
        b = want[col].to_numpy(dtype=float, na_value=np.nan)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col)


def test_duckdb_labels_equal_pandas_reference(synth_orders):
    cuts = CUTOFFS[:-1]
    got = build_labels(synth_orders, cuts, horizon_days=90, lookback_days=365)
    want = reference_labels(synth_orders.to_pandas(), cuts, 90, 365)
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False
    )
    assert 0.2 < got["churned"].mean() < 0.95
