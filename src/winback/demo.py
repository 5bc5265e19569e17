"""The demo: the whole pipeline on synthetic data, in numbered steps, each told to a callback.

synth -> validate -> profile -> features -> labels -> backtest of the churn model against the
baselines -> past campaigns with control groups, their simulated effects (persuadables and
sleeping dogs), the latest one's readout, and what ``learn`` takes from them (save rates, an
uplift model judged against the oracle) -> the production model registered in MLflow ->
tonight's lists, sized and ranked by what was learned -> the retention report. Everything is
written inside ``out`` (orders, exports, models, mlflow.db, reports).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from winback.atomic import atomic_parquet
from winback.config import load_config
from winback.cutoffs import cutoff_schedule
from winback.engines.duckdb import connect_for
from winback.features import build_features
from winback.jobs import (
    LearnResult,
    ReportResult,
    ScoreResult,
    backtest_job,
    learn_job,
    measure_job,
    report_job,
    score_job,
    train_job,
)
from winback.measure import Readout
from winback.orders import load_orders
from winback.profile import build_profile
from winback.snapshots import build_snapshots
from winback.synth import (
    CampaignEffects,
    SynthParams,
    campaign_kinds,
    generate_orders,
    simulate_campaign,
)

__all__ = ["run_demo", "recovery", "DemoResult", "Say"]

#: What the demo tells as it goes: ``("line", text)``, ``("lines", [text, ...])``, and the
#: results of its jobs to show: ``("metrics", BacktestResult)``, ``("score", ScoreResult)``,
#: ``("train", TrainResult)``, ``("readout", Readout)``.
Say = Callable[[str, Any], None]


@dataclass
class DemoResult:
    out: Path
    scored: ScoreResult
    report: ReportResult
    truth: dict[str, float]  # the latest simulated campaign's known effect
    readout: Readout  # and its measurement
    learned: LearnResult  # what the campaigns taught
    qini_oracle: float  # the Qini of ranking the latest campaign by its known expected effect


def recovery(readout: Readout, known: float) -> str:
    """Whether a campaign's readout recovered its known effect on retention, in one sentence."""
    row = readout.table.iloc[0]
    lo, hi = row["incremental_retention_lo"], row["incremental_retention_hi"]
    if lo <= 0 <= hi:  # an interval holding zero recovers nothing, whatever else it holds
        verdict = "not distinguishable from zero (the interval holds 0)"
    elif lo <= known <= hi:
        verdict = "recovered within the 95% interval"
    else:
        verdict = "outside the 95% interval"
    return (
        f"known effect {known * 100:+.1f} points; measured "
        f"{row['incremental_retention'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]: {verdict}"
    )


