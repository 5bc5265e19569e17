"""Synthetic order histories: a seeded, vectorised Buy-Till-You-Die-like generator, with named
scenarios in which BG/NBD is right, or wrong in a known way.

Each customer arrives on a day drawn from a growing arrival curve and buys at once. After that
they buy as a Poisson process with their own rate (gamma across customers, as in BG/NBD),
thinned by a seasonal curve with a peak in November and December, and after every purchase they
drop out for good with their own probability (beta across customers); with ``first_dropout``
also right after the first purchase, as in MBG/NBD. Amounts are lognormal around a customer's
own level; each customer has a favourite category and channel; a share of orders is returned
later as a separate row with a negative amount.

Scenarios (:data:`SCENARIOS`, :func:`scenario_params`) switch on what BG/NBD does not model:

- ``shop`` (the default): the generator as above, with a moderate Nov-Dec peak and drop-out
  right after the first purchase too;
- ``btyd``: BG/NBD exactly: no season, drop-out only after repeat purchases. Nothing beyond
  BG/NBD can be learnt;
- ``seasonal``: a sharp Nov-Dec peak, and a share of customers who buy only in it;
- ``censored``: the shop ran for years before the file starts: the file holds only what
  happened since its first day, so many customers bring history it does not show;
- ``fading``: a customer's purchase rate decays gradually (an exponential with the customer's
  own time constant) instead of dropping to zero at once;
- ``unhappy``: a returned order, and an order worth less than the customer used to spend, raise
  the chance of leaving after it; some customers' order values fall over time.

Everything is numpy on whole arrays: 10 million orders take seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from winback.errors import UsageError

__all__ = [
    "SCENARIOS",
    "SynthParams",
    "scenario_params",
    "generate_history",
    "generate_orders",
    "customers_for_orders",
    "simulate_campaign",
    "CampaignEffects",
    "CAMPAIGN_KINDS",
    "campaign_kinds",
]

CATEGORIES = ("books", "music", "video", "games", "electronics", "home", "toys", "beauty")
CHANNELS = ("web", "app", "store")

#: Scenario name -> what it is, for ``--help`` and the README.
SCENARIOS = {
    "shop": "the default: BG/NBD-like buying with a moderate Nov-Dec peak, returns, "
    "categories and channels; customers may leave right after their first order",
    "btyd": "BG/NBD is the true model: no season, leaving only after a repeat purchase",
    "seasonal": "a sharp Nov-Dec peak; 30% of customers buy only in it",
    "censored": "the shop ran 5 years before the file starts; older history is not in it, "
    "and customers stay longer",
    "fading": "purchase rates decay gradually instead of stopping at once",
    "unhappy": "returns and falling order values raise the chance of leaving",
}


@dataclass(frozen=True)
class SynthParams:
    """Parameters of the generator (rates per day)."""

    n_customers: int = 5_000
    start: str = "2022-01-01"
    end: str = "2024-12-31"
    seed: int = 7
    rate_shape: float = 0.9  # gamma shape r of the purchase rate
    rate_scale: float = 1 / 40  # gamma scale (1/alpha): mean rate = r * scale per day
    dropout_a: float = 0.8  # beta a of the dropout probability
    dropout_b: float = 2.5  # beta b
    first_dropout: bool = True  # may drop out right after the first purchase (MBG/NBD)
    season_peak: float = 1.8  # purchase intensity in Nov-Dec relative to the rest
    season_only_share: float = 0.0  # customers who buy only in Nov-Dec after their first order
    arrival_growth: float = 1.5  # arrivals at the end / at the start
    history_start: str | None = None  # the shop's first day, before the file's `start`
    fade_days: float | None = None  # median time constant of a fading purchase rate (days)
    amount_median: float = 40.0
    amount_customer_sigma: float = 0.6
    amount_order_sigma: float = 0.4
    value_trend_sd: float = 0.0  # sd over customers of the yearly trend in log order value
    return_share: float = 0.04
    return_dropout: float = 0.0  # added log-odds of leaving after an order that is returned
    value_dropout: float = 0.0  # added log-odds per unit of log(level / order value) > 0
    favourite_share: float = 0.6


def scenario_params(name: str, **overrides) -> SynthParams:
    """The parameters of a named scenario (:data:`SCENARIOS`), with any field overridden."""
    presets = {
        "shop": {},
        "btyd": {"first_dropout": False, "season_peak": 1.0},
        "seasonal": {"season_peak": 4.0, "season_only_share": 0.3},
        "censored": {"history_years": 5, "dropout_b": 6.0},
        "fading": {"fade_days": 240.0, "dropout_a": 0.4, "dropout_b": 8.0},
        "unhappy": {
            "return_share": 0.2,
            "return_dropout": 2.5,
            "value_trend_sd": 0.5,
            "value_dropout": 2.0,
            "dropout_a": 0.5,
            "dropout_b": 5.0,
        },
    }
    if name not in presets:
        raise UsageError(f"Unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}.")
    preset = dict(presets[name])
    years = preset.pop("history_years", None)
    params = replace(SynthParams(), **{**preset, **overrides})
    if years is not None and "history_start" not in overrides:
        begin = pd.Timestamp(params.start) - pd.DateOffset(years=years)
        params = replace(params, history_start=f"{begin:%Y-%m-%d}")
    return params


def _in_peak(day: np.ndarray) -> np.ndarray:
    """Whether each day (``datetime64[D]``) falls in November or December."""
    month = (day.astype("datetime64[M]") - day.astype("datetime64[Y]")).astype(np.int64) + 1
    return month >= 11


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


@dataclass
class _Simulated:
    """Every order line of a simulated shop, in order of creation (returns last)."""

    begin: pd.Timestamp  # the shop's first day
    customer: np.ndarray  # per row: the customer (0..n-1)
    secs: np.ndarray  # seconds since ``begin``
    amount: np.ndarray  # negative for a return
    line: np.ndarray  # the purchase row a row belongs to (itself, or the returned purchase)
    season_only: np.ndarray  # per customer: buys only in Nov-Dec after the first order
    dropout: np.ndarray  # per customer: the drop-out probability drawn
    arrival: np.ndarray  # per customer: the day of the first purchase (days since ``begin``)
    rate: np.ndarray  # per customer: the purchase rate per day outside the peak
    fade: np.ndarray  # per customer: the time constant of a fading rate (days; inf: none)
    left: np.ndarray  # per customer: the day of the purchase after which they left (inf: never)


def _simulate(p: SynthParams) -> _Simulated:
    if p.n_customers < 1:
        raise UsageError(f"The number of customers must be >= 1; got {p.n_customers}.")
    begin = pd.Timestamp(p.history_start or p.start, tz="UTC")
    start = pd.Timestamp(p.start, tz="UTC")
    end = pd.Timestamp(p.end, tz="UTC")
    span = (end - begin).total_seconds() / 86400.0
    if (end - start).total_seconds() / 86400.0 < 30:
        raise UsageError(
            f"The synthetic period must span at least 30 days; got {(end - start).days}."
        )
    if begin > start:
        raise UsageError(f"history_start {p.history_start} is after the start {p.start}.")
    rng = np.random.default_rng(p.seed)
    n = p.n_customers

    # Arrival days: density growing linearly from 1 to arrival_growth (inverse-CDF sampling).
    g = p.arrival_growth
    u = rng.random(n)
    last_arrival = span - 14.0
    if abs(g - 1.0) < 1e-9:
        x = u
    else:
        x = (-1 + np.sqrt(1 + (g * g - 1) * u)) / (g - 1)
    arrival = x * last_arrival

    rate = rng.gamma(p.rate_shape, p.rate_scale, n)
    dropout = rng.beta(p.dropout_a, p.dropout_b, n)
    base_logit = _logit(dropout)
    level = p.amount_median * np.exp(rng.normal(0, p.amount_customer_sigma, n))
    trend = rng.normal(0, p.value_trend_sd, n) if p.value_trend_sd > 0 else np.zeros(n)
    season_only = rng.random(n) < p.season_only_share
    fade = p.fade_days * np.exp(rng.normal(0, 0.5, n)) if p.fade_days else np.full(n, np.inf)
    peak = max(p.season_peak, 1.0)
    start_day = np.datetime64(begin.date())

    def buy(who: np.ndarray, t: np.ndarray):
        """An order of each customer ``who`` at ``t``: its amount, whether it is returned, and
        whether the customer leaves after it."""
        k = who.size
        amount = level[who] * np.exp(trend[who] * (t - arrival[who]) / 365.0)
        amount = np.maximum(
            np.round(amount * np.exp(rng.normal(0, p.amount_order_sigma, k)), 2), 0.99
        )
        returned = rng.random(k) < p.return_share
        logit = base_logit[who] + p.return_dropout * returned
        logit = logit + p.value_dropout * np.maximum(np.log(level[who] / amount), 0.0)
        leaves = rng.random(k) < 1.0 / (1.0 + np.exp(-logit))
        return amount, returned, leaves

    # The first purchase, then repeat purchases one round per purchase: each live customer draws
    # the next candidate at the peak rate and keeps it with the probability of the season and
    # of their fading (thinning); after a kept purchase they may drop out. Work is proportional
    # to the orders made, not to the customers' potential.
    everyone = np.arange(n)
    amount, returned, leaves = buy(everyone, arrival)
    got_c, got_t, got_a, got_r = [everyone], [arrival], [amount], [returned]
    left = np.full(n, np.inf)
    if p.first_dropout:
        left[leaves] = arrival[leaves]
    live = everyone[~leaves] if p.first_dropout else everyone
    t_cur = arrival.copy()
    peak_rate = rate * peak
    while live.size:
        t_cur[live] += rng.exponential(1.0, live.size) / peak_rate[live]
        live = live[t_cur[live] < span]
        tt = t_cur[live]
        peak_day = _in_peak(start_day + tt.astype(np.int64).astype("timedelta64[D]"))
        intensity = np.where(peak_day, p.season_peak, 1.0)
        intensity = np.where(season_only[live] & ~peak_day, 0.0, intensity)
        intensity = intensity * np.exp(-(tt - arrival[live]) / fade[live])
        accepted = rng.random(live.size) < intensity / peak
        who = live[accepted]
        amount, returned, leaves = buy(who, tt[accepted])
        got_c.append(who)
        got_t.append(tt[accepted])
        got_a.append(amount)
        got_r.append(returned)
        left[who[leaves]] = tt[accepted][leaves]
        live = np.setdiff1d(live, who[leaves], assume_unique=True)
    cust = np.concatenate(got_c)
    t = np.concatenate(got_t)
    amount = np.concatenate(got_a)
    is_ret = np.concatenate(got_r)

    # Returns: a later row with a negative amount (full or partial), only if inside the period.
    r_idx = np.flatnonzero(is_ret)
    r_t = t[r_idx] + rng.uniform(1, 30, r_idx.size)
    inside = r_t < span
    r_idx, r_t = r_idx[inside], r_t[inside]
    r_amount = -np.round(amount[r_idx] * np.where(rng.random(r_idx.size) < 0.7, 1.0, 0.5), 2)
    return _Simulated(
        begin=begin,
        customer=np.r_[cust, cust[r_idx]],
        secs=np.round(np.r_[t, r_t] * 86400.0).astype(np.int64),
        amount=np.r_[amount, r_amount],
        line=np.r_[np.arange(cust.size), r_idx],
        season_only=season_only,
        dropout=dropout,
        arrival=arrival,
        rate=rate,
        fade=fade,
        left=left,
    )


def _timestamps(begin: pd.Timestamp, secs: np.ndarray) -> pd.DatetimeIndex:
    ts = np.datetime64(begin.tz_localize(None), "us") + (secs * 1_000_000).astype("timedelta64[us]")
    return pd.DatetimeIndex(ts).tz_localize("UTC")


def generate_history(params: SynthParams | None = None) -> pd.DataFrame:
    """Every order of the simulated shop from its first day (``history_start``, else ``start``)
    to ``end``, before the file's window is applied, with each customer's hidden traits:
    ``customer_id, order_ts, amount`` (negative for returns), ``season_only`` and ``dropout``.
    Customer ids are those of :func:`generate_orders` with the same parameters."""
    sim = _simulate(params or SynthParams())
    returned = np.zeros(sim.amount.size, dtype=bool)
    returned[sim.line[sim.amount < 0]] = True  # purchases that were sent back (within the file)
    return pd.DataFrame(
        {
            "customer_id": sim.customer.astype(np.int64) + 100_000,
            "order_ts": _timestamps(sim.begin, sim.secs),
            "amount": sim.amount,
            "returned": returned,
            "season_only": sim.season_only[sim.customer],
            "dropout": sim.dropout[sim.customer],
        }
    ).sort_values(["order_ts", "customer_id"], kind="stable", ignore_index=True)


def generate_orders(params: SynthParams | None = None) -> pd.DataFrame:
    """Generate an order history in the orders contract: what the shop's file holds, the orders
    of :func:`generate_history` from ``start`` on.

    Parameters
    ----------
    params : SynthParams, optional
        Customers, period, rates and seed (a scenario's with :func:`scenario_params`); the
        default shop when None.

    Returns
    -------
    DataFrame
        ``customer_id`` (int64), ``order_id`` (int64), ``order_ts`` (UTC), ``amount`` (float,
        negative for returns), ``quantity``, ``category``, ``channel``; sorted by ``order_ts``.
    """
    p = params or SynthParams()
    sim = _simulate(p)
    n = p.n_customers
    rng = np.random.default_rng([p.seed, 1])  # the order details: a stream of their own
    fav_cat = rng.choice(len(CATEGORIES), n, p=_zipf(len(CATEGORIES)))
    fav_chan = rng.choice(len(CHANNELS), n, p=[0.55, 0.3, 0.15])
    bought = sim.amount > 0
    n_lines = int(bought.sum())  # purchases come first, numbered by their line
    owner = sim.customer[:n_lines]
    quantity = 1 + rng.poisson(np.maximum(sim.amount[:n_lines] / 40.0 - 1, 0.1))
    is_fav = rng.random(n_lines) < p.favourite_share
    cat = np.where(is_fav, fav_cat[owner], rng.choice(len(CATEGORIES), n_lines, p=_zipf(8)))
    chan = np.where(
        rng.random(n_lines) < 0.8, fav_chan[owner], rng.integers(0, len(CHANNELS), n_lines)
    )
    first = int(round((pd.Timestamp(p.start, tz="UTC") - sim.begin).total_seconds()))
    keep = np.flatnonzero(sim.secs >= first)
    shift = 1 << int(n).bit_length()
    keep = keep[np.argsort(sim.secs[keep] * shift + sim.customer[keep], kind="stable")]
    line = sim.line[keep]  # by time, then customer
    return pd.DataFrame(
        {
            "customer_id": sim.customer[keep].astype(np.int64) + 100_000,
            "order_id": np.arange(keep.size, dtype=np.int64) + 1_000_000,
            "order_ts": _timestamps(sim.begin, sim.secs[keep]),
            "amount": sim.amount[keep],
            "quantity": quantity[line].astype(np.int64),
            "category": pd.Categorical.from_codes(cat[line], CATEGORIES),
            "channel": pd.Categorical.from_codes(chan[line], CHANNELS),
        }
    )


def _zipf(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


def customers_for_orders(n_orders: int, params: SynthParams | None = None) -> int:
    """How many customers give about ``n_orders`` orders with these parameters (from a pilot)."""
    p = params or SynthParams()
    pilot = 20_000
    pilot_params = SynthParams(**{**p.__dict__, "n_customers": pilot})
    per_customer = len(generate_orders(pilot_params)) / pilot
    return max(1, int(round(n_orders / per_customer)))


def chance_of_buying(
    params: SynthParams, customer_ids, as_of, window_days: int, chunk: int = 50_000
) -> np.ndarray:
    """Each customer's true chance of at least one purchase in ``(as_of, as_of +
    window_days]``, from the generator's hidden state at the as-of (what no model of the orders
    can see): 0 for a customer who has left; for one still buying, ``1 - exp(-rate x integral
    of the intensity over the window)``, the intensity being the season's and the fading's as
    the generator draws them (a purchase's chance of leaving comes after it, so it does not
    enter); 1 for a customer whose first purchase falls in the window. ``customer_ids`` are
    those of :func:`generate_orders` with the same ``params``."""
    sim = _simulate(params)
    who = np.asarray(customer_ids, dtype=np.int64) - 100_000
    if who.size and (who.min() < 0 or who.max() >= params.n_customers):
        raise UsageError("Customer ids must be those the generator gave with these parameters.")
    start, end = _window(as_of, window_days)
    t0 = (start - sim.begin).total_seconds() / 86400.0
    t1 = (end - sim.begin).total_seconds() / 86400.0
    # Day boundaries cut the window into pieces of one season each.
    cuts = np.unique(np.r_[t0, np.arange(np.floor(t0) + 1, t1), t1])
    a, b = cuts[:-1], cuts[1:]
    day = np.datetime64(sim.begin.date()) + np.floor(a).astype(np.int64).astype("timedelta64[D]")
    peak = _in_peak(day)
    season = np.where(peak, params.season_peak, 1.0)
    out = np.empty(who.size)
    for lo in range(0, who.size, chunk):
        c = who[lo : lo + chunk]
        arr, fade = sim.arrival[c][:, None], sim.fade[c][:, None]
        with np.errstate(invalid="ignore", over="ignore"):
            faded = np.where(
                np.isinf(fade),
                b - a,
                fade * (np.exp(-(a - arr) / fade) - np.exp(-(b - arr) / fade)),
            )
        per_piece = np.where(sim.season_only[c][:, None] & ~peak, 0.0, season) * faded
        p = 1.0 - np.exp(-sim.rate[c] * per_piece.sum(axis=1))
        alive = sim.left[c] > t0
        arrived = sim.arrival[c] <= t0
        out[lo : lo + chunk] = np.where(
            arrived, np.where(alive, p, 0.0), (sim.arrival[c] <= t1).astype(float)
        )
    return out


#: The kinds of listed customer a contact meets, by what it does to their buying in the window.
CAMPAIGN_KINDS = {
    "persuadable": "would not buy without the contact; buys with it (true uplift +1)",
    "sure_thing": "buys either way (0)",
    "lost_cause": "does not buy either way (0)",
    "sleeping_dog": "would buy without the contact; the contact keeps them away (-1)",
}


@dataclass(frozen=True)
class CampaignEffects:
    """Heterogeneous effects of a contact in :func:`simulate_campaign`: who a contact moves,
    from what their history shows at the as-of (so a model of the features can learn it).

    A listed customer who would not buy in the window is *persuadable* with probability
    ``persuadable x fit``: ``fit`` is 1 for a regular (at least ``regular_orders`` orders) whose
    last order was ``lapse_days`` ago, falls off as a bell curve of width ``lapse_width_days``
    on either side of it, and is a third of that for a customer with fewer orders; otherwise
    they are a *lost cause*. A listed customer who would buy anyway is a *sleeping dog* (the
    contact keeps them away) with probability ``sleeping_dog`` for a regular and a fifth of it
    for the others; otherwise a *sure thing*."""

    persuadable: float = 0.6
    lapse_days: float = 90.0
    lapse_width_days: float = 60.0
    regular_orders: int = 3
    sleeping_dog: float = 0.15

    def __post_init__(self) -> None:
        for name in ("persuadable", "sleeping_dog"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise UsageError(f"The {name} share must be in [0, 1]; got {share}.")
        if self.lapse_width_days <= 0 or self.regular_orders < 1:
            raise UsageError("lapse_width_days must be > 0 and regular_orders >= 1.")


def campaign_kinds(
    orders: pd.DataFrame,
    lists: pd.DataFrame,
    as_of: pd.Timestamp,
    window_days: int,
    effects: CampaignEffects,
    seed: int = 7,
    params: SynthParams | None = None,
) -> pd.DataFrame:
    """Each listed customer's kind (:data:`CAMPAIGN_KINDS`) under ``effects``, the same whether
    they were treated or held out: ``customer_id, group, n_orders, recency_days,
    buys_anyway`` (a purchase in ``(as_of, as_of + window_days]`` in ``orders``),
    ``p_persuadable, p_sleeping_dog`` (the chances their history gave them), ``kind`` and
    ``true_uplift`` (what a contact did to whether they buy in the window: +1, 0 or -1).

    With the generator's ``params`` (the orders being :func:`generate_orders`'), also
    ``p_buys_anyway`` (:func:`chance_of_buying`) and ``expected_uplift``, what a contact is
    expected to do before the window is drawn: ``a (1 - p_buys_anyway) - d p_buys_anyway``,
    with ``a`` and ``d`` the chances of being persuadable (if not buying anyway) and a sleeping
    dog (if buying anyway). Ranking by it is the best any targeting can do in expectation: the
    oracle an uplift model is judged against; ``true_uplift`` is what chance then drew."""
    start, end = _window(as_of, window_days)
    listed = lists[["customer_id", "group"]].astype({"customer_id": str}).copy()
    listed = listed.sort_values("customer_id", kind="stable").reset_index(drop=True)
    cid = orders["customer_id"].astype(str)
    bought = orders["amount"] > 0
    before = orders[bought & (orders["order_ts"] <= start)].assign(_c=cid)
    history = before.groupby("_c")["order_ts"].agg(["count", "max"])
    history = history.reindex(listed["customer_id"])
    n_orders = history["count"].fillna(0).to_numpy(dtype=float)
    recency = ((start - history["max"]).dt.total_seconds() / 86400).to_numpy(dtype=float)
    in_window = set(cid[bought & (orders["order_ts"] > start) & (orders["order_ts"] <= end)])
    anyway = listed["customer_id"].isin(in_window).to_numpy()
    regular = n_orders >= effects.regular_orders
    bell = np.exp(-0.5 * ((recency - effects.lapse_days) / effects.lapse_width_days) ** 2)
    fit = np.where(regular, 1.0, 1 / 3) * np.nan_to_num(bell)
    p_persuade = effects.persuadable * fit
    p_dog = effects.sleeping_dog * np.where(regular, 1.0, 0.2)
    u = np.random.default_rng((seed, 1)).random(len(listed))  # apart from the order times
    kind = np.where(
        anyway,
        np.where(u < p_dog, "sleeping_dog", "sure_thing"),
        np.where(u < p_persuade, "persuadable", "lost_cause"),
    )
    uplift = np.select([kind == "persuadable", kind == "sleeping_dog"], [1, -1], 0)
    if params is not None:
        anyway_p = chance_of_buying(
            params, listed["customer_id"].astype(np.int64), start, window_days
        )
        listed = listed.assign(
            p_buys_anyway=anyway_p,
            expected_uplift=p_persuade * (1 - anyway_p) - p_dog * anyway_p,
        )
    return listed.assign(
        n_orders=n_orders.astype(np.int64),
        recency_days=recency,
        buys_anyway=anyway,
        p_persuadable=np.where(anyway, 0.0, p_persuade),
        p_sleeping_dog=np.where(anyway, p_dog, 0.0),
        kind=kind,
        true_uplift=uplift.astype(np.int64),
    )


def _window(as_of, window_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(as_of)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return start, start + pd.Timedelta(days=window_days)


def simulate_campaign(
    orders: pd.DataFrame,
    lists: pd.DataFrame,
    as_of: pd.Timestamp,
    window_days: int,
    uplift: float | None = None,
    seed: int = 7,
    effects: CampaignEffects | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Apply a known campaign effect to synthetic orders; the control group and everyone not
    listed are left alone.

    With ``uplift`` (one effect for all): each treated customer (``group == 'treatment'`` in
    ``lists``) who placed no order in ``(as_of, as_of + window_days]`` is won back with
    probability ``uplift`` and buys once in the window, for their median order amount.

    With ``effects`` (heterogeneous, :class:`CampaignEffects`): each listed customer has a kind
    (:func:`campaign_kinds`, with the same ``seed``); treated persuadables buy once in the window
    as above, and treated sleeping dogs do not place the purchases they would have placed in it.

    Returns the orders with the extra rows (``order_id`` above every existing one; a sleeping
    dog's window purchases removed) and the truth: ``n_treatment``, ``won_back``,
    ``pushed_away`` (sleeping dogs who stayed away), ``incremental_retention`` ((won back -
    pushed away) / treated) and ``incremental_revenue_per_customer`` (their spend, gained less
    lost, / treated).
    """
    if (uplift is None) == (effects is None):
        raise UsageError("Give the campaign either one uplift or heterogeneous effects.")
    if uplift is not None and not 0.0 <= uplift <= 1.0:
        raise UsageError(f"The uplift must be a share in [0, 1]; got {uplift}.")
    start, end = _window(as_of, window_days)
    treated = pd.Index(lists.loc[lists["group"] == "treatment", "customer_id"].astype(str))
    cid = orders["customer_id"].astype(str)
    in_window = (orders["order_ts"] > start) & (orders["order_ts"] <= end) & (orders["amount"] > 0)
    rng = np.random.default_rng(seed)
    if effects is None:
        bought = pd.Index(cid[in_window].unique())
        candidates = treated.difference(bought).sort_values()
        won = candidates[rng.random(len(candidates)) < uplift]
        away = pd.Index([], dtype=str)
    else:
        kinds = campaign_kinds(orders, lists, as_of, window_days, effects, seed)
        contacted = kinds[kinds["group"] == "treatment"]
        won = pd.Index(contacted.loc[contacted["kind"] == "persuadable", "customer_id"])
        away = pd.Index(contacted.loc[contacted["kind"] == "sleeping_dog", "customer_id"])
    history = orders[(orders["order_ts"] <= start) & (orders["amount"] > 0)]
    typical = history.groupby(history["customer_id"].astype(str))["amount"].median()
    first = orders.drop_duplicates("customer_id")  # category and channel of the first order
    first.index = first["customer_id"].astype(str)
    rows = first.loc[won].copy()
    seconds = rng.uniform(1, window_days * 86400, len(won))
    rows["order_ts"] = (start + pd.to_timedelta(seconds, unit="s")).floor("s")
    rows["amount"] = typical.reindex(won).fillna(orders["amount"].median()).round(2).to_numpy()
    rows["quantity"] = 1
    rows["order_id"] = orders["order_id"].max() + 1 + np.arange(len(won))
    dropped = in_window & cid.isin(away)
    lost = float(orders.loc[dropped, "amount"].sum())
    out = pd.concat([orders[~dropped], rows.reset_index(drop=True)], ignore_index=True)
    out = out.sort_values("order_ts", kind="stable").reset_index(drop=True)
    n = len(treated)
    gained = float(rows["amount"].sum())
    truth = {
        "n_treatment": float(n),
        "won_back": float(len(won)),
        "pushed_away": float(len(away)),
        "incremental_retention": (len(won) - len(away)) / n if n else float("nan"),
        "incremental_revenue_per_customer": (gained - lost) / n if n else float("nan"),
    }
    return out, truth
