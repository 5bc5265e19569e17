"""Jobs: the steps of ``train`` and ``score`` put together, for the CLI and the demo.

cli -> jobs -> core: a job takes validated orders and a config, calls the library, writes its
files and (for training) tracks the run; it prints nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from winback import __version__
from winback.backtest import BacktestResult, run_backtest, training_cutoffs, write_backtest
from winback.campaigns import suppressed
from winback.config import Config
from winback.errors import DataError
from winback.evaluate import plot_profit_curve
from winback.export import export_lists, previous_export, write_csv
from winback.model import ChurnModel, load_model, save_model
from winback.orders import Orders
from winback.profile import check_sufficiency
from winback.scoring import add_reasons, build_lists, delta, profit_curve, score_customers
from winback.snapshots import build_snapshots

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "ScoreResult", "run_params", "backtest_job", "train_job", "score_job"]


def run_params(cfg: Config, **extra) -> dict:
    """The settings a run is logged with."""
    return {
        "horizon_days": cfg.labels.horizon_days,
        "lookback_days": cfg.features.lookback_days,
        "training": cfg.training.model_dump(),
        "model": cfg.model.model_dump(),
        "random_state": cfg.random_state,
        **extra,
    }


def backtest_job(
    orders: Orders,
    cfg: Config,
    cutoffs: list[datetime],
    on_step: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Backtest the configured model and the baselines at each cutoff (see run_backtest)."""
    return run_backtest(
        orders,
        cutoffs,
        cfg.labels.horizon_days,
        cfg.features.lookback_days,
        cfg.features.windows_days,
        cfg.training.spacing_days,
        cfg.training.n_cutoffs,
        cfg.model_params(),
        cfg.evaluation.n_bootstrap,
        cfg.random_state,
        on_step=on_step,
    )


@dataclass
class TrainResult:
    model: ChurnModel
    path: Path
    backtest: BacktestResult
    cutoffs: list[datetime]
    n_rows: int
    seconds: float
    promotion: object | None = None  # tracking.Promotion when tracked
    tracking_uri: str | None = None


