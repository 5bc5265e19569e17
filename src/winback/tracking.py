"""MLflow tracking: the only module that imports mlflow.

Runs log their params, metrics (per cutoff and pooled, model and baselines), plots, the data
fingerprint and the git commit. ``train`` also logs the model with its input signature and
registers it; the alias ``champion`` marks the version production scores with. A new version
takes the alias only when it beats the champion on the same backtest (same evaluation cutoff and
horizon), or when promotion is forced.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from winback.atomic import check_writable
from winback.errors import WinbackError
from winback.secrets import check_url, mask_url, scrub, with_password

__all__ = [
    "tracking_uri",
    "writable_store",
    "log_backtest",
    "log_training",
    "champion_model_file",
    "find_champion",
    "log_measure",
    "Promotion",
    "CHAMPION",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(
    configured: str | None = None, password_env: str = "WINBACK_TRACKING_PASSWORD"
) -> str:
    """The tracking store to connect to: config, else ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db``. A database store's password is read from the environment variable
    ``password_env`` (never written in the config); show the URI only through
    :func:`winback.secrets.mask_url`."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    check_url(uri, "tracking.uri")
    return with_password(uri, os.environ.get(password_env))


def _git_commit() -> str | None:
    """The commit of the winback code that runs (when it runs from a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def _unreachable(uri: str, exc: BaseException) -> WinbackError:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return WinbackError(
        f"Cannot use the MLflow tracking store {mask_url(uri)} ({type(exc).__name__}: "
        f"{scrub(text, uri)}); check tracking.uri or MLFLOW_TRACKING_URI."
    )


def writable_store(uri: str) -> None:
    """Fail at once, not after MLflow's retries, when a SQLite store cannot be written: the
    file (or its folder) is tried for real, which also tells a read-only mount."""
    db = _sqlite_file(uri)
    if db is None:
        return
    if db.exists():
        try:
            with db.open("ab"):
                return
        except OSError as exc:
            raise WinbackError(
                f"The MLflow store {db} cannot be written ({exc.strerror}); make it writable "
                "or set tracking.uri (or MLFLOW_TRACKING_URI) to a writable place."
            ) from None
    try:
        if not db.parent.is_dir():
            raise WinbackError("not a folder")
        check_writable(db.parent)
    except WinbackError:
        raise WinbackError(
            f"Cannot create the MLflow store {db}: its folder {db.parent} does not exist or "
            "cannot be written; set tracking.uri (or MLFLOW_TRACKING_URI) to a writable place."
        ) from None


def _mlflow(uri: str, experiment: str):
    """MLflow pointed at the store, with ``experiment`` active. A new experiment of a SQLite
    store keeps its artifacts beside the database file (``mlartifacts/``), never in a
    ``./mlruns`` of whatever folder the command ran from."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    writable_store(uri)
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient()
        if client.get_experiment_by_name(experiment) is None:
            db = _sqlite_file(uri)
            where = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
            client.create_experiment(experiment, artifact_location=where)
        mlflow.set_experiment(experiment)
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one clear line
        raise _unreachable(uri, exc) from None
    return mlflow


def _flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{key}."))
        else:
            out[key] = str(v)[:500]
    return out


def _metric_dict(metrics: dict[str, pd.DataFrame]) -> dict[str, float]:
    out = {}
    for cutoff, table in metrics.items():
        tag = "pooled" if cutoff == "pooled" else cutoff.replace("-", "")
        for score, row in table.iterrows():
            for name in (
                "auc",
                "auc_lo",
                "auc_hi",
                "pr_auc",
                "brier",
                "ece",
                "lift_10",
                "capture_10",
                "lift_20",
                "capture_20",
                "auc_minus_bgnbd",
            ):
                value = row.get(name)
                if value is not None and pd.notna(value):
                    out[f"{tag}.{score}.{name}"] = float(value)
    return out


def _log_choices(mlflow, choices: dict[str, dict] | None) -> None:
    """The candidate each model chose (a tag per cutoff) and every candidate's scores on the
    held-out customers that chose it (metrics ``<cutoff>.candidates.<name>.<score>``)."""
    for cutoff, c in (choices or {}).items():
        tag = "production" if cutoff == "production" else cutoff.replace("-", "")
        mlflow.set_tag(f"winback.candidate.{tag}", c["candidate"])
        values = {}
        for name, scores in c["candidates"].items():
            for k in ("log_loss", "auc", "brier", "lift_10"):
                values[f"{tag}.candidates.{name}.{k}"] = float(scores[k])
        values[f"{tag}.n_trees"] = float(c["n_trees"])
        mlflow.log_metrics(values)


def _log_common(mlflow, params, metrics, files, fingerprint, kind):
    mlflow.set_tag("winback.kind", kind)
    commit = _git_commit()
    if commit:
        mlflow.set_tag("git_commit", commit)
    mlflow.log_params(_flat_params(params))
    for k, v in (fingerprint or {}).items():
        mlflow.set_tag(f"data.{k}", str(v))
    mlflow.log_metrics(_metric_dict(metrics))
    for f in files:
        mlflow.log_artifact(str(f))


