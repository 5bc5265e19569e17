"""Jobs: the steps of ``train`` and ``score`` put together, for the CLI and the demo.

cli -> jobs -> core: a job takes validated orders and a config, calls the library, writes its
files and (for training) tracks the run; it prints nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from winback import __version__, scoring
from winback.atomic import atomic_path, sha256_file
from winback.backtest import BacktestResult, run_backtest, write_backtest
from winback.campaigns import suppressed
from winback.carry import KEPT_DIR
from winback.config import Config
from winback.cutoffs import training_cutoffs
from winback.errors import DataError, UsageError
from winback.export import (
    export_lists,
    list_exports,
    list_parquet_files,
    previous_export,
    read_list_rows,
    read_lists,
    readme_text,
    write_csv,
)
from winback.measure import Readout, customer_outcomes, load_export, measure_campaign
from winback.model import ChurnModel, check_model_file, load_model, save_model
from winback.orders import Orders
from winback.plots import plot_profit_curve
from winback.profile import check_sufficiency
from winback.progress import Progress, tell
from winback.score_table import suppression_counts
from winback.scoring import (
    LIST_COLUMN_DOCS,
    CampaignList,
    add_reasons,
    add_uplift,
    build_lists,
    delta_rows,
    keep_features,
    listed_groups,
    profit_curve,
    score_customers,
)
from winback.secrets import mask_url
from winback.snapshots import build_snapshots, build_training_snapshots
from winback.uplift import UpliftModel

log = logging.getLogger(__name__)

MIN_READOUT_DAYS = 7  # the report reads out an export once a week of outcomes is in

__all__ = [
    "TrainResult",
    "ScoreResult",
    "MeasureResult",
    "ReportResult",
    "run_params",
    "backtest_job",
    "train_job",
    "ModelRef",
    "find_model",
    "score_job",
    "measure_job",
    "check_scoring",
    "validation_record",
    "readout_export",
    "write_readout",
    "report_job",
]


def _store(cfg: Config, override: str | None = None) -> str:
    """The tracking store to connect to (with its password from the environment)."""
    from winback.tracking import tracking_uri

    return tracking_uri(override or cfg.tracking.uri, cfg.tracking.password_env)


def check_tracking(cfg: Config, override: str | None = None) -> None:
    """Refuse, before any work, a local tracking store that cannot be written or a database
    store that does not answer (a run would otherwise fail only when it logs, after the
    training, and after MLflow's own retries)."""
    from winback.tracking import writable_store

    writable_store(_store(cfg, override))


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


@dataclass(frozen=True)
class StageTime:
    """One stage of a job as it ended: its name, wall seconds, and the process's peak resident
    memory so far (MB)."""

    name: str
    seconds: float
    peak_rss_mb: float


#: Called at the end of each stage of a job (see :data:`SCORE_STAGES`).
StageHook = Callable[[StageTime], None]

#: The stages of :func:`score_job`, :func:`train_job` and :func:`backtest_job`, in order
#: (``track`` only when the run is logged to MLflow).
SCORE_STAGES = ("model", "scores", "lists", "reasons", "changes", "export")
TRAIN_STAGES = ("gate", "backtest", "snapshots", "fit", "save", "track")
BACKTEST_STAGES = ("backtest", "write", "track")


class _Stages:
    """Times the named stages of a job and tells a hook as each ends."""

    def __init__(self, hook: StageHook | None):
        self.hook = hook

    @contextlib.contextmanager
    def __call__(self, name: str):
        import resource

        t = time.perf_counter()
        yield
        if self.hook is not None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux
            self.hook(StageTime(name, time.perf_counter() - t, peak))


@dataclass
class BacktestRun:
    """A backtest, the files written of it and its MLflow run (when asked for)."""

    result: BacktestResult
    files: list[Path]
    run_id: str | None = None
    tracking_uri: str | None = None  # masked


def backtest_job(
    orders: Orders,
    cfg: Config,
    cutoffs: list[datetime],
    *,
    out: Path | None = None,
    track: bool = False,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    progress: Progress | None = None,
    on_stage: StageHook | None = None,
) -> BacktestRun:
    """Backtest the configured model and the baselines at each cutoff.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    cfg : Config
        Horizon, lookback, training schedule, model and evaluation settings.
    cutoffs : list of datetime
        The evaluation cutoffs T: at each, the model trains on labels known at T (see
        :func:`winback.backtest.run_backtest`).
    out : Path, optional
        Where ``predictions.parquet``, ``metrics.json`` and the plots go; nothing is written
        when None.
    track : bool
        Log the run to MLflow (``tracking_uri``, else the config's store; ``experiment``, else
        the config's).
    progress : Progress, optional
        Told as each stage of the backtest advances.
    on_stage : StageHook, optional
        Told each stage's wall time and peak memory as it ends (:data:`BACKTEST_STAGES`:
        ``backtest``, ``write``, ``track``).

    Returns
    -------
    BacktestRun
        The result (predictions, metrics, the candidate chosen at each cutoff), the files and
        the MLflow run id.
    """
    stage = _Stages(on_stage)
    with stage("backtest"):
        result = run_backtest(
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
            progress=progress,
        )
    params = run_params(cfg, evaluation_cutoffs=[f"{c:%Y-%m-%d}" for c in cutoffs])
    with stage("write"):
        files = write_backtest(result, out, params) if out is not None else []
    run = BacktestRun(result, files)
    if track:
        with stage("track"):
            from winback.tracking import log_backtest

            uri = _store(cfg, tracking_uri)
            run.run_id = log_backtest(
                uri,
                experiment or cfg.tracking.experiment,
                params,
                result.metrics,
                files,
                orders.fingerprint(),
                result.choices(),
                result.timing,
            )
            run.tracking_uri = mask_url(uri)
    return run


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
    *,
    track: bool = True,
    promote: bool = False,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    on_stage: StageHook | None = None,
) -> TrainResult:
    """Train the model used at ``as_of``: gate, backtest at T - H, train, save, register.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    cfg : Config
        The whole configuration (sufficiency, training, model, tracking, models_dir).
    as_of : datetime, optional
        The date the model is for (default: the day of the last order). It trains on every
        training cutoff up to ``as_of - H``, whose labels are known by then.
    track : bool
        Register the model in MLflow and promote it when it beats the champion (``promote``:
        whatever it scores).
    progress : Progress, optional
        Told as each stage advances.
    on_stage : StageHook, optional
        Told each stage's wall time and peak memory as it ends (:data:`TRAIN_STAGES`).

    Returns
    -------
    TrainResult
        The model, its file (with a ``.json`` of metadata and checksum), its backtest at T - H
        and, when tracked, the promotion decision.

    Raises
    ------
    InsufficientDataError
        When the orders fail the sufficiency gate, with every shortfall at once.
    """
    t = as_of or orders.last_ts.replace(hour=0, minute=0, second=0, microsecond=0)
    h, lb = cfg.labels.horizon_days, cfg.features.lookback_days
    stage = _Stages(on_stage)
    with stage("gate"):
        check_sufficiency(orders, t, h, lb, cfg.sufficiency)
    t0 = time.perf_counter()
    eval_at = t - timedelta(days=h)

    def told(stage: str, done: int, total: int) -> None:
        tell(progress, f"production model: {stage}", done, total)

    with stage("backtest"):
        bt = backtest_job(orders, cfg, [eval_at], progress=progress).result
    cuts = training_cutoffs(
        t, h, cfg.training.spacing_days, cfg.training.n_cutoffs, orders.first_ts
    )
    with stage("snapshots"):
        snaps = build_training_snapshots(
            orders,
            cuts,
            h,
            lb,
            cfg.features.windows_days,
            observed_until=t,
            max_training_rows=cfg.model.max_training_rows,
            holdout_share=cfg.training.holdout_share,
            seed=cfg.random_state,
            progress=told,
        )
    with stage("fit"):
        model = ChurnModel(horizon_days=h, **cfg.model_params()).fit(
            snaps, snaps["churned"], progress=told
        )
        model.data_fingerprint_ = orders.fingerprint()
    with stage("save"):
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
        name = f"{cfg.tracking.model_name}-{t:%Y%m%d}-h{h}-{stamp}.joblib"
        path = save_model(model, Path(cfg.models_dir) / name)
    result = TrainResult(model, path, bt, cuts, len(snaps), time.perf_counter() - t0)
    if track:
        with stage("track"):
            from winback.tracking import log_training

            uri = _store(cfg, tracking_uri)
            files = write_backtest(bt, Path(cfg.models_dir) / (name + ".backtest"), run_params(cfg))
            files.append(path.with_suffix(path.suffix + ".json"))
            result.promotion = log_training(
                uri,
                cfg.tracking.experiment,
                cfg.tracking.model_name,
                model,
                path,
                snaps.head(200),
                run_params(cfg, as_of=f"{t:%Y-%m-%d}", model_file=str(path.resolve())),
                bt.metrics,
                files,
                orders.fingerprint(),
                f"T={eval_at:%Y-%m-%d},H={h},L={lb}",
                promote=promote,
                choices=bt.choices(),
            )
            result.tracking_uri = mask_url(uri)
    return result