def run_demo(out: Path, *, customers: int = 20_000, seed: int = 7, say: Say) -> DemoResult:
    """Run the demo's 11 steps into ``out``, telling each step and its results to ``say``."""
    cfg = load_config(None, ["orders.columns.category=category", "orders.columns.channel=channel"])
    t0_clock = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say("line", f"1/11 synth: {customers:,} customers, 2022-01-01 to 2024-12-31, seed {seed}")
    synth = SynthParams(n_customers=customers, seed=seed)
    df = generate_orders(synth)
    orders_file = out / "orders.parquet"
    atomic_parquet(df, orders_file)
    say("line", f"    {len(df):,} orders -> {orders_file}")

    say("line", "2/11 validate")
    orders = load_orders(
        orders_file, cfg.orders, as_of=datetime(2025, 1, 1), con=connect_for(cfg.engine)
    )
    say("lines", ["    " + line for line in orders.report.summary_lines()])

    say("line", "3/11 profile")
    prof = build_profile(orders, lookback_days=cfg.features.lookback_days)
    say("lines", ["    " + line for line in prof.summary_lines()])

    horizon = prof.suggested_horizon_days or cfg.labels.horizon_days
    last = orders.last_ts.replace(hour=0, minute=0, second=0, microsecond=0)
    cuts = cutoff_schedule(last - timedelta(days=365), last, 30)
    say("line", f"4/11 features at {len(cuts)} monthly cutoffs in one pass")
    feats = build_features(orders, cuts, cfg.features.lookback_days, cfg.features.windows_days)
    atomic_parquet(feats, out / "features.parquet")
    say("line", f"    {len(feats):,} rows x {feats.shape[1]} columns -> {out / 'features.parquet'}")

    say("line", f"5/11 labels: churned = no purchase within H = {horizon} days after the cutoff")
    snap = build_snapshots(
        orders, cuts, horizon, cfg.features.lookback_days, cfg.features.windows_days
    )
    atomic_parquet(snap, out / "snapshots.parquet")
    table = snap.groupby("cutoff_ts").agg(
        customers=("customer_id", "size"),
        churn_rate=("churned", "mean"),
        median_recency_days=("recency_days", "median"),
    )
    say("line", "    cutoff      customers  churn rate  median recency (days)")
    for ts, row in table.iterrows():
        say(
            "line",
            f"    {ts:%Y-%m-%d}  {int(row.customers):>9,}  {row.churn_rate:>10.1%}  "
            f"{row.median_recency_days:>21.0f}",
        )
    say("line", f"    labelled snapshots (features, BG/NBD, label) -> {out / 'snapshots.parquet'}")

    eval_at = last - timedelta(days=horizon)
    say(
        "line",
        f"6/11 backtest at {eval_at:%Y-%m-%d} (H = {horizon} days): train on earlier cutoffs, "
        "compare with the baselines",
    )
    demo_cfg = cfg.model_copy(
        update={"labels": cfg.labels.model_copy(update={"horizon_days": horizon})}
    )
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    run = backtest_job(
        orders,
        demo_cfg,
        [eval_at],
        out=out / "backtest",
        track=True,
        tracking_uri=uri,
        experiment="winback-demo",
    )
    say("metrics", run.result)
    say("line", f"    predictions, metrics and plots -> {out / 'backtest'}")
    say("line", f"    MLflow run {run.run_id}")

    prod = demo_cfg.model_copy(
        update={
            "models_dir": str(out / "models"),
            "tracking": cfg.tracking.model_copy(update={"uri": uri, "experiment": "winback-demo"}),
        }
    )
    exports = out / "exports"
    days = [last - timedelta(days=horizon * k) for k in range(N_CAMPAIGNS, 0, -1)]
    say(
        "line",
        f"7/11 {N_CAMPAIGNS} win-back campaigns, {horizon} days apart ("
        + ", ".join(f"{d:%Y-%m-%d}" for d in days)
        + f"): train a model as of the first, export each night's lists with {TEST_SHARE:.0%} "
        "of each list held out at random (a test campaign: what it learns from)",
    )
    tested = prod.model_copy(
        update={"campaigns": prod.campaigns.model_copy(update={"control_share": TEST_SHARE})}
    )
    past = train_job(orders, prod, days[0], track=False)
    effects = CampaignEffects()
    say(
        "line",
        f"8/11 simulate each campaign before scoring the next: a contact wins back up to "
        f"{effects.persuadable:.0%} of the customers who would not have bought within "
        f"{horizon} days, most of all regulars whose last order was about "
        f"{effects.lapse_days:.0f} days ago; it keeps {effects.sleeping_dog:.0%} of the "
        "regulars who would have bought away (the control groups are left alone)",
    )
    world, world_file = df, out / "orders_after_campaigns.parquet"
    campaigns = []
    for k, day in enumerate(days):
        sent = score_job(orders, tested, exports, as_of=day, model=str(past.path))
        listed = pd.concat([lst.frame() for lst in sent.lists.values()], ignore_index=True)
        kinds = campaign_kinds(
            world, listed, pd.Timestamp(day), horizon, effects, seed + k, params=synth
        )
        kinds = kinds.merge(listed[["customer_id", "campaign"]], on="customer_id")
        world, truth = simulate_campaign(
            world, listed, pd.Timestamp(day), horizon, seed=seed + k, effects=effects
        )
        atomic_parquet(world, world_file)
        orders = load_orders(
            world_file, cfg.orders, as_of=datetime(2025, 1, 1), con=connect_for(cfg.engine)
        )
        campaigns.append((sent, kinds, truth))
        say(
            "line",
            f"    {day:%Y-%m-%d}: {len(listed):,} listed, {truth['n_treatment']:.0f} contacted; "
            f"{truth['won_back']:.0f} won back, {truth['pushed_away']:.0f} kept away: known "
            f"effect {truth['incremental_retention'] * 100:+.1f} points of retention",
        )
    say("line", f"    the orders with the campaigns' effects -> {world_file}")

    sent, kinds, truth = campaigns[-1]
    say(
        "line",
        f"9/11 measure the latest campaign over {horizon} days; learn each group's save rate "
        f"and an uplift model from all {N_CAMPAIGNS}",
    )
    measured = measure_job(
        orders, prod, sent.folder, window_days=horizon, out=out / "reports" / "measure"
    )
    say("readout", measured.readout)
    say("line", "    " + recovery(measured.readout, truth["incremental_retention"]))
    learned = learn_job(orders, prod, exports, out=out / "learned.json")
    contacted = pd.concat([c[1] for c in campaigns], ignore_index=True)
    contacted = contacted[contacted["group"] == "treatment"]
    for row in learned.table.itertuples():
        if not row.n_campaigns:
            continue
        mine = contacted[contacted["campaign"] == row.campaign]
        true_rate = mine["true_uplift"].sum() / max((~mine["buys_anyway"]).sum(), 1)
        if row.weight:  # the true save rate: (won back - kept away) / treated would-be churners
            say(
                "line",
                f"    {row.campaign}: save rate {row.save_rate:.3f} [{row.save_rate_lo:.3f}, "
                f"{row.save_rate_hi:.3f}] learned from {row.n_control:,} held out (observed "
                f"{row.save_rate_observed:.3f}, assumed {row.prior:.3f}, true {true_rate:.3f})",
            )
        else:
            say("line", f"    {row.campaign}: no one held out; the assumed {row.prior:.3f} stays")
    oracle = _oracle_qini(orders, kinds, pd.Timestamp(days[-1]), horizon)
    up = learned.document["uplift"]
    if up.get("evaluated"):
        q = up["rankings"]["model"]
        p_churn_q = up["rankings"].get("p_churn", {}).get("qini", float("nan"))
        say(
            "line",
            f"    uplift model, trained on {len(up['trained_on'])} campaigns and judged on "
            f"{up['evaluated_on']}: Qini {q['qini']:.4f} [{q['qini_lo']:.4f}, "
            f"{q['qini_hi']:.4f}], {q['qini'] / oracle:.0%} of the oracle's {oracle:.4f} (who "
            f"knows each customer's expected effect); ranking by p_churn: {p_churn_q:.4f}",
        )
    ranked = "by uplift" if up.get("beats_p_churn") else "by p_churn (" + up["why"] + ")"
    say(
        "line",
        f"    -> {learned.path}; tonight's lists are sized with these rates and ranked {ranked}",
    )
    prod = prod.model_copy(
        update={"campaigns": prod.campaigns.model_copy(update={"learned": str(learned.path)})}
    )

    say("line", f"10/11 train the production model as of {last:%Y-%m-%d}, register it, score")
    res = train_job(orders, prod, last)
    say("train", res)
    scored = score_job(orders, prod, exports, as_of=last, model="champion")
    say("score", scored)

    say("line", "11/11 retention report")
    rep = report_job(orders, prod, out / "reports", as_of=last, period="month", exports_dir=exports)
    k = rep.kpis.dropna(subset=["retention_rate"]).iloc[-1]
    h = rep.horizon_churn.dropna(subset=["churn_rate"]).iloc[-1]
    active = prod.report.active_days or prod.features.lookback_days
    say(
        "line",
        f"    {k['period']}: retention {k['retention_rate']:.1%}, churn {k['churn_rate']:.1%} "
        f"({active}-day activity), repeat purchase rate {k['repeat_purchase_rate']:.1%}; "
        f"{h['period']}: {h['churn_rate']:.1%} bought nothing in the next {rep.horizon_days} days "
        f"-> {rep.path}",
    )
    say(
        "line",
        f"look at the runs and the registered model with: mlflow ui --backend-store-uri {uri}",
    )
    say("line", f"done in {time.perf_counter() - t0_clock:.1f}s")
    return DemoResult(out, scored, rep, truth, measured.readout, learned, oracle)


#: The demo's past campaigns, and the share of each list they held out.
N_CAMPAIGNS = 3
TEST_SHARE = 0.5


def _oracle_qini(orders, kinds: pd.DataFrame, as_of: pd.Timestamp, horizon: int) -> float:
    """The Qini coefficient of ranking a campaign's customers by their expected effect (what
    the simulation knows and no model can see), on the outcomes ``learn`` judged it on."""
    from winback.measure import customer_outcomes
    from winback.uplift import qini_coefficient

    start = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of
    got = customer_outcomes(orders, kinds["customer_id"], start, start + timedelta(days=horizon))
    rows = kinds.merge(got[["customer_id", "bought"]], on="customer_id")
    return qini_coefficient(rows["expected_uplift"], rows["group"] == "treatment", rows["bought"])
