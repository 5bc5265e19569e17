"""Point-in-time features at cutoffs: the definitions, written once as SQL for every engine.

The boundary: a snapshot row is keyed by ``(customer_id, cutoff_ts)`` and sees only orders with
``order_ts <= cutoff_ts``. The population at a cutoff T is every customer with a purchase (not a
return) in ``(T - lookback_days, T]``. A window of w days means ``(T - w, T]``. All ``*_days``
values are in days (fractions for timestamps with a time of day); amounts are in the data's
currency. Returns and cancellations never count as purchases; they feed ``n_returns``,
``return_amount``, ``return_rate`` and ``net_spend`` only.

Many cutoffs run in one pass: a cutoffs table is joined to the orders with ``order_ts <= cutoff_ts``
and every feature is an aggregate with a filter over that join.

Features
--------
recency_days, tenure_days         days since the last / first purchase
n_orders, n_order_days            purchases; distinct calendar days with a purchase
monetary_total, monetary_mean     purchase spend, total and per order
max_order_amount, last_order_amount
orders_{w}d, spend_{w}d           purchases and spend in the last w days (config windows)
orders_prev_90d, spend_prev_90d   the 90 days before the last 90: (T - 180, T - 90]
orders_trend_90d                  (orders_90d - orders_prev_90d) / their sum, in [-1, 1]
spend_change_90d                  spend_90d / spend_prev_90d - 1
orders_trend_180d                 the same for 180 days against (T - 360, T - 180]
gap_mean_days, gap_median_days, gap_std_days, last_gap_days
                                  gaps between consecutive purchase days
overdue_ratio                     recency_days / gap_mean_days
orders_per_year                   n_orders per 365 days of tenure (tenure at least 30 days)
first_order_amount                the first purchase's amount (of several at once, the largest)
last_vs_first_amount, last_vs_mean_amount
                                  the last purchase's amount over the first's / over the mean
n_returns, return_amount, return_rate (returns / (purchases + returns)), net_spend
returns_90d                       returns in the last 90 days
days_since_return                 days since the last return (missing without one)
returned_since_last_order         1 when a return came after the last purchase, else 0
weekend_share                     share of purchases on Saturday or Sunday
orders_ahead_90d_last_year        purchases in (T - 365, T - 275]: what they did a year ago in
                                  the 90 days now ahead (a seasonality signal)
n_categories, top_category_share  when a category column exists
n_channels                        when a channel column exists
cutoff_season_sin, cutoff_season_cos
                                  where T sits in the year: the angle 2 pi (day of year - 1) /
                                  365.25 (the same for every customer at T)
history_days                      days from the first order in the data to T: how much history
                                  the file can show at T (a file often starts after the shop did)
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from winback.cutoffs import normalize_cutoffs, split_labelled_cutoffs
from winback.engines.dialect import DUCKDB, SPARK, Dialect
from winback.errors import UsageError
from winback.orders import Orders

log = logging.getLogger(__name__)

#: (customer, cutoff) pairs aggregated in one pass; about 2 KB of state each in DuckDB.
GROUPS_PER_PASS = 400_000

#: From this many customer hash partitions on, the orders are set apart by partition once
#: (:func:`orders_by_partition`) before the partitions' feature queries, instead of each query
#: finding its partition's orders by hashing every order. At 50M orders (the orders spilled to
#: disk) the features stage's 25 partitions took 177.8 s against 361.9 s, and the score job's
#: 20 partitions 242.1 s against 471.5 s, setting apart included (29 to 36 s); at 10M orders (4
#: partitions, in memory) counting a partition's feature rows took 0.7 s against 1.1 to 1.3 s,
#: for 2.5 s once: about even.
SPLIT_FROM_PARTITIONS = 8

#: The column of :func:`orders_by_partition`'s table that holds each order's partition.
PART_COLUMN = "_part"
_split_tables = itertools.count()

#: The fixed windows of the features besides the configured ones, as ``[start, end)`` ages in
#: days: the 90 days before the last 90 (``orders_prev_90d``), the 180 before the last 180
#: (``orders_trend_180d``), the 90 days now ahead a year ago (``orders_ahead_90d_last_year``)
#: and the last 90 days of the trend and of ``returns_90d``.
PREV_90 = (90, 180)
PREV_180 = (180, 360)
AHEAD_LAST_YEAR = (275, 365)
RECENT = 90

#: Milliseconds in a day: the unit of every age, as ``days_between`` counts.
DAY_MS = 86_400_000

__all__ = [
    "FeatureSpec",
    "Dialect",
    "DUCKDB",
    "SPARK",
    "feature_sql",
    "in_partition",
    "population_sql",
    "label_sql",
    "bgnbd_summary_sql",
    "feature_names",
    "window_edges",
    "carried_sql",
    "carried_summary_sql",
    "order_checks_sql",
    "build_features",
    "write_features",
]


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute: lookback, windows and which optional columns exist."""

    lookback_days: int = 365
    windows_days: tuple[int, ...] = (30, 90, 180, 365)
    has_category: bool = False
    has_channel: bool = False
    data_start: datetime | None = None  # the first order in the data (for history_days)

    def __post_init__(self) -> None:
        if self.lookback_days < 1:
            raise UsageError(
                f"The 'lookback_days' setting must be a whole number of days >= 1; "
                f"got {self.lookback_days}."
            )