@dataclass(frozen=True)
class ModelRef:
    """A model to score with: its file, and its registry version and run when it has them."""

    path: Path
    version: str
    run_id: str = ""

    @property
    def label(self) -> str:
        """How the lists and the report name the model: ``registry v<N>`` for a registered
        version, ``file <name>`` for a model file."""
        return f"registry v{self.version}" if self.run_id else f"file {self.path.name}"


def registry_cache(cfg: Config) -> Path:
    """Where models read from the registry are kept: ``<models_dir>/registry``."""
    return Path(cfg.models_dir) / "registry"


def find_model(cfg: Config, model: str = "champion", tracking_uri: str | None = None) -> ModelRef:
    """The champion of the registry (``model="champion"``) or a saved model file, checked to
    exist before any scoring work; looking for the champion never creates a store."""
    if model == "champion":
        from winback.tracking import champion_model_file

        path, version, run_id = champion_model_file(
            _store(cfg, tracking_uri), cfg.tracking.model_name, registry_cache(cfg)
        )
        check_model_file(path)
        return ModelRef(path, version, run_id)
    path = Path(model)
    if not path.is_file():
        raise DataError(
            f"The model file {path} does not exist; pass a file saved by 'winback train', or "
            "--model champion for the registry's champion."
        )
    check_model_file(path)
    return ModelRef(path, path.name)


@dataclass
class ScoreResult:
    folder: Path
    scores: pd.DataFrame  # every scored customer; on Spark, the listed ones (see n_scored)
    lists: dict[str, CampaignList]  # rows of ``scores``: ``lists[name].frame()`` copies one
    as_of: datetime
    model_version: str
    n_scored: int = 0  # customers scored (the rows of scores.parquet)


