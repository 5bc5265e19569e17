"""When the next order is due: BG/NBD's curve moved to agree with p_churn at the horizon
(worked out by hand below), monotone in the horizon, and checked against what happened."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from winback.timing import days_to_order, p_no_order, reliability, timing_columns

# one customer: alive with chance A = 0.8, purchase rate ~ Gamma(r' = 2, alpha' = 100 days)
A, R, ALPHA, H = 0.8, 2.0, 100.0, 30


def test_the_curve_through_p_churn_by_hand():
    # BG/NBD: S_bg(t) = 0.2 + 0.8 (100 / (100 + t))^2
    #   S_bg(30) = 0.2 + 0.8 x 0.5917160 = 0.6733728; S_bg(60) = 0.2 + 0.8 x 0.390625 = 0.5125
    # moved by d = logit(0.7) - logit(0.6733728) = 0.8472979 - 0.7234796 = 0.1238183
    # S(60) = sigmoid(logit(0.5125) + d) = sigmoid(0.0500104 + 0.1238183) = 0.5433481
    assert p_no_order(30, 0.7, A, R, ALPHA, H) == pytest.approx(0.7)  # p_churn at H
    assert p_no_order(60, 0.7, A, R, ALPHA, H) == pytest.approx(0.5433481, abs=1e-7)
    assert p_no_order(0, 0.7, A, R, ALPHA, H) == pytest.approx(1.0)
    # the median: S_bg(t) = u = sigmoid(-d) = 0.4690849, so (100 / (100 + t))^2 = (u - 0.2) /
    # 0.8 = 0.3363561 and t = 100 (0.3363561^-1/2 - 1) = 72.425 days
    t = days_to_order(0.5, 0.7, A, R, ALPHA, H)
    assert t == pytest.approx(72.425, abs=1e-3)
    assert p_no_order(float(t), 0.7, A, R, ALPHA, H) == pytest.approx(0.5)
    # A = 0.3: gone for good with 0.7 at least (d > 0 here), so no date has half a chance
    assert math.isnan(days_to_order(0.5, 0.8, 0.3, R, ALPHA, H))
    assert days_to_order(0.9, 0.8, 0.3, R, ALPHA, H) > 0  # but a tenth's chance comes


def test_every_customer_s_chances_fall_with_the_horizon_and_meet_p_churn_at_h():
    rng = np.random.default_rng(1)
    n = 10_000
    p_churn, a = rng.uniform(0.01, 0.99, n), rng.uniform(0.01, 1.0, n)
    r, alpha = rng.gamma(2.0, 2.0, n) + 0.05, rng.uniform(5, 2000, n)
    h = 60
    curve = np.array([p_no_order(t, p_churn, a, r, alpha, h) for t in (0, 1, 30, 60, 90, 365)])
    assert (np.diff(curve, axis=0) <= 1e-12).all()  # never rises with the horizon
    assert np.allclose(curve[3], p_churn)
    # the dates keep their order: a tenth's chance first, then half, then nine tenths
    early, mid, late = (days_to_order(q, p_churn, a, r, alpha, h) for q in (0.9, 0.5, 0.1))
    both = ~np.isnan(mid) & ~np.isnan(late)
    assert (early[~np.isnan(mid)] <= mid[~np.isnan(mid)]).all() and (mid[both] <= late[both]).all()
    assert np.allclose(p_no_order(mid[both][:50], p_churn[both][:50], a[both][:50],
                                  r[both][:50], alpha[both][:50], h), 0.5)  # fmt: skip


def test_dates_and_their_blanks():
    cols = timing_columns(
        np.array([0.7, 0.8]), np.array([A, 0.3]), np.array([R, R]), np.array([ALPHA, ALPHA]),
        H, pd.Timestamp("2024-01-01"),
    )  # fmt: skip
    # the median of the first is 72.4 days ahead: reached on day 73
    assert cols["next_order_date"].tolist() == [date(2024, 3, 14), pd.NA]
    assert cols["p_no_order_30d"] == pytest.approx([0.7, 0.8])
    # nine tenths of a chance: never, for both: gone for good with sigmoid(logit(0.2) + d) =
    # 0.22 and 0.57 at least; a tenth's chance comes for both
    assert pd.isna(cols["next_order_until"]).all()
    assert pd.notna(cols["next_order_from"]).all()


def test_reliability_table_by_hand():
    table = reliability([0.1, 0.9, 0.2, 0.8], [False, True, True, True], bins=2)
    # bin 1: 0.1 and 0.2 -> predicted 0.15, observed 0.5; bin 2: 0.8 and 0.9 -> 0.85, 1.0
    assert table["customers"].tolist() == [2, 2]
    assert table["predicted"].tolist() == pytest.approx([0.15, 0.85])
    assert table["observed"].tolist() == pytest.approx([0.5, 1.0])
    assert table["gap"].tolist() == pytest.approx([0.35, 0.15])
