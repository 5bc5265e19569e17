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

import numpy as np
import pandas as pd

from winback.btyd import BGNBD
from winback.errors import DataError
from winback.features import bgnbd_summary_sql, build_features, normalize_cutoffs
from winback.labels import build_labels
from winback.orders import Orders
from winback.progress import Progress, tell

__all__ = [
    "bgnbd_summaries",
    "fit_bgnbd",
    "bgnbd_predictions",
    "add_bgnbd_features",
    "build_snapshots",
    "BGNBD_FEATURES",
]

log = logging.getLogger(__name__)

BGNBD_FEATURES = ["bgnbd_p_alive", "bgnbd_p_no_purchase", "bgnbd_expected_purchases"]

#: BG/NBD is fitted on at most this many customers per cutoff (a seeded random sample); its
#: four parameters are estimated as well from 200k customers as from millions.
BGNBD_FIT_MAX_CUSTOMERS = 200_000


def bgnbd_summaries(orders: Orders, cutoffs: list[datetime]) -> pd.DataFrame:
    """``customer_id, cutoff_ts, frequency, recency, T`` (days) of every customer with a purchase
    day at or before each cutoff."""
    engine = orders.engine()
    table = engine.register_cutoffs(cutoffs)
    try:
        return engine.query_df(bgnbd_summary_sql(orders.table, table, engine.dialect))
    finally:
        engine.drop(table)


def fit_positions(n: int) -> np.ndarray | None:
    """Positions, in customer order, of the customers BG/NBD is fitted on (a seeded sample of
    ``BGNBD_FIT_MAX_CUSTOMERS``); None when all ``n`` are used."""
    if n <= BGNBD_FIT_MAX_CUSTOMERS:
        return None
    return np.random.RandomState(0).choice(n, size=BGNBD_FIT_MAX_CUSTOMERS, replace=False)


def fit_bgnbd(summaries: pd.DataFrame, start: dict[str, float] | None = None) -> BGNBD:
    """BG/NBD fitted on one cutoff's summaries (a seeded sample of them on large histories),
    in customer order, so the fit does not depend on the order an engine returns rows in.
    ``start``: a neighbouring cutoff's parameters, tried as a starting point too."""
    fit_on = summaries.sort_values("customer_id", kind="stable")
    positions = fit_positions(len(fit_on))
    if positions is not None:
        fit_on = fit_on.iloc[positions]
    return BGNBD().fit(fit_on["frequency"], fit_on["recency"], fit_on["T"], start=start)


def bgnbd_predictions(model: BGNBD, rows: pd.DataFrame, horizon_days: int) -> dict:
    """The BG/NBD features of rows that carry ``frequency``, ``recency`` and ``T``."""
    args = (rows["frequency"].to_numpy(), rows["recency"].to_numpy(), rows["T"].to_numpy())
    h = float(horizon_days)
    return {
        "bgnbd_p_alive": model.p_alive(*args),
        "bgnbd_p_no_purchase": model.p_no_purchase(h, *args),
        "bgnbd_expected_purchases": model.expected_purchases(h, *args),
    }


def add_bgnbd_features(
    features: pd.DataFrame,
    summaries: pd.DataFrame,
    horizon_days: int,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Fit BG/NBD per cutoff on ``summaries`` and add its predictions to ``features`` (rows in
    the same order; only the key and summary columns are ever joined, not whole rows). Cutoffs
    are fitted oldest first, each also starting from the previous one's parameters."""
    n = len(features)
    added = {c: np.full(n, np.nan) for c in BGNBD_FEATURES}
    by_cutoff = summaries.groupby("cutoff_ts", sort=True).indices
    groups = features.groupby("cutoff_ts", sort=True).indices
    previous = None
    for done, (cutoff, rows) in enumerate(groups.items(), start=1):
        s = summaries.iloc[by_cutoff[cutoff]]
        model = fit_bgnbd(s, start=previous)
        previous = model.params_
        log.debug(
            "BG/NBD at %s: %s",
            f"{pd.Timestamp(cutoff):%Y-%m-%d}",
            ", ".join(f"{k} {v:.4g}" for k, v in model.params_.items()),
        )
        keys = features["customer_id"].iloc[rows].to_frame()
        m = keys.merge(
            s[["customer_id", "frequency", "recency", "T"]],
            on="customer_id",
            how="left",
            validate="one_to_one",
        )
        if m["frequency"].isna().any():
            raise DataError("internal: an active customer has no BG/NBD summary")
        for c, values in bgnbd_predictions(model, m, horizon_days).items():
            added[c][rows] = values
        tell(progress, "BG/NBD fits", done, len(groups))
    return features.assign(**added)


def build_snapshots(
    orders: Orders,
    cutoffs: Iterable[str | date | datetime] | str,
    horizon_days: int,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    observed_until: datetime | None = None,
    labels: bool = True,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Features + BG/NBD features (+ labels) of the active population at each cutoff.

    With ``labels=True`` only labelled cutoffs are kept (``churned`` and ``orders_in_horizon``);
    with ``labels=False`` every cutoff is kept and there are no label columns (for scoring).
    ``progress(stage, done, total)`` hears of the features and of each BG/NBD fit.
    """
    cuts = normalize_cutoffs(cutoffs)
    tell(progress, f"features at {len(cuts)} cutoff(s)", 0, 1)
    feats = build_features(orders, cuts, lookback_days, windows_days)
    if labels:
        lab = build_labels(orders, cuts, horizon_days, lookback_days, observed_until)
        feats = feats.merge(lab, on=["customer_id", "cutoff_ts"], how="inner")
        kept = pd.DatetimeIndex(feats["cutoff_ts"].unique()).tz_convert(None)
        cuts = sorted(ts.to_pydatetime() for ts in kept)
    tell(progress, f"features at {len(cuts)} cutoff(s)", 1, 1)
    if feats.empty:
        return feats
    summaries = bgnbd_summaries(orders, cuts)
    return add_bgnbd_features(feats, summaries, horizon_days, progress)