def score_job(
    orders: Orders,
    cfg: Config,
    out: Path,
    *,
    as_of: datetime | None = None,
    model: str | ModelRef = "champion",
    tracking_uri: str | None = None,
    wait_seconds: float = 0.0,
    force: bool = False,
    on_stage: StageHook | None = None,
) -> ScoreResult:
    """Score every customer as of a date and export the win-back lists atomically.

    Parameters
    ----------
    orders : Orders
        The validated orders (up to the as-of).
    cfg : Config
        Features, campaigns (groups, sizing, suppression), drift and tracking settings.
    out : Path
        The exports folder; the export goes to ``out/<as-of>`` (a link swapped atomically).
    as_of : datetime, optional
        The scoring date (default: the last order's).
    model : str or ModelRef
        ``champion`` (the registry's), a model file, or a :class:`ModelRef` found beforehand.
    wait_seconds : float
        How long to wait for another run holding the folder's lock.
    force : bool
        Publish even when the data drifted past ``drift.fail_psi``.
    on_stage : StageHook, optional
        Told each stage's wall time and peak memory as it ends.

    Returns
    -------
    ScoreResult
        The export's folder, every scored customer, the lists, the as-of and the model's label.

    Notes
    -----
    Runs as the stages of :data:`SCORE_STAGES`: ``model`` (find, load and check it against the
    orders; the orders' fingerprint), ``scores`` (features, BG/NBD, predictions, ranks,
    segments, drift), ``lists`` (suppression, sizing, control groups), ``reasons`` (for the
    listed customers), ``changes`` (profit curve and the delta against the previous export)
    and ``export`` (the files, written atomically).
    """
    t0 = time.perf_counter()
    cfg, rate_sources = learned_save_rates(cfg)  # before any work: a bad file fails at once
    ranking = list_ranking(cfg)
    stage = _Stages(on_stage)
    with stage("model"):
        ref = model if isinstance(model, ModelRef) else find_model(cfg, model, tracking_uri)
        churn_model = load_model(ref.path)
        # on Spark the executors score, with LightGBM's predictor
        if cfg.engine.compiled_trees and cfg.engine.name == "duckdb":
            churn_model.compile_trees(ref.path)
        log.debug("predictor: %s", churn_model.predictor)
        t = as_of or orders.last_ts
        warnings = check_scoring(orders, cfg, churn_model, t)
        for w in warnings:
            log.warning("warning: %s", w)
        # the orders' fingerprint for the manifest, a pass over them: taken now, while the
        # engine holds them, and not after the scores, whose table would then share memory
        # with the engine's reading them back (700 MB more at the peak of 50M orders)
        fingerprint = orders.fingerprint()
    key = f"{t:%Y-%m-%d}"
    camp = cfg.campaigns
    with stage("scores"):
        carry = cfg.engine.carry_features and orders.engine().name == "duckdb"
        scored = score_customers(
            orders,
            churn_model,
            t,
            camp,
            cfg.features.windows_days,
            model_version=ref.label,
            keep_in=out / KEPT_DIR if carry else None,
            uplift_model=ranking.model,
        )
        scores, drift = scored.scores, scored.drift
        forced = _check_drift(drift, cfg, force)
    with contextlib.ExitStack() as hold:
        if scored.features_path is not None:  # scored out of core, on DuckDB
            # the orders are not needed again: DuckDB's memory goes to the lists
            hold.enter_context(orders.engine().memory_lent())
        with stage("lists"):
            contacts, opted = _suppression_files(camp)
            order_by = "p_churn" if ranking.model is None else "expected_gain"
            if scored.population is not None:  # on Spark: chosen where the scores are kept
                scored.scores = scores = scored.population.choose(contacts, opted, order_by)
                why = scores["suppressed"]
            else:
                why = suppressed(
                    scores["customer_id"],
                    pd.Timestamp(t),
                    contacts,
                    camp.cooldown_days,
                    opted,
                    scores["days_since_last_order"],
                    camp.recent_days,
                ).astype("category")  # a few texts over millions of customers: a byte each
                scores["suppressed"] = why
                if ranking.model is not None:
                    add_uplift(scored, ranking.model, camp, why)
            lists = build_lists(scores, camp, why, order_by)  # rows of the score table
            scores["group"] = listed_groups(scores, lists)  # NA: not listed
            scoring.release_memory()  # each step's leftovers go back before the next one
        with stage("reasons"):
            add_reasons(scored, churn_model, lists, camp.reasons_method)
            scoring.release_memory()
        with stage("changes"):
            population = scored.population
            if population is not None:
                curve = population.curve
                counts = population.counts
            else:
                curve = profit_curve(scores, why, camp.min_p_churn)
                counts = suppression_counts(scores, why, camp.min_p_churn)
            scoring.release_memory()
            prev = previous_export(out, key)
            # of the previous lists, their ids; the rest of a row only for who left
            before = read_lists(prev, ["customer_id"]) if prev is not None else None
            # rows of the lists and of the previous export, read as the file is written
            changes = delta_rows(lists, before, partial(read_list_rows, prev))
            del before
            scoring.release_memory()
        with stage("export"):
            # the score table to export: on Spark, kept there and read a block at a time
            table = scores if population is None else population.rows(scores)
            manifest = {
                "as_of": t.isoformat(),
                "horizon_days": int(churn_model.horizon_days),  # the window measure reads out
                "input": fingerprint,
                "validation": validation_record(orders),
                "warnings": warnings,
                "config_sha256": hashlib.sha256(cfg.model_dump_json().encode()).hexdigest(),
                "model_version": ref.label,
                "model_registry_version": str(ref.version) if ref.run_id else None,
                "model_file": str(ref.path),
                "predictor": churn_model.predictor,
                "model_sha256": json.loads(
                    ref.path.with_suffix(ref.path.suffix + ".json").read_text()
                )["sha256"],
                "mlflow_run": ref.run_id or None,
                "rows": {name: len(lst) for name, lst in lists.items()} | {"scores": len(table)},
                "suppressed": {k: counts[k] for k in ("opted_out", "cooldown", "recent_buyer")},
                "below_min_p_churn": counts["below_min_p_churn"],
                "extrapolated_listed": {
                    name: int(lst["extrapolated"].sum()) for name, lst in lists.items()
                },
                "sizing": sizing_record(cfg, rate_sources),
                "ranking": ranking.record(camp.rank_by),
                "previous_export": prev.name if prev else None,
                "features": scored.carry.record() if scored.carry else None,
                "drift_psi": {k: round(v, 6) for k, v in drift.items()},
                "drift_forced": forced,
                "delta": {c: changes.count(c) for c in ("entered", "left")},
                "winback_version": __version__,
                "wall_seconds": round(time.perf_counter() - t0, 3),
            }

            def write_png(path: Path) -> None:
                plot_profit_curve(curve).figure.savefig(path, dpi=110, format="png")

            def write_readme(path: Path) -> None:
                path.write_text(readme_text(LIST_COLUMN_DOCS, manifest), encoding="utf-8")

            tables = {"delta.csv": changes, "profit_curve.csv": curve}
            extras = {"profit_curve.png": write_png, "README.txt": write_readme}
            folder = export_lists(out, key, lists, table, manifest, wait_seconds, extras, tables)
            keep_features(scored, out, wait_seconds)  # for the next night
    return ScoreResult(folder, scores, lists, t, ref.label, len(table))


def _check_drift(drift: dict[str, float], cfg: Config, force: bool) -> bool:
    """Refuse to publish lists of drifted data (unless forced), warn above the warning level;
    True when publishing was forced past the refusal."""
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
    return bool(force and worst and drift[worst] > cfg.drift.fail_psi)


def _suppression_files(camp) -> tuple[pd.DataFrame | None, pd.Series | None]:
    """The rows of the configured contact history and opt-out files (None where there is
    none), for :func:`winback.campaigns.suppressed`."""
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
    return contacts, opted


#: Where a group's save rate comes from when nothing was learned about it.
ASSUMED_SAVE_RATE = "campaigns.groups in the config: an assumption"


def sizing_record(cfg: Config, sources: dict[str, str] | None = None) -> dict:
    """What the list sizing assumed, for the manifest and the export's README.txt; ``sources``
    says where each group's save rate came from (:func:`learned_save_rates`)."""
    camp = cfg.campaigns
    gain = (
        "expected_gain = p_churn x save_rate x value - contact_cost - offer_cost x (1 - p_churn "
        "+ p_churn x save_rate): every contact costs contact_cost, the offer is paid by the "
        "contacted customers who buy, and save_rate is the share of would-be churners a contact "
        "keeps"
    )
    chosen = {
        "profit": "a group's list holds its customers with expected_gain > 0, highest first",
        "top_k": f"a group's list holds its {camp.top_k} riskiest customers",
        "threshold": f"a group's list holds its customers with p_churn >= {camp.threshold}",
    }[camp.size_by]
    return {
        "method": camp.size_by,
        "rule": f"{chosen}, up to its capacity; {gain}",
        "value": f"spend over the last {camp.value_days} days; with no purchase in them, what "
        f"the customer spent per {camp.value_days} days while buying",
        "min_p_churn": camp.min_p_churn,
        "recent_days": camp.recent_days,
        "currency": camp.currency,
        "groups": {
            g.name: {
                "list": g.list,
                "save_rate": g.save_rate,
                "save_rate_source": (sources or {}).get(g.name, ASSUMED_SAVE_RATE),
                "contact_cost": g.contact_cost,
                "offer_cost": g.offer_cost,
                "capacity": g.capacity,
            }
            for g in camp.groups
        },
    }


#: Scoring this many days after the last order is allowed, with a warning: the file is stale.
STALE_DAYS = 31


