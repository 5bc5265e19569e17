"""Retention figures marketing teams know, computed from the order history.

Definitions (all in UTC; purchases are orders that are not returns or cancellations):

Periods
    Calendar months, quarters or years ``[start, end)``. Only complete periods are reported: a
    period is complete when its end is at or before the end of the as-of day.
Active at an instant t
    At least one purchase in the ``window_days`` before t, i.e. in ``[t - window_days, t)``.
    ``window_days`` is the lookback of the features (365 by default), but never shorter than the
    longest period (31, 92 or 366 days), so that everyone who buys in a period is active at its
    end.
Per period
    S = customers active at the start, E = active at the end, N = new customers (first purchase
    in the period). **Retention rate** = (E - N) / S, **churn rate** = 1 - retention rate (empty
    when S = 0). E - N also counts customers who were not active at the start but came back in
    the period; ``retained`` (active at start and end) and ``reactivated`` separate the two, and
    ``strict_retention_rate`` = retained / S. **Repeat purchase rate** = buyers with 2+ purchases
    in the period / buyers in the period. **Revenue retention** = net revenue (returns
    subtracted) in the period from the customers active at its start / the same customers' net
    revenue in the previous calendar period (the month, quarter or year before).
Overall repeat purchase rate
    Customers with 2+ purchases up to the as-of / customers with at least one.
Cohorts
    A customer's cohort is the month of their first purchase. Cell (cohort, k) is the share of
    the cohort with a purchase in the k-th calendar month after it (k >= 1). A cell whose month is
    not complete at the as-of is empty (NaN), not zero.
By channel and segment
    The customers active at the start of each period, grouped by the channel of their last
    purchase before the period, or by their RFM segment at the period start (the R x F grid of
    the lists: quintiles of days since the last purchase and of the number of purchases among
    those customers). Retention there is ``retained / S`` (a customer counts in one group only).

Everything runs as SQL in the orders' DuckDB connection; only per-period tables reach pandas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from winback.errors import UsageError
from winback.orders import Orders
from winback.segments import quintile_sql, segments_of

__all__ = [
    "PERIODS",
    "Period",
    "report_end",
    "period_bounds",
    "active_window_days",
    "retention_kpis",
    "retention_tables",
    "horizon_churn",
    "overall_repeat_rate",
    "cohort_table",
    "retention_by",
]

Period = Literal["month", "quarter", "year"]
PERIODS: dict[str, int] = {"month": 1, "quarter": 3, "year": 12}  # months per period
_LONGEST_DAYS = {"month": 31, "quarter": 92, "year": 366}


def _query(orders: Orders, sql: str) -> pd.DataFrame:
    """A query's rows through the orders' engine, timestamps naive UTC as the periods are."""
    df = orders.engine().query_df(sql)
    for col in df.columns:
        if isinstance(df[col].dtype, pd.DatetimeTZDtype):
            df[col] = df[col].dt.tz_convert("UTC").dt.tz_localize(None)
    return df


def _first_purchase(orders: Orders) -> datetime | None:
    """The instant of the first purchase (not a return), or None when there is none."""
    return orders.engine().fetchall(
        f"SELECT min(order_ts) FROM {orders.table} WHERE NOT is_return"
    )[0][0]


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise UsageError(f"The period must be one of {', '.join(PERIODS)}; got {period!r}.")


def report_end(orders: Orders, as_of: datetime | None = None) -> datetime:
    """The end of the as-of day (00:00 of the next day): the report sees orders before it.
    Without an as-of, the day of the last order."""
    day = as_of or orders.last_ts
    if day is None:
        raise UsageError("The order history is empty: nothing to report.")
    return datetime(day.year, day.month, day.day) + timedelta(days=1)


def _add_months(t: datetime, months: int) -> datetime:
    m = t.year * 12 + (t.month - 1) + months
    return datetime(m // 12, m % 12 + 1, 1)


def _trunc(t: datetime, period: str) -> datetime:
    step = PERIODS[period]
    return datetime(t.year, ((t.month - 1) // step) * step + 1, 1)


def _label(t: datetime, period: str) -> str:
    if period == "month":
        return f"{t:%Y-%m}"
    if period == "quarter":
        return f"{t.year}-Q{(t.month - 1) // 3 + 1}"
    return f"{t.year}"


def period_bounds(first: datetime, end: datetime, period: Period) -> pd.DataFrame:
    """Complete periods from the one holding ``first`` up to ``end``: ``period, period_start,
    period_end, prev_start`` (naive UTC)."""
    _check_period(period)
    step = PERIODS[period]
    rows = []
    t = _trunc(first, period)
    while _add_months(t, step) <= end:
        rows.append((_label(t, period), t, _add_months(t, step), _add_months(t, -step)))
        t = _add_months(t, step)
    return pd.DataFrame(rows, columns=["period", "period_start", "period_end", "prev_start"])


def active_window_days(lookback_days: int, period: Period) -> int:
    """Days of the 'active' window: the lookback, never shorter than the longest period."""
    _check_period(period)
    if lookback_days < 1:
        raise UsageError(f"The lookback must be a whole number of days >= 1; got {lookback_days}.")
    return max(int(lookback_days), _LONGEST_DAYS[period])


def _buys_sql(orders: Orders, end: datetime) -> str:
    """CTE ``buys``: the purchases (not returns) before ``end``."""
    return f"""
    buys AS (
        SELECT customer_id, order_id, order_ts{", channel" if orders.has_channel else ""}
        FROM {orders.table}
        WHERE NOT is_return AND order_ts < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'
    )"""


def _spells_sql(window_days: int) -> str:
    """A query over the CTE ``buys``: each customer's activity spells ``(from_ts, to_ts]``.

    A customer is active at t when t falls in ``(p, p + window]`` for a purchase p, so the
    purchases of a customer merge into spells ``(first, last + window]`` (a new spell starts when
    a purchase comes more than ``window`` after the previous one), and 'active at t' is one range
    join of spells with the period bounds (:func:`_status_sql`).
    """
    w = f"INTERVAL {int(window_days)} DAY"
    return f"""
    WITH marks AS (
        SELECT customer_id, order_ts,
               CASE WHEN lag(order_ts) OVER w IS NULL
                         OR order_ts > lag(order_ts) OVER w + {w} THEN 1 ELSE 0 END AS opens
        FROM buys WINDOW w AS (PARTITION BY customer_id ORDER BY order_ts)
    ),
    numbered AS (
        SELECT customer_id, order_ts,
               sum(opens) OVER (PARTITION BY customer_id ORDER BY order_ts
                                ROWS UNBOUNDED PRECEDING) AS spell
        FROM marks
    )
    SELECT customer_id, min(order_ts) AS from_ts, max(order_ts) + {w} AS to_ts
    FROM numbered GROUP BY customer_id, spell"""


def _status_sql(periods: str, spells: str) -> str:
    """CTEs ending in ``status`` (period_start, customer_id, at_start, at_end): who is active at
    the start and at the end of each period, from the spells table."""
    return f"""
    bounds AS (
        SELECT period_start AS t FROM {periods} UNION SELECT period_end FROM {periods}
    ),
    active AS (
        SELECT b.t, s.customer_id
        FROM {spells} s JOIN bounds b ON s.from_ts < b.t AND b.t <= s.to_ts
    ),
    status AS (
        SELECT period_start, customer_id, max(s) AS at_start, max(e) AS at_end
        FROM (
            SELECT p.period_start, a.customer_id, 1 AS s, 0 AS e
            FROM {periods} p JOIN active a ON a.t = p.period_start
            UNION ALL
            SELECT p.period_start, a.customer_id, 0 AS s, 1 AS e
            FROM {periods} p JOIN active a ON a.t = p.period_end
        ) GROUP BY ALL
    )"""


@dataclass
class _Activity:
    """The complete periods up to ``end`` and, in a temporary table, every customer's activity
    spells; ``spells`` is None when there is no complete period."""

    period: str
    end: datetime
    periods: pd.DataFrame
    periods_view: str
    spells: str | None

    def ctes(self, orders: Orders) -> str:
        """The CTEs ``buys`` and ``status`` for a query's WITH clause."""
        return f"{_buys_sql(orders, self.end)}, {_status_sql(self.periods_view, self.spells)}"


