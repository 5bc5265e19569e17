"""MLflow tracking: with :mod:`winback.pyfunc` (the model as MLflow serves it), the only
module that imports mlflow.

Runs log their params, metrics (model and baselines: ``<score>.<metric>`` at each evaluation
cutoff's step, the cutoff's date as a number, and ``pooled.<score>.<metric>``, so metric names
stay the same from run to run and runs compare in the UI), plots, the data fingerprint and the
git commit. ``train`` also logs the model as a pyfunc (it predicts ``p_churn``; its signature,
an input example, the model file with its checksum, winback's code and pinned requirements)
and registers it; the alias ``champion`` marks the version production scores with, read from
the registry (``models:/<name>/<version>``) so that scoring needs only the tracking URI. A new
version takes the alias only when it beats the champion on the same backtest (same evaluation
cutoff and horizon), or when promotion is forced. A SQLite store keeps its artifacts beside its
database file (``mlartifacts/``), never in the working folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
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


#: Seconds a database store gets to answer one connection before the command gives up.
CONNECT_TIMEOUT_S = 10


def _reachable_database(uri: str) -> None:
    """Fail at once when a database store (PostgreSQL, MySQL...) does not answer: MLflow itself
    retries a refused connection ten times with a growing wait, about 100 s in all, before it
    says anything. One connection, with a timeout, tells the same thing in a second."""
    try:
        import sqlalchemy
        from sqlalchemy.engine import make_url
    except ImportError:  # MLflow needs SQLAlchemy for database stores; let it say so
        return
    try:
        url = make_url(uri)
    except sqlalchemy.exc.ArgumentError:
        return  # not a SQLAlchemy URL (http, databricks...): MLflow reads it
    backend = url.get_backend_name()
    if backend not in {"postgresql", "mysql", "mariadb", "mssql"}:
        return  # SQLite is checked as a file; http and others are MLflow's to read
    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if backend != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeout, poolclass=sqlalchemy.NullPool)
    except Exception:  # noqa: BLE001 - an unknown dialect or missing driver: MLflow says which
        return
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 - refused, unknown host, wrong password...
        raise _unreachable(uri, exc) from None
    finally:
        engine.dispose()


def writable_store(uri: str) -> None:
    """Fail at once, not after MLflow's retries, when the store cannot be used: a SQLite
    store's file (or its folder) is tried for real, which also tells a read-only mount; a
    database store gets one connection."""
    db = _sqlite_file(uri)
    if db is None:
        _reachable_database(uri)
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


#: The metrics logged for the model and each baseline.
METRIC_NAMES = ("auc", "auc_lo", "auc_hi", "pr_auc", "brier", "ece", "lift_10", "capture_10",
                "lift_20", "capture_20", "auc_minus_bgnbd")  # fmt: skip


def cutoff_step(cutoff: str) -> int:
    """The MLflow step of an evaluation cutoff: its date as a number (1998-03-31 -> 19980331),
    so metric names stay the same from run to run and the UI orders cutoffs by date."""
    return int(cutoff.replace("-", ""))


def _metric_steps(metrics: dict[str, pd.DataFrame]) -> dict[int | None, dict[str, float]]:
    """Per step (an evaluation cutoff's :func:`cutoff_step`; None for the pooled metrics, named
    ``pooled.<score>.<metric>``): ``<score>.<metric>`` -> value."""
    out: dict[int | None, dict[str, float]] = {}
    for cutoff, table in metrics.items():
        step = None if cutoff == "pooled" else cutoff_step(cutoff)
        prefix = "pooled." if step is None else ""
        for score, row in table.iterrows():
            for name in METRIC_NAMES:
                value = row.get(name)
                if value is not None and pd.notna(value):
                    out.setdefault(step, {})[f"{prefix}{score}.{name}"] = float(value)
    return out


def _log_metric_steps(mlflow, steps: dict[int | None, dict[str, float]]) -> None:
    for step, values in steps.items():
        mlflow.log_metrics(values, step=step or 0)


def _log_choices(mlflow, choices: dict[str, dict] | None) -> None:
    """The candidate each model chose (a tag per cutoff) and every candidate's scores on the
    held-out customers that chose it: metrics ``candidates.<name>.<score>`` and ``n_trees`` at
    each evaluation cutoff's step, ``production.candidates.<name>.<score>`` for the model
    ``train`` saves."""
    steps: dict[int | None, dict[str, float]] = {}
    for cutoff, c in (choices or {}).items():
        production = cutoff == "production"
        tag = "production" if production else cutoff.replace("-", "")
        mlflow.set_tag(f"winback.candidate.{tag}", c["candidate"])
        prefix = "production." if production else ""
        values = steps.setdefault(None if production else cutoff_step(cutoff), {})
        for name, scores in c["candidates"].items():
            for k in ("log_loss", "auc", "brier", "lift_10"):
                values[f"{prefix}candidates.{name}.{k}"] = float(scores[k])
        values[f"{prefix}n_trees"] = float(c["n_trees"])
    _log_metric_steps(mlflow, steps)


def _log_common(mlflow, params, metrics, files, fingerprint, kind):
    mlflow.set_tag("winback.kind", kind)
    commit = _git_commit()
    if commit:
        mlflow.set_tag("git_commit", commit)
    mlflow.log_params(_flat_params(params))
    for k, v in (fingerprint or {}).items():
        mlflow.set_tag(f"data.{k}", str(v))
    cutoffs = sorted(k for k in metrics if k != "pooled")
    if cutoffs:
        mlflow.set_tag("winback.cutoffs", ",".join(cutoffs))
    _log_metric_steps(mlflow, _metric_steps(metrics))
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
    timing: dict[str, dict] | None = None,
) -> str:
    """Log a backtest run (with the candidate chosen at each cutoff and the next-order
    chances' calibration per horizon, ``timing_<d>d_ece`` and the like); return its run id."""
    mlflow = _mlflow(uri, experiment)
    with mlflow.start_run(run_name="backtest") as run:
        _log_common(mlflow, params, metrics, files, fingerprint, "backtest")
        _log_choices(mlflow, choices)
        for days, t in (timing or {}).items():
            for name in ("predicted", "observed", "ece"):
                mlflow.log_metric(f"timing_{days}_{name}", float(t[name]))
        return run.info.run_id


def _log_pyfunc(mlflow, model_file: Path, signature, example: pd.DataFrame):
    """Log the churn model as an MLflow pyfunc: its file and metadata, winback's code, the
    requirements, the signature and an input example."""
    import winback
    from winback.pyfunc import ChurnPyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ChurnPyfunc(),
        artifacts={
            "model": str(model_file),
            "metadata": str(model_file.with_suffix(model_file.suffix + ".json")),
        },
        code_paths=[str(Path(winback.__file__).parent)],
        pip_requirements=model_requirements(),
        signature=signature,
        input_example=example.head(3),
    )


