"""Campaign readout: the statistics by hand, a known simulated uplift recovered, none found where
none was applied, and the CLI with a real export and a real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from tests.conftest import orders_of
from winback.campaigns import control_flags
from winback.config import load_config
from winback.export import export_lists
from winback.jobs import measure_job
from winback.measure import compare_groups, measure_campaign
from winback.synth import SynthParams, generate_orders, simulate_campaign

AS_OF = datetime(2023, 9, 30)


def test_two_proportions_and_two_means_by_hand():
    bt = np.r_[np.ones(30), np.zeros(70)]
    bc = np.r_[np.ones(20), np.zeros(80)]
    row = compare_groups(bt, np.zeros(100), bc, np.zeros(100), contact_cost=0.5, offer_cost=2.0)
    # d = 0.30 - 0.20; se = sqrt(.3 x .7 / 100 + .2 x .8 / 100) = sqrt(.0037) = 0.0608276
    assert row["incremental_retention"] == pytest.approx(0.10)
    assert row["incremental_retention_lo"] == pytest.approx(0.10 - 1.959964 * 0.0608276, abs=1e-6)
    assert row["incremental_retention_hi"] == pytest.approx(0.10 + 1.959964 * 0.0608276, abs=1e-6)
    # the p-value of the same Wald test: z = 0.10 / 0.0608276 = 1.643990 -> p = 0.100178
    assert row["incremental_retention_p"] == pytest.approx(0.100178, abs=1e-6)
    # the detectable uplift uses the pooled se under no effect: p = 0.25,
    # se0 = sqrt(.25 x .75 x (2/100)) = 0.0612372
    assert row["min_detectable_uplift"] == pytest.approx((1.959964 + 0.841621) * 0.0612372, 1e-5)
    # cost: 0.5 per treated customer + 2 per treated buyer = 50 + 60
    assert row["cost"] == pytest.approx(110.0)
    # no revenue either side: net = 0 - 110, its interval too
    assert (row["net_revenue"], row["net_revenue_lo"], row["net_revenue_hi"]) == (-110, -110, -110)
    assert row["incremental_customers"] == pytest.approx(10.0)
    assert "no effect shown" in row["warning"]  # the interval covers zero

    t = compare_groups([1, 0, 1, 1], [10, 0, 20, 30], [0, 1, 1, 1], [0, 10, 5, 5], min_control=2)
    # means 15 and 5; variances 500/3 and 50/3; se = sqrt((500/3 + 50/3) / 4) = 6.7700
    assert t["incremental_revenue_per_customer"] == pytest.approx(10.0)
    assert t["incremental_revenue_per_customer_lo"] == pytest.approx(10 - 1.959964 * 6.770032, 1e-5)
    assert t["incremental_revenue"] == pytest.approx(40.0)
    assert t["incremental_revenue_lo"] == pytest.approx(4 * (10 - 1.959964 * 6.770032), 1e-5)


def test_the_interval_and_the_p_value_say_the_same_about_zero():
    # 48 of 100 treated bought, 34 of 100 controls: d = 0.14,
    # se = sqrt(.48 x .52 / 100 + .34 x .66 / 100) = sqrt(.004740) = 0.068848,
    # lo = 0.14 - 1.959964 x 0.068848 = +0.00506 > 0, z = 2.03346 -> p = 0.0420 < 0.05
    # (the pooled test gave p = 0.0439 here, and with fewer buyers a p above 0.05 with an
    # interval above zero)
    row = compare_groups(
        np.r_[np.ones(48), np.zeros(52)], np.zeros(100), np.r_[np.ones(34), np.zeros(66)],
        np.zeros(100), min_control=50,
    )  # fmt: skip
    assert row["incremental_retention_lo"] == pytest.approx(0.14 - 1.959964 * 0.068848, abs=1e-5)
    assert row["incremental_retention_p"] == pytest.approx(0.04201, abs=1e-4)
    for n_t in range(40, 60):  # whatever the counts, lo > 0 exactly when p < 0.05
        r = compare_groups(
            np.r_[np.ones(n_t), np.zeros(100 - n_t)], np.zeros(100),
            np.r_[np.ones(34), np.zeros(66)], np.zeros(100),
        )  # fmt: skip
        assert (r["incremental_retention_lo"] > 0) == (r["incremental_retention_p"] < 0.05)


def test_holm_adjusts_for_the_number_of_comparisons_by_hand():
    from winback.measure import holm

    # sorted 0.01, 0.02, 0.04 of m = 3 (NaN left out): x3, x2, x1 = 0.03, 0.04, 0.04
    got = holm(np.array([0.04, np.nan, 0.01, 0.02]))
    np.testing.assert_allclose(got, [0.04, np.nan, 0.03, 0.04])
    # made non-decreasing, capped at 1: 0.3 x 2 = 0.6, 0.35 x 1 = 0.35 -> 0.6
    np.testing.assert_allclose(holm(np.array([0.35, 0.3])), [0.6, 0.6])
    np.testing.assert_allclose(holm(np.array([0.9, 0.8])), [1.0, 1.0])


def test_small_or_missing_control_groups_are_flagged():
    small = compare_groups(np.ones(500), np.ones(500), np.zeros(20), np.zeros(20), min_control=100)
    assert small["warning"].startswith("control group too small to tell: 20 customers")
    none = compare_groups(np.ones(50), np.ones(50), [], [])
    assert none["warning"].startswith("no control group")
    assert np.isnan(none["incremental_retention"])


def test_the_overall_row_pools_groups_and_adds_their_costs():
    lists = pd.DataFrame(
        {
            "customer_id": list("abcdefgh"),
            "campaign": ["x"] * 4 + ["y"] * 4,
            "group": ["treatment", "treatment", "treatment", "control"] * 2,
        }
    )
    outcomes = pd.DataFrame(
        {"customer_id": list("abcdefgh"), "bought": [1, 1, 0, 0, 1, 0, 0, 1], "revenue": 10.0}
    )
    t = measure_campaign(lists, outcomes, {"x": (1.0, 0.0), "y": (0.0, 5.0)}, min_control=1)
    assert list(t["scope"]) == ["all", "x", "y"]
    assert t.set_index("scope").loc["all", "n_treatment"] == 6
    assert t.set_index("scope").loc["all", "retention_treatment"] == pytest.approx(3 / 6)
    assert t.set_index("scope").loc["all", "retention_control"] == pytest.approx(1 / 2)
    # x: 3 contacts x 1.0; y: 1 treated buyer x 5.0
    assert t.set_index("scope")["cost"].tolist() == [8.0, 3.0, 5.0]
    # everyone's revenue is 10: no incremental revenue, so the net (and its interval) is -cost
    assert t["net_revenue"].tolist() == [-8.0, -3.0, -5.0]
    assert t["net_revenue_lo"].tolist() == t["net_revenue_hi"].tolist() == [-8.0, -3.0, -5.0]
    # three comparisons at once: the adjusted p-values are Holm's of the three
    from winback.measure import holm

    np.testing.assert_allclose(
        t["incremental_retention_p_adjusted"], holm(t["incremental_retention_p"].to_numpy())
    )


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A real export at AS_OF: every customer active in the last 180 days, half held out."""
    d = tmp_path_factory.mktemp("measure")
    world = generate_orders(SynthParams(n_customers=12_000, start="2021-01-01", end="2023-12-31"))
    world["customer_id"] = world["customer_id"].astype(str)
    before = world[world["order_ts"] <= pd.Timestamp(AS_OF, tz="UTC")]
    last = before.groupby("customer_id")["order_ts"].max()
    ids = last[last > pd.Timestamp(AS_OF, tz="UTC") - pd.Timedelta(days=180)].index.sort_values()
    listed = pd.DataFrame({"customer_id": ids, "list": "at_risk"})
    listed["campaign"] = np.where(np.arange(len(ids)) % 2 == 0, "repeat_buyers", "one_time_buyers")
    flags = control_flags(listed["customer_id"], "all", "test", 0.5)
    listed["group"] = np.where(flags, "control", "treatment")
    export_lists(
        d / "exports", "2023-09-30", {"at_risk": listed}, listed, {"as_of": AS_OF.isoformat()}
    )
    return d, world, listed


