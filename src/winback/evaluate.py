"""Metrics and baselines on the same population (the plots are in :mod:`winback.plots`).

Every score is "higher = more likely to churn". Baselines:

- ``recency``: days since the last purchase.
- ``rfm``: the RFM 5x5x5 score: quintiles of recency (5 = most recent), order count and total
  spend, summed; the churn score is minus that sum.
- ``bgnbd``: BG/NBD's P(no purchase in the next H days), fitted at the cutoff.
- ``logreg``: logistic regression on log recency, log order count and log total spend, trained
  on the same stacked training snapshots as the model.

Confidence intervals are percentile bootstraps over customers; differences to BG/NBD are paired
(the same resample for both scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from winback.segments import quintiles

__all__ = [
    "PROBABILITY_SCORES",
    "RfmLogit",
    "rfm_score",
    "baseline_scores",
    "fast_auc",
    "lift_at",
    "bootstrap_aucs",
    "score_metrics",
]

#: Scores that are probabilities (so Brier and calibration error apply).
PROBABILITY_SCORES = ("model", "bgnbd", "logreg")
_RFM_COLUMNS = ["recency_days", "n_orders", "monetary_total"]


def rfm_score(snap: pd.DataFrame) -> np.ndarray:
    """Minus the RFM 5x5x5 sum (R: 5 = most recent; F: order count; M: total spend), so that
    higher means more likely to churn. Quintiles are taken within ``snap``."""
    r = quintiles(-snap["recency_days"])
    f = quintiles(snap["n_orders"])
    m = quintiles(snap["monetary_total"])
    return -(r + f + m)


@dataclass
class RfmLogit:
    """Logistic regression on log recency, log frequency and log spend."""

    random_state: int = 42

    def _x(self, snap: pd.DataFrame) -> np.ndarray:
        return np.log1p(snap[_RFM_COLUMNS].clip(lower=0).to_numpy(dtype=float))

    def fit(self, snap: pd.DataFrame, y) -> RfmLogit:
        self.pipe_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self.pipe_.fit(self._x(snap), np.asarray(y, dtype=int))
        return self

    def predict_proba(self, snap: pd.DataFrame) -> np.ndarray:
        return self.pipe_.predict_proba(self._x(snap))


def baseline_scores(snap: pd.DataFrame, logit: RfmLogit | None = None) -> dict[str, np.ndarray]:
    """Every baseline's churn score for the rows of ``snap`` (one cutoff)."""
    out = {
        "recency": snap["recency_days"].to_numpy(dtype=float),
        "rfm": rfm_score(snap),
        "bgnbd": snap["bgnbd_p_no_purchase"].to_numpy(dtype=float),
    }
    if logit is not None:
        out["logreg"] = logit.predict_proba(snap)[:, 1]
    return out


def fast_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC from average ranks (ties count half), as scikit-learn computes it."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Bootstrap resamples whose counts are held at once (a resample costs 8 bytes a customer).
_BOOT_CHUNK = 32


