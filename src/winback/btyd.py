"""BG/NBD (Fader, Hardie & Lee 2005) and MBG/NBD (Batislam et al. 2007): fit and predictions,
on scipy, in log space.

A customer's summary at a cutoff is ``(frequency, recency, T)``: frequency = repeat purchase
days (distinct purchase days - 1), recency = time from the first to the last purchase, T = time
from the first purchase to the cutoff, all in the same unit (days in winback, weeks in the paper).

While alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha). In BG/NBD
they drop out with probability p ~ Beta(a, b) after each *repeat* purchase, so a customer who
bought once is alive for sure; in MBG/NBD they may also drop out right after the first purchase.

The likelihood's gradient is analytic, so a fit takes a few dozen evaluations of the pooled
``(x, t_x, T)`` triples; neighbouring cutoffs start from each other's solution (``start``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1

from winback.errors import DataError

__all__ = ["BGNBD", "BTYD_VARIANTS", "summarize", "bgnbd_log_likelihood"]

#: ``bg``: BG/NBD; ``mbg``: MBG/NBD (drop-out possible right after the first purchase).
BTYD_VARIANTS = ("bg", "mbg")


#: Bounds of the log-parameters while fitting: e^-12 to e^12 keeps every term finite.
_LOG_BOUNDS = (-12.0, 12.0)

#: A fit whose log-parameters all stay within this is an interior optimum, not a flat corner.
_SETTLED = 7.0


def _shift(variant: str) -> int:
    """0 for BG/NBD, 1 for MBG/NBD: where the two likelihoods differ, MBG/NBD has ``x + 1``."""
    if variant not in BTYD_VARIANTS:
        raise ValueError(f"variant must be one of {BTYD_VARIANTS}; got {variant!r}")
    return 0 if variant == "bg" else 1


def _terms(params, x, t_x, T, k: int):
    """The pieces of the per-customer log-likelihood (see :func:`bgnbd_log_likelihood`)."""
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x + k) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    dies = (x > 0) | (k == 1)  # who can have dropped out after their last purchase
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            dies,
            np.log(a) - np.log(np.maximum(b + x - 1 + k, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return a1, a2, a3, a4


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, variant: str = "bg"
) -> np.ndarray:
    """Per-customer log-likelihood of BG/NBD (or MBG/NBD), in log space so it never overflows.

    Parameters
    ----------
    params : (r, alpha, a, b)
    x, t_x, T : arrays
        Frequency (repeat purchases), recency and age, in one time unit.
    variant : {"bg", "mbg"}
    """
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    a1, a2, a3, a4 = _terms(params, x, t_x, T, _shift(variant))
    return a1 + a2 + np.logaddexp(a3, a4)


@dataclass(frozen=True)
class _Pooled:
    """Distinct ``(x, t_x, T)`` triples with their weights, and the distinct ``x`` values: the
    special functions of the likelihood depend on ``x`` alone, so they are evaluated once per
    distinct ``x`` (a few dozen) instead of once per triple (thousands)."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    w: np.ndarray
    ux: np.ndarray  # distinct x
    at: np.ndarray  # each triple's position in ux
    wx: np.ndarray  # total weight per distinct x

    @classmethod
    def of(cls, x, t_x, T, w) -> _Pooled:
        ux, at = np.unique(x, return_inverse=True)
        return cls(x, t_x, T, w, ux, at, np.bincount(at, weights=w, minlength=ux.size))


