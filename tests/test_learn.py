"""Learned save rates: pooled over campaigns, with the delta-method interval, shrunk towards
the config's prior (worked out by hand below)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from winback.errors import DataError
from winback.learn import SAVE_RATE_COLUMNS, rates_by_export, save_rates


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
    # each campaign on its own, nothing pooled or shrunk: the first 0.2 / 0.6 = 1/3, with
    # v = 0.024 / 0.36 + 0.024 x 0.16 / 0.1296 = 0.0962963; the second (0.5, 0.5): 0
    first, second = rates_by_export(
        outcomes, {"vip": 0.2, "new": 0.1}, ["2024-01-01", "2024-02-01"]
    )
    assert (first["export"], first["campaign"], first["n_control"]) == ("2024-01-01", "vip", 10)
    assert first["save_rate_observed"] == pytest.approx(1 / 3)
    half = 1.959964 * math.sqrt(0.024 / 0.36 + 0.024 * 0.16 / 0.1296)
    assert (first["lo"], first["hi"]) == pytest.approx((1 / 3 - half, 1 / 3 + half))
    assert second["save_rate_observed"] == 0.0 and second["export"] == "2024-02-01"
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


CAMPAIGNS = ("2023-06-30", "2023-09-30", "2023-12-15")  # the last one's window is still running


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Three real exports of a synthetic shop, half of each list held out; a known uplift of
    0.3 applied to the first two campaigns' treated customers in their 60-day windows."""
    from winback.campaigns import control_flags
    from winback.export import export_lists
    from winback.synth import SynthParams, generate_orders, simulate_campaign

    d = tmp_path_factory.mktemp("learn")
    world = generate_orders(SynthParams(n_customers=8_000, start="2021-01-01", end="2023-12-31"))
    world["customer_id"] = world["customer_id"].astype(str)
    for k, day in enumerate(CAMPAIGNS):
        t = pd.Timestamp(day, tz="UTC")
        before = world[world["order_ts"] <= t]
        last = before.groupby("customer_id")["order_ts"].max()
        ids = last[last > t - pd.Timedelta(days=180)].index.sort_values()
        listed = pd.DataFrame({"customer_id": ids, "list": "at_risk"})
        listed["campaign"] = np.where(np.arange(len(ids)) % 2, "repeat_buyers", "one_time_buyers")
        flags = control_flags(listed["customer_id"], day, "test", 0.5)
        listed["group"] = np.where(flags, "control", "treatment")
        # a risk score to compare the uplift model's ranking with: the longer since the last
        # order, the riskier
        listed["p_churn"] = ((t - last.loc[ids]).dt.days / 180).clip(0, 1).to_numpy()
        manifest = {"as_of": t.tz_localize(None).isoformat(), "horizon_days": 60}
        export_lists(d / "exports", day, {"at_risk": listed}, listed, manifest)
        if k < 2:
            world, _ = simulate_campaign(world, listed, t, 60, 0.3, seed=k)
    world.to_parquet(d / "orders.parquet")
    return d, world


def _by_hand(d, world, group: str) -> tuple[int, int, float, float]:
    """Treated and held out, and the shares who bought in the window, pooled over the two
    finished campaigns, straight from the export files and the orders."""
    from winback.export import read_lists

    bought_t = bought_c = n_t = n_c = 0
    for day in CAMPAIGNS[:2]:
        t = pd.Timestamp(day, tz="UTC")
        lists = pd.concat(
            read_lists(d / "exports" / day, ["customer_id", "campaign", "group"]).values()
        )
        lists = lists[lists["campaign"] == group]
        window = world[(world["order_ts"] > t) & (world["order_ts"] <= t + pd.Timedelta(days=60))]
        buyers = set(window.loc[window["amount"] > 0, "customer_id"])
        bought = lists["customer_id"].astype(str).isin(buyers)
        treated = (lists["group"] == "treatment").to_numpy()
        n_t, n_c = n_t + treated.sum(), n_c + (~treated).sum()
        bought_t, bought_c = bought_t + bought[treated].sum(), bought_c + bought[~treated].sum()
    return int(n_t), int(n_c), bought_t / n_t, bought_c / n_c


