"""Snapshots: features, BG/NBD quantities and labels of the active population at each cutoff.

BG/NBD is fitted at each cutoff on every customer who had bought by then (not only the active
ones, so that customers who dropped out inform the dropout rate; a seeded sample of 200k of
them on large histories), in days, from purchase days at or before the cutoff. Its
predictions for the next ``horizon_days`` become features:
``bgnbd_p_alive``, ``bgnbd_p_no_purchase`` and ``bgnbd_expected_purchases``; the posterior of
the purchase rate (``bgnbd_posterior_r``, ``bgnbd_posterior_alpha``) travels with them, for
when the next order is due, but is not a feature.

Training snapshots of a large history are built for a seeded sample of its customers only
(:func:`training_sample`, :func:`customers_only`): the model uses a bounded number of rows, and
BG/NBD's four parameters are estimated as well from the sample.

Training, backtests and scoring on DuckDB (whole or a partition at a time) and on Spark all
assemble their rows through :func:`snapshot_source`: the same SQL, the same fits, the same
:meth:`BGNBDAtCutoffs.add_to`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime

import numpy as np
import pandas as pd

from winback.btyd import BGNBD
from winback.carry import Carry
from winback.cutoffs import normalize_cutoffs, parse_cutoff, split_labelled_cutoffs
from winback.engines import Engine
from winback.errors import DataError
from winback.features import (
    GROUPS_PER_PASS,
    FeatureSpec,
    bgnbd_summary_sql,
    build_features,
    carried_sql,
    carried_summary_sql,
    feature_sql,
    feature_table,
    in_partition,
    orders_by_partition,
    spec_for,
)
from winback.labels import build_labels
from winback.orders import Orders
from winback.progress import Progress, tell
from winback.sample import customer_share

__all__ = [
    "SnapshotSource",
    "snapshot_source",
    "BGNBDAtCutoffs",
    "fit_bgnbd_at_cutoffs",
    "bgnbd_predictions",
    "build_snapshots",
    "build_training_snapshots",
    "customers_only",
    "training_sample",
    "BGNBD_FEATURES",
    "BGNBD_POSTERIOR",
]

log = logging.getLogger(__name__)

BGNBD_FEATURES = ["bgnbd_p_alive", "bgnbd_p_no_purchase", "bgnbd_expected_purchases"]

#: The posterior of an alive customer's purchase rate per day, Gamma(r + x, alpha + T) (shape,
#: rate) after x repeat purchases over T days: with ``bgnbd_p_alive`` it gives the chance of
#: no purchase within any number of days (:mod:`winback.timing`). Carried with the snapshot,
#: not learnt from (:data:`winback.model.NON_FEATURES`).
BGNBD_POSTERIOR = ["bgnbd_posterior_r", "bgnbd_posterior_alpha"]

#: BG/NBD is fitted on at most this many customers per cutoff (a seeded random sample); its
#: four parameters are estimated as well from 200k customers as from millions.
BGNBD_FIT_MAX_CUSTOMERS = 200_000


#: The BG/NBD summary of a snapshot row, as it travels with the features until
#: :meth:`BGNBDAtCutoffs.add_to` turns it into the BG/NBD features.
SUMMARY_COLUMNS = {"_bgnbd_frequency": "frequency", "_bgnbd_recency": "recency", "_bgnbd_T": "T"}


def fit_positions(n: int) -> np.ndarray | None:
    """Positions, in customer order, of the customers BG/NBD is fitted on (a seeded sample of
    ``BGNBD_FIT_MAX_CUSTOMERS``); None when all ``n`` are used."""
    if n <= BGNBD_FIT_MAX_CUSTOMERS:
        return None
    return np.random.RandomState(0).choice(n, size=BGNBD_FIT_MAX_CUSTOMERS, replace=False)


def bgnbd_predictions(model: BGNBD, rows: pd.DataFrame, horizon_days: int) -> dict:
    """The BG/NBD features of rows that carry ``frequency``, ``recency`` and ``T``."""
    args = (rows["frequency"].to_numpy(), rows["recency"].to_numpy(), rows["T"].to_numpy())
    h = float(horizon_days)
    return {
        "bgnbd_p_alive": model.p_alive(*args),
        "bgnbd_p_no_purchase": model.p_no_purchase(h, *args),
        "bgnbd_expected_purchases": model.expected_purchases(h, *args),
        "bgnbd_posterior_r": model.r_ + args[0].astype(float),
        "bgnbd_posterior_alpha": model.alpha_ + args[2].astype(float),
    }


@dataclass(frozen=True)
class BGNBDAtCutoffs:
    """BG/NBD fitted at each cutoff (naive UTC), and the horizon its predictions look over.

    Small and picklable: Spark ships it to its executors, where :meth:`add_to` turns each
    batch's summary columns into the BG/NBD features exactly as DuckDB's rows are."""

    fits: dict[datetime, BGNBD]
    horizon_days: int

    def add_to(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` without their :data:`SUMMARY_COLUMNS`, with :data:`BGNBD_FEATURES` and
        :data:`BGNBD_POSTERIOR` added last, each row predicted by its cutoff's fit (rows
        without ``cutoff_ts`` need a single fit)."""
        summary = rows[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS)
        if summary["frequency"].isna().any():
            raise DataError("internal: an active customer has no BG/NBD summary")
        out = rows.drop(columns=list(SUMMARY_COLUMNS))
        added = {c: np.full(len(rows), np.nan) for c in BGNBD_FEATURES + BGNBD_POSTERIOR}
        for cutoff, at in self._rows_by_cutoff(rows).items():
            for c, values in bgnbd_predictions(
                self.fits[cutoff], summary.iloc[at], self.horizon_days
            ).items():
                added[c][at] = values
        return out.assign(**added)

    def _rows_by_cutoff(self, rows: pd.DataFrame) -> dict[datetime, np.ndarray]:
        if "cutoff_ts" not in rows.columns:
            if len(self.fits) != 1:
                raise ValueError("rows without cutoff_ts need BG/NBD fitted at one cutoff")
            return {next(iter(self.fits)): np.arange(len(rows))}
        ts = pd.DatetimeIndex(rows["cutoff_ts"])
        if ts.tz is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        return {
            pd.Timestamp(cutoff).to_pydatetime(): at
            for cutoff, at in pd.Series(ts).groupby(ts, sort=True).indices.items()
        }