def feature_names(spec: FeatureSpec) -> list[str]:
    """Feature columns in output order (after the keys ``customer_id``, ``cutoff_ts``)."""
    names = [
        "recency_days",
        "tenure_days",
        "n_orders",
        "n_order_days",
        "monetary_total",
        "monetary_mean",
        "max_order_amount",
        "last_order_amount",
        "first_order_amount",
        "last_vs_first_amount",
        "last_vs_mean_amount",
    ]
    for w in spec.windows_days:
        names += [f"orders_{w}d", f"spend_{w}d"]
    names += [
        "orders_prev_90d",
        "spend_prev_90d",
        "orders_trend_90d",
        "spend_change_90d",
        "orders_trend_180d",
        "gap_mean_days",
        "gap_median_days",
        "gap_std_days",
        "last_gap_days",
        "overdue_ratio",
        "orders_per_year",
        "n_returns",
        "return_amount",
        "return_rate",
        "net_spend",
        "returns_90d",
        "days_since_return",
        "returned_since_last_order",
        "weekend_share",
        "orders_ahead_90d_last_year",
    ]
    if spec.has_category:
        names += ["n_categories", "top_category_share"]
    if spec.has_channel:
        names += ["n_channels"]
    return [*names, "cutoff_season_sin", "cutoff_season_cos", "history_days"]


def in_partition(partition: tuple[int, int], d: Dialect = DUCKDB, split: bool = False) -> str:
    """The SQL condition that a row's ``customer_id`` is in hash partition ``(i, k)``: k such
    partitions cover every customer once. ``split``: the rows are
    :func:`orders_by_partition`'s for this k, and their :data:`PART_COLUMN` says it."""
    i, k = partition
    if split:
        return f"{PART_COLUMN} = {int(i)}"
    return f"{d.hash_mod.format(col='customer_id', k=int(k))} = {int(i)}"


def order_columns(spec: FeatureSpec) -> list[str]:
    """The columns of the orders that :func:`feature_sql` reads."""
    optional = [c for c in ("category", "channel") if getattr(spec, f"has_{c}")]
    return ["customer_id", "order_ts", "amount", "is_return", *optional]


@contextmanager
def orders_by_partition(engine, orders: str, k: int, spec: FeatureSpec) -> Iterator[str | None]:
    """The orders set apart by customer hash partition of ``k``, when there are
    :data:`SPLIT_FROM_PARTITIONS` or more on an engine that runs partitions (DuckDB): a table
    of the columns the features read (:func:`order_columns`) and their partition in
    :data:`PART_COLUMN`, ordered by it, so a partition's rows lie in blocks of their own, which
    a query on :data:`PART_COLUMN` reads without the rest. Otherwise None, and each partition's
    query filters the orders by hash. Dropped on leaving.
    """
    if k < SPLIT_FROM_PARTITIONS or not engine.bounded_groups:
        yield None
        return
    name = engine.table_name(f"_orders_by_part_{next(_split_tables)}")
    part = engine.dialect.hash_mod.format(col="customer_id", k=int(k))
    started = time.perf_counter()
    engine.create_table(
        name,
        f"SELECT {', '.join(order_columns(spec))}, CAST({part} AS INTEGER) AS {PART_COLUMN} "
        f"FROM {orders} ORDER BY {PART_COLUMN}",
    )
    log.info(
        "features: the orders set apart by customer for %d partitions in %.1f s",
        k,
        time.perf_counter() - started,
    )
    try:
        yield name
    finally:
        engine.drop(name)


