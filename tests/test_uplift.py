"""Uplift: the Qini coefficient and uplift at a share by hand, and an X-learner that finds the
persuadables of a simulated campaign it did not see (trained on an earlier one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.errors import DataError
from winback.uplift import (
    UpliftModel,
    evaluate_ranking,
    profit_curve,
    qini_coefficient,
    qini_curve,
    uplift_at,
)


def test_qini_and_uplift_at_a_share_by_hand():
    # best first: a treated buyer, a held-out non-buyer, a treated non-buyer, a held-out buyer
    score = [4, 3, 2, 1]
    treated = [True, False, True, False]
    bought = [True, False, False, True]
    # Q(n) = Y_t - Y_c N_t / N_c: n=1: 1 - 0 (no held out yet) = 1; n=2: 1 - 0 x 1/1 = 1;
    # n=3: 1 - 0 x 2/1 = 1; n=4: 1 - 1 x 2/2 = 0; per customer: 0.25, 0.25, 0.25, 0
    curve = qini_curve(score, treated, bought)
    assert curve["share"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve["incremental"].tolist() == [0.25, 0.25, 0.25, 0.0]
    # the random line ends at Q(N) / N = 0: the coefficient is the curve's mean, 0.1875
    assert qini_coefficient(score, treated, bought) == pytest.approx(0.1875)
    # reversed, the ranking finds the held-out buyer first: n=1: 0 - 1 x 0/1 = 0; n=2: 0 - 1 x
    # 1/1 = -1; n=3: 0 - 1 x 1/2 = -0.5; n=4: 1 - 1 = 0 -> mean of 0, -0.25, -0.125, 0
    assert qini_coefficient([1, 2, 3, 4], treated, bought) == pytest.approx(-0.09375)
    # top half: the treated buyer (1 of 1) against the held-out non-buyer (0 of 1)
    assert uplift_at(score, treated, bought, 0.5) == 1.0
    assert np.isnan(uplift_at(score, treated, bought, 0.25))  # only treated in the top quarter


def test_profit_curve_by_hand():
    # best first: a treated buyer (revenue 10), a held-out buyer (6), a treated and a held-out
    # customer who did not buy; a contact costs 1, a redeemed offer 2; 2 treated in all
    score = [4, 3, 2, 1]
    treated = [True, False, True, False]
    bought = [True, True, False, False]
    revenue = [10.0, 6.0, 0.0, 0.0]
    curve = profit_curve(score, treated, bought, revenue, 1.0, 2.0)
    # n=1: 10 - 0 - 3 = 7; n=2: 10 - 6 x 1/1 - 3 = 1; n=3: 10 - 6 x 2/1 - 4 = -6;
    # n=4: 10 - 6 x 2/2 - 4 = 0; each / 2 treated
    assert curve["net"].tolist() == pytest.approx([3.5, 0.5, -3.0, 0.0])
    assert curve["share"].tolist() == [0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def campaigns():
    """Three campaigns, 90 days apart, of a simulated shop with persuadables and sleeping dogs
    (half of each list held out): features at each as-of, the treatment, whether each customer
    bought in the 90-day window, the effect chance drew and the expected one (the oracle's)."""
    from tests.conftest import orders_of
    from winback.campaigns import control_flags
    from winback.snapshots import build_snapshots
    from winback.synth import (
        CampaignEffects,
        SynthParams,
        campaign_kinds,
        generate_orders,
        simulate_campaign,
    )

    params = SynthParams(n_customers=20_000, seed=11)
    world = generate_orders(params)
    effects, listed_at = CampaignEffects(), {}
    for k, day in enumerate(("2024-04-02", "2024-07-01", "2024-09-29")):
        t = pd.Timestamp(day, tz="UTC")
        last = world[world["order_ts"] <= t].groupby("customer_id")["order_ts"].max()
        ids = last[last > t - pd.Timedelta(days=730)].index.sort_values().astype(str)
        listed = pd.DataFrame({"customer_id": ids, "list": "at_risk", "campaign": "all"})
        held = control_flags(listed["customer_id"], day, "s", 0.5)
        listed["group"] = np.where(held, "control", "treatment")
        kinds = campaign_kinds(world, listed, t, 90, effects, seed=k, params=params)
        world, _ = simulate_campaign(world, listed, t, 90, seed=k, effects=effects)
        truth = kinds[["customer_id", "true_uplift", "expected_uplift"]]
        listed_at[day] = listed.merge(truth, on="customer_id")
    orders = orders_of(world)
    out = {}
    for day, listed in listed_at.items():
        t = pd.Timestamp(day, tz="UTC")
        snap = build_snapshots(orders, [t.tz_localize(None).to_pydatetime()], 90, 730, labels=False)
        snap = snap.merge(listed.drop(columns=["list", "campaign"]), on="customer_id")
        window = world[(world["order_ts"] > t) & (world["order_ts"] <= t + pd.Timedelta(days=90))]
        snap["bought"] = snap["customer_id"].isin(
            set(window.loc[window["amount"] > 0, "customer_id"].astype(str))
        )
        out[day] = snap
    return out


_TRUTH = ["bought", "group", "true_uplift", "expected_uplift"]


def test_an_x_learner_finds_the_persuadables_of_a_campaign_it_did_not_see(campaigns):
    # trained on the first two campaigns, judged on the third: out of time
    train = pd.concat([campaigns["2024-04-02"], campaigns["2024-07-01"]], ignore_index=True)
    test = campaigns["2024-09-29"]
    fitted = UpliftModel().fit(
        train.drop(columns=_TRUTH), train["group"] == "treatment", train["bought"]
    )
    assert not set(_TRUTH) & set(fitted.features_)  # no outcome or truth leaks in
    with pytest.raises(DataError, match=r"missing \['recency_days'\] \(1 in all\)\. Learn"):
        fitted.predict(test.drop(columns="recency_days"))
    treated, bought = (test["group"] == "treatment").to_numpy(), test["bought"].to_numpy()
    model = evaluate_ranking(fitted.predict(test), treated, bought)
    oracle = qini_coefficient(test["expected_uplift"], treated, bought)
    by_risk = qini_coefficient(test["bgnbd_p_no_purchase"], treated, bought)
    # measured on this seed: model 0.0122 [0.0101, 0.0145], 0.59 of the oracle's 0.0206 (who
    # ranks by each customer's expected effect, from the generator's hidden state); the
    # riskiest first -0.0010
    assert model["qini"] >= 0.5 * oracle > 0
    assert model["qini_lo"] > 0 and model["qini"] > by_risk
    assert model["uplift_10"] > model["uplift_30"] > 0  # the best-ranked are moved most
    # the oracle's expected effects are what chance drew, on average
    drawn, expected = test["true_uplift"][treated], test["expected_uplift"][treated]
    assert abs(drawn.mean() - expected.mean()) < 4 * drawn.std() / np.sqrt(len(drawn))
