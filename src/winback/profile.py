"""Data profile, horizon suggestion, and the sufficiency gate that ``train`` runs first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from winback.config import SufficiencyConfig
from winback.errors import InsufficientDataError
from winback.labels import build_labels
from winback.orders import Orders

__all__ = [
    "HorizonOption",
    "DataProfile",
    "build_profile",
    "check_sufficiency",
    "MIN_FEATURE_HISTORY_DAYS",
]

#: Days of history a training cutoff needs before it, at least (or the lookback, if shorter).
MIN_FEATURE_HISTORY_DAYS = 180
#: A horizon is suggested when at most this share of customers it calls churned come back later.
MAX_COMEBACK_SHARE = 0.20


@dataclass(frozen=True)
class HorizonOption:
    """What a candidate horizon H means on this data, measured at ``T = end - 2H``.

    ``churn_rate`` is the share of the active population at T with no purchase in (T, T + H];
    ``comeback_share`` is the share of those who buy again in (T + H, T + 2H]: churners the label
    calls lost who were not.
    """

    horizon_days: int
    cutoff: datetime | None
    n_customers: int
    churn_rate: float | None
    comeback_share: float | None

    @property
    def fits(self) -> bool:
        return self.cutoff is not None and self.n_customers > 0


@dataclass
class DataProfile:
    """Counts and distributions a data scientist looks at before choosing a horizon."""

    n_customers: int
    n_orders: int
    n_purchases: int
    n_returns: int
    first_ts: datetime
    last_ts: datetime
    orders_per_customer: dict[str, float]
    repeat_share: float
    return_share: float
    gap_days: dict[str, float]
    horizons: list[HorizonOption] = field(default_factory=list)
    suggested_horizon_days: int | None = None
    suggestion: str = ""

    @property
    def span_days(self) -> float:
        return (self.last_ts - self.first_ts).total_seconds() / 86400.0

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the terminal."""
        opc = self.orders_per_customer
        g = self.gap_days
        out = [
            f"customers          {self.n_customers:,}",
            f"orders             {self.n_orders:,} ({self.n_purchases:,} purchases, "
            f"{self.n_returns:,} returns or cancellations, return share {self.return_share:.1%})",
            f"date range         {self.first_ts:%Y-%m-%d} to {self.last_ts:%Y-%m-%d} "
            f"({self.span_days:,.0f} days)",
            f"purchases/customer mean {opc['mean']:.2f}, median {opc['median']:.0f}, "
            f"p90 {opc['p90']:.0f}, max {opc['max']:.0f}",
            f"repeat buyers      {self.repeat_share:.1%} of customers bought on 2+ days",
        ]
        if g:
            out.append(
                "gap between purchase days (days): "
                + ", ".join(f"{k} {v:,.0f}" for k, v in g.items())
            )
        else:
            out.append("gap between purchase days: no customer bought twice")
        out.append("horizon H  cutoff      customers  churn rate  churners who come back")
        for h in self.horizons:
            if not h.fits:
                out.append(f"{h.horizon_days:>9d}  (not enough history for 2 x H)")
                continue
            out.append(
                f"{h.horizon_days:>9d}  {h.cutoff:%Y-%m-%d}  {h.n_customers:>9,}  "
                f"{h.churn_rate:>10.1%}  {h.comeback_share:>22.1%}"
            )
        out.append(self.suggestion)
        return out


def _quantiles(orders: Orders, sql: str) -> dict[str, float]:
    row = orders.engine().fetchall(
        f"""SELECT avg(x), quantile_cont(x, 0.1), quantile_cont(x, 0.25), median(x),
                   quantile_cont(x, 0.75), quantile_cont(x, 0.9), max(x), count(x)
            FROM ({sql}) AS t(x)"""
    )[0]
    if not row[-1]:
        return {}
    keys = ("mean", "p10", "p25", "median", "p75", "p90", "max")
    return {k: float(v) for k, v in zip(keys, row[:-1], strict=True)}