def _ts(ts: datetime) -> str:
    """A naive-UTC timestamp as an SQL literal."""
    return f"TIMESTAMP '{ts:%Y-%m-%d %H:%M:%S.%f}'"


def window_edges(spec: FeatureSpec) -> list[int]:
    """Every age in days at which a feature's window starts or ends: an order whose age
    crosses one of them between two cutoffs changes its customer's features by more than the
    passing of time."""
    return sorted({*spec.windows_days, *PREV_90, *PREV_180, *AHEAD_LAST_YEAR, RECENT})


def _moved_by_date(
    spec: FeatureSpec,
    d: Dialect,
    cutoff: str,
    recency: str,
    tenure: str,
    n_orders: str,
    gap_mean: str,
    since_return: str,
) -> dict[str, str]:
    """The features that move with the cutoff ``cutoff`` alone, given a customer's recency,
    tenure, purchases, mean gap and days since the last return: the same expressions for
    features computed from the orders and for features carried from an earlier cutoff."""
    doy_angle = f"2 * pi() * (dayofyear({cutoff}) - 1) / 365.25"
    start = spec.data_start or datetime(1970, 1, 1)
    return {
        "overdue_ratio": f"{recency} / nullif({gap_mean}, 0)",
        "orders_per_year": f"{n_orders} * 365.0 / greatest({tenure}, 30.0)",
        "returned_since_last_order": f"CASE WHEN {since_return} < {recency} THEN 1 ELSE 0 END",
        "cutoff_season_sin": f"sin({doy_angle})",
        "cutoff_season_cos": f"cos({doy_angle})",
        "history_days": d.days_between.format(later=cutoff, earlier=_ts(start)),
    }


def _events_sql(orders: str, spec: FeatureSpec, d: Dialect) -> str:
    """CTEs: ``day_gaps`` has one row per customer and purchase day with the gap (whole days) to
    the day before; ``events`` has the orders, each purchase numbered within its category and
    channel.

    A purchase day exists at T when its first purchase is at or before T, so the days existing at
    T are a prefix of the customer's days and each gap is known exactly when its day is.
    """
    # Each purchase numbered within its (customer, category) and (customer, channel) in time
    # order. At T the largest number over rows <= T is the top category's count, and the rows
    # numbered 1 count the distinct categories: exact, point in time, no DISTINCT needed.
    ranks = ""
    for c in ("category", "channel"):
        if getattr(spec, f"has_{c}"):
            ranks += (
                f",\n               CASE WHEN {c} IS NOT NULL AND NOT is_return THEN "
                f"row_number() OVER (PARTITION BY customer_id, {c}, {c} IS NULL OR is_return "
                f"ORDER BY order_ts) END AS {c}_rank"
            )
    day = d.to_date.format(ts="order_ts")
    gap = d.date_diff_days.format(earlier="prev_day", later="day")
    return f"""
    purchase_days AS (
        SELECT customer_id, {day} AS day, min(order_ts) AS day_ts
        FROM {orders} WHERE NOT is_return
        GROUP BY customer_id, {day}
    ),
    day_gaps AS (
        SELECT customer_id, day_ts,
               {gap} AS gap_days
        FROM (
            SELECT customer_id, day, day_ts,
                   lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS prev_day
            FROM purchase_days
        ) AS t
    ),
    events AS (
        SELECT customer_id, order_ts, amount, is_return{ranks}
        FROM {orders}
    )"""


