"""When each customer's next order is due: the chance of no order within 30, 60 and 90 days,
and the dates by which an order has a 10%, 50% and 90% chance, from BG/NBD corrected by the
churn model.

BG/NBD gives, for any number of days ``t`` after the as-of, the chance of no purchase in them:
dead, or alive with no purchase from a Poisson rate whose posterior is Gamma(r', alpha')
(``bgnbd_posterior_r`` = r + x and ``bgnbd_posterior_alpha`` = alpha + T):

    S_bg(t) = 1 - A + A (alpha' / (alpha' + t))^r'          A = bgnbd_p_alive

The churn model's ``p_churn`` is the better calibrated chance of no purchase within the
horizon H. The BG/NBD curve is moved on the logit scale by the one constant that makes it
agree with ``p_churn`` at H:

    S(t) = sigmoid(logit S_bg(t) + d),     d = logit p_churn - logit S_bg(H)

so S(H) = p_churn, S(0) = 1 and S falls with t for every customer (the logit and the sigmoid
keep the order of S_bg, which falls with t); the shape over time is BG/NBD's, its level at H
the model's. S tends to ``sigmoid(logit(1 - A) + d)`` (gone for good) as t grows: when that
stays above a share q, no date has a chance ``1 - q`` of an order by then, and the date is left
empty (so is a date more than :data:`TIMING_MAX_DAYS` ahead). Else the day where S(t) = q has
a closed form:

    S_bg(t) = u = sigmoid(logit q - d)  =>  t = alpha' ((A / (u - 1 + A))^(1/r') - 1)

The 30/60/90-day chances are checked against what happened in backtests
(:func:`reliability`): their calibration at each horizon, not only at H.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "TIMING_INPUTS",
    "TIMING_DAYS",
    "TIMING_QUANTILES",
    "p_no_order",
    "days_to_order",
    "timing_columns",
    "reliability",
]

#: The snapshot columns (:mod:`winback.snapshots`) the timing is worked out from, in the
#: order :func:`p_no_order` takes them after ``p_churn``: A, r' and alpha'.
TIMING_INPUTS = ["bgnbd_p_alive", "bgnbd_posterior_r", "bgnbd_posterior_alpha"]

#: The horizons (days) whose chance of no order every scored customer gets.
TIMING_DAYS = (30, 60, 90)

#: The chances of an order by a date that the score table gives a date for.
TIMING_QUANTILES = {"next_order_from": 0.1, "next_order_date": 0.5, "next_order_until": 0.9}

#: Dates further out than this are left empty: BG/NBD's curve says little that far ahead.
TIMING_MAX_DAYS = 3 * 365

_EPS = 1e-12


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _bgnbd_none(t, p_alive, r, alpha) -> np.ndarray:
    """S_bg(t): BG/NBD's chance of no purchase within ``t`` days."""
    a = np.asarray(p_alive, dtype=float)
    r, alpha = np.asarray(r, dtype=float), np.asarray(alpha, dtype=float)
    return 1.0 - a + a * np.exp(r * (np.log(alpha) - np.log(alpha + t)))


def _shift(p_churn, p_alive, r, alpha, horizon_days: int) -> np.ndarray:
    return _logit(p_churn) - _logit(_bgnbd_none(float(horizon_days), p_alive, r, alpha))


def p_no_order(t, p_churn, p_alive, r, alpha, horizon_days: int) -> np.ndarray:
    """S(t): each customer's chance of no order within ``t`` days (one number, or one per
    customer), BG/NBD's curve through ``p_churn`` at ``horizon_days``."""
    d = _shift(p_churn, p_alive, r, alpha, horizon_days)
    return _curve(np.asarray(t, dtype=float), d, p_alive, r, alpha)


def days_to_order(q: float, p_churn, p_alive, r, alpha, horizon_days: int) -> np.ndarray:
    """The days ``t`` after the as-of where S(t) = ``q`` (a chance ``1 - q`` of an order by
    then); NaN where S never falls that low."""
    return _days(q, _shift(p_churn, p_alive, r, alpha, horizon_days), p_alive, r, alpha)


def _curve(t, d, p_alive, r, alpha) -> np.ndarray:
    return _sigmoid(_logit(_bgnbd_none(t, p_alive, r, alpha)) + d)


def _days(q: float, d, p_alive, r, alpha) -> np.ndarray:
    a = np.asarray(p_alive, dtype=float)
    r, alpha = np.asarray(r, dtype=float), np.asarray(alpha, dtype=float)
    u = _sigmoid(_logit(q) - d)
    room = u - 1.0 + a  # A g(t) must come down to this, g falling from 1 towards 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = alpha * (np.exp((np.log(a) - np.log(room)) / r) - 1.0)
    return np.where(room > 0, np.maximum(t, 0.0), np.nan)


def timing_columns(
    p_churn, p_alive, r, alpha, horizon_days: int, as_of: pd.Timestamp
) -> dict[str, object]:
    """The score table's timing columns: ``p_no_order_<d>d`` for each of :data:`TIMING_DAYS`,
    and for each of :data:`TIMING_QUANTILES` the date (an Arrow date; YYYY-MM-DD in a CSV) by
    which an order has that chance: empty when S never falls that low, or not within
    :data:`TIMING_MAX_DAYS`."""
    import pyarrow as pa

    d = _shift(p_churn, p_alive, r, alpha, horizon_days)  # once for every column
    out: dict[str, object] = {
        f"p_no_order_{days}d": _curve(float(days), d, p_alive, r, alpha) for days in TIMING_DAYS
    }
    day0 = np.datetime64(pd.Timestamp(as_of).strftime("%Y-%m-%d"), "D")
    for name, chance in TIMING_QUANTILES.items():
        t = _days(1.0 - chance, d, p_alive, r, alpha)
        known = np.isfinite(t) & (t <= TIMING_MAX_DAYS)
        whole = np.where(known, np.ceil(t), 0).astype(np.int64)  # the day it is reached
        days = pa.array(day0 + whole.astype("timedelta64[D]"), mask=~known, type=pa.date32())
        out[name] = pd.array(days, dtype=pd.ArrowDtype(pa.date32()))  # 4 bytes a date
    return out


def reliability(predicted, observed, bins: int = 10) -> pd.DataFrame:
    """A reliability table: the customers in ``bins`` groups of equal size by the predicted
    chance, each group's ``customers``, mean ``predicted`` and ``observed`` share, and their
    ``gap`` (observed - predicted)."""
    p = np.asarray(predicted, dtype=float)
    y = np.asarray(observed, dtype=float)
    order = np.argsort(p, kind="stable")
    group = np.empty(len(p), dtype=np.int64)
    group[order] = np.arange(len(p)) * bins // max(len(p), 1)
    frame = pd.DataFrame({"bin": group + 1, "predicted": p, "observed": y})
    table = frame.groupby("bin").agg(
        customers=("predicted", "size"),
        predicted=("predicted", "mean"),
        observed=("observed", "mean"),
    )
    return table.assign(gap=table["observed"] - table["predicted"]).reset_index()
