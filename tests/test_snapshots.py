"""Snapshots of a sample of customers: the same rows as in the whole history, for fewer customers."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.cutoffs import training_cutoffs
from winback.features import build_features
from winback.snapshots import customers_only, training_sample

T = datetime(2023, 9, 30)


@pytest.fixture(scope="module")
def synth_orders(synth_frame):
    return orders_of(synth_frame, category="category", channel="channel")


def test_a_customer_sample_has_the_same_features_as_the_whole_history(synth_orders):
    cuts = training_cutoffs(T, 60, 30, 8, synth_orders.first_ts)
    ids = sorted(synth_orders.to_pandas()["customer_id"].unique())[::3]
    whole = build_features(synth_orders, cuts)
    with customers_only(synth_orders, ids) as some:
        assert some.report.n_customers == len(ids) and some.first_ts == synth_orders.first_ts
        part = build_features(some, cuts)
    assert set(part["customer_id"]) <= set(ids) and len(part) > 0
    want = whole[whole["customer_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.reset_index(drop=True), want, check_exact=True)


def test_a_sample_is_drawn_only_when_the_model_could_not_use_every_row(synth_orders):
    cuts = training_cutoffs(T, 60, 30, 8, synth_orders.first_ts)
    assert training_sample(synth_orders, cuts, 365, 10**9, 0.2, 1) is None
    assert training_sample(synth_orders, cuts, 365, None, 0.2, 1) is None
    ids = training_sample(synth_orders, cuts, 365, 2_000, 0.2, 1)
    rows = build_features(synth_orders, cuts)
    assert ids is not None and 0 < len(ids) < rows["customer_id"].nunique()
    # enough rows for the model: about 2,000 / (1 - 0.2), from an estimate that errs high
    sampled = rows["customer_id"].isin(ids).sum()
    assert 1_000 < sampled < 3_000
    assert training_sample(synth_orders, cuts, 365, 2_000, 0.2, 1) == ids  # seeded


def test_a_cutoff_without_labels_is_reported_once(synth_orders, caplog):
    from winback.snapshots import build_snapshots

    last = synth_orders.last_ts
    early = datetime(last.year - 1, 7, 1)
    with caplog.at_level("WARNING", logger="winback"):
        snap = build_snapshots(synth_orders, [early, last], 90)
    said = [r.getMessage() for r in caplog.records if "get no labels" in r.getMessage()]
    assert len(said) == 1 and f"{last:%Y-%m-%d}" in said[0]
    assert set(snap["cutoff_ts"].dt.tz_convert(None)) == {pd.Timestamp(early)}
