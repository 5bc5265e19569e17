"""The plots of a backtest and of the nightly export: gains, calibration, feature importance and
the expected profit curve, each on its own figure (no pyplot global state), and the axes every
plot of winback starts from."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CURVE_PLOT_POINTS",
    "new_ax",
    "plot_gains",
    "plot_calibration",
    "plot_importance",
    "plot_profit_curve",
]


#: Points drawn per line of the gains and profit curve plots.
CURVE_PLOT_POINTS = 2_000


def new_ax(size: tuple[float, float]):
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
    ax = ax or new_ax((6, 4.5))
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
    ax = ax or new_ax((5, 5))
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
    ax = ax or new_ax((7, 0.34 * len(imp) + 1.4))
    ax.barh(np.arange(len(imp)), imp.to_numpy(), color="#3e7cb1")
    ax.set_yticks(np.arange(len(imp)), imp.index, fontsize=8)
    ax.set_ylim(-0.6, len(imp) - 0.4)
    if len(imp):
        ax.set_xscale("log")
        ax.set_xlim(imp.min() / 2, imp.max() * 1.5)
    ax.set(xlabel="total gain (log scale)", title="Feature importance")
    return ax


def plot_profit_curve(curve, ax=None):
    """Cumulative expected profit against customers contacted, one line per list, with the
    profit-maximising list size marked. ``curve``: a frame of ``list``, ``n_contacted`` and
    ``cumulative_gain``, or a :class:`winback.scoring.ProfitCurve` (its ``lines()``)."""
    ax = ax or new_ax((6, 4.5))
    if isinstance(curve, pd.DataFrame):
        lines = (
            (name, part["n_contacted"].to_numpy(), part["cumulative_gain"].to_numpy(dtype=float))
            for name, part in curve.groupby("list", sort=True, observed=True)
        )
    else:
        lines = curve.lines()
    for name, x, y in lines:
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