def feature_sql(
    orders: str,
    cutoffs: str,
    spec: FeatureSpec,
    d: Dialect = DUCKDB,
    partition: tuple[int, int] | None = None,
    split: bool = False,
) -> str:
    """SQL that returns one row per ``(customer_id, cutoff_ts)`` of the active population.

    Parameters
    ----------
    orders : str
        Table (or view) in the orders contract.
    cutoffs : str
        Table with one TIMESTAMP column ``cutoff_ts`` (UTC).
    spec : FeatureSpec
        Lookback, windows and optional columns.
    d : Dialect
        The engine's SQL spellings.
    partition : (i, k), optional
        Only the customers whose id hashes to ``i`` modulo ``k``: k such queries cover every
        customer once, each with all cutoffs, and bound the memory of the aggregation.
    split : bool
        ``orders`` is :func:`orders_by_partition`'s table for the partition's k: its orders
        are found by their partition column instead of by hashing every one.
    """
    if partition is not None:
        orders = f"(SELECT * FROM {orders} WHERE {in_partition(partition, d, split)}) AS part"
    age = d.days_between.format(later="c.cutoff_ts", earlier="e.order_ts")
    dbl = d.to_double.format
    opt = "".join(f", e.{c}_rank" for c in ("category", "channel") if getattr(spec, f"has_{c}"))
    P = "NOT is_return"  # a purchase row
    prev90 = f"{P} AND age_days >= {PREV_90[0]} AND age_days < {PREV_90[1]}"
    win = []
    for w in spec.windows_days:
        win.append(f"count(*) FILTER (WHERE {P} AND age_days < {w}) AS orders_{w}d")
        win.append(
            f"{dbl(x=f'coalesce(sum(amount) FILTER (WHERE {P} AND age_days < {w}), 0)')}"
            f" AS spend_{w}d"
        )
    win_sel = ",\n               ".join(win)
    win_out = ", ".join(f"b.orders_{w}d, b.spend_{w}d" for w in spec.windows_days)
    weekend = d.weekend.format(ts="order_ts")
    # the last purchase's amount; of several at the same instant, the largest
    last_amount = d.arg_max.format(
        value="amount", key=d.latest_key.format(ts="order_ts", amount="amount")
    )
    # the first purchase's amount (the oldest, to the millisecond); of several, the largest
    first_amount = d.arg_max.format(
        value="amount", key=d.earliest_key.format(ts="order_ts", amount="amount")
    )
    moved = _moved_by_date(
        spec,
        d,
        cutoff="b.cutoff_ts",
        recency="b.recency_days",
        tenure="b.tenure_days",
        n_orders="b.n_orders",
        gap_mean="g.gap_mean_days",
        since_return="b.days_since_return",
    )
    median_gap = d.median.format(x="g.gap_days")

    cat_sel = ""
    cat_out = ""
    if spec.has_category:
        cat_sel = (
            ",\n               count(*) FILTER (WHERE category_rank = 1) AS n_categories,"
            "\n               max(category_rank) AS _top_n,"
            "\n               count(category_rank) AS _n_with_category"
        )
        cat_out = (
            f", b.n_categories, {dbl(x='b._top_n')} / b._n_with_category AS top_category_share"
        )
    chan_sel = ""
    chan_out = ""
    if spec.has_channel:
        chan_sel = ",\n               count(*) FILTER (WHERE channel_rank = 1) AS n_channels"
        chan_out = ", b.n_channels"

    return f"""
    WITH {_events_sql(orders, spec, d).strip()},
    joined AS (
        SELECT c.cutoff_ts, e.customer_id, e.order_ts, e.amount, e.is_return{opt},
               {age} AS age_days
        FROM events e JOIN {cutoffs} c ON e.order_ts <= c.cutoff_ts
    ),
    days AS (
        SELECT g.customer_id, c.cutoff_ts,
               count(*) AS n_order_days,
               avg(g.gap_days) AS gap_mean_days,
               {median_gap} AS gap_median_days,
               stddev_samp(g.gap_days) AS gap_std_days,
               {d.arg_max.format(value="g.gap_days", key="g.day_ts")} AS last_gap_days
        FROM day_gaps g JOIN {cutoffs} c ON g.day_ts <= c.cutoff_ts
        GROUP BY g.customer_id, c.cutoff_ts
    ),
    base AS (
        SELECT customer_id, cutoff_ts,
               min(age_days) FILTER (WHERE {P}) AS recency_days,
               max(age_days) FILTER (WHERE {P}) AS tenure_days,
               count(*) FILTER (WHERE {P}) AS n_orders,
               {dbl(x=f"sum(amount) FILTER (WHERE {P})")} AS monetary_total,
               {dbl(x=f"max(amount) FILTER (WHERE {P})")} AS max_order_amount,
               {dbl(x=last_amount + f" FILTER (WHERE {P})")} AS last_order_amount,
               {dbl(x=first_amount + f" FILTER (WHERE {P})")} AS first_order_amount,
               {win_sel},
               count(*) FILTER (WHERE {prev90}) AS orders_prev_90d,
               {dbl(x=f"coalesce(sum(amount) FILTER (WHERE {prev90}), 0)")}
                   AS spend_prev_90d,
               count(*) FILTER (WHERE {P} AND age_days < {PREV_180[0]}) AS _orders_180,
               count(*) FILTER (WHERE {P} AND age_days >= {PREV_180[0]}
                                AND age_days < {PREV_180[1]}) AS _orders_prev_180,
               count(*) FILTER (WHERE {P} AND age_days < {RECENT}) AS _orders_90,
               {dbl(x=f"coalesce(sum(amount) FILTER (WHERE {P} AND age_days < {RECENT}), 0)")}
                   AS _spend_90,
               count(*) FILTER (WHERE is_return) AS n_returns,
               count(*) FILTER (WHERE is_return AND age_days < {RECENT}) AS returns_90d,
               min(age_days) FILTER (WHERE is_return) AS days_since_return,
               {dbl(x="coalesce(-sum(amount) FILTER (WHERE is_return), 0)")} AS return_amount,
               count(*) FILTER (WHERE {P} AND {weekend}) AS _weekend_orders,
               count(*) FILTER (WHERE {P} AND age_days >= {AHEAD_LAST_YEAR[0]}
                                AND age_days < {AHEAD_LAST_YEAR[1]})
                   AS orders_ahead_90d_last_year{cat_sel}{chan_sel}
        FROM joined
        GROUP BY customer_id, cutoff_ts
        HAVING min(age_days) FILTER (WHERE {P}) < {spec.lookback_days}
    )
    SELECT b.customer_id, b.cutoff_ts,
           b.recency_days, b.tenure_days, b.n_orders, g.n_order_days,
           b.monetary_total, b.monetary_total / b.n_orders AS monetary_mean,
           b.max_order_amount, b.last_order_amount, b.first_order_amount,
           b.last_order_amount / nullif(b.first_order_amount, 0) AS last_vs_first_amount,
           b.last_order_amount / nullif(b.monetary_total / b.n_orders, 0)
               AS last_vs_mean_amount,
           {win_out},
           b.orders_prev_90d, b.spend_prev_90d,
           {dbl(x="b._orders_90 - b.orders_prev_90d")}
               / nullif(b._orders_90 + b.orders_prev_90d, 0) AS orders_trend_90d,
           b._spend_90 / nullif(b.spend_prev_90d, 0) - 1 AS spend_change_90d,
           {dbl(x="b._orders_180 - b._orders_prev_180")}
               / nullif(b._orders_180 + b._orders_prev_180, 0) AS orders_trend_180d,
           g.gap_mean_days, {dbl(x="g.gap_median_days")} AS gap_median_days, g.gap_std_days,
           {dbl(x="g.last_gap_days")} AS last_gap_days,
           {moved["overdue_ratio"]} AS overdue_ratio,
           {moved["orders_per_year"]} AS orders_per_year,
           b.n_returns, b.return_amount,
           {dbl(x="b.n_returns")} / (b.n_orders + b.n_returns) AS return_rate,
           b.monetary_total - b.return_amount AS net_spend,
           b.returns_90d, b.days_since_return,
           {moved["returned_since_last_order"]} AS returned_since_last_order,
           {dbl(x="b._weekend_orders")} / b.n_orders AS weekend_share,
           b.orders_ahead_90d_last_year{cat_out}{chan_out},
           {moved["cutoff_season_sin"]} AS cutoff_season_sin,
           {moved["cutoff_season_cos"]} AS cutoff_season_cos,
           {moved["history_days"]} AS history_days
    FROM base b
    JOIN days g ON g.customer_id = b.customer_id AND g.cutoff_ts = b.cutoff_ts
    """