def check_scoring(orders: Orders, cfg: Config, model: ChurnModel, as_of: datetime) -> list[str]:
    """Refuse what cannot give true lists, in one line each; return the warnings for what is
    allowed but worth knowing (they also go into the manifest)."""
    first, last = orders.first_ts, orders.last_ts
    h = int(model.horizon_days)
    if as_of < first:
        raise DataError(
            f"--as-of {as_of:%Y-%m-%d} is before the first order ({first:%Y-%m-%d}): there is "
            "nobody to score. Give a date within the orders."
        )
    reach = max(int(model.lookback_days), int(cfg.campaigns.reactivation_days))
    if (as_of - last).days > reach:
        raise DataError(
            f"--as-of {as_of:%Y-%m-%d} is {(as_of - last).days:,} days after the last order "
            f"({last:%Y-%m-%d}): every customer is beyond campaigns.reactivation_days ({reach}), "
            "so the lists would be empty. Score with newer orders or an earlier --as-of."
        )
    warnings = []
    if h != cfg.labels.horizon_days:
        warnings.append(
            f"the model predicts churn over {h} days, labels.horizon_days says "
            f"{cfg.labels.horizon_days}: the lists follow the model ({h} days); retrain with "
            "this config if it is the horizon you want"
        )
    if (as_of - last).days > STALE_DAYS:
        warnings.append(
            f"the last order is {(as_of - last).days} days before the as-of {as_of:%Y-%m-%d}: "
            "the orders may be stale"
        )
    trained = max(pd.Timestamp(c).tz_localize(None) for c in model.training_cutoffs_)
    seen_until = trained + timedelta(days=h)
    if as_of < seen_until:
        warnings.append(
            f"the model learnt from orders up to {seen_until:%Y-%m-%d} (its last training cutoff "
            f"{trained:%Y-%m-%d} + {h} days), after the as-of {as_of:%Y-%m-%d}: its scores know "
            "what happened next, so use them for analysis, not to judge the model"
        )
    return warnings


def validation_record(orders: Orders) -> dict:
    """What reading the orders found, for a manifest: rows read, kept and dropped, and each
    problem with its count and what was done."""
    r = orders.report
    return {
        "source": r.source,
        "rows_read": r.rows_read,
        "rows_dropped": r.rows_dropped,
        "orders": r.n_orders,
        "customers": r.n_customers,
        "problems": [
            {"check": p.check, "column": p.column, "rows": p.count, "policy": p.policy}
            for p in r.problems
        ],
        "normalised": list(r.notes),
    }


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


@dataclass
class MeasureResult:
    readout: Readout
    files: list[Path]
    run_id: str | None = None


def measure_job(
    orders: Orders,
    cfg: Config,
    export: Path,
    *,
    window_days: int | None = None,
    out: Path | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
) -> MeasureResult:
    """Read out an exported list against the orders placed after its as-of.

    Parameters
    ----------
    orders : Orders
        Orders that include those placed since the export's as-of.
    cfg : Config
        Campaign groups (their costs) and the readout's settings.
    export : Path
        An export folder written by :func:`score_job` (``EXPORTS/<as-of>``).
    window_days : int, optional
        The outcome window; default ``measure.window_days``, else the horizon the export's
        manifest records.
    out : Path, optional
        Where ``measure.json``, ``measure.csv`` and ``measure.html`` go.
    track : bool
        Log the readout as an MLflow run.

    Returns
    -------
    MeasureResult
        The readout (treatment against control, overall and per group, with intervals) and the
        files written.
    """
    readout = readout_export(orders, cfg, export, window_days=window_days)
    files: list[Path] = []
    if out is not None:
        files = write_readout(readout, out)
    run_id = None
    if track:
        from winback.tracking import log_measure

        params = {
            "export": str(export),
            "as_of": f"{readout.as_of:%Y-%m-%d}",
            "window_days": readout.window_days,
            "observed_days": round(readout.observed_days, 3),
            "model_version": readout.model_version,
            "min_control": cfg.measure.min_control,
        }
        metrics = {}
        for row in readout.table.to_dict(orient="records"):
            for k, v in row.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    metrics[f"{row['scope']}.{k}"] = float(v)
        run_id = log_measure(
            _store(cfg, tracking_uri),
            cfg.tracking.experiment,
            params,
            metrics,
            files,
            orders.fingerprint(),
        )
    return MeasureResult(readout, files, run_id)


def campaign_window(manifest: dict, cfg: Config, window_days: int | None = None):
    """An export's as-of and its outcome window in days: ``window_days`` when asked for, else
    ``measure.window_days``, else the campaign's own horizon (recorded by score), else
    ``labels.horizon_days``."""
    as_of = datetime.fromisoformat(str(manifest["as_of"])).replace(tzinfo=None)
    window = int(
        window_days
        or cfg.measure.window_days
        or manifest.get("horizon_days")
        or cfg.labels.horizon_days
    )
    return as_of, window


def readout_export(
    orders: Orders, cfg: Config, export: Path, *, window_days: int | None = None
) -> Readout:
    """The campaign readout of one export (see :mod:`winback.measure`)."""
    lists, manifest = load_export(export)
    as_of, window = campaign_window(manifest, cfg, window_days)
    end = as_of + timedelta(days=window)
    last = orders.last_ts
    if last is None or last <= as_of:
        raise DataError(
            f"The orders end at {last or 'nothing'}, not after the export's as-of "
            f"{as_of:%Y-%m-%d}: there is no outcome to measure yet. Pass the orders placed since."
        )
    warnings = []
    observed = (min(last, end) - as_of).total_seconds() / 86400
    if last < end:
        warnings.append(
            f"The window runs to {end:%Y-%m-%d} but the orders end at {last:%Y-%m-%d}: the "
            f"figures cover the first {observed:.0f} of {window} days."
        )
    costs = {g.name: (g.contact_cost, g.offer_cost) for g in cfg.campaigns.groups}
    unknown = sorted(set(lists["campaign"].dropna().astype(str)) - set(costs))
    if unknown:
        warnings.append(
            f"Campaign group(s) {unknown} are not in campaigns.groups of the config: their cost "
            "is counted as 0."
        )
    outcomes = customer_outcomes(orders, lists["customer_id"], as_of, end)
    table = measure_campaign(lists, outcomes, costs, cfg.measure.min_control)
    n_tests = int(table["incremental_retention_p"].notna().sum())
    if n_tests > 1:
        warnings.append(
            f"{n_tests} comparisons were made (all customers and each campaign group): by chance "
            f"alone one of them shows p < 0.05 {1 - 0.95**n_tests:.0%} of the time, so read "
            "incremental_retention_p_adjusted (Holm)."
        )
    for row in table.itertuples():
        if row.warning:
            warnings.append(f"{row.scope}: {row.warning}.")
    return Readout(
        export=str(export),
        as_of=as_of,
        window_days=window,
        observed_days=observed,
        table=table,
        warnings=warnings,
        model_version=manifest.get("model_version"),
    )


def write_readout(readout: Readout, out: Path) -> list[Path]:
    """``measure.json``, ``measure.csv`` and a one-section ``measure.html`` in ``out``."""
    from winback.html import render_page
    from winback.report import readout_section

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "measure.json", out / "measure.csv", out / "measure.html"]
    with atomic_path(files[0]) as tmp:
        tmp.write_text(json.dumps(readout.to_dict(), indent=2, default=str))
    with atomic_path(files[1]) as tmp:
        write_csv(readout.table, tmp)
    page = render_page(
        "winback campaign readout",
        f"export {readout.export}, as of {readout.as_of:%Y-%m-%d}",
        [readout_section(readout)],
    )
    with atomic_path(files[2]) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return files


