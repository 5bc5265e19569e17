"""Backtests: nothing after T reaches the model or the scores; outputs and tracking."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, orders_of, run_cli
from winback.backtest import run_backtest

T = datetime(2023, 9, 1)
H = 60
SMALL = dict(spacing_days=30, n_cutoffs=6, n_boot=50, model_params={"n_estimators": 300})


def test_orders_after_the_cutoff_never_change_predictions(synth_frame):
    full = orders_of(synth_frame, category="category", channel="channel")
    cut_frame = synth_frame[synth_frame["order_ts"] <= pd.Timestamp(T, tz="UTC")]
    cut = orders_of(cut_frame, category="category", channel="channel")
    assert full.report.n_orders > cut.report.n_orders
    a = run_backtest(full, [T], H, **SMALL)
    b = run_backtest(cut, [T], H, **SMALL)
    cols = ["customer_id", "cutoff_ts", "p_churn", "bgnbd", "logreg", "rfm", "recency"]
    pd.testing.assert_frame_equal(a.predictions[cols], b.predictions[cols], check_exact=True)
    # the candidate was chosen on training cutoffs only: the labels after T change nothing
    assert a.choices() == b.choices()
    assert a.predictions["churned"].notna().all()  # the full file can evaluate ...
    assert b.predictions["churned"].isna().all()  # ... the cut one only scores
    assert "2023-09-01" in a.metrics and not b.metrics


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, synth_frame):
    d = tmp_path_factory.mktemp("track")
    synth_frame.to_parquet(d / "orders.parquet")
    return d


FAST = [
    "--set",
    "training.spacing_days=30",
    "--set",
    "training.n_cutoffs=6",
    "--set",
    "evaluation.n_bootstrap=50",
    "--set",
    "model.n_estimators=300",
    "--set",
    "sufficiency.min_customers=100",
    "--set",
    "sufficiency.min_repeat_buyers=50",
]


def test_backtest_cli_writes_predictions_metrics_plots_and_a_run(workdir):
    uri = f"sqlite:///{workdir / 'bt.db'}"
    res = run_cli(
        "backtest",
        "--orders",
        "orders.parquet",
        "--as-of",
        "2023-07-01,2023-09-01",
        "--horizon-days",
        str(H),
        "--out",
        "bt",
        *FAST,
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert res.returncode == 0, res.stderr
    out = workdir / "bt"
    for name in (
        "predictions.parquet",
        "metrics.json",
        "gains.png",
        "calibration.png",
        "importance.png",
    ):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"2023-07-01", "2023-09-01", "pooled"}
    assert set(metrics["pooled"]) == {"model", "bgnbd", "logreg", "rfm", "recency"}
    assert "pooled      model" in res.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("winback").experiment_id])
    assert run.data.tags["winback.kind"] == "backtest"
    # metric names are the same in every run (runs compare in the UI); the evaluation cutoff
    # is the step, its date as a number
    assert run.data.metrics["pooled.model.auc"] == pytest.approx(metrics["pooled"]["model"]["auc"])
    assert run.data.tags["winback.cutoffs"] == "2023-07-01,2023-09-01"
    assert not [k for k in run.data.metrics if k[:1].isdigit()]  # no date inside a name
    history = client.get_metric_history(run.info.run_id, "bgnbd.auc")
    assert {m.step: m.value for m in history} == pytest.approx(
        {20230701: metrics["2023-07-01"]["bgnbd"]["auc"],
         20230901: metrics["2023-09-01"]["bgnbd"]["auc"]}
    )  # fmt: skip
    # the model's choice and every candidate's held-out score, per evaluation cutoff
    doc = json.loads((out / "metrics.json").read_text())
    for cutoff, tag in (("2023-07-01", "20230701"), ("2023-09-01", "20230901")):
        choice = doc["models"][cutoff]
        assert run.data.tags[f"winback.candidate.{tag}"] == choice["candidate"]
        for name, scores in choice["candidates"].items():
            steps = client.get_metric_history(run.info.run_id, f"candidates.{name}.log_loss")
            got = {m.step: m.value for m in steps}[int(tag)]
            assert got == pytest.approx(scores["log_loss"])
    assert run.data.tags["data.rows"] == str(len(pd.read_parquet(workdir / "orders.parquet")))
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"gains.png", "metrics.json"} <= arts
    # when the next order is due, checked at 30, 60 and 90 days against what happened
    timing = doc["timing"]
    assert set(timing) == {"30d", "60d", "90d"}
    for days, t in timing.items():
        assert sum(row["customers"] for row in t["table"]) == t["customers"]
        assert abs(t["predicted"] - t["observed"]) < 0.05 and t["ece"] < 0.05
        assert run.data.metrics[f"timing_{days}_ece"] == pytest.approx(t["ece"])
        assert f"no order within {days[:-1]} days: predicted" in res.stdout
    pred = pd.read_parquet(out / "predictions.parquet")
    curve = pred[["p_no_order_30d", "p_no_order_60d", "p_no_order_90d"]].to_numpy()
    assert (np.diff(curve, axis=1) <= 1e-12).all()  # monotone in the horizon, every customer
    assert np.allclose(pred["p_no_order_60d"], pred["p_churn"])  # H = 60
    # the outcomes, recounted from the orders: no purchase in (T, T + 30]
    orders = pd.read_parquet(workdir / "orders.parquet")
    t0 = pd.Timestamp("2023-07-01", tz="UTC")
    window = orders[(orders["order_ts"] > t0) & (orders["amount"] > 0)]
    window = window[window["order_ts"] <= t0 + pd.Timedelta(days=30)]
    at = pred[pred["cutoff_ts"] == t0]
    bought = at["customer_id"].isin(set(window["customer_id"].astype(str)))
    assert (at["no_order_30d"].astype(bool) == ~bought).all()


def test_train_registers_champion_and_a_worse_challenger_is_not_promoted(workdir):
    uri = f"sqlite:///{workdir / 'train.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    args = (
        "train",
        "--orders",
        "orders.parquet",
        "--as-of",
        "2023-12-01",
        "--horizon-days",
        str(H),
        *FAST,
    )
    first = run_cli(*args, cwd=workdir, env=env)
    assert first.returncode == 0, first.stderr
    assert "v1 (champion: first version" in first.stdout
    saved = list((workdir / "models").glob("*.joblib"))
    assert len(saved) == 1 and saved[0].with_suffix(".joblib.json").is_file()

    # one two-leaf tree from the base rate, forced: worse than anything the choice would make
    worse = run_cli(
        *args,
        "--set",
        "model.candidate=boosted",
        "--set",
        "model.n_estimators=1",
        "--set",
        "model.num_leaves=2",
        cwd=workdir,
        env=env,
    )
    assert worse.returncode == 0, worse.stderr
    assert "v2 (not promoted" in worse.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    champ = client.get_model_version_by_alias("winback-churn", "champion")
    assert str(champ.version) == "1"
    run = client.get_run(champ.run_id)
    assert run.data.params["horizon_days"] == str(H)
    assert run.data.metrics["backtest_auc"] > 0.6
    assert "git_commit" in run.data.tags or not (ROOT / ".git").exists()

    forced = run_cli(*args, "--set", "model.n_estimators=1", "--promote", cwd=workdir, env=env)
    assert forced.returncode == 0, forced.stderr
    assert str(client.get_model_version_by_alias("winback-churn", "champion").version) == "3"


def test_the_champion_comes_from_the_registry_wherever_train_ran(tmp_path, synth_frame):
    # train in one folder, move it away, score from another: only the store is needed
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    first = tmp_path / "first"
    first.mkdir()
    synth_frame.to_parquet(first / "orders.parquet")
    args = ("--orders", "orders.parquet", "--as-of", "2023-12-01", *FAST)
    trained = run_cli("train", "--horizon-days", str(H), *args, cwd=first,
                      env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    saved = next((first / "models").glob("*.joblib"))
    moved = first.rename(tmp_path / "moved")
    assert not saved.exists()  # the path train logged points nowhere now
    res = run_cli("score", *args, "--model", "champion", "--out", "exports", cwd=moved,
                  env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "with model registry v1" in res.stdout
    cached = list((moved / "models" / "registry" / "winback-churn" / "v1").glob("artifacts/*"))
    assert sorted(p.name for p in cached) == [saved.name, saved.name + ".json"]
    for folder in (tmp_path, moved, store):
        assert not (folder / "mlruns").exists()  # artifacts live with the store
    assert (store / "mlartifacts").is_dir()

    # what MLflow's users do: load the registry's champion and predict p_churn from features
    import mlflow

    from tests.conftest import orders_of
    from winback.model import load_model
    from winback.snapshots import build_snapshots

    snap = build_snapshots(orders_of(synth_frame, category="category", channel="channel"),
                           ["2023-12-01"], H, labels=False)  # fmt: skip
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/winback-churn@champion")
    got = served.predict(snap)
    assert list(got.columns) == ["p_churn"] and len(got) == len(snap)
    want = load_model(cached[0] if cached[0].suffix == ".joblib" else cached[1]).predict_proba(snap)
    assert np.allclose(got["p_churn"].to_numpy(), want[:, 1], rtol=0, atol=1e-12)
    assert got["p_churn"].between(0, 1).all() and got["p_churn"].nunique() > 10
    reqs = moved / "models" / "registry" / "winback-churn" / "v1" / "requirements.txt"
    pinned = reqs.read_text()
    assert "lightgbm==" in pinned and "winback" not in pinned  # its code travels with it


def test_train_refuses_too_little_data(workdir):
    res = run_cli(
        "train",
        "--orders",
        "orders.parquet",
        "--as-of",
        "2022-05-01",
        "--horizon-days",
        "90",
        "--no-track",
        cwd=workdir,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "Not enough data to train" in res.stderr