@pytest.mark.parametrize("uplift", [0.15, 0.0])
def test_measure_recovers_a_known_uplift_and_finds_none_when_none_was_applied(campaign, uplift):
    d, world, listed = campaign
    after, truth = simulate_campaign(world, listed, pd.Timestamp(AS_OF), 60, uplift, seed=3)
    cfg = load_config(None, ["measure.window_days=60"])
    res = measure_job(orders_of(after), cfg, d / "exports" / "2023-09-30", track=False)
    row = res.readout.table.iloc[0]
    assert row["scope"] == "all" and row["n_control"] > 1000 and row["n_treatment"] > 1000
    assert row["incremental_retention_lo"] <= truth["incremental_retention"]
    assert truth["incremental_retention"] <= row["incremental_retention_hi"]
    rev = truth["incremental_revenue_per_customer"]
    assert (
        row["incremental_revenue_per_customer_lo"]
        <= rev
        <= row["incremental_revenue_per_customer_hi"]
    )
    if uplift:
        assert truth["incremental_retention"] > 0.05
        assert row["incremental_retention_lo"] > 0 and row["incremental_retention_p"] < 0.001
    else:
        assert truth["won_back"] == 0
        assert row["incremental_retention_lo"] < 0 < row["incremental_retention_hi"]
        assert row["incremental_retention_p"] > 0.05


def test_the_window_is_the_campaign_horizon_from_its_manifest(campaign, tmp_path):
    d, world, listed = campaign
    export_lists(
        tmp_path, "2023-09-30", {"at_risk": listed}, listed,
        {"as_of": AS_OF.isoformat(), "horizon_days": 45},
    )  # fmt: skip
    orders = orders_of(world)
    # the campaign's own 45 days, wherever measure runs, unless a window is asked for
    readout = measure_job(orders, load_config(None), tmp_path / "2023-09-30", track=False).readout
    assert readout.window_days == 45
    cfg = load_config(None, ["measure.window_days=20"])
    assert measure_job(orders, cfg, tmp_path / "2023-09-30", track=False).readout.window_days == 20
    # three comparisons (all and two groups): the readout says so
    text = " ".join(readout.warnings)
    assert "3 comparisons were made" in text and "Holm" in text