@dataclass
class LearnResult:
    table: pd.DataFrame  # winback.learn.SAVE_RATE_COLUMNS, one row per campaign group
    document: dict  # what learned.json holds
    path: Path | None = None
    run_id: str | None = None


def learn_job(
    orders: Orders,
    cfg: Config,
    exports: Path,
    *,
    out: Path | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
) -> LearnResult:
    """Learn each campaign group's save rate from the past exports under ``exports``.

    Every export (``EXPORTS/<as-of>``) whose outcome window (:func:`campaign_window`, as
    ``measure`` reads it) has fully passed in ``orders`` counts: its listed customers, treated
    and held out, and whether each bought in ``(as-of, as-of + window]``. Exports whose window
    is still running are skipped and named. The rates are pooled over campaigns and shrunk
    towards the groups' ``save_rate`` (:func:`winback.learn.save_rates`, prior standard
    deviation ``campaigns.learn_prior_sd``). Writes ``out`` (learned.json) atomically and,
    with ``track``, logs an MLflow run."""
    from winback.learn import rates_by_export, save_rates

    folders = list_exports(exports)
    if not folders:
        raise UsageError(
            f"{exports} holds no exports written by 'winback score'; pass the folder score "
            "writes to (its --out)."
        )
    last = orders.last_ts
    frames, used, skipped, finished = [], [], [], []
    for folder in folders:
        lists, manifest = load_export(folder)
        as_of, window = campaign_window(manifest, cfg)
        end = as_of + timedelta(days=window)
        if last is None or last < end:
            skipped.append(
                {
                    "export": folder.name,
                    "why": f"its {window}-day outcome window runs to {end:%Y-%m-%d} and the "
                    f"orders end at {last:%Y-%m-%d}"
                    if last
                    else "no orders",
                }
            )
            continue
        outcomes = customer_outcomes(orders, lists["customer_id"], as_of, end)
        rows = lists.merge(
            outcomes[["customer_id", "bought", "revenue"]], on="customer_id", how="left"
        )
        risk = _p_churn_of(folder)
        if risk is not None:
            rows = rows.merge(risk, on="customer_id", how="left")
        frames.append(rows.assign(export=folder.name))
        finished.append((folder, as_of, window))
        used.append(
            {
                "export": folder.name,
                "as_of": f"{as_of:%Y-%m-%d}",
                "window_days": window,
                "treatment": int((lists["group"] == "treatment").sum()),
                "control": int((lists["group"] == "control").sum()),
            }
        )
    outcomes = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["campaign", "export", "group", "bought"])
    )
    priors = {g.name: g.save_rate for g in cfg.campaigns.groups}
    table = save_rates(outcomes, priors, cfg.campaigns.learn_prior_sd)
    unknown = sorted(set(outcomes["campaign"].dropna().astype(str)) - set(priors))
    warnings = (
        [
            f"Campaign group(s) {unknown} of the exports are not in campaigns.groups of the "
            "config: nothing is learned for them (add them to the config to learn their rate)."
        ]
        if unknown
        else []
    )
    uplift, uplift_model = _evaluate_uplift(orders, cfg, finished, frames)
    doc = {
        "learned_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exports_dir": str(exports),
        "orders_end": last.isoformat() if last else None,
        "prior_sd": cfg.campaigns.learn_prior_sd,
        "method": "save rate = (retention of treatment - retention of control) / (1 - "
        "retention of control) among each group's listed customers, pooled over the campaigns "
        "whose window has passed; delta-method variance v; learned = w x observed + (1 - w) x "
        "prior, w = prior_sd^2 / (prior_sd^2 + v), 95% interval learned +- 1.96 sqrt(w v)",
        "exports": used,
        "skipped": skipped,
        "warnings": warnings,
        "groups": {
            row["campaign"]: {k: _plain(v) for k, v in row.items() if k != "campaign"}
            for row in table.to_dict(orient="records")
        },
        "by_export": rates_by_export(outcomes, priors, [e["export"] for e in used]),
        "uplift": uplift,
    }
    if out is not None:
        if uplift_model is not None:  # beside learned.json, which names it and its checksum
            import joblib

            model_file = out.with_name(out.stem + ".uplift.joblib")
            with atomic_path(model_file) as tmp:
                joblib.dump(uplift_model, tmp)
                digest = sha256_file(tmp)
            uplift |= {"model_file": model_file.name, "model_sha256": digest}
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))
    run_id = None
    if track:
        from winback.tracking import log_measure

        metrics = {
            f"{row['campaign']}.{k}": float(v)
            for row in table.to_dict(orient="records")
            for k, v in row.items()
            if k != "campaign"
        }
        for ranking, figures in (uplift.get("rankings") or {}).items():
            metrics |= {
                f"uplift.{ranking}.{k}": float(v) for k, v in figures.items() if v is not None
            }
        params = {
            "exports": str(exports),
            "exports_learned_from": len(used),
            "exports_skipped": len(skipped),
            "prior_sd": cfg.campaigns.learn_prior_sd,
        }
        files = [out] if out is not None else []
        run_id = log_measure(
            _store(cfg, tracking_uri),
            cfg.tracking.experiment,
            params,
            metrics,
            files,
            orders.fingerprint(),
            kind="learn",
        )
    return LearnResult(table, doc, out, run_id)


def _p_churn_of(folder: Path) -> pd.DataFrame | None:
    """``customer_id, p_churn`` of an export's listed customers; None when its list files do
    not carry ``p_churn``."""
    import pyarrow.parquet as pq

    files = [f for found in list_parquet_files(folder).values() for f in found]
    if not files or any("p_churn" not in pq.read_schema(f).names for f in files):
        return None
    found = pd.concat(read_lists(folder, ["customer_id", "p_churn"]).values())
    return found.astype({"customer_id": str}).drop_duplicates("customer_id")