def test_learn_cli_pools_finished_campaigns_and_score_sizes_with_what_it_learned(history, tmp_path):
    d, world = history
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "winback", "learn", "--exports", str(d / "exports"),
           "--orders", str(d / "orders.parquet"), "--out", "learned.json"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "learned from 2 campaign(s)" in r.stdout and "skipped 2023-12-15" in r.stdout
    assert "uplift model: trained on 1 campaign(s), judged on 2023-09-30: Qini " in r.stdout
    doc = json.loads((tmp_path / "learned.json").read_text())
    assert [e["export"] for e in doc["exports"]] == list(CAMPAIGNS[:2])
    assert "runs to 2024-02-13" in doc["skipped"][0]["why"]
    for group, prior in (("repeat_buyers", 0.1), ("one_time_buyers", 0.08)):
        row = doc["groups"][group]
        n_t, n_c, rt, rc = _by_hand(d, world, group)
        assert (row["n_campaigns"], row["n_treatment"], row["n_control"]) == (2, n_t, n_c)
        assert row["retention_treatment"] == pytest.approx(rt)
        assert row["retention_control"] == pytest.approx(rc)
        assert row["save_rate_observed"] == pytest.approx((rt - rc) / (1 - rc))
        # 0.3 of the treated who would not have bought were won back: the observed rate finds
        # it within 3 standard errors (measured: 0.304 and 0.279, se 0.025); with over a
        # thousand held out the prior (0.1, 0.08) gives way most of the way, not all of it
        assert abs(row["save_rate_observed"] - 0.3) < 3 * row["save_rate_observed_se"]
        assert row["prior"] == prior and row["weight"] > 0.9
        assert prior < row["save_rate"] < row["save_rate_observed"]
    assert doc["groups"]["high_spenders"]["n_campaigns"] == 0  # nothing learnt: the prior stays
    # the uplift model learns from the earlier campaign and is judged on the later one only
    up = doc["uplift"]
    assert up["evaluated"] and up["trained_on"] == ["2023-06-30"]
    assert up["evaluated_on"] == "2023-09-30"
    first, second = doc["exports"]
    assert up["customers"] == {
        "trained": first["treatment"] + first["control"],
        "evaluated": second["treatment"] + second["control"],
    }
    model, risk = up["rankings"]["model"], up["rankings"]["p_churn"]
    for r in (model, risk):
        assert r["qini_lo"] <= r["qini"] <= r["qini_hi"]
        assert r["uplift_10_lo"] <= r["uplift_10"] <= r["uplift_10_hi"]
    assert up["beats_p_churn"] == (model["qini_lo"] > risk["qini"])
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["winback"])
    assert (runs["tags.winback.kind"] == "learn").sum() == 1
    assert runs["metrics.repeat_buyers.save_rate"].iloc[0] == pytest.approx(
        doc["groups"]["repeat_buyers"]["save_rate"]
    )
    assert runs["metrics.uplift.model.qini"].iloc[0] == pytest.approx(model["qini"])
    # the curves the report draws, and each campaign's own rates
    assert set(up["qini_curves"]) == set(up["profit_curves"]) == {"model", "p_churn"}
    assert up["qini_curves"]["model"]["share"][-1] == 1.0
    assert {e["export"] for e in doc["by_export"]} == set(CAMPAIGNS[:2])
    # the model is kept beside learned.json only when it beat p_churn
    kept = (tmp_path / "learned.uplift.joblib").exists()
    assert kept == up["beats_p_churn"] == ("model_file" in up)

    # score sizes the lists with the learned rates, and says where each came from
    from winback.config import load_config
    from winback.jobs import learned_save_rates

    cfg = load_config(None, [f"campaigns.learned={tmp_path / 'learned.json'}"])
    learned, sources = learned_save_rates(cfg)
    rates = {g.name: g.save_rate for g in learned.campaigns.groups}
    assert rates["repeat_buyers"] == pytest.approx(doc["groups"]["repeat_buyers"]["save_rate"])
    assert rates["high_spenders"] == 0.2  # the config's own
    assert (
        sources["repeat_buyers"].startswith("learned: ")
        and "2 campaign(s)" in sources["repeat_buyers"]
    )
    assert sources["high_spenders"].startswith("campaigns.groups in the config: an assumption")
    plain, sources = learned_save_rates(load_config(None))
    assert set(sources.values()) == {"campaigns.groups in the config: an assumption"}


def test_a_missing_learned_file_is_a_clear_error(tmp_path):
    from winback.config import load_config
    from winback.jobs import learned_save_rates

    cfg = load_config(None, [f"campaigns.learned={tmp_path / 'nope.json'}"])
    with pytest.raises(DataError, match="run 'winback learn' first"):
        learned_save_rates(cfg)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="is not a learned.json"):
        learned_save_rates(load_config(None, [f"campaigns.learned={tmp_path / 'bad.json'}"]))


def test_groups_the_config_does_not_know_are_named_not_learned(history):
    from tests.conftest import orders_of
    from winback.config import load_config
    from winback.jobs import learn_job

    d, world = history
    cfg = load_config(None)
    kept = [g for g in cfg.campaigns.groups if g.name != "one_time_buyers"]
    cfg = cfg.model_copy(update={"campaigns": cfg.campaigns.model_copy(update={"groups": kept})})
    res = learn_job(orders_of(world), cfg, d / "exports", track=False)
    assert "one_time_buyers" not in res.document["groups"]
    assert res.document["warnings"] == [
        "Campaign group(s) ['one_time_buyers'] of the exports are not in campaigns.groups of "
        "the config: nothing is learned for them (add them to the config to learn their rate)."
    ]
    assert res.document["groups"]["repeat_buyers"]["n_campaigns"] == 2 and res.path is None


def test_an_uplift_model_is_not_judged_without_a_later_campaign(history):
    from tests.conftest import orders_of
    from winback.config import load_config
    from winback.jobs import _evaluate_uplift

    _, world = history
    got, model = _evaluate_uplift(orders_of(world), load_config(None), [("x", None, 60)], [None])
    assert got == {
        "evaluated": False,
        "why": "1 campaign(s) whose window has passed: an uplift model needs at least one to "
        "learn from and a later one to be judged on",
    }
    assert model is None  # nothing to rank by
