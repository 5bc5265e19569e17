"""Out-of-time backtests: train on what was knowable at T, score T, evaluate on (T, T + H].

For an evaluation cutoff T the training snapshots sit at cutoffs ``T - H``, ``T - H - spacing``,
... (``n_cutoffs`` of them, none before the data has ``MIN_TRAINING_HISTORY_DAYS`` of history),
so every training label ends at or before T. Nothing after T reaches the model, the BG/NBD fit
or the features at T; orders after T are read only to label the evaluation rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from winback.atomic import atomic_path
from winback.cutoffs import normalize_cutoffs, training_cutoffs
from winback.evaluate import RfmLogit, baseline_scores, score_metrics
from winback.model import ChurnModel
from winback.orders import Orders
from winback.progress import Progress, tell
from winback.snapshots import build_snapshots, build_training_snapshots
from winback.timing import TIMING_DAYS, TIMING_INPUTS, p_no_order, reliability

__all__ = [
    "BacktestResult",
    "run_backtest",
    "timing_reliability",
    "write_backtest",
]

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    """Predictions and metrics of a backtest, per evaluation cutoff and pooled, and the
    model's choice of candidate at each cutoff."""

    predictions: pd.DataFrame
    metrics: dict[str, pd.DataFrame] = field(default_factory=dict)
    models: dict[str, ChurnModel] = field(default_factory=dict)
    training: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    timing: dict[str, dict] = field(default_factory=dict)  # :func:`timing_reliability`

    def table(self) -> pd.DataFrame:
        """Every metric row with its cutoff ('pooled' for all cutoffs together)."""
        return pd.concat({k: v for k, v in self.metrics.items()}, names=["cutoff", "score"])

    def choices(self) -> dict[str, dict]:
        """Per evaluation cutoff: the candidate the model chose, and every candidate's scores
        on the held-out customers that chose it."""
        return {key: m.choice() for key, m in self.models.items()}


def run_backtest(
    orders: Orders,
    as_of: Sequence[datetime | str] | str,
    horizon_days: int,
    lookback_days: int = 365,
    windows_days: Sequence[int] = (30, 90, 180, 365),
    spacing_days: int = 14,
    n_cutoffs: int = 24,
    model_params: dict | None = None,
    n_boot: int = 500,
    random_state: int = 42,
    progress: Progress | None = None,
) -> BacktestResult:
    """Backtest the churn model and the baselines at each evaluation cutoff (rolling origin).

    ``progress(stage, done, total)`` hears of the snapshots, each BG/NBD fit, the boosting
    rounds and the evaluation.

    Returns
    -------
    BacktestResult
        ``predictions`` has ``customer_id, cutoff_ts, p_churn, churned`` (empty where the data
        does not cover ``(T, T + H]``) and one column per baseline score.
    """
    t0 = time.perf_counter()
    evals = normalize_cutoffs(as_of)
    params = {
        "horizon_days": horizon_days,
        "lookback_days": lookback_days,
        "random_state": random_state,
        **(model_params or {}),
    }
    preds, metrics, models, training = [], {}, {}, {}
    for t in evals:
        key = f"{t:%Y-%m-%d}"

        def told(stage: str, done: int, total: int, key: str = key) -> None:
            tell(progress, f"{key}: {stage}", done, total)

        cuts = training_cutoffs(t, horizon_days, spacing_days, n_cutoffs, orders.first_ts)
        train = build_training_snapshots(
            orders,
            cuts,
            horizon_days,
            lookback_days,
            windows_days,
            observed_until=t,
            max_training_rows=params.get("max_training_rows"),
            holdout_share=params.get("holdout_share", 0.2),
            seed=random_state,
            progress=told,
        )
        log.info("%s: training on %s rows at %d cutoffs", key, f"{len(train):,}", len(cuts))
        model = ChurnModel(**params).fit(train, train["churned"], progress=told)
        log.info(
            "%s: chose %s (%d trees) over %s",
            key,
            model.candidate_,
            model.n_trees_,
            ", ".join(
                f"{n} (log loss {v['log_loss']:.4f})"
                for n, v in model.selection_.items()
                if n != model.candidate_
            ),
        )
        logit = RfmLogit(random_state=random_state).fit(train, train["churned"])
        del train
        labelled = t + timedelta(days=horizon_days) <= orders.last_ts
        test = build_snapshots(
            orders, [t], horizon_days, lookback_days, windows_days, labels=labelled
        )
        out = test[["customer_id", "cutoff_ts"]].copy()
        out["p_churn"] = model.predict_proba(test)[:, 1]
        out["churned"] = test["churned"].astype("boolean") if labelled else pd.NA
        for name, s in baseline_scores(test, logit).items():
            out[name] = s
        out = _with_timing(orders, out, test, t, horizon_days, lookback_days)
        preds.append(out)
        models[key], training[key] = model, model.training_cutoffs_
        if labelled:
            told(f"evaluating {len(out):,} customers", 0, 1)
            metrics[key] = _metrics(out, n_boot, random_state)
            told(f"evaluating {len(out):,} customers", 1, 1)
        else:
            log.warning(
                "%s: the data ends before %s + %d days; scored, not evaluated",
                key,
                key,
                horizon_days,
            )
    predictions = pd.concat(preds, ignore_index=True)
    done = predictions[predictions["churned"].notna()]
    if len(metrics) > 1:
        metrics["pooled"] = _metrics(done, n_boot, random_state)
    timing = timing_reliability(predictions)
    return BacktestResult(predictions, metrics, models, training, time.perf_counter() - t0, timing)