def _evaluate_uplift(
    orders: Orders, cfg: Config, finished: list, frames: list
) -> tuple[dict, UpliftModel | None]:
    """An uplift model (:class:`winback.uplift.UpliftModel`) trained on every finished
    campaign but the latest and judged on the latest, out of time, against targeting by
    ``p_churn`` (when the lists carry it) and at random: the Qini coefficient and the uplift at
    the top 10, 20 and 30%, with 95% bootstrap intervals, and the Qini curves. It beats
    ``p_churn`` when its Qini's interval lies above ``p_churn``'s Qini; then it is fitted again
    on every finished campaign, the latest too: the one ``score`` may rank by. Returns what
    learned.json records, and that model (None when it was not judged, or did not win)."""
    from winback.uplift import evaluate_ranking, profit_curve, qini_curve

    if len(finished) < 2:
        return {
            "evaluated": False,
            "why": f"{len(finished)} campaign(s) whose window has passed: an uplift model needs "
            "at least one to learn from and a later one to be judged on",
        }, None
    stacked = [
        _campaign_features(orders, cfg, as_of, window, rows).assign(_export=folder.name)
        for (folder, as_of, window), rows in zip(finished, frames, strict=True)
    ]
    *earlier, latest = stacked
    train = pd.concat(earlier, ignore_index=True)
    model = _fit_uplift(train)
    treated = (latest["group"] == "treatment").to_numpy()
    bought = latest["bought"].astype(bool).to_numpy()
    scores = {"model": model.predict(latest)}
    if "p_churn" in latest and latest["p_churn"].notna().all():
        scores["p_churn"] = latest["p_churn"].to_numpy()
    judged = {name: evaluate_ranking(score, treated, bought) for name, score in scores.items()}
    beats = "p_churn" in judged and judged["model"]["qini_lo"] > judged["p_churn"]["qini"]
    costs = {g.name: (g.contact_cost, g.offer_cost) for g in cfg.campaigns.groups}
    group = latest["campaign"].astype(str) if "campaign" in latest else pd.Series("", latest.index)
    contact = group.map(lambda g: costs.get(g, (0.0, 0.0))[0]).to_numpy(dtype=float)
    offer = group.map(lambda g: costs.get(g, (0.0, 0.0))[1]).to_numpy(dtype=float)
    revenue = latest["revenue"].fillna(0.0).to_numpy(dtype=float)
    curves, profits = {}, {}
    for name, score in scores.items():
        curves[name] = _sampled(qini_curve(score, treated, bought), "incremental")
        profit = profit_curve(score, treated, bought, revenue, contact, offer)
        profits[name] = _sampled(profit, "net")
    # the model score may rank by: only one that beat p_churn, then taught by every campaign
    final = _fit_uplift(pd.concat(stacked, ignore_index=True)) if beats else None
    return {
        "evaluated": True,
        "method": "X-learner on LightGBM; Qini coefficient and uplift at the top shares on the "
        "latest campaign, 95% bootstrap intervals (200 resamples); a model that beat p_churn is "
        "then fitted on every campaign, and score may rank by it",
        "trained_on": train["_export"].unique().tolist(),
        "evaluated_on": latest["_export"].iloc[0],
        "fitted_on": [folder.name for folder, _, _ in finished] if beats else [],
        "customers": {"trained": len(train), "evaluated": len(latest)},
        "rankings": {k: {n: _plain(v) for n, v in r.items()} for k, r in judged.items()},
        # a random list of any size: the campaign's overall uplift, and a Qini of 0 by definition
        "random": {
            "qini": 0.0,
            "uplift": _plain(float(bought[treated].mean() - bought[~treated].mean())),
        },
        "qini_curves": curves,
        "profit_curves": profits,
        "beats_p_churn": bool(beats),
        "why": (
            "the model's Qini interval lies above p_churn's Qini"
            if beats
            else "the lists carry no p_churn to compare with"
            if "p_churn" not in judged
            else "the model's Qini interval does not lie above p_churn's Qini: keep p_churn"
        ),
    }, final


def _sampled(curve: pd.DataFrame, column: str, points: int = 101) -> dict[str, list]:
    """A curve's ``share`` and ``column`` at ``points`` shares evenly apart, for learned.json."""
    at = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), points)).round().astype(int))
    return {
        "share": curve["share"].iloc[at].round(6).tolist(),
        column: curve[column].iloc[at].round(6).tolist(),
    }


#: The columns of a campaign's stacked features that are outcomes, not features.
_OUTCOME_COLUMNS = ["group", "bought", "revenue", "p_churn", "campaign", "_export"]


def _fit_uplift(rows: pd.DataFrame) -> UpliftModel:
    return UpliftModel().fit(
        rows.drop(columns=[c for c in _OUTCOME_COLUMNS if c in rows]),
        rows["group"] == "treatment",
        rows["bought"].astype(bool),
    )


def _campaign_features(
    orders: Orders, cfg: Config, as_of: datetime, window: int, rows: pd.DataFrame
) -> pd.DataFrame:
    """The features of a campaign's listed customers at its as-of, as ``score`` builds them
    (the same windows), with their group, outcome and ``p_churn``."""
    from winback.snapshots import customers_only

    lookback = max(cfg.features.lookback_days, window + 1, cfg.campaigns.reactivation_days)
    windows = sorted(set(cfg.features.windows_days) | {int(cfg.campaigns.value_days)})
    with customers_only(orders, rows["customer_id"].tolist()) as mine:
        snap = build_snapshots(mine, [as_of], window, lookback, windows, labels=False)
    keep = [c for c in ("customer_id", *_OUTCOME_COLUMNS) if c in rows]
    return snap.merge(rows[keep], on="customer_id")


def _plain(v):
    """A JSON value: NaN as null, numpy numbers as Python's."""
    if isinstance(v, float) and v != v:
        return None
    return v.item() if hasattr(v, "item") else v


def learned_save_rates(cfg: Config) -> tuple[Config, dict[str, str]]:
    """``cfg`` with the save rates of ``campaigns.learned`` (learned.json) in place of the
    groups' own, and where each group's rate came from (for the manifest). A learned rate
    below 0 (contact kept more customers away than it won) counts as 0; a group the file
    learned nothing about keeps its own."""
    camp = cfg.campaigns
    if camp.learned is None:
        return cfg, {g.name: ASSUMED_SAVE_RATE for g in camp.groups}
    path = Path(camp.learned)
    doc = _read_learned(path)
    learned = doc["groups"]
    groups, sources = [], {}
    for g in camp.groups:
        row = learned.get(g.name)
        if not row or not row.get("weight"):
            groups.append(g)
            sources[g.name] = f"{ASSUMED_SAVE_RATE} ({path.name} learned nothing about this group)"
            continue
        rate = min(max(float(row["save_rate"]), 0.0), 1.0)
        groups.append(g.model_copy(update={"save_rate": rate}))
        sources[g.name] = (
            f"learned: {path} ({doc.get('learned_at', '?')[:10]}), {row['n_campaigns']} "
            f"campaign(s), {row['n_treatment']} treated and {row['n_control']} held out; "
            f"95% interval [{row['save_rate_lo']:.3f}, {row['save_rate_hi']:.3f}], prior "
            f"{row['prior']}"
        )
    return cfg.model_copy(update={"campaigns": camp.model_copy(update={"groups": groups})}), sources