@contextmanager
def _activity(
    orders: Orders, period: Period, lookback_days: int, as_of: datetime | None
) -> Iterator[_Activity]:
    """Merge the purchases into activity spells once (the costly sort by customer and time),
    for as many tables as need them. The spells are a few rows per customer; who is active at
    each period bound is joined from them per query."""
    end = report_end(orders, as_of)
    window = active_window_days(lookback_days, period)
    first = _first_purchase(orders)
    if first is None:
        raise UsageError("The order history has no purchases: nothing to report.")
    periods = period_bounds(first, end, period)
    with orders.engine().registered(periods, "_wb_periods") as view:
        if periods.empty:
            yield _Activity(period, end, periods, view, None)
            return
        spells = f"{view}_spells"
        orders.engine().create_table(
            spells, f"WITH {_buys_sql(orders, end)} SELECT * FROM ({_spells_sql(window)})"
        )
        try:
            yield _Activity(period, end, periods, view, spells)
        finally:
            orders.engine().drop(spells)


_KPI_COLUMNS = [
    "period", "period_start", "period_end", "S", "E", "N", "retained", "reactivated",
    "retention_rate", "churn_rate", "strict_retention_rate", "buyers", "repeat_buyers",
    "repeat_purchase_rate", "revenue", "revenue_from_start_customers",
    "their_revenue_prev_period", "revenue_retention", "revenue_churn",
]  # fmt: skip