def bootstrap_aucs(
    y, scores: dict[str, np.ndarray], n_boot: int = 500, seed: int = 0
) -> dict[str, np.ndarray]:
    """ROC-AUC of each score on ``n_boot`` resamples of the customers (with replacement), the
    same resamples for every score so that differences are paired.

    A resample is a count per customer. Each score is sorted once; on a resample, the AUC is
    the Mann-Whitney statistic with those counts as weights (ties count half), in array sums
    over a chunk of resamples at a time instead of a rank per resample. Resample ``i`` draws
    the same indices as ``rng.integers(0, n, n)`` would, in order.
    """
    y = np.asarray(y, dtype=bool)
    n = y.size
    rng = np.random.default_rng(seed)
    prepared = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=float)
        order = np.argsort(s, kind="stable")
        sorted_s = s[order]
        new_group = np.r_[True, sorted_s[1:] != sorted_s[:-1]] if n else np.ones(0, bool)
        starts = np.flatnonzero(new_group)
        ties = None
        if starts.size < n:  # tied scores: each row's group, where it starts and ends
            group = np.cumsum(new_group) - 1
            ties = (group, starts, np.r_[starts[1:], n] - 1)
        prepared[name] = (order, y[order], ties)
    out = {name: np.empty(n_boot) for name in scores}
    for lo in range(0, n_boot, _BOOT_CHUNK):
        k = min(_BOOT_CHUNK, n_boot - lo)
        counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)])
        # whole numbers held as floats, which numpy adds up several times faster than integers:
        # float32 while every product below stays exact (under 2**24), else float64
        exact32 = 2.0 * n * float(counts.max()) < 2**24
        counts = counts.astype(np.float32 if exact32 else np.float64)
        n_pos = counts[:, y].sum(axis=1, dtype=np.float64)
        n_neg = counts.sum(axis=1, dtype=np.float64) - n_pos
        for name, (order, pos, ties) in prepared.items():
            c = np.take(counts, order, axis=1)
            q = c * ~pos  # negatives' counts, in score order
            seen = np.cumsum(q, axis=1)  # negatives at or below each row
            if ties is None:  # twice the negatives below each positive (no ties to halve)
                twice = 2 * seen
            else:
                group, starts, ends = ties
                below = seen[:, starts] - q[:, starts]  # negatives below each tie group
                tied = seen[:, ends] - below  # negatives within it, counted half
                twice = np.take(2 * below + tied, group, axis=1)
            c *= pos  # positives' counts
            num = (twice * c).sum(axis=1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name][lo : lo + k] = num / (2.0 * n_pos * n_neg)  # NaN: one class only
    return out


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count bins of the predicted probability."""
    order = np.argsort(p, kind="stable")
    err = 0.0
    for idx in np.array_split(order, bins):
        if idx.size:
            err += idx.size * abs(p[idx].mean() - y[idx].mean())
    return float(err / y.size)


def _top(y: np.ndarray, s: np.ndarray, share: float) -> tuple[float, float]:
    """(lift, capture) among the ``share`` of customers with the highest score.

    Customers tied on the score at the edge of the top share count by the share of them that
    fits (their churn rate times the places left), the expectation over every order of the
    ties, as ROC-AUC counts a tie half. Otherwise the row order would decide: a recency or RFM
    score ties many customers. Missing scores rank last.
    """
    y = np.asarray(y, dtype=float)
    s = np.asarray(s, dtype=float)
    s = np.where(np.isnan(s), -np.inf, s)  # np.partition would put NaN highest
    k = max(1, int(round(share * y.size)))
    edge = np.partition(s, y.size - k)[y.size - k]  # the k-th highest score
    above, tied = s > edge, s == edge
    churners = y[above].sum() + (k - above.sum()) * y[tied].mean()
    base = y.mean()
    return float(churners / k / base) if base else float("nan"), float(churners / max(y.sum(), 1))


def lift_at(y, s, share: float) -> float:
    """Lift among the ``share`` of customers with the highest score (ties counted as in
    :func:`_top`)."""
    return _top(y, s, share)[0]


def score_metrics(
    y, scores: dict[str, np.ndarray], n_boot: int = 500, seed: int = 0, reference: str = "bgnbd"
) -> pd.DataFrame:
    """Metrics of each score on the same customers.

    Returns
    -------
    DataFrame
        One row per score: ``auc, auc_lo, auc_hi, pr_auc, brier, ece, lift_10, capture_10,
        lift_20, capture_20, auc_minus_<reference>, ..._lo, ..._hi`` (95% percentile bootstrap).
    """
    y = np.asarray(y, dtype=int)
    boot = bootstrap_aucs(y, scores, n_boot, seed)
    rows = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=float)
        row = {"score": name, "auc": fast_auc(y, s)}
        row["auc_lo"], row["auc_hi"] = np.nanpercentile(boot[name], [2.5, 97.5])
        row["pr_auc"] = float(average_precision_score(y, s))
        if name in PROBABILITY_SCORES:
            row["brier"] = float(np.mean((s - y) ** 2))
            row["ece"] = _ece(y, s)
        else:
            row["brier"] = row["ece"] = float("nan")
        row["lift_10"], row["capture_10"] = _top(y, s, 0.10)
        row["lift_20"], row["capture_20"] = _top(y, s, 0.20)
        if reference in scores:
            diff = boot[name] - boot[reference]
            row[f"auc_minus_{reference}"] = row["auc"] - fast_auc(y, scores[reference])
            lo, hi = np.nanpercentile(diff, [2.5, 97.5])
            row[f"auc_minus_{reference}_lo"], row[f"auc_minus_{reference}_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows).set_index("score")