def _read_learned(path: Path) -> dict:
    """learned.json, or a DataError that says what to do."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc["groups"], dict):
            raise TypeError("'groups' is not a mapping")
    except FileNotFoundError:
        raise DataError(
            f"campaigns.learned names {path}, which does not exist: run 'winback learn' first, "
            "or set campaigns.learned to null."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"campaigns.learned: {path} is not a learned.json written by 'winback learn' "
            f"({type(exc).__name__}: {exc}); run 'winback learn' again."
        ) from None
    return doc


@dataclass
class Ranking:
    """How tonight's lists are ranked and sized: ``by`` p_churn or uplift, why, and the uplift
    model when it ranks them."""

    by: str
    why: str
    model: UpliftModel | None = None
    judged: dict | None = None  # the model's out-of-time evaluation, from learned.json

    def record(self, requested: str) -> dict:
        """What the manifest says of it."""
        out = {"by": self.by, "requested": requested, "why": self.why}
        if self.judged is not None:
            out["evaluation"] = self.judged
        return out


def list_ranking(cfg: Config) -> Ranking:
    """Whether the lists are ranked by the uplift model of ``campaigns.learned``
    (``campaigns.rank_by``): only when ``learn`` judged it, out of time, better than p_churn.
    ``auto`` falls back to p_churn and says why; ``uplift`` without such a model is a
    DataError (a list is never ranked by an uplift model that was not shown to be better)."""
    camp = cfg.campaigns
    if camp.rank_by == "p_churn":
        return Ranking("p_churn", "campaigns.rank_by is p_churn")
    if camp.learned is None:
        why = "campaigns.learned is null: no uplift model was learned from past campaigns"
    else:
        path = Path(camp.learned)
        up = _read_learned(path).get("uplift") or {}
        if not up.get("evaluated"):
            why = f"{path.name} holds no judged uplift model: {up.get('why', 'none was learned')}"
        elif not up.get("beats_p_churn"):
            why = f"{path.name}: {up.get('why')}"
        elif not up.get("model_file"):
            why = f"{path.name} names no uplift model file"
        else:
            judged = {
                "evaluated_on": up.get("evaluated_on"),
                "trained_on": up.get("trained_on"),
                "fitted_on": up.get("fitted_on"),
                "qini": up["rankings"]["model"],
                "qini_p_churn": up["rankings"]["p_churn"]["qini"],
                "model_file": str(path.parent / up["model_file"]),
            }
            model = _load_uplift(path.parent / up["model_file"], up.get("model_sha256"))
            q = up["rankings"]["model"]
            return Ranking(
                "uplift",
                f"the uplift model of {path.name} beat p_churn on {up.get('evaluated_on')}, a "
                f"campaign it did not learn from: Qini {q['qini']:.4f} [{q['qini_lo']:.4f}, "
                f"{q['qini_hi']:.4f}] against {judged['qini_p_churn']:.4f}",
                model,
                judged,
            )
    if camp.rank_by == "uplift":
        raise DataError(
            f"campaigns.rank_by is uplift, but {why}. Lists are only ranked by an uplift model "
            "that beat p_churn on a campaign it did not see: run 'winback learn' on more past "
            "campaigns, or set campaigns.rank_by to auto or p_churn."
        )
    return Ranking("p_churn", why)


def _load_uplift(path: Path, sha256: str | None) -> UpliftModel:
    import joblib

    if not path.exists():
        raise DataError(
            f"The uplift model {path} named by learned.json does not exist: run "
            "'winback learn' again."
        )
    got = sha256_file(path)
    if got != sha256:
        raise DataError(
            f"The uplift model {path} does not match the checksum learned.json holds (sha256 "
            f"{got[:12]}..., expected {str(sha256)[:12]}...): run 'winback learn' again."
        )
    return joblib.load(path)


@dataclass
class ReportResult:
    path: Path
    files: list[Path]
    kpis: pd.DataFrame
    readouts: list[Readout]
    notes: list[str]
    horizon_churn: pd.DataFrame | None = None
    horizon_days: int | None = None


def _champion_gains(
    orders: Orders, cfg: Config, model: str | None, tracking_uri: str | None, end: datetime
) -> tuple[object | None, str]:
    """The gains plot of the champion (or a model file) with a caption, or None and why not.

    Scored fresh, out of time, at ``end - H`` when every label the model trained on was
    observed before that cutoff; otherwise the model's own training-time backtest is used."""
    from winback.evaluate import baseline_scores, fast_auc
    from winback.plots import plot_gains

    if model is None:
        return None, "No model asked for (--model none)."
    if model == "champion":
        from winback.tracking import find_champion

        uri = _store(cfg, tracking_uri)
        found = find_champion(uri, cfg.tracking.model_name, registry_cache(cfg))
        if found is None:
            return None, (
                f"No champion of '{cfg.tracking.model_name}' in {mask_url(uri)}: train one with "
                "'winback train' to see its gains curve here."
            )
        path, version, _ = found
        name = f"champion (registry v{version})"
    else:
        path, name = Path(model), f"file {Path(model).name}"
    if not path.is_file():
        return None, f"The model file {path} is missing."
    churn_model = load_model(path)
    h = churn_model.horizon_days
    trained_until = max(pd.Timestamp(c) for c in churn_model.training_cutoffs_).tz_localize(None)
    t = end - timedelta(days=h)
    if t >= trained_until + timedelta(days=h):
        snap = build_snapshots(
            orders, [t], h, churn_model.lookback_days, cfg.features.windows_days, end
        )
        if len(snap):
            y = snap["churned"].astype(bool).to_numpy()
            scores = {"model": churn_model.predict_proba(snap)[:, 1], **baseline_scores(snap)}
            auc = fast_auc(y, scores["model"])
            return plot_gains(y, scores), (
                f"{name}, scored out of time at {t:%Y-%m-%d} (H = {h} days, after every label it "
                f"was trained on): {len(snap):,} customers, AUC {auc:.3f}."
            )
    bt = path.with_name(path.name + ".backtest") / "predictions.parquet"
    if not bt.is_file():
        return None, (
            f"{name} was trained on labels up to {trained_until + timedelta(days=h):%Y-%m-%d}, "
            f"so the orders do not yet allow an out-of-time check, and its backtest ({bt}) "
            "is missing."
        )
    pred = pd.read_parquet(bt)
    pred = pred[pred["churned"].notna()]
    if pred.empty:
        return None, (
            f"{name} was trained on labels up to {trained_until + timedelta(days=h):%Y-%m-%d}, "
            "so the orders do not yet allow an out-of-time check, and its backtest at training "
            "time had no customer whose horizon the orders covered: no gains curve yet."
        )
    y = pred["churned"].astype(bool).to_numpy()
    scores = {
        n: pred[c].to_numpy(dtype=float)
        for n, c in (
            ("model", "p_churn"),
            ("bgnbd", "bgnbd"),
            ("rfm", "rfm"),
            ("recency", "recency"),
        )
        if c in pred
    }
    cut = pd.Timestamp(pred["cutoff_ts"].max())
    return plot_gains(y, scores), (
        f"{name}: its backtest at training time (the same model settings trained on cutoffs up "
        f"to {cut - timedelta(days=h):%Y-%m-%d}, evaluated out of time at {cut:%Y-%m-%d}), "
        f"AUC {fast_auc(y, scores['model']):.3f}; the orders do not yet reach past its own "
        "training labels."
    )