def fit_bgnbd_at_cutoffs(
    engine: Engine,
    summaries: str,
    cutoffs: Sequence[datetime],
    horizon_days: int,
    progress: Progress | None = None,
) -> BGNBDAtCutoffs:
    """BG/NBD fitted at each cutoff on the summaries in the table ``summaries`` (a seeded
    sample of them on large histories, in customer order, so the fit does not depend on the
    order an engine returns rows in). Only the fitted customers' three numbers reach pandas.
    Cutoffs are fitted oldest first, each starting from the previous one's parameters too."""
    fits: dict[datetime, BGNBD] = {}
    previous = None
    cuts = sorted(cutoffs)
    for done, cutoff in enumerate(cuts, start=1):
        at = f"cutoff_ts = TIMESTAMP '{cutoff.isoformat(sep=' ')}'"
        n = int(engine.fetchall(f"SELECT count(*) FROM {summaries} WHERE {at}")[0][0])
        ranked = (
            "SELECT frequency, recency, T, row_number() OVER (ORDER BY customer_id) - 1 AS _pos "
            f"FROM {summaries} WHERE {at}"
        )
        positions = fit_positions(n)
        if positions is None:
            rows = engine.query_df(f"SELECT * FROM ({ranked}) r ORDER BY _pos")
        else:
            with engine.registered(pd.DataFrame({"_pos": positions}), "_fit_pos") as pos:
                rows = engine.query_df(f"SELECT r.* FROM ({ranked}) r JOIN {pos} p USING (_pos)")
            rows = rows.set_index("_pos").loc[positions]
        model = BGNBD().fit(rows["frequency"], rows["recency"], rows["T"], start=previous)
        previous = fits.setdefault(cutoff, model).params_
        log.debug(
            "BG/NBD at %s: %s",
            f"{cutoff:%Y-%m-%d}",
            ", ".join(f"{k} {v:.4g}" for k, v in model.params_.items()),
        )
        tell(progress, "BG/NBD fits", done, len(cuts))
    return BGNBDAtCutoffs(fits, int(horizon_days))


