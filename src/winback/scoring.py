"""Score customers as of a date and build the win-back lists.

Two lists, both ranked by the model's calibrated ``p_churn``:

- ``at_risk``: customers whose last purchase is at most H days before the as-of (prevention);
- ``lapsed``: last purchase more than H days ago but within ``campaigns.reactivation_days``
  (reactivation). Lapsed customers older than the model's lookback are scored by extrapolation:
  use their ranking, not their probability at face value.

Each customer gets ``value`` (spend over the last ``value_days``; for a customer with no purchase
in them, what they spent per ``value_days`` while buying: their spend in the scoring lookback
over the time from their first to their last order there, at least ``value_days``),
``expected_value`` (BG/NBD's expected purchases over H times their mean order value),
``value_at_risk = p_churn x value``, an RFM segment, the first campaign group whose rules hold
(with its offer, channel and costs), ``expected_gain = p_churn x save_rate x value -
contact_cost - offer_cost x P(buys)`` (the offer is paid by the contacted customers who buy:
``P(buys) = 1 - p_churn + p_churn x save_rate``, the cost model of ``measure`` too), and the top
three reasons for their risk. ``extrapolated`` marks customers whose last order is older than
any the model was trained on (its lookback): their probability is an extrapolation.

A customer is listed when nothing suppresses them (opted out, contacted recently, or a purchase
within ``recent_days``) and their ``p_churn`` is at least ``min_p_churn``. Each group's list is
sized by maximum expected profit (or top-k, or a threshold) and capped by its capacity; then a
deterministic share of it becomes the control group, which is not contacted and measures the
campaign later.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from winback import carry
from winback.campaigns import (
    best_first,
    best_first_rows,
    control_flags,
    size_list,
)
from winback.carry import KEPT_DIR, Carry, carry_over, find_kept, kept_key, work_folder
from winback.config import CampaignsConfig
from winback.cutoffs import normalize_cutoffs
from winback.drift import DRIFT_FEATURES
from winback.explain import REASON_REFERENCES, ReasonTable, reason_sentences
from winback.export import plain_columns, spelled_texts
from winback.features import spec_for
from winback.model import ChurnModel
from winback.orders import Orders
from winback.score_table import (
    RISK_BANDS,
    ScoreRows,
    listable,
    table_from,
    table_inputs_sql,
    uplift_gains,
    uplift_takers,
)
from winback.segments import quintiles, texts_of
from winback.snapshots import (
    BGNBD_FEATURES,
    BGNBD_POSTERIOR,
    SUMMARY_COLUMNS,
    build_snapshots,
    snapshot_source,
)
from winback.timing import TIMING_INPUTS

if TYPE_CHECKING:
    from winback.spark_scores import SparkPopulation

log = logging.getLogger(__name__)

__all__ = [
    "Scored",
    "keep_features",
    "score_customers",
    "add_reasons",
    "add_uplift",
    "build_lists",
    "CampaignList",
    "listed_groups",
    "listable",
    "customer_value",
    "profit_curve",
    "ProfitCurve",
    "PROFIT_CURVE_COLUMNS",
    "delta",
    "LIST_COLUMNS",
    "LIST_COLUMN_DOCS",
    "RISK_BANDS",
]


@dataclass
class Scored:
    """Scores of every customer, the drift figures, and the features they were scored on:
    in memory (aligned by position with ``scores``) or, for large populations, in a folder of
    Arrow files, where ``feature_rows`` gives each score row's row in the parts read one
    after another; only the listed customers' rows are read back."""

    scores: pd.DataFrame
    drift: dict[str, float]
    features: pd.DataFrame
    features_path: Path | None = None
    feature_rows: np.ndarray | None = None
    remote: _SparkFeatures | None = None
    carry: Carry | None = None  # how the features were split between carried and computed
    work: Path | None = None  # the folder of the out-of-core parts and the order checks
    kept_key: str = ""
    cutoff: datetime | None = None
    parts: int = 0  # the customer hash partitions it was scored in
    population: SparkPopulation | None = None  # on Spark: every customer's row, kept there

    def features_in_blocks(
        self, positions: np.ndarray
    ) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        """The full feature rows of the score rows at ``positions`` (sorted), a block at a
        time: ``(positions of the block, their features)``, at most ``REASON_BLOCK_ROWS`` rows,
        each block from one Arrow part when they are on disk."""
        if self.remote is not None:  # kept on the executors: fetched for these customers only
            for at in _even_blocks(positions):
                ids = self.scores["customer_id"].iloc[at]
                found = self.remote.rows(ids)
                yield at, found.iloc[_positions(ids, found["customer_id"])].reset_index(drop=True)
            return
        if self.features_path is None:
            for at in _even_blocks(positions):
                yield at, self.features.iloc[at].reset_index(drop=True)
            return
        import pyarrow as pa

        wanted = self.feature_rows[positions]
        start = 0
        for part in _feature_parts(self.features_path):
            with pa.memory_map(str(part)) as source:  # only the pages of these rows are read
                table = pa.ipc.open_file(source).read_all()
                stop = start + table.num_rows
                mine = np.flatnonzero((wanted >= start) & (wanted < stop))
                for block in _even_blocks(mine):
                    yield positions[block], table.take(wanted[block] - start).to_pandas()
                del table
            start = stop

    def medians(self, columns: list[str]) -> dict[str, float]:
        """The median of each feature over every scored customer (NaN left out): what the
        reasons compare a customer with."""
        if self.remote is not None:
            return self.remote.medians(columns)
        present = [c for c in columns if c in self.features.columns or self.features_path]
        if self.features_path is None:
            return {c: float(self.features[c].median()) for c in present}
        import pyarrow as pa

        medians = {}
        # a column of every part at a time (65 MB at 8M customers): DuckDB's median over the
        # parts held 600 MB more at its peak and kept 300 MB through the reasons
        for c in present:
            values = []
            for part in _feature_parts(self.features_path):
                with pa.memory_map(str(part)) as source:
                    column = pa.ipc.open_file(source).read_all().column(c).drop_null()
                    values.append(column.to_numpy().astype(float))
            v = np.concatenate(values) if values else np.empty(0)
            median = _median(v[~np.isnan(v)])
            del values, v
            if median is not None:
                medians[c] = median
        return medians


