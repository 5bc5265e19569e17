"""Snapshots: features, BG/NBD quantities and labels of the active population at each cutoff.

BG/NBD is fitted at each cutoff on every customer who had bought by then (not only the active
ones, so that customers who dropped out inform the dropout rate; a seeded sample of 200k of
them on large histories), in days, from purchase days at or before the cutoff. Its
predictions for the next ``horizon_days`` become features:
``bgnbd_p_alive``, ``bgnbd_p_no_purchase`` and ``bgnbd_expected_purchases``.

Training snapshots of a large history are built for a seeded sample of its customers only
(:func:`training_sample`, :func:`customers_only`): the model uses a bounded number of rows, and
BG/NBD's four parameters are estimated as well from the sample.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime

import numpy as np
import pandas as pd

from winback.btyd import BGNBD
from winback.cutoffs import normalize_cutoffs
from winback.errors import DataError
from winback.features import bgnbd_summary_sql, build_features
from winback.labels import build_labels
from winback.orders import Orders
from winback.progress import Progress, tell
from winback.sample import customer_share

__all__ = [
    "bgnbd_summaries",
    "fit_bgnbd",
    "bgnbd_predictions",
    "add_bgnbd_features",
    "build_snapshots",
    "build_training_snapshots",
    "customers_only",
    "training_sample",
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
    are fitted oldest first, each starting from the previous one's parameters."""
    keys = ["customer_id", "cutoff_ts"]
    m = features[keys].merge(
        summaries[[*keys, "frequency", "recency", "T"]], on=keys, how="left", validate="1:1"
    )
    if m["frequency"].isna().any():
        raise DataError("internal: an active customer has no BG/NBD summary")
    added = {c: np.full(len(features), np.nan) for c in BGNBD_FEATURES}
    by_cutoff = summaries.groupby("cutoff_ts", sort=True).indices
    groups = features.groupby("cutoff_ts", sort=True).indices
    previous = None
    for done, (cutoff, rows) in enumerate(groups.items(), start=1):
        model = fit_bgnbd(summaries.iloc[by_cutoff[cutoff]], start=previous)
        previous = model.params_
        log.debug(
            "BG/NBD at %s: %s",
            f"{pd.Timestamp(cutoff):%Y-%m-%d}",
            ", ".join(f"{k} {v:.4g}" for k, v in model.params_.items()),
        )
        for c, values in bgnbd_predictions(model, m.iloc[rows], horizon_days).items():
            added[c][rows] = values
        tell(progress, "BG/NBD fits", done, len(groups))
    return features.assign(**added)


@contextmanager
def customers_only(orders: Orders, ids: Sequence[str] | None) -> Iterator[Orders]:
    """The orders of the customers ``ids`` only (all of them when ``ids`` is None), on the same
    engine, with the whole history's first and last timestamps: a customer's features and
    labels are the same as in the whole history."""
    if ids is None:
        yield orders
        return
    engine = orders.engine()
    table = engine.register_customers(ids)
    view = engine.table_name("_sampled_orders")
    engine.create_view(
        view,
        f"SELECT o.* FROM {orders.table} o "
        f"WHERE o.customer_id IN (SELECT customer_id FROM {table})",
    )
    try:
        report = replace(orders.report, n_customers=len(ids))
        yield orders.with_table(view, report)
    finally:
        engine.drop_view(view)
        engine.drop(table)


def training_sample(
    orders: Orders,
    cutoffs: Sequence[datetime],
    lookback_days: int,
    max_training_rows: int | None,
    holdout_share: float,
    seed: int,
) -> list[str] | None:
    """The customers whose training snapshots are worth building, or None for all of them.

    The model trains on at most ``max_training_rows`` rows (besides its held-out customers), so
    on a large history the snapshots of most customers would be built for nothing. Their number
    is estimated as the customers active at the latest cutoff times the number of cutoffs (an
    overestimate on a growing shop); when more than the model can use, a seeded random share of
    every customer (by a hash of the id) is kept, enough for the rows the model takes."""
    if max_training_rows is None or not cutoffs:
        return None
    last = max(cutoffs)
    engine = orders.engine()
    age = engine.dialect.days_between.format(later=f"TIMESTAMP '{last:%Y-%m-%d %H:%M:%S}'",
                                             earlier="order_ts")  # fmt: skip
    (active,) = engine.fetchall(
        f"SELECT count(DISTINCT customer_id) FROM {orders.table} "
        f"WHERE NOT is_return AND order_ts <= TIMESTAMP '{last:%Y-%m-%d %H:%M:%S}' "
        f"AND {age} < {int(lookback_days)}"
    )[0]
    wanted = max_training_rows / (1.0 - holdout_share)
    estimate = int(active) * len(cutoffs)
    if estimate <= wanted:
        return None
    ids = engine.query_df(
        f"SELECT DISTINCT customer_id FROM {orders.table} "
        f"WHERE NOT is_return AND order_ts <= TIMESTAMP '{last:%Y-%m-%d %H:%M:%S}'"
    )["customer_id"]
    ids = ids.sort_values(kind="stable").reset_index(drop=True)
    keep = customer_share(ids, wanted / estimate, seed)
    log.info(
        "training snapshots for %s of %s customers (a seeded sample): about %s rows for a model "
        "that uses %s",
        f"{int(keep.sum()):,}",
        f"{len(ids):,}",
        f"{int(estimate * keep.mean()):,}",
        f"{max_training_rows:,}",
    )
    return ids[keep].tolist()


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
    """Features + BG/NBD features (+ labels) of the active population at each cutoff, every
    cutoff in one pass.

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


def build_training_snapshots(
    orders: Orders,
    cutoffs: Sequence[datetime],
    horizon_days: int,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    observed_until: datetime | None = None,
    max_training_rows: int | None = None,
    holdout_share: float = 0.2,
    seed: int = 42,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """:func:`build_snapshots` at training cutoffs, for the customers of
    :func:`training_sample` (all of them unless the history holds many more rows than a model
    with ``max_training_rows`` and ``holdout_share`` uses)."""
    ids = training_sample(
        orders, cutoffs, lookback_days, max_training_rows, holdout_share, seed + 3
    )
    with customers_only(orders, ids) as some:
        return build_snapshots(
            some,
            cutoffs,
            horizon_days,
            lookback_days,
            windows_days,
            observed_until=observed_until,
            progress=progress,
        )