def _nll_and_grad(log_params, d: _Pooled, k: int, penalizer: float):
    """Mean negative log-likelihood (weights ``d.w``) and its gradient in the log-parameters
    (the same as :func:`bgnbd_log_likelihood`, term by term)."""
    params = np.exp(log_params)
    r, alpha, a, b = params
    ab = a + b
    u = d.ux
    # the terms that depend on x alone, per distinct x, weighted by how often it occurs
    x_only = gammaln(r + u) + betaln(a, b + u + k)
    const = -gammaln(r) + r * np.log(alpha) - betaln(a, b)
    log_c = np.log(np.maximum(b + u - 1 + k, 1e-300))  # log(b + x - 1) (BG) or log(b + x)
    rx = r + d.x
    log_T = np.log(alpha + d.T)
    log_tx = np.log(alpha + d.t_x)
    a3 = -rx * log_T
    dies = (d.x > 0) | (k == 1)  # who can have dropped out after their last purchase
    a4 = np.where(dies, np.log(a) - log_c[d.at] - rx * log_tx, -np.inf)
    mix = np.logaddexp(a3, a4)
    w3 = np.exp(a3 - mix)  # share of the "alive at T" term
    w4 = 1.0 - w3
    total = d.w.sum()
    ll = (d.wx * x_only).sum() + total * const + (d.w * mix).sum()
    ww3, ww4 = d.w * w3, d.w * w4
    d_r = (d.wx * digamma(r + u)).sum() + total * (np.log(alpha) - digamma(r))
    d_r -= (ww3 * log_T).sum() + (ww4 * log_tx).sum()
    d_alpha = total * r / alpha - (ww3 * rx / (alpha + d.T)).sum()
    d_alpha -= (ww4 * rx / (alpha + d.t_x)).sum()
    d_a = total * digamma(ab) - (d.wx * digamma(ab + u + k)).sum() + ww4.sum() / a
    d_b = (d.wx * (digamma(b + u + k) - digamma(ab + u + k))).sum()
    d_b += total * (digamma(ab) - digamma(b))
    d_b -= (ww4 / np.exp(log_c[d.at])).sum()
    grad = -np.array([d_r, d_alpha, d_a, d_b]) * params / total
    value = -ll / total + penalizer * float(np.sum(log_params**2))
    grad += 2 * penalizer * log_params
    return float(value), grad


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
    """The BG/NBD model (or MBG/NBD): ``fit`` by maximum likelihood, then predict per customer.

    Parameters
    ----------
    penalizer : float
        L2 penalty on the log-parameters (0 = plain maximum likelihood).
    variant : {"bg", "mbg"}
        BG/NBD, or MBG/NBD where a customer may drop out right after the first purchase.
    """

    penalizer: float = 0.0
    variant: str = "bg"

    def fit(self, frequency, recency, T, start: dict[str, float] | None = None) -> BGNBD:
        """Maximise the likelihood over (r, alpha, a, b) > 0; identical summaries are pooled.

        ``start``: parameters to start from first (a neighbouring cutoff's fit); when that does
        not converge to an interior optimum (a flat corner where drop-out is barely identified
        can hold it), a neutral start on the data's time scale is tried too and the better
        optimum wins. L-BFGS-B with the analytic gradient; Nelder-Mead polishes only when
        L-BFGS-B reports no convergence.
        """
        k = _shift(self.variant)
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
        x, t_x, T_, w = (pooled[c].to_numpy(dtype=float) for c in ("x", "t_x", "T", "w"))
        data = _Pooled.of(x, t_x, T_, w)
        scale = max(float(np.average(T_, weights=w)), 1e-9)  # alpha lives on the time scale
        neutral = np.log([1.0, scale, 1.0, 1.0])
        starts = [neutral]
        if start is not None:
            starts.insert(0, np.log([start["r"], start["alpha"], start["a"], start["b"]]))
        args = (data, k, self.penalizer)
        bounds = [_LOG_BOUNDS] * 4
        best = None
        for x0 in starts:
            res = minimize(
                _nll_and_grad,
                np.clip(x0, *_LOG_BOUNDS),
                args=args,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": 2_000, "ftol": 1e-14, "gtol": 1e-9},
            )
            if not res.success:
                res = minimize(
                    lambda p: _nll_and_grad(p, *args)[0],
                    res.x,
                    method="Nelder-Mead",
                    bounds=bounds,
                    # a short polish: where L-BFGS-B stalls the likelihood is flat (drop-out
                    # barely identified), and thousands more steps gain nothing
                    options={"maxiter": 800, "xatol": 1e-7, "fatol": 1e-10},
                )
            if best is None or res.fun < best.fun:
                best = res
            if res.success and np.all(np.abs(res.x) < _SETTLED):
                break  # converged inside the interior: the other start is not needed
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(best.x))
        self.log_likelihood_ = float(-best.fun * w.sum())
        self.n_customers_ = int(w.sum())
        return self

    @property
    def params_(self) -> dict[str, float]:
        return {"r": self.r_, "alpha": self.alpha_, "a": self.a_, "b": self.b_}

    def _odds_dead(self, x, t_x, T) -> np.ndarray:
        """a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x) for x > 0, else 0 (log-space); MBG/NBD
        has b+x and applies to x = 0 too."""
        k = _shift(self.variant)
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (
                np.log(a)
                - np.log(np.maximum(b + x - 1 + k, 1e-300))
                + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
            )
        return np.where((x > 0) | (k == 1), np.exp(np.minimum(log_odds, 700)), 0.0)

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
        k = _shift(self.variant)
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        x = np.asarray(frequency, dtype=float)
        T_ = np.asarray(T, dtype=float)
        z = t / (alpha + T_ + t)
        ratio = np.exp((r + x) * (np.log(alpha + T_) - np.log(alpha + T_ + t)))
        hyp = hyp2f1(r + x, b + x + k, a + b + x - 1 + k, z)
        body = (a + b + x - 1 + k) / (a - 1) * (1 - ratio * hyp)
        return body / (1.0 + self._odds_dead(frequency, recency, T))
