"""Drift: how far tonight's customers have moved from the ones the model was trained on, as the
population stability index (PSI) of a few key features and of the predicted probability."""

from __future__ import annotations

import numpy as np

__all__ = [
    "DRIFT_FEATURES",
    "reference_bins",
    "population_stability",
    "bin_counts",
    "stability",
]

#: Features whose distribution the drift guard compares with training (plus p_churn): how
#: recently, how often of late and how much customers buy. Features that change with time by
#: construction (tenure, order and spend totals, rates per year of tenure, days of history,
#: BG/NBD's probabilities, which age with the customer) are left out: a shop whose customers
#: are simply older is not drifting.
DRIFT_FEATURES = ("recency_days", "orders_90d", "monetary_mean")


def reference_bins(values: np.ndarray, n: int = 10) -> dict[str, list[float]]:
    """Decile edges of ``values`` and the share of values in each bin."""
    v = values[np.isfinite(values)]
    edges = np.unique(np.quantile(v, np.linspace(0, 1, n + 1)[1:-1])) if v.size else np.array([])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
    return {"edges": edges.tolist(), "shares": (counts / max(v.size, 1)).tolist()}


def population_stability(reference: dict[str, list[float]], values: np.ndarray) -> float:
    """PSI = sum((actual - expected) x ln(actual / expected)) over the reference bins."""
    return stability(reference, bin_counts(reference, values))


def bin_counts(reference: dict[str, list[float]], values: np.ndarray) -> np.ndarray:
    """How many of the finite ``values`` fall in each of the reference bins: counts of parts
    of a population add up to the whole's."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    edges = np.asarray(reference["edges"])
    return np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)


def stability(reference: dict[str, list[float]], counts: np.ndarray) -> float:
    """The population stability index of a population's :func:`bin_counts`."""
    expected = np.clip(np.asarray(reference["shares"]), 1e-4, None)
    actual = np.clip(counts / max(int(np.sum(counts)), 1), 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
