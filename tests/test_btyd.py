"""BG/NBD: the published CDNOW fit, numerical safety, and predictions checked by simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.btyd import BGNBD, bgnbd_log_likelihood, summarize
from winback.errors import DataError


@pytest.fixture(scope="module")
def cdnow_sample(cdnow_dir):
    df = pd.read_csv(
        cdnow_dir / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "amount"],
        dtype={"date": str},
    )
    df["order_ts"] = pd.to_datetime(df["date"], format="%Y%m%d")
    return df


def test_fit_reproduces_the_published_cdnow_parameters(cdnow_sample):
    # Fader, Hardie & Lee (2005): weeks, calibration period to 1997-09-30
    s = summarize(cdnow_sample, pd.Timestamp("1997-09-30"), unit_days=7)
    assert len(s) == 2357
    m = BGNBD().fit(s["frequency"], s["recency"], s["T"])
    got = {k: round(v, 3) for k, v in m.params_.items()}
    assert got == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert m.log_likelihood_ == pytest.approx(-9582.4, abs=0.1)  # as reported in the paper


def test_summary_by_hand():
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c"],
            "order_ts": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-01-08", "2024-02-01", "2024-01-15", "2024-03-01"]
            ),
            "is_return": [False, False, False, True, False, False],
        }
    )
    s = summarize(orders, pd.Timestamp("2024-01-29"))
    # a: purchase days Jan 1 and Jan 8 (the Feb 1 row is a return and after the cutoff)
    assert s.loc["a"].tolist() == [1.0, 7.0, 28.0]
    assert s.loc["b"].tolist() == [0.0, 0.0, 14.0]
    assert "c" not in s.index  # first purchase after the cutoff


def test_log_likelihood_does_not_overflow_on_extreme_customers():
    x = np.array([0.0, 1.0, 500.0, 5000.0])
    t_x = np.array([0.0, 1e-6, 1e4, 1e5])
    T = np.array([1e6, 1e6, 1e6, 1e5])
    ll = bgnbd_log_likelihood(np.array([0.24, 4.4, 0.79, 2.4]), x, t_x, T)
    assert np.isfinite(ll).all()


def test_a_customer_without_repeat_purchases_is_alive():
    m = BGNBD()
    m.r_, m.alpha_, m.a_, m.b_ = 0.5, 10.0, 0.8, 2.5
    assert m.p_alive(0, 0, 30)[()] == 1.0
    # alive for sure: P(no purchase in t) is the gamma-Poisson zero term ((a+T)/(a+T+t))^r
    assert m.p_no_purchase(20, 0, 0, 30)[()] == pytest.approx((40 / 60) ** 0.5)
    # the longer since the last purchase, the less likely alive
    assert m.p_alive(3, 5, 100) < m.p_alive(3, 90, 100)


def _simulate(n: int, params: tuple[float, float, float, float], T: float, t: float, seed: int):
    """Customers who made their first purchase at time 0, simulated from BG/NBD up to T + t."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    horizon = T + t
    freq = np.zeros(n)
    last = np.zeros(n)
    future = np.zeros(n, dtype=bool)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        now[idx] += rng.exponential(1.0, idx.size) / lam[idx]
        inside = now[idx] <= horizon
        alive[idx[~inside]] = False
        idx = idx[inside]
        before = now[idx] <= T
        freq[idx[before]] += 1
        last[idx[before]] = now[idx[before]]
        future[idx[~before]] = True
        dies = rng.random(idx.size) < p[idx]
        alive[idx[dies]] = False
        alive[idx[~before]] = False  # what happens after the first future purchase is moot
    return freq, last, np.full(n, T), future


def test_predictions_are_calibrated_on_simulated_customers():
    truth = (0.6, 8.0, 0.9, 3.0)
    x, t_x, T, bought_later = _simulate(40_000, truth, T=52.0, t=26.0, seed=3)
    m = BGNBD().fit(x, t_x, T)
    for got, want in zip(m.params_.values(), truth, strict=True):
        assert got == pytest.approx(want, rel=0.15)
    p0 = m.p_no_purchase(26.0, x, t_x, T)
    assert p0.mean() == pytest.approx(1 - bought_later.mean(), abs=0.01)
    # calibrated by decile of predicted risk, not only on average
    deciles = pd.qcut(p0, 10, labels=False, duplicates="drop")
    observed = pd.Series(~bought_later).groupby(deciles).mean()
    predicted = pd.Series(p0).groupby(deciles).mean()
    assert (observed - predicted).abs().max() < 0.03
    # more purchases expected over a longer window, none when surely dead
    e13, e26 = m.expected_purchases(13.0, x, t_x, T), m.expected_purchases(26.0, x, t_x, T)
    assert (e26 >= e13).all() and (e13 >= 0).all()


def test_bad_summaries_are_refused():
    with pytest.raises(DataError, match="0 <= recency <= T"):
        BGNBD().fit([1, 2], [5, 10], [4, 20])
    with pytest.raises(DataError, match="at least one repeat purchase"):
        BGNBD().fit([0, 0], [0, 0], [3, 4])
