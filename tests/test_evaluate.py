"""Metrics and baselines, checked by hand and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from winback.evaluate import _ece, _top, fast_auc, rfm_score, score_metrics


def test_fast_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    s = np.round(rng.random(2000) + 0.3 * y, 1)  # many ties
    assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_lift_and_capture_by_hand():
    # 10 customers, 4 churners; the top 20% (2 customers) by score are one churner, one not
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    s = np.array([9, 8, 1, 2, 3, 4, 5, 6, 7, 0], dtype=float)
    lift, capture = _top(y, s, 0.2)
    assert lift == pytest.approx(0.5 / 0.4)
    assert capture == pytest.approx(1 / 4)


def test_lift_counts_ties_at_the_edge_by_their_share_whatever_the_row_order():
    # top 50% = 2 of 4: one customer above the edge (a churner) and 2 tied at 0.5 for the one
    # place left, one of them a churner: 1 + 1 x 1/2 = 1.5 churners among 2 (rate 0.75, base
    # 0.5, lift 1.5), 1.5 of the 2 churners captured (0.75), in either row order of the ties
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.1])
    for order in ([0, 1, 2, 3], [0, 2, 1, 3]):
        lift, capture = _top(y[order], s[order], 0.5)
        assert lift == pytest.approx(1.5)
        assert capture == pytest.approx(0.75)


def test_lift_ranks_missing_scores_last():
    # top 50% = 2 of 4: the scores 0.9 (not a churner) and 0.5 (a churner), never the missing
    # one: 1 churner among 2 (rate 0.5 = base, lift 1), 1 of the 2 churners captured
    y = np.array([1, 0, 0, 1])
    s = np.array([np.nan, 0.9, 0.1, 0.5])
    lift, capture = _top(y, s, 0.5)
    assert lift == pytest.approx(1.0)
    assert capture == pytest.approx(0.5)


def test_calibration_error_by_hand():
    # two bins of 2: predictions 0.1, 0.1 (observed 0, 1 -> 0.5) and 0.8, 0.8 (observed 1, 1)
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.8, 0.8])
    assert _ece(y, p, bins=2) == pytest.approx((2 * 0.4 + 2 * 0.2) / 4)


def test_rfm_score_orders_customers():
    snap = pd.DataFrame(
        {
            "recency_days": [1.0, 400.0, 50.0, 200.0, 10.0],
            "n_orders": [10, 1, 4, 2, 7],
            "monetary_total": [500.0, 10.0, 120.0, 30.0, 300.0],
        }
    )
    s = rfm_score(snap)
    # quintiles of 5 customers are ranks: R, F, M all agree -> scores -15, -3, -9, -6, -12
    assert s.tolist() == [-15.0, -3.0, -9.0, -6.0, -12.0]


def test_score_metrics_table_and_paired_difference():
    rng = np.random.default_rng(1)
    y = rng.random(3000) < 0.4
    good = y + rng.normal(0, 0.8, 3000)
    noise = rng.normal(0, 1, 3000)
    p = 1 / (1 + np.exp(-(good - 0.5)))
    t = score_metrics(y, {"model": p, "bgnbd": noise}, n_boot=200, seed=0)
    assert t.loc["model", "auc"] > 0.75 > 0.55 > t.loc["bgnbd", "auc"]
    assert t.loc["model", "auc_lo"] < t.loc["model", "auc"] < t.loc["model", "auc_hi"]
    assert t.loc["model", "auc_minus_bgnbd_lo"] > 0
    assert t.loc["bgnbd", "auc_minus_bgnbd"] == 0
    assert 0 < t.loc["model", "brier"] < 0.25


def test_profit_curve_plot_draws_a_long_curve_through_its_peak():
    from winback.plots import CURVE_PLOT_POINTS, plot_profit_curve

    n = 100_003
    gain = np.where(np.arange(n) < 77_777, 1.0, -1.0)  # peak at the 77,777th customer
    curve = pd.DataFrame(
        {"list": "at_risk", "n_contacted": np.arange(1, n + 1), "cumulative_gain": gain.cumsum()}
    )
    ax = plot_profit_curve(curve)
    x, y = ax.lines[0].get_data()
    assert len(x) <= CURVE_PLOT_POINTS + 3
    assert x[0] == 1 and x[-1] == n and 77_777 in x and y.max() == 77_777.0
    assert ax.collections[0].get_offsets().tolist() == [[77_777.0, 77_777.0]]


def test_plots_show_what_a_reader_needs():
    from winback.plots import plot_calibration, plot_gains, plot_importance
    from winback.report import plot_list_sizes

    # importance: one tick per feature with room for its label, on a log scale where a feature
    # with 1/1000 of the top gain is still a bar
    imp = pd.Series(
        [5000.0, 800.0, 40.0, 5.0, 0.0], index=["recency_days", "n_orders", "a", "b", "zero"]
    )
    ax = plot_importance(imp)
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 5.0
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["b", "a", "n_orders", "recency_days"]  # no gain, no bar
    inches_per_row = ax.figure.get_figheight() / len(labels)
    assert inches_per_row >= 8 / 72 * 2  # two 8-point lines of room per label
    # gains: the model is drawn over the baselines, thicker, and the legend reads its capture
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    s = y + rng.normal(0, 1, 1000)
    ax = plot_gains(y, {"model": s, "bgnbd": s})  # identical curves: the model must show
    model, bgnbd = ax.get_lines()[:2]
    assert model.get_zorder() > bgnbd.get_zorder() and model.get_linewidth() > bgnbd.get_linewidth()
    assert bgnbd.get_linestyle() != "-"
    top10 = np.cumsum(y[np.argsort(-s, kind="stable")])[99] / y.sum()
    assert model.get_label() == f"model (top 10%: {top10:.0%})"
    # calibration: bins carry their counts
    ax = plot_calibration(y, {"model": 1 / (1 + np.exp(-s)), "bgnbd": np.full(1000, y.mean())})
    assert ax.get_lines()[0].get_label() == "model (10 bins of 100)"
    assert [t.get_text() for t in ax.texts] == ["n=100"] * 10
    # list sizes: the count axis starts at zero
    history = pd.DataFrame(
        {"as_of": ["2024-01-01", "2024-02-01"], "listed_at_risk": [900, 950], "scored": [5, 5]}
    )
    ax = plot_list_sizes(history)
    assert ax.get_ylim()[0] == 0 and [ln.get_label() for ln in ax.get_lines()] == [
        "at_risk: listed"
    ]