def log_backtest(
    uri: str,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, pd.DataFrame],
    files: Iterable[Path],
    fingerprint: dict[str, Any] | None = None,
    choices: dict[str, dict] | None = None,
) -> str:
    """Log a backtest run (with the candidate chosen at each cutoff); return its run id."""
    mlflow = _mlflow(uri, experiment)
    with mlflow.start_run(run_name="backtest") as run:
        _log_common(mlflow, params, metrics, files, fingerprint, "backtest")
        _log_choices(mlflow, choices)
        return run.info.run_id


@dataclass(frozen=True)
class Promotion:
    """What happened to the ``champion`` alias."""

    run_id: str
    version: str
    promoted: bool
    reason: str


def log_training(
    uri: str,
    experiment: str,
    model_name: str,
    model,
    sample: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, pd.DataFrame],
    files: Iterable[Path],
    fingerprint: dict[str, Any] | None,
    backtest_key: str,
    promote: bool = False,
    choices: dict[str, dict] | None = None,
) -> Promotion:
    """Log a trained model, register it as a new version, and move ``champion`` if it wins.

    The comparison uses the model's backtest AUC at ``backtest_key`` (evaluation cutoff and
    horizon); the champion's run must have been backtested the same way.
    """
    mlflow = _mlflow(uri, experiment)
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient()
    x = sample[model.features_].astype(float)
    signature = infer_signature(x, model.predict_proba(sample)[:, 1])
    auc = float(next(iter(metrics.values())).loc["model", "auc"]) if metrics else float("nan")
    with mlflow.start_run(run_name="train") as run:
        _log_common(mlflow, params, metrics, files, fingerprint, "train")
        _log_choices(mlflow, {"production": model.choice(), **(choices or {})})
        mlflow.set_tag("winback.backtest_key", backtest_key)
        mlflow.log_metric("backtest_auc", auc)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=x.head(3),
            serialization_format="cloudpickle",
        )
        run_id = run.info.run_id
    version = mlflow.register_model(info.model_uri, model_name).version

    promoted, reason = False, ""
    try:
        champ = client.get_model_version_by_alias(model_name, CHAMPION)
    except Exception:  # noqa: BLE001 - no champion yet
        champ = None
    if promote:
        promoted, reason = True, "promotion forced (--promote)"
    elif champ is None:
        promoted, reason = True, "first version: no champion yet"
    else:
        champ_run = client.get_run(champ.run_id) if champ.run_id else None
        champ_key = champ_run.data.tags.get("winback.backtest_key") if champ_run else None
        champ_auc = champ_run.data.metrics.get("backtest_auc") if champ_run else None
        if champ_key != backtest_key or champ_auc is None:
            reason = (
                f"champion v{champ.version} was backtested differently ({champ_key}), not "
                f"comparable with {backtest_key}; kept it (use --promote to replace it)"
            )
        elif auc > champ_auc:
            promoted = True
            reason = f"backtest AUC {auc:.4f} beats champion v{champ.version} ({champ_auc:.4f})"
        else:
            reason = (
                f"backtest AUC {auc:.4f} does not beat champion v{champ.version} "
                f"({champ_auc:.4f}); kept the champion"
            )
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "winback.promoted", str(promoted))
    return Promotion(run_id=run_id, version=str(version), promoted=promoted, reason=reason)


def champion_model_file(uri: str, model_name: str) -> tuple[Path, str, str]:
    """(local model file, version, run id) of the version with the ``champion`` alias.

    The file is the one ``train`` saved (its path is a param of the run), so scoring loads the
    same checksummed model whether or not the tracking store is reachable later. Looking for a
    champion never creates a store or an experiment.
    """
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        raise WinbackError(
            f"No MLflow store at {db}, so no '{CHAMPION}' model: train one with "
            "'winback train' (or set tracking.uri), or pass --model PATH to a saved model."
        )
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except Exception as exc:  # noqa: BLE001 - the registry says no in several ways
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
            raise _unreachable(uri, exc) from None
        raise WinbackError(
            f"No '{CHAMPION}' version of model '{model_name}' in {mask_url(uri)}; train one "
            "with 'winback train', or pass --model PATH to a saved model."
        ) from None
    run = client.get_run(mv.run_id)
    path = run.data.params.get("model_file")
    if not path:
        raise WinbackError(
            f"The champion v{mv.version} of '{model_name}' has no model_file param; "
            "pass --model PATH."
        )
    return Path(path), str(mv.version), mv.run_id


def find_champion(uri: str, model_name: str) -> tuple[Path, str, str] | None:
    """Like :func:`champion_model_file`, but ``None`` when there is no champion (or no store:
    a SQLite store that does not exist is not created)."""
    try:
        return champion_model_file(uri, model_name)
    except WinbackError:
        return None


def log_measure(
    uri: str,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    files: Iterable[Path],
    fingerprint: dict[str, Any] | None = None,
) -> str:
    """Log a campaign readout as a run of its own; return its run id."""
    mlflow = _mlflow(uri, experiment)
    with mlflow.start_run(run_name=f"measure {params.get('as_of', '')}".strip()) as run:
        _log_common(mlflow, params, {}, files, fingerprint, "measure")
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN is not logged
        return run.info.run_id