@dataclass
class SnapshotSource:
    """Features and BG/NBD summaries of the active population at cutoffs, on the orders'
    engine, and BG/NBD fitted at each cutoff: the one place snapshots are assembled, for
    training, backtests and scoring on either engine (see :func:`snapshot_source`).

    :meth:`sql` gives the rows with their summary columns (for an engine to read or, on Spark,
    to score where they are); :attr:`bgnbd` turns those columns into the BG/NBD features;
    :meth:`read` does both."""

    engine: Engine
    orders_table: str
    cut_table: str
    spec: FeatureSpec
    features: str | None
    summaries: str
    bgnbd: BGNBDAtCutoffs
    carry: Carry | None = None  # one cutoff, features carried from an earlier night
    computed: str | None = None  # with carry: the changed customers' features, all partitions
    split: tuple[str, int] | None = None  # the orders to compute from, set apart for k parts

    def _features(self, part: tuple[int, int] | None) -> str:
        """The features computed from the orders (a carry's orders to compute, else all)."""
        d = self.engine.dialect
        if part is not None and self.split is not None and part[1] == self.split[1]:
            return feature_sql(self.split[0], self.cut_table, self.spec, d, part, split=True)
        orders = self.carry.orders if self.carry is not None else self.orders_table
        return feature_sql(orders, self.cut_table, self.spec, d, part)

    def sql(self, part: tuple[int, int] | None = None) -> str:
        """Every feature column, then :data:`SUMMARY_COLUMNS`; ``part = (i, k)``: the customers
        of hash partition i of k only (computed for that partition alone when the features
        are not materialised)."""
        d = self.engine.dialect
        if self.features is None and self.carry is not None:
            c = self.carry
            if self.computed is None:
                feats = self._features(part)
            else:
                feats = _in_part(self.computed, part, d)
            rows, mixed = c.rows_of(part)
            if rows is not None:
                kept = carried_sql(
                    rows, c.checks, self.cut_table, c.since, self.spec, d, part if mixed else None
                )
                feats = f"SELECT * FROM ({feats}) UNION ALL SELECT * FROM ({kept})"
        elif self.features is None:
            feats = self._features(part)
        else:
            feats = _in_part(self.features, part, d)
        summary = ", ".join(f"s.{src} AS {col}" for col, src in SUMMARY_COLUMNS.items())
        # the partition's summaries only: the join's hash table a k-th of the size
        summaries = f"({_in_part(self.summaries, part, d)})" if part else self.summaries
        return (
            f"SELECT f.*, {summary} FROM ({feats}) f LEFT JOIN {summaries} s "
            f"ON s.customer_id = f.customer_id AND s.cutoff_ts = f.cutoff_ts"
        )

    def rows(self, part: tuple[int, int] | None = None, ordered: bool = True) -> pd.DataFrame:
        """:meth:`sql` read into pandas, sorted by cutoff then customer (``ordered=False``: in
        the engine's order, which saves a sort of every column)."""
        order = " ORDER BY cutoff_ts, customer_id" if ordered else ""
        return self.engine.query_df(self.sql(part) + order)

    def read(self, part: tuple[int, int] | None = None, ordered: bool = True) -> pd.DataFrame:
        """Snapshot rows: the features with the BG/NBD features, sorted by cutoff then
        customer (see :meth:`rows`)."""
        return self.bgnbd.add_to(self.rows(part, ordered))


def _in_part(table: str, part: tuple[int, int] | None, d) -> str:
    """The rows of ``table`` whose customers are in hash partition ``part = (i, k)`` (all of
    them for None)."""
    if part is None:
        return f"SELECT * FROM {table}"
    return f"SELECT * FROM {table} WHERE {in_partition(part, d)}"