@dataclass(frozen=True)
class Promotion:
    """What happened to the ``champion`` alias."""

    run_id: str
    version: str
    promoted: bool
    reason: str


def model_requirements() -> list[str]:
    """winback's dependencies pinned to the installed versions: what the logged model needs to
    load and predict in a fresh environment (MLflow adds itself)."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    out = []
    for req in requires("winback") or []:
        if ";" in req:  # an extra (spark, db, dev): not needed to predict
            continue
        name = re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0]
        if name.lower() == "mlflow":
            continue
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(req)
    return out


def log_training(
    uri: str,
    experiment: str,
    model_name: str,
    model,
    model_file: Path,
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
    x = sample[model.features_]  # the types build_snapshots gives, so its frames predict
    signature = infer_signature(x, pd.DataFrame({"p_churn": model.predict_proba(sample)[:, 1]}))
    auc = float(next(iter(metrics.values())).loc["model", "auc"]) if metrics else float("nan")
    with mlflow.start_run(run_name="train") as run:
        _log_common(mlflow, params, metrics, files, fingerprint, "train")
        _log_choices(mlflow, {"production": model.choice(), **(choices or {})})
        mlflow.set_tag("winback.backtest_key", backtest_key)
        mlflow.log_metric("backtest_auc", auc)
        model_file = Path(model_file)
        with warnings.catch_warnings():
            # the signature is given below, so MLflow's advice to infer one from type hints
            # does not apply
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method")
            info = _log_pyfunc(mlflow, model_file, signature, x)
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


def champion_model_file(uri: str, model_name: str, cache: Path) -> tuple[Path, str, str]:
    """(local model file, version, run id) of the version with the ``champion`` alias.

    The model file and its checksummed metadata are read from the registry (the artifacts of
    ``models:/<name>/<version>``) into ``cache/<name>/v<version>/`` once, so a scheduler on
    another machine needs only the tracking URI, and moving the folder ``train`` ran in
    changes nothing. A version logged by an older winback, without those artifacts, is read
    from the file ``train`` saved (a param of its run). Looking for a champion never creates a
    store or an experiment.
    """
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        raise WinbackError(
            f"No MLflow store at {db}, so no '{CHAMPION}' model: train one with "
            "'winback train' (or set tracking.uri), or pass --model PATH to a saved model."
        )
    if db is None:
        _reachable_database(uri)
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except Exception as exc:  # noqa: BLE001 - the registry says no in several ways
        if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
            raise _unreachable(uri, exc) from None
        raise WinbackError(
            f"No '{CHAMPION}' version of model '{model_name}' in {mask_url(uri)}; train one "
            "with 'winback train', or pass --model PATH to a saved model."
        ) from None
    path = _registry_model_file(client, uri, model_name, str(mv.version), Path(cache))
    if path is None:  # logged before the model file was an artifact of the model
        param = client.get_run(mv.run_id).data.params.get("model_file")
        if not param:
            raise WinbackError(
                f"The champion v{mv.version} of '{model_name}' holds no winback model file; "
                "pass --model PATH, or train and promote a new version."
            )
        path = Path(param)
    return path, str(mv.version), mv.run_id


def _registry_model_file(client, uri: str, model_name: str, version: str, cache: Path):
    """The model file of a registered version, downloaded into the cache once (None when the
    version holds no winback model file)."""
    import shutil
    import tempfile

    import mlflow

    dest = cache / model_name / f"v{version}"
    found = sorted(dest.glob("artifacts/*.joblib")) if dest.is_dir() else []
    if found:
        return found[0]
    source = client.get_model_version_download_uri(model_name, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=dest.parent))
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp)))
        if not any(root.glob("artifacts/*.joblib")):
            return None
        shutil.rmtree(dest, ignore_errors=True)
        root.rename(dest)  # whole or not at all
    except Exception as exc:  # noqa: BLE001 - an artifact store out of reach, a missing file
        raise WinbackError(
            f"The champion v{version} of '{model_name}' could not be read from the registry "
            f"({type(exc).__name__}: {scrub(str(exc))[:200]}); check that the artifact store "
            "is reachable from here, or pass --model PATH."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(dest.glob("artifacts/*.joblib"))[0]


def find_champion(uri: str, model_name: str, cache: Path) -> tuple[Path, str, str] | None:
    """Like :func:`champion_model_file`, but ``None`` when there is no champion (or no store:
    a SQLite store that does not exist is not created)."""
    try:
        return champion_model_file(uri, model_name, cache)
    except WinbackError:
        return None


def log_measure(
    uri: str,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    files: Iterable[Path],
    fingerprint: dict[str, Any] | None = None,
    kind: str = "measure",
) -> str:
    """Log a campaign readout (or, with ``kind='learn'``, what past campaigns taught) as a run
    of its own; return its run id."""
    mlflow = _mlflow(uri, experiment)
    with mlflow.start_run(run_name=f"{kind} {params.get('as_of', '')}".strip()) as run:
        _log_common(mlflow, params, {}, files, fingerprint, kind)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN is not logged
        return run.info.run_id