def retention_kpis(
    orders: Orders,
    period: Period = "month",
    lookback_days: int = 365,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Retention KPIs of every complete period (definitions in the module docstring).

    Returns one row per period: ``period, period_start, period_end, S, E, N, retained,
    reactivated, retention_rate, churn_rate, strict_retention_rate, buyers, repeat_buyers,
    repeat_purchase_rate, revenue, revenue_from_start_customers, their_revenue_prev_period,
    revenue_retention, revenue_churn``.
    """
    with _activity(orders, period, lookback_days, as_of) as a:
        return _kpis(orders, a)


def horizon_churn(
    orders: Orders,
    period: Period,
    horizon_days: int,
    lookback_days: int = 365,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Churn as the model predicts it, at the start t of every complete period whose horizon has
    passed (``t + horizon_days`` at or before the end of the as-of day): of the customers with a
    purchase in ``[t - lookback_days, t)``, the share with no purchase in ``[t, t +
    horizon_days)``. This is the label the model learns and the lists score, so the report and
    the lists tell the same story. Returns ``period, period_start, active, churned,
    churn_rate``."""
    end = report_end(orders, as_of)
    first = _first_purchase(orders)
    cols = ["period", "period_start", "active", "churned", "churn_rate"]
    if first is None:
        return pd.DataFrame(columns=cols)
    periods = period_bounds(first, end, period)
    h, lb = int(horizon_days), int(lookback_days)
    periods = periods[periods["period_start"] + timedelta(days=h) <= end]
    if periods.empty:
        return pd.DataFrame(columns=cols)
    with orders.engine().registered(periods[["period", "period_start"]], "_wb_cuts") as cuts:
        got = _query(
            orders,
            f"""
            WITH {_buys_sql(orders, end)},
            per AS (
                SELECT c.period, c.period_start, b.customer_id,
                       bool_or(b.order_ts < c.period_start) AS was_active,
                       bool_or(b.order_ts >= c.period_start) AS bought
                FROM buys b JOIN {cuts} c
                  ON b.order_ts >= c.period_start - INTERVAL {lb} DAY
                 AND b.order_ts < c.period_start + INTERVAL {h} DAY
                GROUP BY ALL
            )
            SELECT c.period, c.period_start,
                   count(p.customer_id) FILTER (WHERE p.was_active) AS active,
                   count(p.customer_id) FILTER (WHERE p.was_active AND NOT p.bought) AS churned
            FROM {cuts} c LEFT JOIN per p USING (period, period_start)
            GROUP BY ALL ORDER BY c.period_start
            """,
        )
    got["churn_rate"] = (got["churned"] / got["active"].where(got["active"] > 0)).astype(float)
    return got[cols]


def retention_tables(
    orders: Orders,
    period: Period = "month",
    lookback_days: int = 365,
    as_of: datetime | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """:func:`retention_kpis` and :func:`retention_by` segment and channel, with who is active
    at each period bound computed once for the three."""
    with _activity(orders, period, lookback_days, as_of) as a:
        return _kpis(orders, a), {by: _by(orders, a, by) for by in ("segment", "channel")}


def _kpis(orders: Orders, a: _Activity) -> pd.DataFrame:
    if a.spells is None:
        return pd.DataFrame(columns=_KPI_COLUMNS)
    raw = _query(
        orders,
        f"""
        WITH {a.ctes(orders)},
        counts AS (
            SELECT period_start, sum(at_start) AS S, sum(at_end) AS E,
                   sum(at_start * at_end) AS retained
            FROM status GROUP BY 1
        ),
        firsts AS (
            SELECT date_trunc('{a.period}', min(order_ts)) AS period_start, customer_id
            FROM buys GROUP BY customer_id
        ),
        new AS (SELECT period_start, count(*) AS N FROM firsts GROUP BY 1),
        per_cust AS (
            SELECT date_trunc('{a.period}', order_ts) AS period_start, customer_id,
                   count(*) FILTER (WHERE NOT is_return) AS n_buys,
                   sum(amount)::DOUBLE AS revenue
            FROM {orders.table}
            WHERE order_ts < TIMESTAMP '{a.end:%Y-%m-%d %H:%M:%S}'
            GROUP BY ALL
        ),
        buyers AS (
            SELECT period_start, count(*) FILTER (WHERE n_buys >= 1) AS buyers,
                   count(*) FILTER (WHERE n_buys >= 2) AS repeat_buyers,
                   sum(revenue) AS revenue
            FROM per_cust GROUP BY 1
        ),
        starters AS (
            SELECT s.period_start, p.prev_start, s.customer_id
            FROM status s JOIN {a.periods_view} p USING (period_start) WHERE s.at_start = 1
        ),
        rev_now AS (
            SELECT s.period_start, sum(c.revenue) AS rev
            FROM starters s JOIN per_cust c
              ON c.customer_id = s.customer_id AND c.period_start = s.period_start
            GROUP BY 1
        ),
        rev_before AS (
            SELECT s.period_start, sum(c.revenue) AS rev
            FROM starters s JOIN per_cust c
              ON c.customer_id = s.customer_id AND c.period_start = s.prev_start
            GROUP BY 1
        )
        SELECT p.period, p.period_start, p.period_end,
               coalesce(k.S, 0) AS S, coalesce(k.E, 0) AS E, coalesce(n.N, 0) AS N,
               coalesce(k.retained, 0) AS retained,
               coalesce(b.buyers, 0) AS buyers, coalesce(b.repeat_buyers, 0) AS repeat_buyers,
               coalesce(b.revenue, 0) AS revenue,
               coalesce(rn.rev, 0) AS revenue_from_start_customers,
               coalesce(rb.rev, 0) AS their_revenue_prev_period
        FROM {a.periods_view} p
        LEFT JOIN counts k USING (period_start)
        LEFT JOIN new n USING (period_start)
        LEFT JOIN buyers b USING (period_start)
        LEFT JOIN rev_now rn USING (period_start)
        LEFT JOIN rev_before rb USING (period_start)
        ORDER BY p.period_start
        """,
    )
    for c in ("S", "E", "N", "retained", "buyers", "repeat_buyers"):
        raw[c] = raw[c].astype("int64")
    s = raw["S"].astype(float).where(raw["S"] > 0)
    raw["reactivated"] = raw["E"] - raw["N"] - raw["retained"]
    raw["retention_rate"] = (raw["E"] - raw["N"]) / s
    raw["churn_rate"] = 1 - raw["retention_rate"]
    raw["strict_retention_rate"] = raw["retained"] / s
    raw["repeat_purchase_rate"] = raw["repeat_buyers"] / raw["buyers"].where(raw["buyers"] > 0)
    before = raw["their_revenue_prev_period"].where(raw["their_revenue_prev_period"] > 0)
    raw["revenue_retention"] = raw["revenue_from_start_customers"] / before
    raw["revenue_churn"] = 1 - raw["revenue_retention"]
    return raw[_KPI_COLUMNS]


def overall_repeat_rate(orders: Orders, as_of: datetime | None = None) -> tuple[int, int, float]:
    """(customers with a purchase, those with 2+ purchases, their share) up to the as-of day."""
    end = report_end(orders, as_of)
    n, rep = orders.engine().fetchall(
        f"""SELECT count(*), count(*) FILTER (WHERE k >= 2) FROM (
                SELECT customer_id, count(*) AS k FROM {orders.table}
                WHERE NOT is_return AND order_ts < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'
                GROUP BY 1)"""
    )[0]
    return int(n), int(rep), (rep / n if n else float("nan"))


def cohort_table(orders: Orders, as_of: datetime | None = None) -> pd.DataFrame:
    """Monthly cohorts: one row per first-purchase month with ``customers`` and columns
    ``1, 2, ...`` holding the share of the cohort that bought in that month after the first;
    NaN where that month is not complete at the as-of (the cohort is too young)."""
    end = report_end(orders, as_of)
    stamp = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    counts = _query(
        orders,
        f"""
        WITH buys AS (
            SELECT customer_id, order_ts FROM {orders.table}
            WHERE NOT is_return AND order_ts < {stamp}
        ),
        firsts AS (
            SELECT customer_id, date_trunc('month', min(order_ts)) AS cohort
            FROM buys GROUP BY 1
        ),
        months AS (
            SELECT DISTINCT b.customer_id, f.cohort,
                   date_diff('month', f.cohort, date_trunc('month', b.order_ts)) AS k
            FROM buys b JOIN firsts f USING (customer_id)
        )
        SELECT cohort, k, count(*) AS n FROM months GROUP BY ALL ORDER BY ALL
        """,
    )
    if counts.empty:
        return pd.DataFrame(columns=["customers"])
    sizes = counts[counts["k"] == 0].set_index("cohort")["n"]
    cohorts = sorted(sizes.index)
    last_complete = _add_months(_trunc(end, "month"), -1)  # month m is complete: m + 1 <= end
    age = {c: (last_complete.year - c.year) * 12 + (last_complete.month - c.month) for c in cohorts}
    ks = list(range(1, max(max(age.values()), 0) + 1))
    grid = counts[counts["k"] >= 1].pivot(index="cohort", columns="k", values="n")
    grid = grid.reindex(index=cohorts, columns=ks).fillna(0)
    share = grid.div(sizes.reindex(cohorts).to_numpy(), axis=0)
    for c in cohorts:
        share.loc[c, [k for k in ks if k > age[c]]] = np.nan
    share.insert(0, "customers", sizes.reindex(cohorts).astype("int64").to_numpy())
    share.index = pd.Index([f"{pd.Timestamp(c):%Y-%m}" for c in cohorts], name="cohort")
    share.columns = ["customers", *[str(k) for k in ks]]
    return share


def retention_by(
    orders: Orders,
    by: Literal["channel", "segment"],
    period: Period = "month",
    lookback_days: int = 365,
    as_of: datetime | None = None,
) -> pd.DataFrame:
    """Retention of the customers active at the start of each period, per channel (of their
    last purchase before it) or RFM segment (at the period start): ``period, <by>, S, retained,
    lost, retention_rate, churn_rate``. Empty for ``channel`` when the orders have none."""
    _check_by(by)
    with _activity(orders, period, lookback_days, as_of) as a:
        return _by(orders, a, by)


def _check_by(by: str) -> None:
    if by not in ("channel", "segment"):
        raise UsageError(f"Retention can be split by channel or segment; got {by!r}.")


def _by(orders: Orders, a: _Activity, by: str) -> pd.DataFrame:
    _check_by(by)
    cols = ["period", by, "S", "retained", "lost", "retention_rate", "churn_rate"]
    if a.spells is None or (by == "channel" and not orders.has_channel):
        return pd.DataFrame(columns=cols)

    if by == "channel":
        carried, keys = "b.channel,", "coalesce(channel, '(none)') AS channel"
    else:
        carried = ""
        keys = (
            f"{quintile_sql('recency_days', 'DESC', 'period_start')} AS r, "
            f"{quintile_sql('n_orders', 'ASC', 'period_start')} AS f"
        )
    frame = _query(
        orders,
        f"""
        WITH {a.ctes(orders)},
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY order_ts, order_id)
                          AS n_orders
            FROM buys
        ),
        start_rows AS (
            SELECT s.period_start, s.customer_id, s.at_end, {carried}
                   epoch(s.period_start - b.order_ts) / 86400.0 AS recency_days, b.n_orders
            FROM (SELECT * FROM status WHERE at_start = 1) s
            ASOF JOIN ranked b
              ON s.customer_id = b.customer_id AND s.period_start > b.order_ts
        ),
        graded AS (SELECT period_start, at_end, {keys} FROM start_rows)
        SELECT * EXCLUDE (at_end), count(*) AS S, sum(at_end) AS retained
        FROM graded GROUP BY ALL
        """,
    )
    frame = frame.merge(a.periods[["period", "period_start"]], on="period_start")
    if by == "segment":
        frame["segment"] = segments_of(frame["r"], frame["f"], frame.index).astype("str")
        frame = frame.groupby(["period_start", "period", "segment"], as_index=False)[
            ["S", "retained"]
        ].sum()
    frame["S"] = frame["S"].astype("int64")
    frame["retained"] = frame["retained"].astype("int64")
    frame["lost"] = frame["S"] - frame["retained"]
    frame["retention_rate"] = frame["retained"] / frame["S"]
    frame["churn_rate"] = 1 - frame["retention_rate"]
    return frame.sort_values(["period_start", by], kind="stable")[cols].reset_index(drop=True)