@contextmanager
def snapshot_source(
    orders: Orders,
    cutoffs: Iterable[str | date | datetime] | str,
    horizon_days: int,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    *,
    materialize: bool = True,
    progress: Progress | None = None,
    carry: Carry | None = None,
    parts: int = 1,
) -> Iterator[SnapshotSource]:
    """A :class:`SnapshotSource` at ``cutoffs``; its tables are dropped on leaving.

    BG/NBD's summaries are computed once for every customer who had bought by each cutoff and
    fitted at each cutoff with active customers. ``materialize=True`` computes the features at
    every cutoff into a table (in customer partitions when large); ``False`` leaves them to be
    computed a hash partition at a time by :meth:`SnapshotSource.read`, so memory holds one
    partition (scoring a large population). ``carry`` (scoring at one cutoff, not
    materialised): the features and BG/NBD summaries of customers whose orders did not change
    come from an earlier night's (:mod:`winback.carry`), and tonight's summaries are kept for
    the next. ``parts`` (not materialised): the hash partitions :meth:`SnapshotSource.read`
    will be called with; the orders their features are computed from are set apart by
    partition once when there are many (:func:`~winback.features.orders_by_partition`)."""
    cuts = normalize_cutoffs(cutoffs)
    engine = orders.engine()
    spec = spec_for(orders, lookback_days, windows_days)
    cut_table = engine.register_cutoffs(cuts)
    made: list[str] = []
    try:
        features = None
        if materialize:
            tell(progress, f"features at {len(cuts)} cutoff(s)", 0, 1)
            features = feature_table(orders, engine, spec, cuts, GROUPS_PER_PASS)
            made.append(features)
            tell(progress, f"features at {len(cuts)} cutoff(s)", 1, 1)
        d = engine.dialect
        computed = None
        if carry is not None and carry.since is not None and features is None:
            # the changed customers' features in one pass, not one per partition: they are
            # few, and each pass over their orders costs as much as the pass over them all
            computed = engine.materialize_parts([feature_sql(carry.orders, cut_table, spec, d)])
            made.append(computed)
        summary_sql = bgnbd_summary_sql(carry.orders if carry else orders.table, cut_table, d)
        if carry is not None and carry.summaries is not None:
            kept = carried_summary_sql(carry.summaries, carry.checks, cut_table, carry.since, d)
            summary_sql = f"SELECT * FROM ({summary_sql}) UNION ALL SELECT * FROM ({kept})"
        summaries = engine.materialize_parts([summary_sql])
        made.append(summaries)
        if carry is not None:
            carry.keep_summaries(engine, summaries)
        active = (
            [ts for (ts,) in engine.fetchall(f"SELECT DISTINCT cutoff_ts FROM {features}")]
            if features
            else [ts for (ts,) in engine.fetchall(f"SELECT DISTINCT cutoff_ts FROM {summaries}")]
        )
        bgnbd = fit_bgnbd_at_cutoffs(engine, summaries, active, horizon_days, progress)
        to_compute = carry.orders if carry is not None else orders.table
        k = parts if features is None and computed is None else 1
        with orders_by_partition(engine, to_compute, k, spec) as split:
            yield SnapshotSource(
                engine,
                orders.table,
                cut_table,
                spec,
                features,
                summaries,
                bgnbd,
                carry,
                computed,
                (split, k) if split else None,
            )
    finally:
        for table in made:
            engine.drop(table)
        engine.drop(cut_table)


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
    cuts = asked = normalize_cutoffs(cutoffs)
    lab = None
    if labels:
        end = parse_cutoff(observed_until) if observed_until is not None else orders.last_ts
        cuts, _ = split_labelled_cutoffs(cuts, end, horizon_days)  # logs the others, once
        lab = build_labels(orders, cuts, horizon_days, lookback_days, observed_until)
    if not cuts:  # nothing labelled: the features' columns, no rows
        feats = build_features(orders, asked, lookback_days, windows_days)
        return feats if lab is None else feats.merge(lab, on=["customer_id", "cutoff_ts"])
    with snapshot_source(
        orders, cuts, horizon_days, lookback_days, windows_days, progress=progress
    ) as source:
        rows = source.rows()
        if lab is not None:
            rows = rows.merge(lab, on=["customer_id", "cutoff_ts"], how="inner")
        return source.bgnbd.add_to(rows)


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