def report_job(
    orders: Orders,
    cfg: Config,
    out: Path,
    *,
    as_of: datetime | None = None,
    period: str | None = None,
    exports_dir: Path | None = None,
    model: str | None = "champion",
    tracking_uri: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> ReportResult:
    """Write the retention report, ``report.html``, and its tables (CSV) to ``out``.

    Parameters
    ----------
    orders : Orders
        The validated orders.
    cfg : Config
        Report settings (period, active days, exports folder, readouts) and the horizon.
    out : Path
        The report's folder.
    as_of : datetime, optional
        Report up to the end of this day (default: the last order's).
    period : str, optional
        ``month``, ``quarter`` or ``year`` (default ``report.period``).
    exports_dir : Path, optional
        Where :func:`score_job` writes; its exports give the lists' figures and readouts.
    model : str, optional
        ``champion``, a model file, or None: the model whose gains curve is shown.
    on_step : callable, optional
        Called with (done, total) as the report's steps finish.

    Returns
    -------
    ReportResult
        The page, the files, the KPIs, the readouts, the churn over the horizon and notes.
    """
    from winback.html import render_page
    from winback.report import (
        active_window_days,
        cohort_table,
        horizon_churn,
        kpi_sections,
        overall_repeat_rate,
        report_end,
        retention_tables,
    )

    step = on_step or (lambda _d, _t: None)
    period = period or cfg.report.period
    active = cfg.report.active_days or cfg.features.lookback_days
    window = active_window_days(active, period)
    end = report_end(orders, as_of)
    exports_dir = Path(exports_dir or cfg.report.exports_dir)
    step(0, 5)
    kpis, by = retention_tables(orders, period, active, as_of)
    repeat = overall_repeat_rate(orders, as_of)
    step(1, 5)
    cohorts = cohort_table(orders, as_of)
    step(2, 5)
    exports = [e for e in list_exports(exports_dir) if datetime.fromisoformat(e.name) < end]
    # the horizon of the lists: the latest export's model, or the configured one
    latest_doc = json.loads((exports[-1] / "manifest.json").read_text()) if exports else {}
    h = int(latest_doc.get("horizon_days") or cfg.labels.horizon_days)
    churn_h = horizon_churn(orders, period, h, window, as_of)
    tables = {"kpis.csv": kpis, "cohorts.csv": cohorts.reset_index(), "churn_horizon.csv": churn_h}
    tables |= {f"retention_by_{name}.csv": frame for name, frame in by.items()}
    sections = kpi_sections(kpis, cohorts, by, repeat, window, churn_h, h)

    lists_sec = _lists_section(exports, exports_dir, tables)
    step(3, 5)
    readouts = []
    for e in _readout_exports(orders, cfg, exports):
        readouts.append(readout_export(orders, cfg, e))
        tables[f"campaign_{e.name}.csv"] = readouts[-1].table
    sections += [
        _campaigns_section(readouts, exports, exports_dir),
        _learned_section(cfg),
        lists_sec,
    ]
    step(4, 5)
    ax, caption = _champion_gains(orders, cfg, model, tracking_uri, end)
    sections.append(_model_section(ax, caption))

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in tables.items():
        with atomic_path(out / name) as tmp:
            write_csv(frame, tmp)
        files.append(out / name)
    fp = orders.fingerprint()
    subtitle = (
        f"as of {end - timedelta(days=1):%Y-%m-%d}; {fp['rows']:,} orders from {fp['first_ts']} "
        f"to {fp['last_ts']}; periods: {period}; winback {__version__}"
    )
    page = render_page("winback retention report", subtitle, sections)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    files.append(out / "report.html")
    step(5, 5)
    notes = [caption] if ax is None else []
    return ReportResult(out / "report.html", files, kpis, readouts, notes, churn_h, h)


def _readout_exports(orders: Orders, cfg: Config, exports: list[Path]) -> list[Path]:
    """The latest ``report.max_readouts`` exports whose outcome window has begun."""
    measurable = [
        e
        for e in exports
        if orders.last_ts - datetime.fromisoformat(e.name) >= timedelta(days=MIN_READOUT_DAYS)
    ]
    return measurable[-cfg.report.max_readouts :] if cfg.report.max_readouts else []


def _lists_section(exports: list[Path], exports_dir: Path, tables: dict[str, pd.DataFrame]):
    """The report's "Scores and win-back lists" section; adds ``list_sizes.csv`` to ``tables``."""
    from winback.html import Section, figure_tag, table_tag
    from winback.report import plot_list_sizes, plot_score_distribution

    sec = Section("lists", "Scores and win-back lists")
    if not exports:
        sec.text(f"No exports in {exports_dir}: run 'winback score --out {exports_dir}' nightly.",
                 "note")  # fmt: skip
        return sec
    history = []
    for e in exports:
        m = json.loads((e / "manifest.json").read_text())
        rows = m.get("rows", {})
        history.append(
            {"as_of": e.name, "model": m.get("model_version"), "scored": rows.get("scores")}
            | {f"listed_{k}": v for k, v in rows.items() if k != "scores"}
        )
    history = pd.DataFrame(history)
    tables["list_sizes.csv"] = history
    latest = exports[-1]
    scores = pd.read_parquet(latest / "scores.parquet", columns=["list", "p_churn"])
    sec.text(
        f"Churn probabilities of every customer scored in the latest export ({latest.name}, "
        f"model {history['model'].iloc[-1]}), and the list sizes of every export: 'scored' "
        "counts every customer scored, 'listed_<list>' those on the list (to contact and "
        "control)."
    )
    sec.add(figure_tag(plot_score_distribution(scores), "latest score distribution"))
    sec.add(figure_tag(plot_list_sizes(history), "list size per export"))
    sec.add(table_tag(history))
    return sec


def _campaigns_section(readouts: list[Readout], exports: list[Path], exports_dir: Path):
    """The report's "Campaigns: treatment against control" section."""
    from winback.html import Section
    from winback.report import readout_section

    sec = Section("campaigns", "Campaigns: treatment against control")
    if not exports:
        sec.text(f"No exports in {exports_dir}: run 'winback score --out {exports_dir}' nightly.",
                 "note")  # fmt: skip
    elif not readouts:
        sec.text("No export is old enough: no orders after any export's as-of yet.", "note")
    else:
        sec.text(
            "Churn and retention per campaign group, contacted (treatment) against held-out "
            "(control) customers, for the latest exports whose outcome window has begun."
        )
        for i, r in enumerate(reversed(readouts)):
            sub = readout_section(r, f"campaign-{i}")
            sec.add(f'<h3 id="{sub.id}">{sub.title}</h3>')
            for part in sub.parts:
                sec.add(part)
    return sec


def _learned_section(cfg: Config):
    """The report's "What we learned" section, from ``campaigns.learned``."""
    from winback.report import learned_section

    if cfg.campaigns.learned is None:
        return learned_section(None, "campaigns.learned is not set: nothing learned yet")
    path = Path(cfg.campaigns.learned)
    try:
        doc = _read_learned(path)
    except DataError as exc:
        return learned_section(None, str(exc))
    return learned_section(doc, str(path))


def _model_section(ax, caption: str):
    """The report's "Champion model: gains" section (or why there is no plot)."""
    from winback.html import Section, figure_tag

    sec = Section("model", "Champion model: gains")
    if ax is not None:
        sec.text(
            "Share of the customers who churned that a list of the riskiest customers reaches, "
            "against the baselines."
        )
        sec.add(figure_tag(ax, "gains of the champion model"))
    sec.text(caption, "note")
    return sec
