"""Metrics, baselines on the same population, and plots.

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

__all__ = [
    "PROBABILITY_SCORES",
    "RfmLogit",
    "rfm_score",
    "baseline_scores",
    "fast_auc",
    "lift_at",
    "bootstrap_aucs",
    "score_metrics",
    "plot_gains",
    "plot_calibration",
    "plot_importance",
    "plot_profit_curve",
]

#: Scores that are probabilities (so Brier and calibration error apply).
PROBABILITY_SCORES = ("model", "bgnbd", "logreg")
_RFM_COLUMNS = ["recency_days", "n_orders", "monetary_total"]


def _quintile(s: pd.Series) -> np.ndarray:
    return np.clip(np.ceil(s.rank(pct=True, method="average").to_numpy() * 5), 1, 5)


def rfm_score(snap: pd.DataFrame) -> np.ndarray:
    """Minus the RFM 5x5x5 sum (R: 5 = most recent; F: order count; M: total spend), so that
    higher means more likely to churn. Quintiles are taken within ``snap``."""
    r = _quintile(-snap["recency_days"])
    f = _quintile(snap["n_orders"])
    m = _quintile(snap["monetary_total"])
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


#: Points drawn per line of the gains and profit curve plots.
CURVE_PLOT_POINTS = 2_000


def _new_ax(size: tuple[float, float]):
    """An axes on a fresh figure, without pyplot's global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained").subplots()


#: Line styles of the baselines in a plot: the model (drawn last, on top) is the thick solid one.
_BASELINE_STYLES = [(0, (5, 2)), (0, (1, 1.5)), (0, (4, 1.5, 1, 1.5)), (0, (8, 3))]


def _styled(scores: dict) -> list[tuple[str, dict]]:
    """Plot styles of each named score: the first (the model) thick, solid and on top; the
    others thinner and dashed, each its own way, so no line hides another."""
    out = []
    for i, name in enumerate(scores):
        if i == 0:
            out.append((name, {"lw": 2.6, "zorder": 4, "color": "#c2410c"}))
        else:
            dash = _BASELINE_STYLES[(i - 1) % len(_BASELINE_STYLES)]
            out.append((name, {"lw": 1.4, "zorder": 3, "ls": dash}))
    return out


def plot_gains(y, scores: dict[str, np.ndarray], ax=None):
    """Cumulative gains: share of churners captured against share of customers contacted. The
    first score (the model) is drawn on top; the legend gives each one's capture at 10%."""
    ax = ax or _new_ax((6, 4.5))
    y = np.asarray(y, dtype=int)
    x = np.arange(1, y.size + 1) / y.size
    # a line through ~CURVE_PLOT_POINTS of its points: a curve of many customers looks the same
    at = np.unique(np.r_[0 : y.size : max(1, y.size // CURVE_PLOT_POINTS), y.size - 1])
    for name, style in _styled(scores):
        order = np.argsort(-np.asarray(scores[name], dtype=float), kind="stable")
        gained = np.cumsum(y[order]) / max(y.sum(), 1)
        at_10 = gained[max(int(np.ceil(0.1 * y.size)) - 1, 0)] if y.size else 0.0
        label = f"{name} (top 10%: {at_10:.0%})"
        ax.plot(np.r_[0.0, x[at]], np.r_[0.0, gained[at]], label=label, **style)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random")
    ax.set(
        xlabel="share of customers, highest risk first",
        ylabel="share of churners captured",
        title="Gains",
    )
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_calibration(y, scores: dict[str, np.ndarray], bins: int = 10, ax=None):
    """Observed churn rate against predicted probability, in equal-count bins whose size the
    legend gives; the first score's points carry their bin's count."""
    ax = ax or _new_ax((5, 5))
    y = np.asarray(y, dtype=int)
    for k, (name, style) in enumerate(_styled(scores)):
        p = np.asarray(scores[name], dtype=float)
        order = np.argsort(p, kind="stable")
        parts = [i for i in np.array_split(order, bins) if i.size]
        px, py = [p[i].mean() for i in parts], [y[i].mean() for i in parts]
        sizes = sorted({i.size for i in parts})
        n = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,}-{sizes[-1]:,}"
        ax.plot(px, py, marker="o", ms=4, label=f"{name} ({len(parts)} bins of {n})", **style)
        if k == 0:
            for xi, yi, i in zip(px, py, parts, strict=True):
                ax.annotate(f"n={i.size:,}", (xi, yi), textcoords="offset points",
                            xytext=(4, -10), fontsize=6.5, color="#52606d")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        title="Calibration",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_importance(importance: pd.Series, top: int = 20, ax=None):
    """Horizontal bars of the largest feature importances, on a log scale (a few features
    take most of the gain; on a linear scale the rest would be invisible), one readable row
    per feature. Features with no gain are left out."""
    imp = importance[importance > 0].head(top)[::-1]
    ax = ax or _new_ax((7, 0.34 * len(imp) + 1.4))
    ax.barh(np.arange(len(imp)), imp.to_numpy(), color="#3e7cb1")
    ax.set_yticks(np.arange(len(imp)), imp.index, fontsize=8)
    ax.set_ylim(-0.6, len(imp) - 0.4)
    if len(imp):
        ax.set_xscale("log")
        ax.set_xlim(imp.min() / 2, imp.max() * 1.5)
    ax.set(xlabel="total gain (log scale)", title="Feature importance")
    return ax


def plot_profit_curve(curve: pd.DataFrame, ax=None):
    """Cumulative expected profit against customers contacted, one line per list, with the
    profit-maximising list size marked."""
    ax = ax or _new_ax((6, 4.5))
    for name, part in curve.groupby("list", sort=True, observed=True):
        x, y = part["n_contacted"].to_numpy(), part["cumulative_gain"].to_numpy(dtype=float)
        best = int(np.argmax(y))
        # a line of millions of customers drawn through ~2,000 of its points (and its peak)
        at = np.unique(np.r_[0 : len(y) : max(1, len(y) // CURVE_PLOT_POINTS), len(y) - 1, best])
        ax.plot(x[at], y[at], label=name, lw=1.5)
        ax.scatter([x[best]], [y[best]], zorder=3)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set(
        xlabel="customers contacted, highest expected gain first",
        ylabel="cumulative expected profit",
        title="Expected profit by list size",
    )
    if len(curve):
        ax.legend(loc="lower left")
    return ax