def _with_timing(
    orders: Orders,
    out: pd.DataFrame,
    test: pd.DataFrame,
    t: datetime,
    horizon_days: int,
    lookback_days: int,
) -> pd.DataFrame:
    """``out`` with each customer's chance of no order within each of :data:`TIMING_DAYS`
    (``p_no_order_<d>d``, :func:`winback.timing.p_no_order`) and, where the data covers
    ``(t, t + d]``, whether they placed none (``no_order_<d>d``)."""
    from winback.labels import build_labels

    inputs = [test[c].to_numpy(dtype=float) for c in TIMING_INPUTS]
    p = out["p_churn"].to_numpy(dtype=float)
    for d in TIMING_DAYS:
        out[f"p_no_order_{d}d"] = p_no_order(d, p, *inputs, horizon_days)
        if t + timedelta(days=d) <= orders.last_ts:
            seen = build_labels(orders, [t], d, lookback_days)
            none = out["customer_id"].map(seen.set_index("customer_id")["churned"])
            out[f"no_order_{d}d"] = none.astype("boolean")
        else:
            out[f"no_order_{d}d"] = pd.array([pd.NA] * len(out), dtype="boolean")
    return out


def timing_reliability(predictions: pd.DataFrame) -> dict[str, dict]:
    """Per horizon of :data:`TIMING_DAYS`, over the customers whose outcome is known: the
    ``customers``, the mean ``predicted`` chance of no order and the ``observed`` share, the
    ``ece`` (customer-weighted mean |gap| over ten bins) and the reliability ``table``
    (:func:`winback.timing.reliability`)."""
    found = {}
    for d in TIMING_DAYS:
        seen = predictions[predictions[f"no_order_{d}d"].notna()]
        if seen.empty:
            continue
        pred = seen[f"p_no_order_{d}d"].to_numpy(dtype=float)
        obs = seen[f"no_order_{d}d"].astype(bool).to_numpy()
        table = reliability(pred, obs)
        found[f"{d}d"] = {
            "customers": len(seen),
            "predicted": float(pred.mean()),
            "observed": float(obs.mean()),
            "ece": float((table["gap"].abs() * table["customers"]).sum() / len(seen)),
            "table": table.to_dict(orient="records"),
        }
    return found


def _metrics(pred: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    scores = {"model": pred["p_churn"].to_numpy()}
    for name in ("bgnbd", "logreg", "rfm", "recency"):
        scores[name] = pred[name].to_numpy()
    y = pred["churned"].astype(bool).to_numpy()
    table = score_metrics(y, scores, n_boot=n_boot, seed=seed)
    table.insert(0, "customers", len(pred))
    table.insert(1, "churn_rate", float(np.mean(y)))
    return table


def _jsonable(table: pd.DataFrame) -> dict:
    return {
        score: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
        for score, row in table.iterrows()
    }


def write_backtest(result: BacktestResult, out_dir: str | Path, params: dict) -> list[Path]:
    """Write predictions, metrics and plots to ``out_dir``; return the files written.

    ``predictions.parquet``, ``metrics.json`` (per cutoff and pooled, with ``params`` and the
    training cutoffs), and for the last evaluated cutoff (or the pooled predictions)
    ``gains.png``, ``calibration.png`` and ``importance.png``.
    """
    from winback.plots import plot_calibration, plot_gains, plot_importance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with atomic_path(out / "predictions.parquet") as tmp:
        result.predictions.to_parquet(tmp, index=False)
    files.append(out / "predictions.parquet")
    doc = {
        "params": params,
        "training_cutoffs": result.training,
        "models": result.choices(),
        "metrics": {k: _jsonable(v) for k, v in result.metrics.items()},
        "timing": result.timing,
        "seconds": round(result.seconds, 3),
    }
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
    files.append(out / "metrics.json")

    done = result.predictions[result.predictions["churned"].notna()]
    if len(done):
        y = done["churned"].astype(bool).to_numpy()
        scores = {
            n: done[c].to_numpy()
            for n, c in (
                ("model", "p_churn"),
                ("bgnbd", "bgnbd"),
                ("logreg", "logreg"),
                ("rfm", "rfm"),
                ("recency", "recency"),
            )
        }
        probs = {k: scores[k] for k in ("model", "bgnbd", "logreg")}
        for name, ax in (
            ("gains.png", plot_gains(y, scores)),
            ("calibration.png", plot_calibration(y, probs)),
        ):
            with atomic_path(out / name) as tmp:
                ax.figure.savefig(tmp, dpi=110, format="png")
            files.append(out / name)
    last = list(result.models.values())[-1]
    ax = plot_importance(last.feature_importance())
    with atomic_path(out / "importance.png") as tmp:
        ax.figure.savefig(tmp, dpi=110, format="png")
    files.append(out / "importance.png")
    return files