def test_a_group_significant_only_before_adjusting_is_called_possible_chance():
    # x: 48 of 100 treated bought against 34 of 100 controls, p = 0.0420 alone;
    # y: 40 against 40, p = 1; all: 88/200 against 74/200, d = 0.07,
    # se = sqrt(.44 x .56 / 200 + .37 x .63 / 200) = 0.048964, p = 0.1528.
    # Holm over three: 0.0420 x 3 = 0.1260 for x
    def people(n, bought):
        return [1] * bought + [0] * (n - bought)

    bought = people(100, 48) + people(100, 34) + people(100, 40) + people(100, 40)
    lists = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(400)],
            "campaign": ["x"] * 200 + ["y"] * 200,
            "group": (["treatment"] * 100 + ["control"] * 100) * 2,
        }
    )
    outcomes = pd.DataFrame({"customer_id": lists["customer_id"], "bought": bought, "revenue": 0.0})
    t = measure_campaign(lists, outcomes, min_control=50).set_index("scope")
    assert t.loc["x", "incremental_retention_p"] == pytest.approx(0.04200, abs=1e-4)
    assert t.loc["all", "incremental_retention_p"] == pytest.approx(0.1528, abs=1e-4)
    assert t.loc["x", "incremental_retention_p_adjusted"] == pytest.approx(0.1260, abs=1e-3)
    assert t.loc["x", "warning"] == (
        "p = 0.042 alone, but 0.126 after adjusting for 3 comparisons: this could be chance"
    )
    assert t.loc["y", "warning"].startswith("no effect shown")


def test_measure_cli_prints_writes_json_and_logs_its_own_mlflow_run(campaign, tmp_path):
    d, world, listed = campaign
    after, _ = simulate_campaign(world, listed, pd.Timestamp(AS_OF), 60, 0.15, seed=3)
    after.to_parquet(tmp_path / "orders.parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "winback", "measure", "--export", str(d / "exports" / "2023-09-30"),
           "--orders", "orders.parquet", "--window-days", "60", "--out", "m"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "uplift (95% interval)" in r.stdout and "repeat_buyers" in r.stdout
    doc = json.loads((tmp_path / "m" / "measure.json").read_text())
    assert doc["window_days"] == 60 and doc["rows"][0]["scope"] == "all"
    assert (tmp_path / "m" / "measure.html").read_text().count("data:image/png;base64,") == 1
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["winback"])
    assert (runs["tags.winback.kind"] == "measure").sum() == 1
    assert runs["metrics.all.incremental_retention"].iloc[0] == pytest.approx(
        doc["rows"][0]["incremental_retention"]
    )
    j = subprocess.run([*cmd, "--json", "--no-track"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert j.returncode == 0 and json.loads(j.stdout)["rows"][0]["scope"] == "all"


def test_measure_refuses_a_folder_that_is_not_an_export_and_orders_that_end_too_early(
    campaign, tmp_path
):
    d, world, _ = campaign
    early = world[world["order_ts"] <= pd.Timestamp("2023-09-01", tz="UTC")]
    early.to_parquet(tmp_path / "early.parquet")
    (tmp_path / "plain").mkdir()
    base = [sys.executable, "-m", "winback", "measure", "--no-track", "--orders", "early.parquet"]
    for export, needle in (
        (tmp_path / "plain", "has no manifest.json"),
        (d / "exports" / "2023-09-30", "no outcome to measure yet"),
    ):
        r = subprocess.run([*base, "--export", str(export)], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)  # fmt: skip
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr
        # one error line (after the log line of the stage that finished: reading the orders)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0]
        assert r.stderr.strip().splitlines()[-1] == errors[0]


def test_the_demo_says_whether_a_known_effect_was_recovered():
    from winback.demo import recovery
    from winback.measure import Readout

    def readout(lo: float, hi: float) -> Readout:
        table = pd.DataFrame(
            {"incremental_retention": [(lo + hi) / 2], "incremental_retention_lo": [lo],
             "incremental_retention_hi": [hi]}
        )  # fmt: skip
        return Readout("x", datetime(2024, 1, 1), 30, 30.0, table, [])

    assert recovery(readout(0.03, 0.13), 0.09).endswith(": recovered within the 95% interval")
    assert recovery(readout(0.10, 0.20), 0.09).endswith(": outside the 95% interval")
    # an interval that holds zero recovers nothing, though it holds the known effect too
    said = recovery(readout(-0.02, 0.12), 0.09)
    assert said == (
        "known effect +9.0 points; measured +5.0 [-2.0, +12.0]: "
        "not distinguishable from zero (the interval holds 0)"
    )