def carried_sql(
    rows: str,
    checks: str,
    cutoffs: str,
    since: datetime,
    spec: FeatureSpec,
    d: Dialect = DUCKDB,
    partition: tuple[int, int] | None = None,
) -> str:
    """The features at the one cutoff in ``cutoffs`` of customers whose orders did not change
    since the cutoff ``since``, carried from their rows then (``rows``: ``customer_id`` and
    every feature at ``since``), the same columns and values as :func:`feature_sql` gives.

    ``checks`` is a table of ``customer_id`` and ``carried``: true when the customer's orders
    up to ``since`` are the same as when ``rows`` were computed, with no order after ``since``
    and none crossing a window's edge (:func:`window_edges`) in between (see
    :func:`order_checks_sql`). With ``partition = (i, k)``, only the customers of hash
    partition i of k. Their counts,
    amounts, gaps and categories are as they were; the ages of their last and first purchase
    and of their last return grow by the time passed, to the millisecond (an age in days is
    a whole number of milliseconds over ``DAY_MS``, recovered exactly by rounding), and the
    features of :func:`_moved_by_date` are computed from them as :func:`feature_sql` does.
    Customers whose last purchase falls out of the lookback leave the population."""

    ms = d.ts_to_millis.format

    def aged(col: str) -> str:
        then = f"{ms(ts=_ts(since))} - CAST(round(r.{col} * {DAY_MS}) AS BIGINT)"
        return d.days_between.format(later="c.cutoff_ts", earlier=d.millis_to_ts.format(x=then))

    moved = _moved_by_date(
        spec,
        d,
        cutoff="m._cutoff",
        recency="m._recency",
        tenure="m._tenure",
        n_orders="m.n_orders",
        gap_mean="m.gap_mean_days",
        since_return="m._since_return",
    )
    moved |= {
        "recency_days": "m._recency",
        "tenure_days": "m._tenure",
        "days_since_return": "m._since_return",
    }
    cols = ",\n           ".join(
        f"{moved[name]} AS {name}" if name in moved else f"m.{name}" for name in feature_names(spec)
    )
    where = f" AND {in_partition(partition, d)}" if partition is not None else ""
    return f"""
    SELECT m.customer_id, m._cutoff AS cutoff_ts,
           {cols}
    FROM (
        SELECT r.*, c.cutoff_ts AS _cutoff, {aged("recency_days")} AS _recency,
               {aged("tenure_days")} AS _tenure, {aged("days_since_return")} AS _since_return
        FROM {rows} r
        JOIN (SELECT customer_id FROM {checks} WHERE carried{where}) k
          ON k.customer_id = r.customer_id
        CROSS JOIN {cutoffs} c
    ) AS m
    WHERE m._recency < {spec.lookback_days}"""


