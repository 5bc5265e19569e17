"""Uplift: how much a contact changes a customer's chance of buying within a campaign's window,
learnt from past campaigns' treated and held-out customers; and how to judge a ranking by it.

The model is an X-learner on LightGBM (Kuenzel et al., 2019): one classifier of buying for the
treated and one for the held out; each treated customer's effect imputed as what they did less
what the held-out model expected of them (and the reverse for the held out); a regressor of
each imputed effect; the uplift is their mix weighted by the share treated (constant in a
randomized campaign). On a campaign simulated with persuadables and sleeping dogs it ranked
them a little better than the two classifiers' difference alone.

A ranking is judged on customers whose treatment was randomized, by its Qini curve: going down
the ranking, the incremental buyers so far ``Q(n) = Y_t(n) - Y_c(n) N_t(n) / N_c(n)`` (treated
buyers, less the held-out buyers scaled to as many customers), per customer of the whole
group. The Qini coefficient is the mean height of that curve above the line of random
targeting, ``mean_n [Q(n) - (n / N) Q(N)] / N``: 0 for a random order, more the earlier the
ranking finds the customers a contact moves. Uplift at the top share k is the buying rate of the
treated less that of the held out among the top k of the ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "UpliftModel",
    "qini_curve",
    "qini_coefficient",
    "uplift_at",
    "evaluate_ranking",
    "profit_curve",
]


class UpliftModel:
    """An X-learner on LightGBM: :meth:`fit` on past campaigns' customers (features, whether
    they were treated, whether they bought in the window); :meth:`predict` gives each
    customer's uplift in P(buy within the window)."""

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        random_state: int = 42,
    ):
        self.params = {
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "random_state": random_state,
            "n_jobs": 2,
            "verbose": -1,
        }

    def fit(self, X: pd.DataFrame, treated, bought) -> UpliftModel:
        import lightgbm as lgb

        from winback.model import feature_columns

        t = np.asarray(treated, dtype=bool)
        y = np.asarray(bought, dtype=float)
        if t.all() or not t.any():
            raise ValueError("an uplift model needs treated and held-out customers")
        self.features_ = feature_columns(X)
        Xf = X[self.features_].to_numpy(dtype=float)
        on_t = lgb.LGBMClassifier(**self.params).fit(Xf[t], y[t])
        on_c = lgb.LGBMClassifier(**self.params).fit(Xf[~t], y[~t])
        imputed_t = y[t] - on_c.predict_proba(Xf[t])[:, 1]
        imputed_c = on_t.predict_proba(Xf[~t])[:, 1] - y[~t]
        self.effect_t_ = lgb.LGBMRegressor(**self.params).fit(Xf[t], imputed_t)
        self.effect_c_ = lgb.LGBMRegressor(**self.params).fit(Xf[~t], imputed_c)
        self.share_treated_ = float(t.mean())
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        from winback.model import feature_matrix

        Xf = feature_matrix(
            X,
            self.features_,
            "The uplift model needs features it learnt from",
            "Learn it again ('winback learn') with the config that scores.",
        )
        e = self.share_treated_
        return e * self.effect_c_.predict(Xf) + (1 - e) * self.effect_t_.predict(Xf)


def qini_curve(score, treated, bought) -> pd.DataFrame:
    """``share`` (of customers taken, best first by ``score``; ties in the order given) and
    ``incremental`` (``Q(n) / N``: incremental buyers so far per customer)."""
    t, b = _ordered(score, treated, bought)
    yt, yc = np.cumsum(b & t), np.cumsum(b & ~t)
    nt, nc = np.cumsum(t), np.cumsum(~t)
    scaled = np.divide(nt, nc, out=np.zeros(len(nt)), where=nc > 0)
    n = len(t)
    return pd.DataFrame(
        {"share": np.arange(1, n + 1) / n, "incremental": (yt - yc * scaled) / max(n, 1)}
    )


def profit_curve(score, treated, bought, revenue, contact_cost, offer_cost) -> pd.DataFrame:
    """What contacting the best first by ``score`` would have earned, on a randomized campaign:
    ``share`` (of customers taken) and ``net`` (per listed customer). Going down the ranking,
    the treated among the top n brought ``R_t(n) - R_c(n) N_t(n) / N_c(n)`` more revenue than
    as many held-out customers, and cost their contacts and the offers their buyers redeemed
    (``contact_cost``, ``offer_cost``: one number, or one per customer); that net, scaled from
    the treated to everyone taken (``N / N_t``), per customer of the campaign."""
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    n = len(order)
    t = np.asarray(treated, dtype=bool)[order]
    b = np.asarray(bought, dtype=bool)[order]
    r = np.asarray(revenue, dtype=float)[order]
    contact = np.broadcast_to(np.asarray(contact_cost, dtype=float), (n,))
    offer = np.broadcast_to(np.asarray(offer_cost, dtype=float), (n,))
    cost = np.where(t, contact[order] + offer[order] * b, 0.0)
    nt, nc = np.cumsum(t), np.cumsum(~t)
    scaled = np.divide(nt, nc, out=np.zeros(n), where=nc > 0)
    gained = np.cumsum(np.where(t, r, 0.0)) - np.cumsum(np.where(t, 0.0, r)) * scaled
    net = (gained - np.cumsum(cost)) / max(int(nt[-1]) if n else 0, 1)
    return pd.DataFrame({"share": np.arange(1, n + 1) / max(n, 1), "net": net})


def qini_coefficient(score, treated, bought) -> float:
    """The mean height of the Qini curve above random targeting's line."""
    curve = qini_curve(score, treated, bought)
    if curve.empty:
        return float("nan")
    q = curve["incremental"].to_numpy()
    return float(np.mean(q - curve["share"].to_numpy() * q[-1]))


def uplift_at(score, treated, bought, share: float) -> float:
    """Buying rate of the treated less that of the held out among the top ``share``."""
    t, b = _ordered(score, treated, bought)
    k = max(1, int(round(share * len(t))))
    t, b = t[:k], b[:k]
    if not t.any() or t.all():
        return float("nan")
    return float(b[t].mean() - b[~t].mean())


def evaluate_ranking(
    score, treated, bought, shares=(0.1, 0.2, 0.3), n_boot: int = 200, seed: int = 0
) -> dict[str, float]:
    """The Qini coefficient and the uplift at each top share, each with a 95% bootstrap
    interval (customers resampled ``n_boot`` times): ``qini, qini_lo, qini_hi, uplift_10,
    uplift_10_lo, ...``."""
    s = np.asarray(score, dtype=float)
    t = np.asarray(treated, dtype=bool)
    b = np.asarray(bought, dtype=bool)

    def figures(i: np.ndarray) -> dict[str, float]:
        out = {"qini": qini_coefficient(s[i], t[i], b[i])}
        for k in shares:
            out[f"uplift_{round(k * 100)}"] = uplift_at(s[i], t[i], b[i], k)
        return out

    point = figures(np.arange(len(s)))
    rng = np.random.default_rng(seed)
    boots = pd.DataFrame([figures(rng.integers(0, len(s), len(s))) for _ in range(n_boot)])
    result = {}
    for name, value in point.items():
        result[name] = value
        result[f"{name}_lo"] = float(np.nanpercentile(boots[name], 2.5))
        result[f"{name}_hi"] = float(np.nanpercentile(boots[name], 97.5))
    return result


def _ordered(score, treated, bought) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
    return np.asarray(treated, dtype=bool)[order], np.asarray(bought, dtype=bool)[order]