def _median(v: np.ndarray) -> float | None:
    """The median of ``v`` (no NaN; reordered in place), None for no values: the two middle
    values of an even count interpolated as ``lo + 0.5 (hi - lo)``, as DuckDB's ``median``
    does."""
    n = len(v)
    if n == 0:
        return None
    k = (n - 1) // 2
    if n % 2:
        v.partition(k)
        return float(v[k])
    v.partition([k, k + 1])
    lo, hi = v[k], v[k + 1]
    return float(lo + 0.5 * (hi - lo))


def _feature_parts(folder: Path) -> list[Path]:
    """The feature parts of an out-of-core scoring, in the order their rows are numbered."""
    return sorted(folder.glob("*.arrow"))


#: Customers explained at a time when their reasons are worked out.
REASON_BLOCK_ROWS = 250_000


def _even_blocks(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` in consecutive blocks of at most ``REASON_BLOCK_ROWS``, of even size (threads
    given them finish together); none for no rows."""
    if not len(rows):
        return []
    return np.array_split(rows, -(-len(rows) // REASON_BLOCK_ROWS))


#: The columns of a list file, and what each holds (the export's README.txt says the same).
LIST_COLUMN_DOCS = {
    "customer_id": "the customer's id, as text exactly as in the orders (leading zeros kept)",
    "as_of": "the scoring date (YYYY-MM-DD): the lists use orders up to the end of this day",
    "list": "at_risk (bought within the model's horizon; prevention) or lapsed (bought "
    "longer ago, within campaigns.reactivation_days; reactivation)",
    "rank": "1 = the highest churn probability in this file (ranked by uplift: the highest "
    "expected_gain), then 2, 3, ... without gaps",
    "p_churn": "the probability that the customer places no order within the horizon "
    "(0-1; rounded to 3 decimals in the CSV)",
    "risk_decile": "1 = the riskiest tenth of the customers scored for this list, 10 = the "
    "least risky tenth",
    "risk_band": "high (risk deciles 1-3), medium (4-7) or low (8-10)",
    "p_no_order_30d": "chance of no order within 30 days: BG/NBD's curve over time, moved on "
    "the logit scale to agree with p_churn at the horizon",
    "p_no_order_60d": "the same within 60 days",
    "p_no_order_90d": "the same within 90 days",
    "next_order_from": "the date by which an order has a 10% chance (empty: not that likely "
    "within 3 years)",
    "next_order_date": "the date by which an order has a 50% chance: when the next order is "
    "due (empty: not that likely within 3 years)",
    "next_order_until": "the date by which an order has a 90% chance (empty: not that likely "
    "within 3 years)",
    "extrapolated": "True when the last order is older than any the model learnt from (its "
    "lookback): rank by the probability, do not read it at face value",
    "days_since_last_order": "whole days from the last order to the as-of",
    "value": "what the customer is worth if kept: spend over the last campaigns.value_days "
    "days; with no purchase in them, what they spent per value_days while buying",
    "expected_value": "BG/NBD's expected spend over the horizon if nothing is done",
    "value_at_risk": "p_churn x value",
    "currency": "the currency of every amount (campaigns.currency; empty: not stated)",
    "segment": "the RFM segment, from quintiles of recency and frequency within this list",
    "campaign": "the campaign group (campaigns.groups): the first whose rules the customer meets",
    "offer": "the group's offer",
    "channel": "the group's channel",
    "uplift": "how much a contact raises the chance of a purchase within the horizon, by the "
    "uplift model of past campaigns (empty when the lists are ranked by p_churn: see the "
    "manifest's ranking)",
    "expected_gain": "expected profit of contacting the customer: p_churn x save_rate x value "
    "- contact_cost - offer_cost x P(buys), P(buys) = 1 - p_churn + p_churn x save_rate; "
    "ranked by uplift: uplift x value - contact_cost - offer_cost x (1 - p_churn + uplift)",
    "group": "treatment (contact) or control (do not contact: it measures the campaign)",
    "reasons": "up to three plain-language reasons for the risk, true of this customer "
    "against the scored customers' medians",
    "model_version": "the model that scored: 'registry v<N>' or 'file <name>'",
}
LIST_COLUMNS = list(LIST_COLUMN_DOCS)


def score_customers(
    orders: Orders,
    model: ChurnModel,
    as_of: datetime,
    campaigns: CampaignsConfig,
    windows_days=(30, 90, 180, 365),
    model_version: str = "",
    keep_in: Path | None = None,
    uplift_model=None,
) -> Scored:
    """Every customer of both lists with their scores (before list sizing and control groups,
    and without reasons: :func:`add_reasons` explains the customers who are exported), and the
    drift of the model's population (a purchase within its lookback) against training: the
    population stability index of key features and of ``p_churn``.

    The scored customers' few score columns are read back in customer id order by the engine
    (on DuckDB, spilling to disk when they outgrow memory) and ranked within their lists in
    NumPy, so pandas only ever holds the score table, whose
    repeated texts (as-of, list, segment, campaign, offer, channel, model version) are
    categoricals; the lists and the export files hold them as plain text.

    ``keep_in`` (a folder; DuckDB, out of core): carry the features kept there by an earlier
    night for the customers whose orders did not change, and leave tonight's ready to keep
    there (:func:`keep_features`; see :mod:`winback.carry`).

    On Spark the score table stays on the executors (``population``, a
    :class:`winback.spark_scores.SparkPopulation`, with the uplift of ``uplift_model`` when
    one ranks the lists): ``scores`` is empty until the lists' customers are chosen there
    (:meth:`~winback.spark_scores.SparkPopulation.choose`)."""
    h = int(model.horizon_days)
    lookback = max(int(model.lookback_days), h + 1, int(campaigns.reactivation_days))
    windows = sorted(set(windows_days) | {int(campaigns.value_days)})
    engine = orders.engine()
    if engine.name == "duckdb" and orders.report.n_customers > SCORE_PARTITION_CUSTOMERS:
        # out of core: snapshots in partitions, on disk
        folder, split, key, k = _score_in_parts(
            orders, model, as_of, h, lookback, windows, campaigns, keep_in
        )
        if not any((folder / "scores").iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            return Scored(pd.DataFrame(columns=LIST_COLUMNS), {}, pd.DataFrame())
        parts = "read_parquet('" + str(folder / "scores" / "*.parquet").replace("'", "''") + "')"
        drift = _drift(
            model,
            engine.query_df(f"SELECT * FROM {parts} WHERE recency_days < {model.lookback_days}"),
        )
        out, rows = _score_table(
            engine,
            parts,
            "customer_id",
            h,
            model.lookback_days,
            as_of,
            campaigns,
            model_version,
            position="_feature_row",
        )
        scored = Scored(out, drift, pd.DataFrame(), folder / "features", rows, None, split)
        if keep_in is not None:
            scored.work, scored.kept_key, scored.parts = folder, key, k
            scored.cutoff = normalize_cutoffs([as_of])[0]
        weakref.finalize(scored, shutil.rmtree, folder, True)  # the parts go with the scores
        release_memory()
        return scored
    if engine.name == "spark":  # features, predictions and the score table on the executors
        from winback.spark_scores import population_on_spark

        remote = _score_on_spark(
            orders, model, as_of, h, lookback, windows, campaigns.value_days, uplift_model
        )
        population, drift = population_on_spark(remote, model, as_of, campaigns, model_version, h)
        scored = Scored(
            pd.DataFrame(columns=LIST_COLUMNS),
            drift,
            pd.DataFrame(),
            remote=remote,
            population=population,
        )
        weakref.finalize(scored, remote.close)  # the executors' copies go with the scores
        weakref.finalize(scored, population.close)
        return scored
    snap = build_snapshots(orders, [as_of], h, lookback, windows, labels=False)
    p_churn = model.predict_proba(snap)[:, 1] if len(snap) else np.empty(0)
    if snap.empty:
        return Scored(pd.DataFrame(columns=LIST_COLUMNS), {}, snap)
    order = snap["customer_id"].reset_index(drop=True).sort_values(kind="stable").index
    snap = snap.iloc[order].reset_index(drop=True)
    base = _score_columns(snap, p_churn[order], campaigns.value_days)
    drift = _drift(model, base)
    with engine.registered(base.assign(_row=np.arange(len(base))), "_scores") as name:
        out, _ = _score_table(
            engine, name, "_row", h, model.lookback_days, as_of, campaigns, model_version
        )
    return Scored(out, drift, snap)


def _score_columns(snap: pd.DataFrame, p_churn: np.ndarray, value_days: int) -> pd.DataFrame:
    """What the score table and the drift figures need of a snapshot, with ``p_churn``."""
    cols = {
        "customer_id": snap["customer_id"],
        "recency_days": snap["recency_days"],
        "n_orders": snap["n_orders"],
        "n_order_days": snap["n_order_days"],
        **customer_values(snap, value_days),
    }
    cols |= {c: snap[c] for c in TIMING_INPUTS}
    cols |= {c: snap[c] for c in DRIFT_FEATURES if c in snap.columns and c not in cols}
    return pd.DataFrame(cols).assign(p_churn=p_churn)


def customer_values(snap: pd.DataFrame, value_days: int) -> dict[str, pd.Series]:
    """A snapshot's ``value`` (:func:`customer_value`) and ``expected_value`` (BG/NBD's expected
    purchases over the horizon times the mean order value)."""
    expected = (snap["bgnbd_expected_purchases"] * snap["monetary_mean"]).astype(float)
    return {"value": customer_value(snap, value_days), "expected_value": expected}


def customer_value(snap: pd.DataFrame, value_days: int) -> pd.Series:
    """What each customer is worth if kept: their spend over the last ``value_days`` days; for a
    customer with no purchase in them (a long-lapsed one), what they spent per ``value_days``
    while buying: ``monetary_total x value_days / max(first-to-last-order days, value_days)``
    over the snapshot's lookback. So a customer who spent 300 in one year and stopped two years
    ago is worth 300, not 0."""
    recent = snap[f"spend_{value_days}d"].to_numpy(dtype=float, na_value=np.nan)
    quiet = snap[f"orders_{value_days}d"].to_numpy(dtype=float, na_value=0.0) == 0
    span = (snap["tenure_days"] - snap["recency_days"]).to_numpy(dtype=float, na_value=0.0)
    total = snap["monetary_total"].to_numpy(dtype=float, na_value=0.0)
    while_buying = total * value_days / np.maximum(span, value_days)
    return pd.Series(np.where(quiet, while_buying, recent), index=snap.index, dtype=float)


def _drift(model: ChurnModel, scores: pd.DataFrame) -> dict[str, float]:
    """The drift figures of the customers the model was trained on (a purchase within its
    lookback) among ``scores`` (:func:`_score_columns`)."""
    trained_on = (scores["recency_days"] < model.lookback_days).to_numpy()
    drift_cols = [c for c in DRIFT_FEATURES if c in scores.columns]
    return model.drift(
        scores.loc[trained_on, drift_cols], scores.loc[trained_on, "p_churn"].to_numpy()
    )


def _score_table(
    duck,
    source: str,
    order_by: str,
    horizon_days: int,
    lookback_days: int,
    as_of: datetime,
    campaigns: CampaignsConfig,
    model_version: str,
    position: str | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The score table of the customers in ``source`` (:func:`_score_columns`, a table or a
    query), ordered by ``order_by`` (customer id order): the list, the rank and decile by
    ``p_churn`` within it and its band, whether the probability is extrapolated (a last order
    ``lookback_days`` or more ago, older than any the model learnt from), the RFM segment
    (quintiles within the customer's list, so a segment describes the list it is on) and the
    campaign group; and the column ``position`` of ``source`` in the table's order (where its
    features are), if asked.

    The engine reads and orders the rows; the ranks and quintiles are then worked out in
    NumPy (:func:`_ranks_within_lists`): three sorts of 1.6M rows took DuckDB's windows 3 s,
    one of them by customer id to break ties, which the rows' order already does."""
    carried = f"{position} AS _position, " if position else ""
    t = duck.query_df(
        f"SELECT {carried}{table_inputs_sql(horizon_days, lookback_days)} "
        f"FROM {source} ORDER BY {order_by}"
    )
    ranks = _ranks_within_lists(
        t["p_churn"].to_numpy(dtype=float),
        t["recency_days"].to_numpy(dtype=float),
        t["n_orders"].to_numpy(dtype=float),
        t["lapsed"].to_numpy(dtype=bool),
    )
    out = table_from(t, *ranks, horizon_days, as_of, campaigns, model_version)
    rows = t["_position"].to_numpy(dtype=np.int64) if position else None
    return out, rows


def _ranks_within_lists(
    p_churn: np.ndarray, recency_days: np.ndarray, n_orders: np.ndarray, lapsed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of rows in customer id order, within each list (at risk, lapsed): each row's rank by
    ``p_churn``, highest first, ties in customer id order (a stable sort keeps the rows'
    order); its risk decile ``ceil(10 x rank / rows of the list)``; its R and F quintile
    scores (:func:`winback.segments.quintiles` of the recency, most recent 5, and of the
    number of orders)."""
    n = len(p_churn)
    rank, decile = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    r, f = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for flag in (False, True):
        at = np.flatnonzero(lapsed == flag)
        if not len(at):
            continue
        by_risk = at[np.argsort(-p_churn[at], kind="stable")]
        rank[by_risk] = np.arange(1, len(at) + 1)
        decile[at] = np.ceil(rank[at] * 10 / len(at))
        r[at] = quintiles(-recency_days[at])
        f[at] = quintiles(n_orders[at])
    return rank, decile, r, f


#: Above this many customers, DuckDB scores in customer hash partitions of about
#: SCORE_PARTITION_ROWS customers: each partition's full snapshot and its score columns go to
#: Parquet parts, and the score table is read from them in SQL.
SCORE_PARTITION_CUSTOMERS = 1_000_000
SCORE_PARTITION_ROWS = 500_000


def release_memory() -> None:
    """Hand freed memory back to the system: the heap's free pages (glibc keeps them) and
    Arrow's, which holds the string columns. Otherwise, after a step's frames are freed, they
    would count against the process for the rest of the run."""
    import pyarrow as pa

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    pa.default_memory_pool().release_unused()


def _score_in_parts(
    orders, model, as_of, horizon_days, lookback, windows, campaigns, keep_in=None
) -> tuple[Path, Carry | None, str, int]:
    """Score in customer hash partitions; return a folder with each partition's full snapshot
    under ``features/`` (Arrow files) and its :func:`_score_columns` under ``scores/`` (Parquet
    parts, which the ranks' SQL reads), how the features were split between carried and
    computed (with ``keep_in``), the key features are kept under and the number of partitions.
    The same rows and values as :func:`build_snapshots` followed by ``predict_proba``."""
    import math
    import tempfile

    k = max(1, math.ceil(orders.report.n_customers / SCORE_PARTITION_ROWS))
    if keep_in is None:
        folder = Path(tempfile.mkdtemp(prefix="winback-scoring-"))
    else:
        folder = work_folder(keep_in)
    (folder / "features").mkdir()
    (folder / "scores").mkdir()
    written = 0
    cutoff = normalize_cutoffs([as_of])[0]
    spec = spec_for(orders, lookback, windows)
    key = kept_key(spec)
    try:
        with contextlib.ExitStack() as stack:
            c = None
            if keep_in is not None:
                kept = find_kept(keep_in, key, cutoff)
                c = stack.enter_context(
                    carry_over(orders.engine(), orders.table, cutoff, spec, kept, folder, k)
                )
                if kept is not None:
                    log.info(
                        "features: %s customers carried from %s (orders unchanged), "
                        "%s computed from their orders",
                        f"{c.n_carried:,}", f"{kept.cutoff:%Y-%m-%d}", f"{c.n_computed:,}",
                    )  # fmt: skip
            source = stack.enter_context(
                snapshot_source(
                    orders,
                    [as_of],
                    horizon_days,
                    lookback,
                    windows,
                    materialize=False,
                    carry=c,
                    parts=k,
                )
            )
            # the next partition is read (on the engine's threads) while this one is scored
            # and written: at most two partitions in memory
            reader = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            ahead = reader.submit(source.read, (0, k), False)  # ranked in SQL afterwards
            for i in range(k):
                f = ahead.result()
                if i + 1 < k:
                    ahead = reader.submit(source.read, (i + 1, k), False)
                if f.empty:
                    continue
                # Arrow's own file format: written as it is in memory (Parquet's encoding cost
                # more than a second a part), and read back a few rows at a time, memory-mapped
                _write_arrow(f, folder / "features" / f"part-{i:05d}.arrow")
                scores = _score_columns(f, model.predict_proba(f)[:, 1], campaigns.value_days)
                scores["_feature_row"] = np.arange(written, written + len(f))  # in the parts
                written += len(f)
                scores.to_parquet(folder / "scores" / f"part-{i:05d}.parquet", index=False)
                del f, scores
                release_memory()
            split = source.carry
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, split, key, k


def keep_features(scored: Scored, out: Path, wait_seconds: float = 0.0) -> None:
    """Keep the features ``scored`` computed (``score_customers(..., keep_in=out /
    KEPT_DIR)``) for the next night, under the exports folder's lock (see
    :mod:`winback.carry`)."""
    if scored.work is None or scored.cutoff is None:
        return
    from winback.export import export_lock

    with export_lock(out, wait_seconds):
        state = carry.keep_features(
            scored.work, out / KEPT_DIR, scored.kept_key, scored.cutoff, scored.parts
        )
    if state is not None:
        scored.features_path = state / "features"


def _write_arrow(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=REASON_BLOCK_ROWS)


def _score_on_spark(
    orders,
    model,
    as_of: datetime,
    horizon_days: int,
    lookback_days: int,
    windows_days,
    value_days: int,
    uplift_model=None,
) -> _SparkFeatures:
    """The scoring snapshot at ``as_of`` with ``p_churn``, ``value`` and ``expected_value``
    (and ``uplift``, by ``uplift_model``), computed and kept on the executors.

    Features and BG/NBD summaries are computed in Spark, BG/NBD is fitted on the driver from a
    sample of the summaries (exactly as on DuckDB); the churn model and the fit are broadcast
    and applied batch by batch with ``mapInPandas``, and the scored snapshot is persisted where
    it was computed. The score table is made from it there too
    (:func:`winback.spark_scores.population_on_spark`); the driver reads the full rows of the
    listed customers only, for their reasons (:meth:`_SparkFeatures.rows`).
    """
    from pyspark import StorageLevel
    from pyspark.sql.types import DoubleType, StructField, StructType

    engine = orders.engine()  # a SparkEngine
    spark = engine.spark
    with snapshot_source(orders, [as_of], horizon_days, lookback_days, windows_days) as source:
        joined = spark.sql(source.sql()).drop("cutoff_ts")
        fields = [f for f in joined.schema.fields if f.name not in SUMMARY_COLUMNS]
        added = [*BGNBD_FEATURES, *BGNBD_POSTERIOR, "p_churn", "value", "expected_value"]
        added += ["uplift"] if uplift_model is not None else []
        schema = StructType(fields + [StructField(c, DoubleType()) for c in added])
        shipped = spark.sparkContext.broadcast((model, source.bgnbd, uplift_model))

        def score(batches):
            churn_model, bgnbd, ranker = shipped.value
            for batch in batches:
                out = bgnbd.add_to(batch)
                out["p_churn"] = churn_model.predict_proba(out)[:, 1]
                out = out.assign(**customer_values(out, value_days))
                if ranker is not None:
                    out["uplift"] = ranker.predict(out)
                yield out

        scored = joined.mapInPandas(score, schema).persist(StorageLevel.MEMORY_AND_DISK)
        scored.count()  # computed now, while the source's tables exist
    return _SparkFeatures(engine, scored, pd.Timestamp(as_of, tz="UTC"), value_days)


class _SparkFeatures:
    """A scored snapshot persisted on Spark's executors (see :func:`_score_on_spark`)."""

    def __init__(self, engine, frame, cutoff: pd.Timestamp, value_days: int):
        self.engine, self.frame, self.cutoff, self.value_days = engine, frame, cutoff, value_days

    def rows(self, ids: pd.Series) -> pd.DataFrame:
        """The full snapshot rows of the customers ``ids`` (in any order)."""
        from pyspark.sql.functions import broadcast

        wanted = self.engine.spark.createDataFrame(
            pd.DataFrame({"customer_id": ids.astype(str).to_numpy(dtype=object)})
        )
        found = self.engine.query_df_frame(self.frame.join(broadcast(wanted), "customer_id"))
        found.insert(1, "cutoff_ts", self.cutoff)
        return found

    def medians(self, columns: list[str]) -> dict[str, float]:
        """The median of each column over every scored customer (missing values left out)."""
        present = [c for c in columns if c in self.frame.columns]
        if not present:
            return {}
        row = self.frame.selectExpr(
            *(f"percentile(`{c}`, 0.5) FILTER (WHERE NOT isnan(`{c}`)) AS `{c}`" for c in present)
        ).collect()[0]
        return {c: float(row[c]) for c in present if row[c] is not None}

    def close(self) -> None:
        # at exit the session may already be gone, and its cache with it
        with contextlib.suppress(Exception):
            self.frame.unpersist()


#: Above this many listed customers, ``auto`` explains with path contributions, not TreeSHAP.
SHAP_MAX_ROWS = 50_000
#: Blocks of listed customers explained at once.
REASON_THREADS = 2


def add_reasons(
    scored: Scored,
    model: ChurnModel,
    lists: dict[str, CampaignList],
    method: str = "auto",
) -> dict[str, CampaignList]:
    """Fill ``reasons`` in ``scored.scores`` for the customers on the lists (built from it, so
    the lists read them there too; returned as they are), as an Arrow dictionary column: each
    distinct text is held once, however many customers share it (a list's ``reasons`` come
    out as text).

    ``method``: ``shap``, ``path`` or ``auto`` (``shap`` up to ``SHAP_MAX_ROWS`` customers)."""
    ids = scored.scores["customer_id"]
    on_a_list = np.zeros(len(ids), dtype=bool)
    for lst in lists.values():
        if lst.scores is not scored.scores:
            raise ValueError("the lists were built from another score table")
        on_a_list[lst.rows] = True
    listed = np.flatnonzero(on_a_list)
    if method == "auto":
        method = "shap" if len(listed) <= SHAP_MAX_ROWS else "path"
    import pyarrow as pa

    # each listed customer's sentences as numbers into the distinct sentences (many customers'
    # reasons read alike: a Python string per customer, or each block's texts kept until
    # all are merged, would hold several times the memory); the distinct texts are spelled
    # once all blocks are told
    table = ReasonTable(len(listed))
    population = scored.medians(list(REASON_REFERENCES))

    def explain(at: np.ndarray, feats: pd.DataFrame) -> None:
        said = reason_sentences(model.contributions(feats, method), feats, population=population)
        table.add(np.searchsorted(listed, at), said)

    # blocks explained REASON_THREADS at a time (LightGBM's leaves, NumPy's sorts and Arrow's
    # joins run outside Python's lock); the next block is read only when a thread is free, so
    # at most REASON_THREADS blocks' features are held at once
    running: set[Future] = set()
    with ThreadPoolExecutor(max_workers=REASON_THREADS) as pool:
        for at, feats in scored.features_in_blocks(listed):
            running.add(pool.submit(explain, at, feats))
            del feats
            if len(running) == REASON_THREADS:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()  # a block that failed fails the reasons now
        for f in running:
            f.result()
    code_listed, texts = table.dictionary()
    code = np.full(len(ids), -1, dtype=np.int32)  # -1: not listed, no reasons
    code[listed] = code_listed
    # an Arrow dictionary column, not pandas categories: a categorical's categories are
    # checked for repeats through a hash table of Python strings, 320 MB more than the 195 MB
    # of texts themselves at 1.5M distinct texts (50M orders)
    said = pa.DictionaryArray.from_arrays(pa.array(code, mask=code < 0), texts)
    scored.scores["reasons"] = pd.arrays.ArrowExtensionArray(said)
    return lists


def add_uplift(
    scored: Scored, model, campaigns: CampaignsConfig, suppress: pd.Series | None = None
) -> int:
    """Rank by an uplift model (:class:`winback.uplift.UpliftModel`): for every customer who
    may be listed (:func:`listable`, in a campaign group), ``uplift`` and, in place of the
    save-rate gain, ``expected_gain = uplift x value - contact_cost - offer_cost x (1 - p_churn
    + uplift)`` (:func:`winback.campaigns.incremental_gain`), by their group's costs; the
    gain of the customers who may not be listed is left empty, as it would mean something
    else. The features are read a block at a time. Returns how many customers got an
    uplift."""
    scores = scored.scores
    rows = np.flatnonzero(uplift_takers(scores, campaigns, suppress))
    uplift = np.full(len(scores), np.nan)
    for at, feats in scored.features_in_blocks(rows):
        uplift[at] = model.predict(feats)
    uplift_gains(scores, uplift, campaigns)
    return len(rows)


def listed_groups(scores: pd.DataFrame, lists: dict[str, CampaignList]) -> pd.Series:
    """Each scored customer's group on the lists (``treatment`` or ``control``, categories of
    ``string``: a byte a customer), missing for those on none."""
    codes = np.full(len(scores), -1, dtype=np.int8)
    for lst in lists.values():
        codes[lst.rows] = lst.control
    groups = texts_of(codes, ["treatment", "control"], dtype="string")
    return pd.Series(groups, index=scores.index, copy=False)


def _positions(ids: pd.Series, among: pd.Series) -> np.ndarray:
    """Where each of ``ids`` is in ``among`` (every one of them is there), through Arrow's
    hash table."""
    import pyarrow.compute as pc

    found = pc.index_in(_arrow_text(ids), value_set=_arrow_text(among))
    if found.null_count:
        raise ValueError(f"{found.null_count} customer(s) not among the scored ones")
    return found.to_numpy().astype(np.intp)


def _arrow_text(s: pd.Series):
    import pyarrow as pa

    return pa.array(s, from_pandas=True).cast(pa.large_string())


def build_lists(
    scores: pd.DataFrame,
    campaigns: CampaignsConfig,
    suppress: pd.Series | None = None,
    order_by: str = "p_churn",
) -> dict[str, CampaignList]:
    """The ``at_risk`` and ``lapsed`` lists: suppressed customers and those below
    ``campaigns.min_p_churn`` left out, each group sized and capped, then split into treatment
    and control. Rows are ordered by ``order_by`` (``p_churn``, or ``expected_gain`` when an
    uplift model ranks them), highest first, then customer id, and ranked 1..n; ``top_k``
    keeps the k highest by it.

    ``suppress`` (aligned with ``scores``) holds why a customer must not be contacted, or NA.
    Each list is its rows of ``scores`` (:class:`CampaignList`), not a copy of them.
    """
    if order_by not in ("p_churn", "expected_gain"):
        raise ValueError(f"order_by must be p_churn or expected_gain; got {order_by!r}")
    eligible = listable(scores, campaigns.min_p_churn, suppress)
    keys = ["customer_id", "p_churn", "expected_gain"]
    lists = {}
    for list_name in ("at_risk", "lapsed"):
        taken, control = [np.empty(0, dtype=np.intp)], [np.empty(0, dtype=bool)]
        for g in campaigns.groups:
            if g.list != list_name:
                continue
            member = eligible & (scores["campaign"] == g.name).to_numpy(dtype=bool, na_value=False)
            member &= (scores["list"] == list_name).to_numpy()
            chosen = size_list(  # sized on the keys alone: no copy of the score table
                scores.loc[member, keys],
                campaigns.size_by,
                by=order_by,
                k=campaigns.top_k,
                threshold=campaigns.threshold,
                capacity=g.capacity,
            )
            taken.append(scores.index.get_indexer(chosen.index))
            control.append(
                control_flags(
                    chosen["customer_id"], g.name, campaigns.salt, campaigns.control_share
                )
            )
        at = np.concatenate(taken)
        if order_by == "p_churn":  # the score table's rank is by p_churn, then customer id
            by_rank = np.argsort(scores["rank"].to_numpy()[at], kind="stable")
        else:
            keys_at = scores[[order_by, "customer_id"]].iloc[at].reset_index(drop=True)
            by_rank = best_first(keys_at, order_by).index.to_numpy()
        lists[list_name] = CampaignList(scores, at[by_rank], np.concatenate(control)[by_rank])
    return lists


@dataclass(frozen=True, eq=False)
class CampaignList(ScoreRows):
    """One win-back list: its rows of the score table (positions, in list order) and which of
    them are the control group. A list's columns are :data:`LIST_COLUMNS`: the score table's
    (as they are when read, so the reasons added to the table after the list was built are
    the list's too; the reasons as text), ``rank`` 1..n in list order and ``group``
    (treatment or control). They are read from the table as asked, a column
    (``lst["p_churn"]``), a block of rows (:meth:`take`) or the whole list (:meth:`frame`): a
    list of millions of customers is never a second copy of their rows, which the files are
    written from a block at a time."""

    scores: pd.DataFrame
    rows: np.ndarray
    control: np.ndarray

    columns = LIST_COLUMNS

    def take(self, at: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The list's rows at the positions ``at`` (of the list), as a frame of ``columns``
        (default: every list column), each row ranked by its place in the list."""
        at = np.asarray(at, dtype=np.intp)
        wanted = LIST_COLUMNS if columns is None else columns
        own = [c for c in wanted if c not in ("rank", "group")]
        block = self.scores.iloc[self.rows[at], [self.scores.columns.get_loc(c) for c in own]]
        block = block.reset_index(drop=True)
        if "rank" in wanted:
            block["rank"] = at + 1
        if "group" in wanted:
            block["group"] = _group_texts(self.control[at])
        return spelled_texts(block[wanted])


def _group_texts(control: np.ndarray):
    """``control`` or ``treatment`` for each flag, as text taken by Arrow from the two words
    (not a Python string per customer)."""
    import pyarrow as pa

    words = pa.array(["treatment", "control"], type=pa.large_string())
    return pd.array(words.take(pa.array(control.astype(np.int8))), dtype="str")


#: The columns of the profit curve (``profit_curve.csv``).
PROFIT_CURVE_COLUMNS = ["list", "n_contacted", "customer_id", "expected_gain", "cumulative_gain"]


@dataclass(frozen=True, eq=False)
class ProfitCurve(ScoreRows):
    """The cumulative expected gain of each list as it grows, best first: for each list's
    customers who may be listed, their rows of the score table in that order and the running
    sum of their ``expected_gain``. Its columns are :data:`PROFIT_CURVE_COLUMNS`, read from
    the table as asked, like a :class:`CampaignList`'s: a curve of millions of customers holds
    a row number and a sum for each (12 bytes), not a copy of their ids and gains."""

    scores: pd.DataFrame
    names: list[str]
    starts: np.ndarray  # where each list's rows start in ``rows``, then the end
    rows: np.ndarray  # rows of the score table, list by list, best first
    cumulative: np.ndarray  # the running sum of expected_gain within each list

    columns = PROFIT_CURVE_COLUMNS

    def take(self, at: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The curve's rows at the positions ``at``, as a frame of ``columns`` (default:
        every column)."""
        at = np.asarray(at, dtype=np.intp)
        wanted = PROFIT_CURVE_COLUMNS if columns is None else columns
        which = np.searchsorted(self.starts, at, side="right") - 1  # each row's list
        own = [c for c in wanted if c in ("customer_id", "expected_gain")]
        block = self.scores.iloc[self.rows[at], [self.scores.columns.get_loc(c) for c in own]]
        block = block.reset_index(drop=True)
        if "list" in wanted:
            block["list"] = texts_of(which.astype(np.int8), self.names)
        if "n_contacted" in wanted:
            block["n_contacted"] = (at - self.starts[which] + 1).astype(np.int64)
        if "cumulative_gain" in wanted:
            block["cumulative_gain"] = self.cumulative[at]
        return block[wanted]

    def lines(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """Each list's name, customers contacted (1..n) and cumulative gain, in name order."""
        for i, name in enumerate(self.names):
            start, end = self.starts[i], self.starts[i + 1]
            yield name, np.arange(1, end - start + 1), self.cumulative[start:end]


def profit_curve(
    scores: pd.DataFrame, suppress: pd.Series | None = None, min_p_churn: float | None = None
) -> ProfitCurve:
    """Cumulative expected gain of contacting the customers of each list who may be listed
    (:func:`listable`), best first (:class:`ProfitCurve`, lists in name order). The maximum of
    ``cumulative_gain`` is where the profit-sized list stops."""
    keep = scores["expected_gain"].notna().to_numpy() & listable(scores, min_p_churn, suppress)
    names = sorted(str(n) for n in scores.loc[keep, "list"].unique())
    gain = scores["expected_gain"].to_numpy(dtype=float)
    rows, sums = [], []
    for name in names:
        mine = np.flatnonzero(keep & (scores["list"] == name).to_numpy(dtype=bool))
        mine = mine[
            best_first_rows(scores[["expected_gain", "customer_id"]].iloc[mine], "expected_gain")
        ]
        rows.append(mine.astype(np.int32 if len(scores) < 2**31 else np.int64))
        sums.append(np.cumsum(gain[mine]))
    starts = np.cumsum([0, *(len(r) for r in rows)])
    return ProfitCurve(
        scores,
        names,
        starts,
        np.concatenate(rows) if rows else np.empty(0, dtype=np.int32),
        np.concatenate(sums) if sums else np.empty(0),
    )


#: The columns of a list :func:`delta` reads (all an earlier export's lists need to hold).
DELTA_COLUMNS = ["customer_id", "p_churn", "campaign", "reasons"]


def delta(
    new: dict[str, CampaignList | pd.DataFrame],
    old: dict[str, pd.DataFrame] | None,
    old_rows: Callable[[str, np.ndarray, list[str]], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Who entered and who left each list since the previous export, with reasons, as a frame
    (:func:`delta_rows`, every row read)."""
    return delta_rows(new, old, old_rows).frame()


#: The columns of the delta: the list, the change and :data:`DELTA_COLUMNS`.
DELTA_FILE_COLUMNS = ["list", "change", *DELTA_COLUMNS]


@dataclass(frozen=True, eq=False)
class Delta(ScoreRows):
    """Who entered and who left each list, as :data:`DELTA_FILE_COLUMNS`: in (list, change,
    customer id) order, pieces of the lists (the rows that entered, read from the new list
    when asked, as the list's own files are) and frames (the rows that left, read from the
    previous export). On a first night every listed customer entered: millions of rows of
    ids and reasons, which are never held as a copy here; the files are written from it a
    block at a time."""

    pieces: list[tuple[str, str, Callable[[np.ndarray], pd.DataFrame]]]  # list, change, read
    starts: np.ndarray  # where each piece's rows start, then the end

    columns = DELTA_FILE_COLUMNS

    def __len__(self) -> int:
        return int(self.starts[-1])

    def count(self, change: str) -> int:
        """How many rows are of ``change`` (``entered`` or ``left``)."""
        return sum(
            int(self.starts[i + 1] - self.starts[i])
            for i, (_, c, _) in enumerate(self.pieces)
            if c == change
        )

    def take(self, at: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows at the positions ``at``, as a frame of ``columns`` (default: all)."""
        at = np.asarray(at, dtype=np.intp)
        wanted = DELTA_FILE_COLUMNS if columns is None else columns
        blocks, where = [], []
        for i, (name, change, read) in enumerate(self.pieces):
            mine = np.flatnonzero((at >= self.starts[i]) & (at < self.starts[i + 1]))
            if len(mine) or (not blocks and i == len(self.pieces) - 1):
                rows = read(at[mine] - self.starts[i]).reset_index(drop=True)
                blocks.append(rows.assign(list=name, change=change)[wanted])
                where.append(mine)
        if not blocks:  # no list at all
            return pd.DataFrame({c: pd.Series(dtype=object) for c in wanted})
        frame = pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]
        return frame.iloc[np.argsort(np.concatenate(where), kind="stable")].reset_index(drop=True)


def delta_rows(
    new: dict[str, CampaignList | pd.DataFrame],
    old: dict[str, pd.DataFrame] | None,
    old_rows: Callable[[str, np.ndarray, list[str]], pd.DataFrame] | None = None,
) -> Delta:
    """Who entered and who left each list since the previous export, with reasons
    (:class:`Delta`: ``list, change, customer_id, p_churn, campaign, reasons``; the new row's
    values for entered, the old row's for left). ``old`` needs :data:`DELTA_COLUMNS`, or only
    ``customer_id`` with ``old_rows(list, rows, columns)`` giving the other columns for the
    rows (positions) of it that left: a night's lists are millions of customers and hundreds
    of megabytes of reasons, and the delta shows a few of them. Of the new lists only the
    rows that entered are read, when the delta is."""
    cols = DELTA_COLUMNS
    pieces = []  # each list's entered and left rows, ordered by customer id
    for name, frame in new.items():
        ids = frame["customer_id"]
        before = (old or {}).get(name)
        before_ids = ids.head(0) if before is None else before["customer_id"]
        came = np.flatnonzero(~_among(ids, before_ids))
        came = came[_by_id(ids.take(came))]
        gone = np.flatnonzero(~_among(before_ids, ids))
        if before is not None:
            gone = gone[_by_id(before_ids.take(gone))]
        del ids, before_ids
        # texts as text: the lists' categories differ from night to night
        pieces.append((name, "entered", len(came), partial(_entered, frame, came)))
        if before is None:  # a list new tonight: no one left it, with the list's own columns
            pieces.append((name, "left", 0, partial(_entered, frame, came[:0])))
            continue
        left = before.iloc[gone]
        unread = [c for c in cols if c not in left]
        if unread and old_rows is not None:
            read = old_rows(name, gone, unread).set_axis(left.index)
            left = left.assign(**{c: read[c] for c in unread})
        pieces.append((name, "left", len(gone), partial(_left, plain_columns(left[cols]))))
    # in (list, change, customer id) order
    pieces.sort(key=lambda p: p[:2])
    starts = np.cumsum([0, *(n for _, _, n, _ in pieces)])
    return Delta([(name, change, read) for name, change, _, read in pieces], starts)


def _entered(frame: CampaignList | pd.DataFrame, came: np.ndarray, at: np.ndarray):
    """The delta's rows of the customers of ``frame`` at ``came[at]``, as text."""
    if isinstance(frame, CampaignList):
        return plain_columns(frame.take(came[at], DELTA_COLUMNS))
    return plain_columns(frame[DELTA_COLUMNS].take(came[at]).reset_index(drop=True))


def _left(rows: pd.DataFrame, at: np.ndarray) -> pd.DataFrame:
    return rows.iloc[at]


def _by_id(ids: pd.Series) -> np.ndarray:
    """The order of ``ids`` by customer id (ties in their order, as a stable sort keeps)."""
    import pyarrow.compute as pc

    return pc.array_sort_indices(_arrow_text(ids)).to_numpy().astype(np.intp)


def _among(ids: pd.Series, others: pd.Series) -> np.ndarray:
    """``ids.isin(others)`` through Arrow's hash set: pandas' own makes a Python object of
    every value of ``others``, seconds for a million ids."""
    import pyarrow.compute as pc

    found = pc.is_in(_arrow_text(ids), value_set=_arrow_text(others))
    return found.fill_null(False).to_numpy(zero_copy_only=False)