def carried_summary_sql(
    summaries: str, checks: str, cutoffs: str, since: datetime, d: Dialect = DUCKDB
) -> str:
    """:func:`bgnbd_summary_sql`'s rows at the one cutoff in ``cutoffs`` of the customers whose
    orders did not change since ``since`` (``carried`` in ``checks``), from their rows then
    (``summaries``: ``customer_id, frequency, recency, T``): the same purchase days, and ``T``
    (days from the first purchase day) grown by the time passed, to the millisecond."""
    ms = d.ts_to_millis.format
    then = f"{ms(ts=_ts(since))} - CAST(round(s.T * {DAY_MS}) AS BIGINT)"
    age = d.days_between.format(later="c.cutoff_ts", earlier=d.millis_to_ts.format(x=then))
    return f"""
    SELECT s.customer_id, c.cutoff_ts, s.frequency, s.recency, {age} AS T
    FROM {summaries} s
    JOIN (SELECT customer_id FROM {checks} WHERE carried) k ON k.customer_id = s.customer_id
    CROSS JOIN {cutoffs} c"""


def order_checks_sql(
    orders: str, cutoff: datetime, since: datetime, spec: FeatureSpec, d: Dialect = DUCKDB
) -> str:
    """One row per customer with an order at or before ``cutoff``: ``n_since``, ``sum_since``
    (how many orders up to ``since`` and a sum of their rows' hashes, what a feature reads of
    them: time, amount, return, category, channel), ``n_now``, ``sum_now`` (the same up to
    ``cutoff``) and ``crossing``: whether an order up to ``since`` crosses the edge of a
    window (:func:`window_edges`) between the two cutoffs. A customer whose counts and sums up
    to ``since`` are what they were then, with no order since and none crossing, has the
    features then, moved by the date (:func:`carried_sql`). The sums are of the hashes' top
    32 bits, so they cannot overflow."""
    cols = [c for c in order_columns(spec) if c != "customer_id"]  # what the features read
    row_hash = d.row_hash.format(cols=", ".join(cols))
    ms = d.ts_to_millis.format
    step = f"({ms(ts=_ts(cutoff))} - {ms(ts=_ts(since))})"
    # an order's age at ``since`` in milliseconds; it crosses edge w when it is below w then
    # and at or above it at the cutoff (a millisecond either side to spare: a customer
    # recomputed needlessly costs only time)
    crossing = " OR ".join(
        f"age BETWEEN {w * DAY_MS - 1} - {step} AND {w * DAY_MS + 1}" for w in window_edges(spec)
    )
    return f"""
    SELECT customer_id,
           count(*) FILTER (WHERE upto_since) AS n_since,
           sum(h) FILTER (WHERE upto_since) AS sum_since,
           count(*) AS n_now,
           sum(h) AS sum_now,
           coalesce(bool_or(upto_since AND ({crossing})), FALSE) AS crossing
    FROM (
        SELECT customer_id, order_ts <= {_ts(since)} AS upto_since,
               {ms(ts=_ts(since))} - {ms(ts="order_ts")} AS age,
               CAST({row_hash} >> 32 AS BIGINT) AS h
        FROM {orders}
        WHERE order_ts <= {_ts(cutoff)}
    ) AS o
    GROUP BY customer_id"""


