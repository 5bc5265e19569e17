"""Churn labels after each cutoff: ``churned`` = no purchase in ``(cutoff_ts, cutoff_ts + H]``.

A cutoff whose horizon runs past the end of the data (``cutoff_ts + H > observed_until``) is not
labelled at all: its customers are not silently called churned. Returns never count as purchases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from winback.cutoffs import normalize_cutoffs, parse_cutoff, split_labelled_cutoffs
from winback.features import label_sql
from winback.orders import Orders

__all__ = ["split_labelled_cutoffs", "build_labels"]

log = logging.getLogger(__name__)


def build_labels(
    orders: Orders,
    cutoffs: Sequence[datetime | str],
    horizon_days: int,
    lookback_days: int = 365,
    observed_until: datetime | str | None = None,
) -> pd.DataFrame:
    """Labels for the active population at each labelled cutoff.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    cutoffs : sequence of datetimes or date strings
        Cutoffs T (UTC); a date means 00:00 UTC.
    horizon_days : int
        H: churned means no purchase in ``(T, T + H]``; an order exactly at T + H counts.
    lookback_days : int
        Population: a purchase in ``(T - lookback_days, T]``.
    observed_until : datetime, optional
        The end of the observed data; default the last order's timestamp.

    Returns
    -------
    DataFrame
        ``customer_id, cutoff_ts, orders_in_horizon, churned``; cutoffs without a full horizon
        are left out (and logged).
    """
    cuts = normalize_cutoffs(cutoffs)
    end = parse_cutoff(observed_until) if observed_until is not None else orders.last_ts
    labelled, _ = split_labelled_cutoffs(cuts, end, horizon_days)
    engine = orders.engine()
    if not labelled:
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype="str"),
                "cutoff_ts": pd.Series(dtype="datetime64[us, UTC]"),
                "orders_in_horizon": pd.Series(dtype="int64"),
                "churned": pd.Series(dtype="bool"),
            }
        )
    table = engine.register_cutoffs(labelled)
    try:
        return engine.query_df(
            label_sql(orders.table, table, lookback_days, horizon_days, engine.dialect)
        )
    finally:
        engine.drop(table)
