"""The DuckDB engine agrees with the independent plain-pandas reference on synthetic data."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from tests.conftest import orders_of, record_order_splits
from winback.cutoffs import cutoff_schedule
from winback.features import FeatureSpec, build_features
from winback.labels import build_labels
from winback.reference import reference_features, reference_labels

CUTOFFS = cutoff_schedule(datetime(2022, 9, 1), datetime(2023, 9, 1), 61)


@pytest.fixture(scope="module")
def synth_orders(synth_frame):
    return orders_of(synth_frame, category="category", channel="channel")


def test_duckdb_features_equal_pandas_reference(synth_orders):
    got = build_features(synth_orders, CUTOFFS, lookback_days=365)
    spec = FeatureSpec(
        365,
        (30, 90, 180, 365),
        has_category=True,
        has_channel=True,
        data_start=synth_orders.first_ts,
    )
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


@pytest.mark.parametrize("split_from", [8, 10**9], ids=["orders-set-apart", "orders-hashed"])
def test_customer_partitions_give_exactly_the_single_pass_result(
    synth_orders, monkeypatch, split_from
):
    import winback.features as features

    whole = build_features(synth_orders, CUTOFFS, groups_per_pass=10**9)
    # from split_from partitions on, the orders are set apart by partition first
    monkeypatch.setattr(features, "SPLIT_FROM_PARTITIONS", split_from)
    tables = record_order_splits(monkeypatch, features)
    parted = build_features(synth_orders, CUTOFFS, groups_per_pass=700)  # ~13 partitions
    ((k, table, columns),) = tables
    assert k >= 8 and (table is not None) == (k >= split_from)
    pd.testing.assert_frame_equal(whole, parted, check_exact=True)
    if table is not None:  # the columns the features read, dropped with the features
        assert columns == [
            "customer_id", "order_ts", "amount", "is_return", "category", "channel", "_part"
        ]  # fmt: skip
        engine = synth_orders.engine()
        assert not engine.fetchall(f"SELECT 1 FROM duckdb_tables() WHERE table_name = '{table}'")


def test_orders_set_apart_without_a_category_or_channel_give_the_single_pass_result(
    synth_frame, monkeypatch
):
    import winback.features as features

    plain = orders_of(synth_frame)  # neither a category nor a channel column
    whole = build_features(plain, CUTOFFS, groups_per_pass=10**9)
    tables = record_order_splits(monkeypatch, features)
    parted = build_features(plain, CUTOFFS, groups_per_pass=700)
    ((k, table, columns),) = tables
    assert k >= 8 and table is not None
    assert columns == ["customer_id", "order_ts", "amount", "is_return", "_part"]
    assert "n_categories" not in parted.columns
    pd.testing.assert_frame_equal(whole, parted, check_exact=True)


def test_write_features_equals_features_joined_with_labels(synth_orders, tmp_path):
    from winback.features import write_features

    out = tmp_path / "snap.parquet"
    cuts = [*CUTOFFS, datetime(2023, 12, 1)]  # the last cutoff's 90-day horizon is not observed
    n = write_features(synth_orders, cuts, out, horizon_days=90, groups_per_pass=1000)
    got = pd.read_parquet(out)
    feats = build_features(synth_orders, cuts)
    labels = build_labels(synth_orders, cuts, horizon_days=90)
    want = feats.merge(labels, on=["customer_id", "cutoff_ts"], how="left")
    assert n == len(want) == len(got)
    assert str(got["cutoff_ts"].dt.tz) == "UTC"
    last = got["cutoff_ts"] == pd.Timestamp("2023-12-01", tz="UTC")
    assert last.any() and got.loc[last, "churned"].isna().all()
    pd.testing.assert_frame_equal(
        got.drop(columns=["churned", "orders_in_horizon"]),
        want.drop(columns=["churned", "orders_in_horizon"]),
        check_exact=True,
        check_dtype=False,
    )
    assert (
        (got["churned"].astype("boolean") == want["churned"].astype("boolean")).fillna(True).all()
    )
    assert list(got.loc[~last, "orders_in_horizon"]) == list(want.loc[~last, "orders_in_horizon"])
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