def population_sql(orders: str, cutoffs: str, lookback_days: int, d: Dialect = DUCKDB) -> str:
    """SQL for the active population: ``(customer_id, cutoff_ts)`` with a purchase in
    ``(cutoff_ts - lookback_days, cutoff_ts]``."""
    age = d.days_between.format(later="c.cutoff_ts", earlier="o.order_ts")
    return f"""
    SELECT DISTINCT o.customer_id, c.cutoff_ts
    FROM {orders} o JOIN {cutoffs} c
      ON o.order_ts <= c.cutoff_ts AND {age} < {lookback_days}
    WHERE NOT o.is_return"""


def label_sql(
    orders: str, cutoffs: str, lookback_days: int, horizon_days: int, d: Dialect = DUCKDB
) -> str:
    """SQL for labels: ``churned`` is true when there is no purchase in
    ``(cutoff_ts, cutoff_ts + horizon_days]``; ``orders_in_horizon`` counts those purchases."""
    end = d.add_days.format(ts="p.cutoff_ts", days=int(horizon_days))
    return f"""
    WITH pop AS ({population_sql(orders, cutoffs, lookback_days, d)})
    SELECT p.customer_id, p.cutoff_ts,
           count(o.order_ts) AS orders_in_horizon,
           count(o.order_ts) = 0 AS churned
    FROM pop p LEFT JOIN {orders} o
      ON o.customer_id = p.customer_id AND NOT o.is_return
     AND o.order_ts > p.cutoff_ts AND o.order_ts <= {end}
    GROUP BY p.customer_id, p.cutoff_ts
    ORDER BY p.cutoff_ts, p.customer_id"""


def bgnbd_summary_sql(orders: str, cutoffs: str, d: Dialect = DUCKDB) -> str:
    """SQL for the BG/NBD inputs at each cutoff, in days, of every customer with a purchase day
    at or before it: ``customer_id, cutoff_ts, frequency`` (repeat purchase days), ``recency``
    (first to last purchase day) and ``T`` (first purchase day to the cutoff)."""
    day = d.to_date.format(ts="order_ts")
    span = d.date_diff_days.format(earlier="min(p.day)", later="max(p.day)")
    age = d.days_between.format(later="c.cutoff_ts", earlier="CAST(min(p.day) AS TIMESTAMP)")
    return f"""
    WITH days AS (
        SELECT customer_id, {day} AS day, min(order_ts) AS day_ts
        FROM {orders} WHERE NOT is_return
        GROUP BY customer_id, {day})
    SELECT p.customer_id, c.cutoff_ts,
           CAST(count(*) - 1 AS DOUBLE) AS frequency,
           CAST({span} AS DOUBLE) AS recency,
           {age} AS T
    FROM days p JOIN {cutoffs} c ON p.day_ts <= c.cutoff_ts
    GROUP BY p.customer_id, c.cutoff_ts"""


def build_features(
    orders: Orders,
    cutoffs: Iterable[str | date | datetime] | str,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    groups_per_pass: int = GROUPS_PER_PASS,
) -> pd.DataFrame:
    """Features of the active population at each cutoff, all cutoffs in one pass, on the
    orders' engine (DuckDB or Spark).

    On DuckDB, when customers x cutoffs exceeds ``groups_per_pass``, customers are split into
    hash partitions, each run with all cutoffs at once, so memory stays bounded on large
    histories (Spark spreads the aggregation over its shuffle partitions instead).

    Parameters
    ----------
    orders : Orders
        The validated orders (their engine runs the query).
    cutoffs : dates
        Cutoffs T in UTC; a date means 00:00 UTC. Features see ``order_ts <= T``.
    lookback_days : int
        Population: customers with a purchase in ``(T - lookback_days, T]``.
    windows_days : ints
        Windows for ``orders_{w}d`` and ``spend_{w}d``.
    groups_per_pass : int
        Most (customer, cutoff) pairs aggregated at once.

    Returns
    -------
    DataFrame
        One row per ``(customer_id, cutoff_ts)``, sorted by cutoff then customer; ``cutoff_ts``
        tz-aware UTC.
    """
    spec = spec_for(orders, lookback_days, windows_days)
    engine = orders.engine()
    table = feature_table(orders, engine, spec, normalize_cutoffs(cutoffs), groups_per_pass)
    try:
        return engine.query_df(f"SELECT * FROM {table} ORDER BY cutoff_ts, customer_id")
    finally:
        engine.drop(table)