def build_profile(
    orders: Orders,
    lookback_days: int = 365,
    candidates: tuple[int, ...] = (30, 60, 90, 120, 180, 365),
) -> DataProfile:
    """Profile the orders and weigh candidate horizons.

    For each candidate H the cutoff is ``T = last order - 2H``, so that both the label window
    ``(T, T + H]`` and the come-back window ``(T + H, T + 2H]`` are observed. The suggestion is the
    shortest H whose come-back share is at most 20%: shorter horizons give earlier warnings but
    call more customers churned who were only slow.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    lookback_days : int
        The active population at a cutoff: a purchase in this many days before it.
    candidates : tuple of int
        The horizons (days) to weigh.

    Returns
    -------
    DataProfile
        Counts, order gaps, repeat rate, the churn and come-back shares of each candidate and
        the suggested horizon; ``summary_lines()`` says it in words.
    """
    t = orders.table
    n_cust, n_orders, n_ret = orders.engine().fetchall(
        f"SELECT count(DISTINCT customer_id), count(*), count(*) FILTER (WHERE is_return) FROM {t}"
    )[0]
    n_purch = n_orders - n_ret
    per_cust = _quantiles(
        orders,
        f"SELECT count(*) FROM {t} WHERE NOT is_return GROUP BY customer_id",
    )
    repeat = orders.engine().fetchall(
        f"""SELECT avg(CASE WHEN n > 1 THEN 1.0 ELSE 0.0 END) FROM (
               SELECT count(DISTINCT CAST(order_ts AS DATE)) AS n FROM {t}
               WHERE NOT is_return GROUP BY customer_id)"""
    )[0][0]
    gaps = _quantiles(
        orders,
        f"""SELECT date_diff('day', lag(d) OVER (PARTITION BY customer_id ORDER BY d), d)
            FROM (SELECT DISTINCT customer_id, CAST(order_ts AS DATE) AS d FROM {t}
                  WHERE NOT is_return)""",
    )
    first, last = orders.first_ts, orders.last_ts
    options = []
    for h in sorted(set(candidates)):
        cutoff = last - timedelta(days=2 * h)
        if cutoff <= first + timedelta(days=min(30, lookback_days)):
            options.append(HorizonOption(h, None, 0, None, None))
            continue
        short = build_labels(orders, [cutoff], h, lookback_days, observed_until=last)
        long = build_labels(orders, [cutoff], 2 * h, lookback_days, observed_until=last)
        merged = short.merge(long, on=["customer_id", "cutoff_ts"], suffixes=("", "_2h"))
        n = len(merged)
        if n == 0:
            options.append(HorizonOption(h, None, 0, None, None))
            continue
        churned = merged["churned"]
        came_back = churned & ~merged["churned_2h"]
        comeback = float(came_back.sum() / churned.sum()) if churned.any() else 0.0
        options.append(HorizonOption(h, cutoff, n, float(churned.mean()), comeback))

    fitting = [o for o in options if o.fits]
    suggested = None
    if fitting:
        good = [o for o in fitting if o.comeback_share <= MAX_COMEBACK_SHARE]
        pick = good[0] if good else min(fitting, key=lambda o: o.comeback_share)
        suggested = pick.horizon_days
        why = (
            "the shortest horizon where at most 20% of labelled churners come back"
            if good
            else "no candidate keeps come-backs under 20%; this one has the fewest"
        )
        text = (
            f"suggested horizon: {pick.horizon_days} days ({why}: churn rate "
            f"{pick.churn_rate:.1%}, come-backs {pick.comeback_share:.1%})"
        )
    else:
        text = "suggested horizon: none (the history is too short for any candidate)"
    return DataProfile(
        n_customers=int(n_cust),
        n_orders=int(n_orders),
        n_purchases=int(n_purch),
        n_returns=int(n_ret),
        first_ts=first,
        last_ts=last,
        orders_per_customer=per_cust,
        repeat_share=float(repeat or 0.0),
        return_share=float(n_ret / n_orders) if n_orders else 0.0,
        gap_days=gaps,
        horizons=options,
        suggested_horizon_days=suggested,
        suggestion=text,
    )


def check_sufficiency(
    orders: Orders,
    as_of: datetime,
    horizon_days: int,
    lookback_days: int = 365,
    cfg: SufficiencyConfig | None = None,
) -> None:
    """Refuse to train on too little data; list everything that is missing at once.

    The latest training cutoff is ``as_of - horizon_days`` (its labels end at ``as_of``). It
    needs at least ``min(lookback_days, 180)`` days of history before it, and at that cutoff the
    active population needs ``min_customers`` customers, ``min_repeat_buyers`` customers who had
    bought on 2+ days, and ``min_per_class`` churned and ``min_per_class`` retained customers.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    as_of : datetime
        The date a model would be trained at.
    horizon_days, lookback_days : int
        The label horizon and the population lookback.
    cfg : SufficiencyConfig, optional
        The minimums (the config's ``sufficiency`` section; its defaults when None).

    Raises
    ------
    InsufficientDataError
        With every shortfall and what would fix it.
    """
    cfg = cfg or SufficiencyConfig()
    problems: list[str] = []
    need_hist = min(lookback_days, MIN_FEATURE_HISTORY_DAYS)
    history = (as_of - orders.first_ts).total_seconds() / 86400.0
    need_total = horizon_days + need_hist
    last_cut = as_of - timedelta(days=horizon_days)
    if history < need_total:
        problems.append(
            f"{history:,.0f} days of history up to {as_of:%Y-%m-%d}, fewer than the "
            f"{need_total} needed (horizon {horizon_days} + {need_hist} days of features): "
            "use a shorter horizon or a later as-of"
        )
    else:
        labels = build_labels(orders, [last_cut], horizon_days, lookback_days, observed_until=as_of)
        n = len(labels)
        churned = int(labels["churned"].sum())
        retained = n - churned
        engine = orders.engine()
        day = engine.dialect.to_date.format(ts="order_ts")
        since = last_cut - timedelta(days=lookback_days)
        repeat = int(
            engine.query_df(
                f"""SELECT count(*) AS n FROM (
                       SELECT customer_id FROM {orders.table}
                       WHERE NOT is_return AND order_ts <= TIMESTAMP '{last_cut.isoformat(sep=" ")}'
                       GROUP BY customer_id
                       HAVING count(DISTINCT {day}) > 1
                         AND max(order_ts) > TIMESTAMP '{since.isoformat(sep=" ")}') AS r"""
            )["n"].iloc[0]
        )
        where = f"at the last training cutoff {last_cut:%Y-%m-%d}"
        checks = [  # (count, what, setting, minimum, hint)
            (n, "active customers", "min_customers", cfg.min_customers, ""),
            (repeat, "repeat buyers", "min_repeat_buyers", cfg.min_repeat_buyers, ""),
            (
                churned,
                "churned customers",
                "min_per_class",
                cfg.min_per_class,
                ": use a longer horizon",
            ),
            (
                retained,
                "retained customers",
                "min_per_class",
                cfg.min_per_class,
                ": use a shorter horizon",
            ),
        ]
        problems += [
            f"{count:,} {what} {where}, fewer than sufficiency.{setting}={minimum:,}{hint}"
            for count, what, setting, minimum, hint in checks
            if count < minimum
        ]
    if problems:
        raise InsufficientDataError("Not enough data to train: " + "; ".join(problems) + ".")
