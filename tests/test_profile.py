"""Profile, horizon suggestion, and the sufficiency gate."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.conftest import frame, orders_of
from winback.config import SufficiencyConfig
from winback.errors import InsufficientDataError
from winback.profile import build_profile, check_sufficiency


@pytest.fixture(scope="module")
def tiny():
    # x buys on 3 days (gaps 10 and 30 days), y once, z on 2 days (gap 100) and returns once.
    return orders_of(
        frame(
            [
                ("x", "2024-01-01", 10.0),
                ("x", "2024-01-11", 10.0),
                ("x", "2024-02-10", 10.0),
                ("y", "2024-01-05", 20.0),
                ("z", "2024-01-02", 5.0),
                ("z", "2024-04-11", 5.0),
                ("z", "2024-04-20", -5.0),
            ]
        )
    )


def test_profile_counts_and_gaps(tiny):
    prof = build_profile(tiny, lookback_days=365, candidates=(30,))
    assert (prof.n_customers, prof.n_orders, prof.n_purchases, prof.n_returns) == (3, 7, 6, 1)
    assert prof.repeat_share == pytest.approx(2 / 3)
    assert prof.return_share == pytest.approx(1 / 7)
    assert prof.orders_per_customer["mean"] == pytest.approx(2.0)
    assert prof.gap_days["median"] == pytest.approx(30.0)  # gaps 10, 30, 100
    assert prof.gap_days["max"] == pytest.approx(100.0)


def test_horizon_options_measure_churn_and_comebacks(tiny):
    # last order 2024-04-20; H = 30 -> T = 2024-02-20: active x, y, z; no purchase in
    # (T, T+30] for anyone -> churn 100%; z buys on 2024-04-11, inside (T+30, T+60] -> 1/3 back.
    prof = build_profile(tiny, lookback_days=365, candidates=(30, 365))
    h30 = prof.horizons[0]
    assert h30.cutoff == datetime(2024, 2, 20)
    assert h30.n_customers == 3
    assert h30.churn_rate == pytest.approx(1.0)
    assert h30.comeback_share == pytest.approx(1 / 3)
    assert not prof.horizons[1].fits  # 2 x 365 days do not fit in 110 days
    assert prof.suggested_horizon_days == 30  # the only candidate that fits
    assert "not enough history" in "\n".join(prof.summary_lines())


def test_gate_lists_every_shortfall(tiny):
    with pytest.raises(InsufficientDataError) as err:
        check_sufficiency(tiny, datetime(2024, 4, 20), horizon_days=30, lookback_days=365)
    assert "fewer than the 210 needed (horizon 30 + 180 days of features)" in str(err.value)
    with pytest.raises(InsufficientDataError) as err:
        check_sufficiency(
            tiny,
            datetime(2024, 4, 20),
            horizon_days=30,
            lookback_days=60,
            cfg=SufficiencyConfig(min_customers=5, min_repeat_buyers=2, min_per_class=1),
        )
    msg = str(err.value)
    # at 2024-03-21 the 60-day population is x only (z's and y's purchases are older)
    assert "1 active customers at the last training cutoff 2024-03-21" in msg
    assert "1 repeat buyers" in msg
    assert "0 retained customers" in msg and "use a shorter horizon" in msg


def test_gate_passes_on_cdnow(cdnow_dir):
    from tests.conftest import ROOT
    from winback.config import load_config
    from winback.orders import load_orders

    cfg = load_config(ROOT / "configs" / "cdnow.yaml")
    o = load_orders(cdnow_dir / "CDNOW_master.txt", cfg.orders)
    check_sufficiency(o, datetime(1998, 3, 31), 91, 365, cfg.sufficiency)
    with pytest.raises(InsufficientDataError, match="fewer than the 545 needed"):
        check_sufficiency(o, datetime(1998, 3, 31), 365, 365, cfg.sufficiency)