def spec_for(orders: Orders, lookback_days: int, windows_days: Iterable[int]) -> FeatureSpec:
    return FeatureSpec(
        lookback_days=int(lookback_days),
        windows_days=tuple(sorted(set(int(w) for w in windows_days))),
        has_category=orders.has_category,
        has_channel=orders.has_channel,
        data_start=orders.first_ts,
    )


def feature_table(
    orders: Orders,
    engine,
    spec: FeatureSpec,
    cuts: list[datetime],
    groups_per_pass: int,
    on_part: Callable[[int, int], None] | None = None,
) -> str:
    """Compute features into a temporary table (in customer hash partitions when large)."""
    # every (customer, cutoff) pair is a group of the aggregation; bound them per pass
    groups = max(orders.report.n_customers, 1) * len(cuts)
    k = max(1, math.ceil(groups / max(int(groups_per_pass), 1))) if engine.bounded_groups else 1
    cut_table = engine.register_cutoffs(cuts)
    try:
        with orders_by_partition(engine, orders.table, k, spec) as split:
            parts = [
                feature_sql(
                    split or orders.table,
                    cut_table,
                    spec,
                    engine.dialect,
                    (i, k) if k > 1 else None,
                    split is not None,
                )
                for i in range(k)
            ]
            return engine.materialize_parts(parts, on_part)
    finally:
        engine.drop(cut_table)


def write_features(
    orders: Orders,
    cutoffs: Iterable[str | date | datetime] | str,
    path: str | Path,
    lookback_days: int = 365,
    windows_days: Iterable[int] = (30, 90, 180, 365),
    horizon_days: int | None = None,
    observed_until: datetime | None = None,
    groups_per_pass: int = GROUPS_PER_PASS,
    on_part: Callable[[int, int], None] | None = None,
) -> int:
    """Compute features (and labels, with ``horizon_days``) and write them to a Parquet file.

    The same rows as :func:`build_features` (plus ``orders_in_horizon`` and ``churned``, empty
    for cutoffs whose horizon runs past the data), written by the engine without passing
    through pandas, so the output can be larger than memory (Spark writes a folder of Parquet
    parts). The output is written under a temporary name and renamed, so a crash never leaves
    a half file. ``on_part(done, total)`` is called
    after each customer partition (for a progress bar). Returns the number of rows.
    """
    spec = spec_for(orders, lookback_days, windows_days)
    cuts = normalize_cutoffs(cutoffs)
    engine = orders.engine()
    d = engine.dialect
    table = feature_table(orders, engine, spec, cuts, groups_per_pass, on_part)
    label_table = None
    cols = ", ".join(f"f.{c}" for c in feature_names(spec))
    keys = f"f.customer_id, {d.as_utc.format(ts='f.cutoff_ts')} AS cutoff_ts"
    sql = f"SELECT {keys}, {cols} FROM {table} f"
    try:
        if horizon_days is not None:
            end = observed_until or orders.last_ts
            labelled, _ = split_labelled_cutoffs(cuts, end, horizon_days)
            if labelled:
                lab_cuts = engine.register_cutoffs(labelled)
                label_table = engine.materialize_parts(
                    [label_sql(orders.table, lab_cuts, spec.lookback_days, horizon_days, d)]
                )
                engine.drop(lab_cuts)
                sql = f"""SELECT {keys}, {cols}, l.orders_in_horizon, l.churned
                          FROM {table} f LEFT JOIN {label_table} l
                            ON l.customer_id = f.customer_id AND l.cutoff_ts = f.cutoff_ts"""
            else:
                sql = (
                    f"SELECT {keys}, {cols}, CAST(NULL AS BIGINT) AS orders_in_horizon, "
                    f"CAST(NULL AS BOOLEAN) AS churned FROM {table} f"
                )
        return engine.copy_to_parquet(f"{sql} ORDER BY cutoff_ts, customer_id", str(path))
    finally:
        engine.drop(table)
        if label_table:
            engine.drop(label_table)
