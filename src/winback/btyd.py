"""BG/NBD (Fader, Hardie & Lee 2005): fit and predictions, on scipy, in log space.

A customer's summary at a cutoff is ``(frequency, recency, T)``: frequency = repeat purchase
days (distinct purchase days - 1), recency = time from the first to the last purchase, T = time
from the first purchase to the cutoff, all in the same unit (days in winback, weeks in the paper).

While alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each
repeat purchase they drop out with probability p ~ Beta(a, b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from winback.errors import DataError

__all__ = ["BGNBD", "summarize", "bgnbd_log_likelihood"]


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer log-likelihood of BG/NBD, computed in log space so it never overflows.

    Parameters
    ----------
    params : (r, alpha, a, b)
    x, t_x, T : arrays
        Frequency (repeat purchases), recency and age, in one time unit.
    """
    r, alpha, a, b = params
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return a1 + a2 + np.logaddexp(a3, a4)


def summarize(orders: pd.DataFrame, cutoff: pd.Timestamp, unit_days: float = 1.0) -> pd.DataFrame:
    """``frequency, recency, T`` per customer from purchases at or before ``cutoff``.

    ``orders`` has ``customer_id``, ``order_ts`` and optionally ``is_return`` (returns are not
    purchases). Times are in units of ``unit_days`` (7 for weeks).
    """
    p = orders
    if "is_return" in p.columns:
        p = p[~p["is_return"].astype(bool)]
    p = p[p["order_ts"] <= cutoff]
    days = p.assign(day=p["order_ts"].dt.normalize())[["customer_id", "day"]].drop_duplicates()
    g = days.groupby("customer_id")["day"]
    first, last, n = g.min(), g.max(), g.size()
    unit = pd.Timedelta(days=unit_days)
    return pd.DataFrame(
        {
            "frequency": (n - 1).astype(float),
            "recency": (last - first) / unit,
            "T": (cutoff - first) / unit,
        }
    )


@dataclass
class BGNBD:
    """The BG/NBD model: ``fit`` by maximum likelihood, then predict per customer.

    Parameters
    ----------
    penalizer : float
        L2 penalty on the log-parameters (0 = plain maximum likelihood).
    """

    penalizer: float = 0.0

    def fit(self, frequency, recency, T) -> BGNBD:
        """Maximise the likelihood over (r, alpha, a, b) > 0; identical summaries are pooled."""
        df = pd.DataFrame({"x": frequency, "t_x": recency, "T": T}).astype(float)
        bad = (df["x"] < 0) | (df["t_x"] < 0) | (df["T"] < df["t_x"]) | df.isna().any(axis=1)
        if bad.any():
            raise DataError(
                f"BG/NBD needs frequency >= 0 and 0 <= recency <= T; {int(bad.sum())} of "
                f"{len(df)} customers break that."
            )
        if len(df) == 0 or (df["x"] > 0).sum() == 0:
            raise DataError("BG/NBD needs customers with at least one repeat purchase to fit.")
        pooled = df.groupby(["x", "t_x", "T"]).size().reset_index(name="w")
        x, t_x, T_, w = (pooled[c].to_numpy() for c in ("x", "t_x", "T", "w"))
        scale = max(float(np.mean(T_)), 1e-9)  # alpha lives on the time scale; start near it

        def nll(log_params: np.ndarray) -> float:
            ll = bgnbd_log_likelihood(np.exp(log_params), x, t_x, T_)
            return -(w * ll).sum() / w.sum() + self.penalizer * float(np.sum(log_params**2))

        start = np.log([1.0, scale, 1.0, 1.0])
        best = None
        for method in ("L-BFGS-B", "Nelder-Mead"):
            res = minimize(nll, start, method=method, options={"maxiter": 10_000})
            if best is None or res.fun < best.fun:
                best = res
            start = best.x
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(best.x))
        self.log_likelihood_ = float(-best.fun * w.sum())
        self.n_customers_ = int(w.sum())
        return self

    @property
    def params_(self) -> dict[str, float]:
        return {"r": self.r_, "alpha": self.alpha_, "a": self.a_, "b": self.b_}

    def _odds_dead(self, x, t_x, T) -> np.ndarray:
        """a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x) for x > 0, else 0 (log-space)."""
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (
                np.log(a)
                - np.log(np.maximum(b + x - 1, 1e-300))
                + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
            )
        return np.where(x > 0, np.exp(np.minimum(log_odds, 700)), 0.0)

    def p_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still alive at T | history)."""
        return 1.0 / (1.0 + self._odds_dead(frequency, recency, T))

    def p_no_purchase(self, t: float, frequency, recency, T) -> np.ndarray:
        """P(no purchase in (T, T + t] | history): dead, or alive and no Poisson event."""
        x = np.asarray(frequency, dtype=float)
        T_ = np.asarray(T, dtype=float)
        alive = self.p_alive(frequency, recency, T)
        none_if_alive = np.exp(
            (self.r_ + x) * (np.log(self.alpha_ + T_) - np.log(self.alpha_ + T_ + t))
        )
        return 1.0 - alive + alive * none_if_alive

    def expected_purchases(self, t: float, frequency, recency, T) -> np.ndarray:
        """E[purchases in (T, T + t] | history]."""
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        x = np.asarray(frequency, dtype=float)
        T_ = np.asarray(T, dtype=float)
        z = t / (alpha + T_ + t)
        ratio = np.exp((r + x) * (np.log(alpha + T_) - np.log(alpha + T_ + t)))
        body = (a + b + x - 1) / (a - 1) * (1 - ratio * hyp2f1(r + x, b + x, a + b + x - 1, z))
        return body / (1.0 + self._odds_dead(frequency, recency, T))