def train_job(
    orders: Orders,
    cfg: Config,
    as_of: datetime | None = None,
    track: bool = True,
    promote: bool = False,
    tracking_uri: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Gate, backtest at T - H, train on every training cutoff up to T - H, save, register."""
    step = on_step or (lambda _d, _t: None)
    t = as_of or orders.last_ts.replace(hour=0, minute=0, second=0, microsecond=0)
    h, lb = cfg.labels.horizon_days, cfg.features.lookback_days
    check_sufficiency(orders, t, h, lb, cfg.sufficiency)
    t0 = time.perf_counter()
    eval_at = t - timedelta(days=h)
    step(1, 4)
    bt = backtest_job(orders, cfg, [eval_at])
    step(2, 4)
    cuts = training_cutoffs(
        t, h, cfg.training.spacing_days, cfg.training.n_cutoffs, orders.first_ts
    )
    snaps = build_snapshots(orders, cuts, h, lb, cfg.features.windows_days, observed_until=t)
    step(3, 4)
    model = ChurnModel(horizon_days=h, **cfg.model_params()).fit(snaps, snaps["churned"])
    model.data_fingerprint_ = orders.fingerprint()
    step(4, 4)
    name = f"{cfg.tracking.model_name}-{t:%Y%m%d}-h{h}-{datetime.now(UTC):%Y%m%dT%H%M%S}.joblib"
    path = save_model(model, Path(cfg.models_dir) / name)
    result = TrainResult(model, path, bt, cuts, len(snaps), time.perf_counter() - t0)
    if track:
        from winback.tracking import log_training
        from winback.tracking import tracking_uri as resolve

        uri = resolve(tracking_uri or cfg.tracking.uri)
        files = write_backtest(bt, Path(cfg.models_dir) / (name + ".backtest"), run_params(cfg))
        files.append(path.with_suffix(path.suffix + ".json"))
        result.promotion = log_training(
            uri,
            cfg.tracking.experiment,
            cfg.tracking.model_name,
            model,
            snaps.head(200),
            run_params(cfg, as_of=f"{t:%Y-%m-%d}", model_file=str(path.resolve())),
            bt.metrics,
            files,
            orders.fingerprint(),
            f"T={eval_at:%Y-%m-%d},H={h},L={lb}",
            promote=promote,
        )
        result.tracking_uri = uri
    return result


@dataclass
class ScoreResult:
    folder: Path
    scores: pd.DataFrame
    lists: dict[str, pd.DataFrame]
    as_of: datetime
    model_version: str


def score_job(
    orders: Orders,
    cfg: Config,
    out: Path,
    as_of: datetime | None = None,
    model: str = "champion",
    tracking_uri: str | None = None,
    wait_seconds: float = 0.0,
    force: bool = False,
) -> ScoreResult:
    """Score as of a date with the champion (or a model file) and export the lists atomically."""
    t0 = time.perf_counter()
    run_id, version = "", ""
    if model == "champion":
        from winback.tracking import champion_model_file
        from winback.tracking import tracking_uri as resolve

        path, version, run_id = champion_model_file(
            resolve(tracking_uri or cfg.tracking.uri), cfg.tracking.model_name
        )
    else:
        path = Path(model)
    churn_model = load_model(path)
    version = version or path.name
    t = as_of or orders.last_ts
    key = f"{t:%Y-%m-%d}"
    camp = cfg.campaigns
    scored = score_customers(
        orders, churn_model, t, camp, cfg.features.windows_days, model_version=str(version)
    )
    scores, drift = scored.scores, scored.drift
    worst = max(drift, key=drift.get) if drift else None
    if worst and drift[worst] > cfg.drift.fail_psi and not force:
        raise DataError(
            f"Not published: the data drifted from the model's training data (population "
            f"stability index of {worst} {drift[worst]:.2f} > drift.fail_psi "
            f"{cfg.drift.fail_psi}; all: "
            + ", ".join(f"{k} {v:.2f}" for k, v in drift.items())
            + "). Check the orders, retrain, or pass --force to publish anyway."
        )
    for name, psi in drift.items():
        if psi > cfg.drift.warn_psi:
            log.warning(
                "drift: population stability index of %s is %.2f (warn above %.2f)",
                name,
                psi,
                cfg.drift.warn_psi,
            )
    contacts = (
        _read_table(camp.contact_history, ["customer_id", "contacted_at"], "contact_history")
        if camp.contact_history
        else None
    )
    opted = (
        _read_table(camp.opt_out, ["customer_id"], "opt_out")["customer_id"]
        if camp.opt_out
        else None
    )
    why = suppressed(scores["customer_id"], pd.Timestamp(t), contacts, camp.cooldown_days, opted)
    scores["suppressed"] = why
    lists = add_reasons(scored, churn_model, build_lists(scores, camp, why), camp.reasons_method)
    curve = profit_curve(scores, why)
    prev = previous_export(out, key)
    old = None
    if prev is not None:
        old = {n: pd.read_parquet(prev / f"{n}.parquet") for n in lists}
    changes = delta(lists, old)

    def write_png(path: Path) -> None:
        plot_profit_curve(curve).figure.savefig(path, dpi=110, format="png")

    extras = {
        "delta.csv": lambda p: write_csv(changes, p),
        "profit_curve.csv": lambda p: write_csv(curve, p),
        "profit_curve.png": write_png,
    }
    manifest = {
        "as_of": t.isoformat(),
        "input": orders.fingerprint(),
        "config_sha256": hashlib.sha256(cfg.model_dump_json().encode()).hexdigest(),
        "model_version": str(version),
        "model_file": str(path),
        "model_sha256": json.loads(path.with_suffix(path.suffix + ".json").read_text())["sha256"],
        "mlflow_run": run_id or None,
        "rows": {name: len(frame) for name, frame in lists.items()} | {"scores": len(scores)},
        "suppressed": {
            "opted_out": int((why == "opted out").sum()),
            "cooldown": int(why.str.startswith("contacted", na=False).sum()),
        },
        "previous_export": prev.name if prev else None,
        "drift_psi": {k: round(v, 6) for k, v in drift.items()},
        "drift_forced": bool(force and worst and drift[worst] > cfg.drift.fail_psi),
        "delta": {c: int((changes["change"] == c).sum()) for c in ("entered", "left")},
        "winback_version": __version__,
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    folder = export_lists(out, key, lists, scores, manifest, wait_seconds, extras)
    return ScoreResult(folder, scores, lists, t, str(version))


def _read_table(path: str, columns: list[str], setting: str) -> pd.DataFrame:
    """A small side table (contacts, opt-outs) from CSV or Parquet, with the columns checked."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"campaigns.{setting} points at {p}, which does not exist.")
    frame = pd.read_parquet(p) if p.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(p)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"campaigns.{setting} ({p}) lacks column(s) {missing}; it has "
            f"{list(frame.columns)[:10]}. Rename them to {columns}."
        )
    return frame
