"""Snapshots: features, BG/NBD quantities and labels of the active population at each cutoff.

BG/NBD is fitted at each cutoff on every customer who had bought by then (not only the active
ones, so that customers who dropped out inform the dropout rate; a seeded sample of 200k of
them on large histories), in days, from purchase days at or before the cutoff. Its
predictions for the next ``horizon_days`` become features:
``bgnbd_p_alive``, ``bgnbd_p_no_purchase`` and ``bgnbd_expected_purchases``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime

import pandas as pd

from winback.btyd import BGNBD
from winback.engines.duckdb import DuckDBEngine
from winback.errors import DataError
from winback.features import build_features, normalize_cutoffs
from winback.labels import build_labels
from winback.orders import Orders

__all__ = ["bgnbd_summaries", "add_bgnbd_features", "build_snapshots", "BGNBD_FEATURES"]

log = logging.getLogger(__name__)

BGNBD_FEATURES = ["bgnbd_p_alive", "bgnbd_p_no_purchase", "bgnbd_expected_purchases"]

#: BG/NBD is fitted on at most this many customers per cutoff (a seeded random sample); its
#: four parameters are estimated as well from 200k customers as from millions.
BGNBD_FIT_MAX_CUSTOMERS = 200_000


def bgnbd_summaries(orders: Orders, cutoffs: list[datetime]) -> pd.DataFrame:
    """``customer_id, cutoff_ts, frequency, recency, T`` (days) of every customer with a purchase
    day at or before each cutoff."""
    engine = DuckDBEngine(orders.con)
    table = engine.register_cutoffs(cutoffs)
    try:
        return engine.query_df(
            f"""WITH days AS (
                    SELECT customer_id, CAST(order_ts AS DATE) AS day, min(order_ts) AS day_ts
                    FROM {orders.table} WHERE NOT is_return GROUP BY ALL)
                SELECT d.customer_id, c.cutoff_ts,
                       CAST(count(*) - 1 AS DOUBLE) AS frequency,
                       CAST(date_diff('day', min(d.day), max(d.day)) AS DOUBLE) AS recency,
                       (epoch_ms(c.cutoff_ts) - epoch_ms(CAST(min(d.day) AS TIMESTAMP)))
                           / 86400000.0 AS T
                FROM days d JOIN {table} c ON d.day_ts <= c.cutoff_ts
                GROUP BY d.customer_id, c.cutoff_ts"""
        )
    finally:
        engine.drop(table)


def add_bgnbd_features(
    features: pd.DataFrame, summaries: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """Fit BG/NBD per cutoff on ``summaries`` and add its predictions to ``features``."""
    out = []
    for cutoff, feats in features.groupby("cutoff_ts", sort=True):
        s = summaries[summaries["cutoff_ts"] == cutoff]
        fit_on = s
        if len(s) > BGNBD_FIT_MAX_CUSTOMERS:
            fit_on = s.sort_values("customer_id", kind="stable").sample(
                BGNBD_FIT_MAX_CUSTOMERS, random_state=0
            )
        model = BGNBD().fit(fit_on["frequency"], fit_on["recency"], fit_on["T"])
        log.debug("BG/NBD at %s: %s", cutoff, model.params_)
        m = feats.merge(s, on=["customer_id", "cutoff_ts"], how="left", validate="one_to_one")
        if m["frequency"].isna().any():
            raise DataError("internal: an active customer has no BG/NBD summary")
        args = (m["frequency"].to_numpy(), m["recency"].to_numpy(), m["T"].to_numpy())
        feats = feats.copy()
        feats["bgnbd_p_alive"] = model.p_alive(*args)
        feats["bgnbd_p_no_purchase"] = model.p_no_purchase(float(horizon_days), *args)
        feats["bgnbd_expected_purchases"] = model.expected_purchases(float(horizon_days), *args)
        out.append(feats)
    return (
        pd.concat(out, ignore_index=True)
        if out
        else features.assign(**{c: pd.Series(dtype=float) for c in BGNBD_FEATURES})
    )


def build_snapshots(
    orders: Orders,
    cutoffs: Iterable[str | date | datetime] | str,
    horizon_days: int,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    observed_until: datetime | None = None,
    labels: bool = True,
) -> pd.DataFrame:
    """Features + BG/NBD features (+ labels) of the active population at each cutoff.

    With ``labels=True`` only labelled cutoffs are kept (``churned`` and ``orders_in_horizon``);
    with ``labels=False`` every cutoff is kept and there are no label columns (for scoring).
    """
    cuts = normalize_cutoffs(cutoffs)
    feats = build_features(orders, cuts, lookback_days, windows_days)
    if labels:
        lab = build_labels(orders, cuts, horizon_days, lookback_days, observed_until)
        feats = feats.merge(lab, on=["customer_id", "cutoff_ts"], how="inner")
        cuts = sorted({c.to_pydatetime().replace(tzinfo=None) for c in feats["cutoff_ts"]})
    if feats.empty:
        return feats
    summaries = bgnbd_summaries(orders, cuts)
    return add_bgnbd_features(feats, summaries, horizon_days)
