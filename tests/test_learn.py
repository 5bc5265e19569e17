"""Learned save rates: pooled over campaigns, with the delta-method interval, shrunk towards
the config's prior (worked out by hand below)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from winback.errors import DataError
from winback.learn import SAVE_RATE_COLUMNS, save_rates


def _outcomes(campaign: str, export: str, group: str, n: int, bought: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "campaign": campaign,
            "export": export,
            "group": group,
            "bought": [True] * bought + [False] * (n - bought),
        }
    )


def test_save_rate_of_two_campaigns_by_hand():
    outcomes = pd.concat(
        [
            _outcomes("vip", "2024-01-01", "treatment", 10, 6),
            _outcomes("vip", "2024-01-01", "control", 10, 4),
            _outcomes("vip", "2024-02-01", "treatment", 10, 5),
            _outcomes("vip", "2024-02-01", "control", 10, 5),
        ]
    )
    got = save_rates(outcomes, {"vip": 0.2, "new": 0.1}, prior_sd=0.1).set_index("campaign")
    assert list(got.reset_index().columns) == list(SAVE_RATE_COLUMNS)
    vip = got.loc["vip"]
    # pooled: treatment 11 of 20 bought (0.55), control 9 of 20 (0.45)
    assert (vip["n_campaigns"], vip["n_treatment"], vip["n_control"]) == (2, 20, 20)
    assert vip["retention_treatment"] == pytest.approx(0.55)
    assert vip["retention_control"] == pytest.approx(0.45)
    assert vip["incremental_retention"] == pytest.approx(0.10)
    # s = 0.10 / 0.55 = 0.181818...
    assert vip["save_rate_observed"] == pytest.approx(0.10 / 0.55)
    # v = (0.55 * 0.45 / 20) / 0.55^2 + (0.45 * 0.55 / 20) * 0.45^2 / 0.55^4
    #   = 0.012375 / 0.3025 + 0.012375 * 0.2025 / 0.09150625 = 0.0409091 + 0.0273854
    v = 0.012375 / 0.3025 + 0.012375 * 0.2025 / 0.09150625
    assert v == pytest.approx(0.0682945, abs=1e-6)
    assert vip["save_rate_observed_se"] == pytest.approx(math.sqrt(v))
    # w = 0.01 / (0.01 + v) = 0.12772; learned = w * 0.181818 + (1 - w) * 0.2 = 0.197678
    w = 0.01 / (0.01 + v)
    assert vip["weight"] == pytest.approx(0.127723, abs=1e-6)
    assert vip["save_rate"] == pytest.approx(0.197678, abs=1e-6)
    assert vip["save_rate_hi"] - vip["save_rate"] == pytest.approx(1.959964 * math.sqrt(w * v))
    assert vip["save_rate_lo"] == pytest.approx(vip["save_rate"] - 1.959964 * math.sqrt(w * v))
    # a group with no campaign keeps its prior, and says that nothing stands behind it
    new = got.loc["new"]
    assert (new["n_campaigns"], new["n_treatment"], new["n_control"]) == (0, 0, 0)
    assert (
        new["save_rate"] == 0.1 and new["weight"] == 0.0 and math.isnan(new["save_rate_observed"])
    )


@pytest.mark.parametrize("n, pulled", [(5, "prior"), (5000, "observed")])
def test_shrinkage_follows_how_many_customers_stand_behind_the_rate(n, pulled):
    # treatment buys 60%, control 40%: an observed save rate of 0.2 / 0.6 = 1/3, prior 0.2
    outcomes = pd.concat(
        [
            _outcomes("g", "e1", "treatment", n, int(0.6 * n)),
            _outcomes("g", "e1", "control", n, int(0.4 * n)),
        ]
    )
    row = save_rates(outcomes, {"g": 0.2}).iloc[0]
    assert row["save_rate_observed"] == pytest.approx(1 / 3)
    gap = 1 / 3 - 0.2
    if pulled == "prior":  # 5 customers a side: w = 0.01 / (0.01 + 0.19259) = 0.049
        assert abs(row["save_rate"] - 0.2) < 0.1 * gap
        assert row["weight"] == pytest.approx(0.049361, abs=1e-5)
    else:  # 5,000 a side: v is a thousandth of that, w = 0.98
        assert abs(row["save_rate"] - 1 / 3) < 0.05 * gap
        assert row["weight"] == pytest.approx(0.981106, abs=1e-5)
    assert row["save_rate_lo"] < row["save_rate"] < row["save_rate_hi"]


def test_unanimous_groups_and_bad_outcomes():
    # 3 treated all bought, 3 held out none: no variance by the formula; shares of one half's
    # variance instead, so three customers move the prior only part of the way
    outcomes = pd.concat(
        [_outcomes("g", "e", "treatment", 3, 3), _outcomes("g", "e", "control", 3, 0)]
    )
    row = save_rates(outcomes, {"g": 0.1}).iloc[0]
    assert row["save_rate_observed"] == 1.0
    # v = 0.25 / 3 / 1 + 0.25 / 3 * 0 = 0.083333; w = 0.01 / 0.093333 = 0.107143
    assert row["weight"] == pytest.approx(0.107143, abs=1e-6)
    assert row["save_rate"] == pytest.approx(0.1 + 0.107143 * 0.9, abs=1e-6)
    # a control that all bought leaves nothing to save: the prior stands
    all_bought = pd.concat(
        [_outcomes("g", "e", "treatment", 4, 4), _outcomes("g", "e", "control", 4, 4)]
    )
    assert save_rates(all_bought, {"g": 0.1}).iloc[0]["save_rate"] == 0.1
    with pytest.raises(DataError, match="missing \\['bought'\\]"):
        save_rates(outcomes.drop(columns="bought"), {"g": 0.1})
    with pytest.raises(DataError, match="1 outcome row\\(s\\) have a group other"):
        save_rates(outcomes.assign(group=["treatment"] * 5 + ["holdout"]), {"g": 0.1})
