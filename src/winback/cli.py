"""The ``winback`` command line: thin commands over the library.

Each command parses its options, loads the config, calls library functions and prints. A
:class:`~winback.errors.WinbackError` becomes one line on stderr and exit code 1 (2 for usage).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from winback import __version__
from winback.config import Config, load_config
from winback.cutoffs import cutoffs_from_options, normalize_cutoffs, parse_as_of
from winback.errors import ConfigError, UsageError, WinbackError
from winback.runlog import event, run_log

__all__ = ["app", "main"]

log = logging.getLogger("winback")

#: Every command's --help ends with this.
EXIT_CODES = (
    "Exit codes: 0 done; 1 a data, config or model problem (one line on stderr says which and "
    "how to fix it); 2 wrong usage; 130 interrupted. With --log-format json (before the "
    "command) the last line on stderr is a JSON 'done' object with the status and exit code."
)

app = typer.Typer(
    name="winback",
    help="Churn prediction and win-back lists from order histories. Exit codes: 0 done, "
    "1 a data, config or model problem (one line on stderr says which and how to fix it), "
    "2 wrong usage, 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: paragraphs rewrapped to the terminal, text as written
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML config; paths in it are read from the file's folder. Default: "
        "configs/default.yaml in the working folder, if there, else built-in defaults.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a setting, e.g. --set labels.horizon_days=90 (repeatable).",
    ),
]
PathArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[ORDERS]",
        help="Orders: CSV, Parquet file or folder, DuckDB file or database URL "
        "(default: orders.source).",
        show_default=False,
    ),
]
OrdersOpt = Annotated[
    str | None,
    typer.Option(
        "--orders",
        metavar="PATH",
        help="Orders: CSV, Parquet file or folder, DuckDB file or database URL "
        "(default: orders.source).",
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        metavar="duckdb|spark",
        help="duckdb (one machine) or spark (pip install 'winback[spark]'; master from "
        "engine.spark.master or WINBACK_SPARK_MASTER). Default: engine.name, duckdb.",
        case_sensitive=False,
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="DATE",
        help="The date we stand at (YYYY-MM-DD, 00:00 UTC); 'today' allowed.",
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="More detail on stderr, library warnings too.")
]


#: Libraries whose own log lines reach the terminal only with --verbose.
_QUIET_LOGGERS = ("mlflow", "alembic", "py4j", "urllib3", "numexpr", "matplotlib")


def _setup_logging(verbose: bool) -> None:
    """winback's log lines on stderr (INFO, DEBUG with --verbose), as text or JSON lines
    (--log-format); libraries' chatter and warnings only with --verbose."""
    import warnings

    from winback.runlog import JsonLines

    level = logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if run_log.json else logging.Formatter("%(message)s"))
    root = logging.getLogger("winback")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    warnings.simplefilter("default" if verbose else "ignore")


def _say(line: str) -> None:
    """A line of the command's report: on stdout, or an ``output`` event in JSON."""
    if run_log.json:
        event(log, "output", text=line)
    else:
        typer.echo(line)


def _on_stage(stage) -> None:
    """A job's stage ended: a ``stage`` event (in text, with --verbose only)."""
    level = logging.INFO if run_log.json else logging.DEBUG
    event(log, "stage", level, stage=stage.name, seconds=round(stage.seconds, 3),
          peak_rss_mb=round(stage.peak_rss_mb, 1))  # fmt: skip


def _verbose(verbose: bool) -> None:
    """-v given after the command, as most users type it."""
    if verbose:
        _setup_logging(True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


LOG_FORMAT_HELP = (
    "text (for people; a progress bar at a terminal) or json: one JSON object per line on "
    "stderr with the stages, counts, timings and a final 'done' line with the status and exit "
    "code, for Airflow, Kubernetes or any log shipper. Also WINBACK_LOG_FORMAT."
)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: VerboseOpt = False,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            metavar="text|json",
            envvar="WINBACK_LOG_FORMAT",
            help=LOG_FORMAT_HELP,
        ),
    ] = "text",
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """winback: churn prediction and win-back lists from order histories."""
    from winback.runlog import FORMATS

    fmt = log_format.strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"--log-format must be text or json; got {log_format!r}.")
    run_log.format, run_log.command = fmt, ctx.invoked_subcommand
    _setup_logging(verbose)


def _config(config: Path | None, overrides: list[str] | None, engine: str | None = None) -> Config:
    if config is None and Path("configs/default.yaml").is_file():
        config = Path("configs/default.yaml")
    if engine is not None:
        overrides = [*(overrides or []), f"engine.name={engine.strip().lower()}"]
    return load_config(config, overrides)


def _source(path: str | None, cfg: Config) -> str:
    src = path or cfg.orders.source
    if not src:
        raise UsageError("No orders given: pass a path, or set orders.source in the config.")
    return src


def _check_out(path: Path, file: bool = False, option: str = "--out") -> None:
    """Refuse an output that cannot be written before any work is done."""
    from winback.atomic import check_writable, check_writable_file

    (check_writable_file if file else check_writable)(path, option)


def _load(
    path: str | None,
    cfg: Config,
    as_of: datetime | None,
    summary: bool = True,
    duckdb_only: str | None = None,
):
    """Read and validate the orders; the validation summary goes to stderr (``summary``: the
    command prints it itself otherwise). ``duckdb_only``: the command's name, when it runs on
    DuckDB only (refused on Spark in one line)."""
    from winback.orders import load_orders

    source = _source(path, cfg)
    if cfg.engine.name == "spark" and duckdb_only:
        raise ConfigError(
            f"'{duckdb_only}' runs on the DuckDB engine only (engine.name is spark): run it "
            "with --set engine.name=duckdb; for data beyond one machine, profile and report a "
            "sample or a recent window of the orders."
        )
    if cfg.engine.name == "spark":
        from winback.engines.spark import SparkEngine, spark_session

        with _progress("starting Spark"):
            spark = spark_session(cfg.engine.spark.master, cfg.engine.spark.conf)
        with _progress("reading and validating orders on Spark"):
            orders = load_orders(source, cfg.orders, as_of=as_of, engine=SparkEngine(spark))
    else:
        from winback.engines.duckdb import connect_for

        with _progress("reading and validating orders"):
            orders = load_orders(source, cfg.orders, as_of=as_of, con=connect_for(cfg.engine))
    if summary:
        for line in orders.report.summary_lines():
            log.info("orders: %s", line)
    return orders


class _Reporter:
    """Shows the progress of a command: at a terminal, a bar named after the current stage; when
    the output goes to a file or a pipe (cron, Airflow, CI logs), one log line per finished stage
    with its time. Called as ``progress(stage, done, total)`` by the library, or through
    :meth:`update` for the command's own single stage."""

    def __init__(self, label: str, bar, task, log_lines: bool):
        self.label = label
        self.bar, self.task, self.log_lines = bar, task, log_lines
        self.stage: str | None = None
        self.started = time.perf_counter()
        self.done = self.total = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.finish()
            self.stage, self.started = stage, time.perf_counter()
        self.done, self.total = done, total
        self.bar.update(self.task, description=stage, completed=done, total=total or None)

    def update(self, done: int, total: int) -> None:
        self(self.label, done, total)

    def finish(self) -> None:
        """Log the stage that just ended (when not drawing a bar)."""
        if self.stage is not None and self.log_lines:
            seconds = time.perf_counter() - self.started
            if run_log.json:
                event(log, "progress", step=self.stage, seconds=round(seconds, 3),
                      done=self.done, total=self.total)  # fmt: skip
            else:
                count = f" ({self.done:,}/{self.total:,})" if self.total > 1 else ""
                log.info("%s%s: %.1fs", self.stage, count, seconds)
        self.stage = None


@contextmanager
def _progress(label: str) -> Iterator[_Reporter]:
    """A progress bar on stderr when it is a terminal, else a log line per finished stage."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=run_log.json or not console.is_terminal,
    ) as bar:
        lines = run_log.json or not console.is_terminal
        reporter = _Reporter(label, bar, bar.add_task(label, total=None), lines)
        reporter(label, 0, 0)
        yield reporter
        reporter.finish()


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        _say(line)


@app.command(epilog=EXIT_CODES)
def validate(
    path: PathArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: EngineOpt = None,
    as_of: AsOfOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Read and validate an order history; report every problem and what was dropped.

    Exits 1 when a problem's policy is 'fail' (the message lists every problem at once).
    """
    _verbose(verbose)
    cfg = _config(config, set_, engine)
    orders = _load(path, cfg, parse_as_of(as_of), summary=False)
    _echo_lines(orders.report.summary_lines())


@app.command(epilog=EXIT_CODES)
def profile(
    path: PathArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_of: AsOfOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Profile the orders: counts, repeat share, gaps, and a suggested churn horizon."""
    _verbose(verbose)
    from winback.profile import build_profile

    cfg = _config(config, set_)
    orders = _load(path, cfg, parse_as_of(as_of), duckdb_only="profile")
    prof = build_profile(orders, lookback_days=cfg.features.lookback_days)
    _echo_lines(prof.summary_lines())


@app.command(epilog=EXIT_CODES)
def features(
    orders_path: OrdersOpt = None,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Output Parquet file (on Spark: a folder of parts; any path Spark can write, "
            "e.g. s3a://bucket/features).",
        ),
    ] = "features.parquet",
    as_of: AsOfOpt = None,
    cutoffs: Annotated[
        str | None,
        typer.Option("--cutoffs", metavar="DATE,DATE...", help="Cutoffs, comma-separated."),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="DAYS",
            help="Cutoffs every DAYS days (e.g. 30d), counted back from --to.",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="DATE",
            help="With --every: no cutoff before this date (the first is the earliest date on "
            "or after it that the count back from --to reaches).",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", metavar="DATE", help="With --every: the last cutoff."),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            "--horizon-days", metavar="DAYS", help="Also add churn labels for this horizon (days)."
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: EngineOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Compute point-in-time features at one or many cutoffs into a Parquet file.

    One row per (customer_id, cutoff_ts) of the active population (a purchase in the lookback
    window before the cutoff). With --horizon-days, labelled cutoffs get 'churned' and
    'orders_in_horizon'; cutoffs whose horizon runs past the data keep empty labels.
    """
    _verbose(verbose)
    from winback.features import write_features

    cfg = _config(config, set_, engine)
    cuts = cutoffs_from_options(as_of, cutoffs, every, start, end)
    if "://" not in out:
        _check_out(Path(out), file=cfg.engine.name == "duckdb")
    # future dates are judged against now: orders after the cutoffs are what labels are made of
    orders = _load(orders_path, cfg, None)
    t0 = time.perf_counter()
    with _progress(f"features at {len(cuts)} cutoff(s)") as bar:
        n = write_features(
            orders,
            cuts,
            out,
            cfg.features.lookback_days,
            cfg.features.windows_days,
            horizon_days=horizon_days,
            on_part=bar.update,
        )
    _say(f"wrote {n:,} rows for {len(cuts)} cutoff(s) to {out} in {time.perf_counter() - t0:.1f}s")
    if "://" in out:  # written by Spark to a remote file system
        return
    from winback.engines.duckdb import connect

    folder = Path(out)
    files = str(folder / "*.parquet") if folder.is_dir() else out  # Spark writes a folder
    per_cut = (
        connect()
        .execute("SELECT cutoff_ts, count(*) FROM read_parquet(?) GROUP BY 1 ORDER BY 1", [files])
        .fetchall()
    )
    for ts, k in per_cut:
        _say(f"  {ts:%Y-%m-%d}: {k:,} customers")


def _print_timing(timing: dict) -> None:
    """The next-order chances against what happened, one line per horizon."""
    for days, t in timing.items():
        _say(
            f"no order within {days[:-1]} days: predicted {t['predicted']:.3f}, observed "
            f"{t['observed']:.3f} ({t['customers']:,} customers); mean gap of the ten bins "
            f"{t['ece']:.3f}"
        )


def _print_metrics(metrics: dict, choices: dict | None = None) -> None:
    _say(
        f"{'cutoff':<11} {'score':<8} {'customers':>9} {'churn':>6} {'ROC-AUC [95% CI]':>24} "
        f"{'Brier':>6} {'lift@10':>7} {'vs BG/NBD [95% CI]':>27}"
    )
    for key, table in metrics.items():
        for score, r in table.iterrows():
            brier = "" if r["brier"] != r["brier"] else f"{r['brier']:.4f}"
            _say(
                f"{key:<11} {score:<8} {int(r['customers']):>9,} {r['churn_rate']:>6.3f} "
                f"{r['auc']:.4f} [{r['auc_lo']:.4f}, {r['auc_hi']:.4f}] {brier:>6} "
                f"{r['lift_10']:>7.3f} {r['auc_minus_bgnbd']:+.4f} "
                f"[{r['auc_minus_bgnbd_lo']:+.4f}, {r['auc_minus_bgnbd_hi']:+.4f}]"
            )
    for key, c in (choices or {}).items():
        _say(f"{key}: the model is {_describe_choice(c)}")


def _describe_choice(c: dict) -> str:
    """'boosted (57 trees), chosen over btyd (log loss 0.4270), ...' for a model's choice."""
    what = {"btyd": "BG/NBD alone", "boosted_btyd": "boosted from BG/NBD", "boosted": "boosted"}
    trees = "" if c["candidate"] == "btyd" else f", {c['n_trees']} trees"
    if c["candidate"] == "boosted_btyd" and c["shrink"] != 1:
        trees += f" weighted {c['shrink']:g}"
    if c["candidate"] == "boosted" and c.get("btyd_weight"):
        trees += f" weighted {c['shrink']:g}, BG/NBD's log-odds {c['btyd_weight']:g}"
    others = ", ".join(
        f"{what[n]} {v['log_loss']:.4f}" for n, v in c["candidates"].items() if n != c["candidate"]
    )
    mine = c["candidates"][c["candidate"]]["log_loss"]
    return (
        f"{what[c['candidate']]}{trees}: held-out log loss {mine:.4f} against {others} "
        f"({c['selection_rows']:,} rows of held-out customers)"
    )


HorizonOpt = Annotated[
    int | None,
    typer.Option(
        "--horizon-days",
        metavar="DAYS",
        help="Churn horizon H in days (default labels.horizon_days).",
    ),
]
LookbackOpt = Annotated[
    int | None,
    typer.Option(
        "--lookback-days",
        metavar="DAYS",
        help="Population lookback (default features.lookback_days).",
    ),
]
TrackOpt = Annotated[bool, typer.Option("--track/--no-track", help="Log the run to MLflow.")]


def _with_windows(cfg: Config, horizon_days: int | None, lookback_days: int | None) -> Config:
    """The config with --horizon-days and --lookback-days applied, validated again."""
    from winback.config import format_validation_error

    raw = cfg.model_dump()
    if horizon_days is not None:
        raw["labels"]["horizon_days"] = horizon_days
    if lookback_days is not None:
        raw["features"]["lookback_days"] = lookback_days
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "--horizon-days/--lookback-days")) from None


@app.command(epilog=EXIT_CODES)
def backtest(
    as_of: Annotated[
        str,
        typer.Option(
            "--as-of",
            metavar="DATE[,DATE...]",
            help="Evaluation cutoff(s) T, comma-separated for a rolling origin.",
        ),
    ],
    orders_path: OrdersOpt = None,
    horizon_days: HorizonOpt = None,
    lookback_days: LookbackOpt = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for predictions, metrics, plots.")
    ] = Path("backtest"),
    track: TrackOpt = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: EngineOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Out-of-time backtest of the churn model against the baselines.

    For each T, trains only on labels observable at T (cutoffs <= T - H), scores the customers
    active at T and, where the data covers (T, T + H], evaluates the model, BG/NBD, logistic
    regression on RFM, the RFM score and recency on the same customers. Writes
    predictions.parquet, metrics.json and PNG plots to --out, and logs the run to MLflow.
    """
    _verbose(verbose)
    from winback.jobs import backtest_job, check_tracking

    cfg = _with_windows(_config(config, set_, engine), horizon_days, lookback_days)
    cuts = normalize_cutoffs(as_of)
    _check_out(out)
    if track:
        check_tracking(cfg)
    orders = _load(orders_path, cfg, None)
    t0 = time.perf_counter()
    with _progress("backtest") as bar:
        run = backtest_job(
            orders, cfg, cuts, out=out, track=track, progress=bar, on_stage=_on_stage
        )
    run_log.counts |= {
        "out": str(out),
        "files": [f.name for f in run.files],
        "mlflow_run_id": run.run_id,
        "chosen": {k: c["candidate"] for k, c in run.result.choices().items()},
        "auc": {k: float(t.loc["model", "auc"]) for k, t in run.result.metrics.items()},
    }
    if run.result.metrics:
        _print_metrics(run.result.metrics, run.result.choices())
        _print_timing(run.result.timing)
    else:
        _say("no evaluation cutoff has a fully observed horizon: scored, not evaluated")
    _say(
        f"wrote {', '.join(f.name for f in run.files)} to {out} in {time.perf_counter() - t0:.1f}s"
    )
    if run.run_id:
        _say(f"MLflow run {run.run_id} in {run.tracking_uri}")


@app.command(epilog=EXIT_CODES)
def train(
    orders_path: OrdersOpt = None,
    as_of: AsOfOpt = None,
    horizon_days: HorizonOpt = None,
    lookback_days: LookbackOpt = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make this version the champion whatever it scores.")
    ] = False,
    track: TrackOpt = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: EngineOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train the production model as of T on every labelled cutoff up to T - H.

    Runs the sufficiency gate first, backtests the same configuration at T - H (so that
    versions can be compared), saves the model under models_dir with its metadata and checksum,
    and registers it in MLflow; it becomes the 'champion' only if it beats the champion on the
    same backtest, or with --promote.
    """
    _verbose(verbose)
    from winback.jobs import check_tracking, train_job

    cfg = _with_windows(_config(config, set_, engine), horizon_days, lookback_days)
    _check_out(Path(cfg.models_dir), option="models_dir")
    if track:
        check_tracking(cfg)
    orders = _load(orders_path, cfg, None)
    with _progress("training") as bar:
        res = train_job(
            orders,
            cfg,
            parse_as_of(as_of),
            track=track,
            promote=promote,
            progress=bar,
            on_stage=_on_stage,
        )
    run_log.counts |= {
        "model_file": str(res.path),
        "rows": res.n_rows,
        "cutoffs": len(res.cutoffs),
        "chosen": res.model.choice()["candidate"],
    }
    _print_metrics(res.backtest.metrics, res.backtest.choices())
    _echo_train(res)


def _echo_train(res) -> None:
    cuts = res.cutoffs
    _say(
        f"trained on {res.n_rows:,} rows at {len(cuts)} cutoffs "
        f"({cuts[0]:%Y-%m-%d} to {cuts[-1]:%Y-%m-%d}) in {res.seconds:.1f}s"
    )
    _say(f"the model is {_describe_choice(res.model.choice())}")
    _say(f"saved {res.path} (+ .json with metadata and sha256)")
    if res.promotion is not None:
        p = res.promotion
        run_log.counts |= {"registry_version": p.version, "promoted": bool(p.promoted)}
        verdict = "champion" if p.promoted else "not promoted"
        _say(f"MLflow: v{p.version} ({verdict}: {p.reason}); run {p.run_id} in {res.tracking_uri}")


@app.command(epilog=EXIT_CODES)
def score(
    orders_path: OrdersOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="DATE",
            help="Date to score at (default: the last order; 'today' allowed).",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="champion|FILE",
            help="'champion' (from MLflow) or a saved model file.",
        ),
    ] = "champion",
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Export folder; lists go to OUT/<as-of>/.")
    ] = Path("exports"),
    wait: Annotated[
        float,
        typer.Option(
            "--wait", metavar="SECONDS", help="Seconds to wait for another run writing OUT."
        ),
    ] = 0.0,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even when the drift guard refuses.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    engine: EngineOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score every customer as of a date and export the win-back lists (the nightly job).

    Writes to OUT/<as-of>/ atomically (a crash leaves the previous complete export or the new
    one): at_risk.csv and lapsed.csv, the customers to contact; at_risk_control.csv and
    lapsed_control.csv, the control groups, not to contact; their Parquet twins at full
    precision, scores.parquet (every scored customer), delta.csv, profit_curve.csv,
    README.txt (what every column means and what the sizing assumed) and manifest.json.
    Recent buyers (campaigns.recent_days) and customers below campaigns.min_p_churn are not
    listed. Each group's list holds its customers with a positive expected gain, riskiest
    first; with campaigns.learned, the save rates learned from past campaigns size it, and an
    uplift model that beat p_churn on a campaign it did not see ranks it by expected
    incremental profit (campaigns.rank_by). Every scored customer also gets the chance of no
    order within 30, 60 and 90 days and the dates an order is 10%, 50% and 90% likely by.

    Over 1M customers on DuckDB, the features are kept in OUT/.features/ and the next night
    computes only the customers whose orders changed; the others' carry over, moved on by the
    date, with the same values (engine.carry_features: false turns it off).
    """
    _verbose(verbose)
    from winback.jobs import find_model, score_job

    cfg = _config(config, set_, engine)
    _check_out(out)  # before any work: a bad folder is found at once
    ref = find_model(cfg, model)
    # orders after the as-of are future dates to it (policies.future_date applies)
    orders = _load(orders_path, cfg, parse_as_of(as_of))
    with _progress("scoring"):
        res = score_job(
            orders,
            cfg,
            out,
            as_of=parse_as_of(as_of),
            model=ref,
            wait_seconds=wait,
            force=force,
            on_stage=_on_stage,
        )
    _echo_score(res)


def _echo_score(res) -> None:
    run_log.counts |= {
        "as_of": f"{res.as_of:%Y-%m-%d}",
        "scored": res.n_scored,
        "listed": {
            name: {"contact": int((~lst.control).sum()), "control": int(lst.control.sum())}
            for name, lst in res.lists.items()
        },
        "model_version": res.model_version,
        "folder": str(res.folder),
    }

    def sizes(name: str) -> str:
        control = int(res.lists[name].control.sum())
        return (
            f"{len(res.lists[name]) - control:,} to contact ({name}.csv), {control:,} control "
            f"({name}_control.csv, not to contact)"
        )

    _say(
        f"scored {res.n_scored:,} customers as of {res.as_of:%Y-%m-%d} with model "
        f"{res.model_version} -> {res.folder}\n"
        f"  at_risk: {sizes('at_risk')}\n  lapsed: {sizes('lapsed')}"
    )
    at_risk = res.lists["at_risk"]
    by_uplift = bool(at_risk["uplift"].notna().any())
    if by_uplift:
        _say("  ranked by the uplift model's expected incremental profit (campaigns.rank_by)")
    _say(
        f"  {'rank':>6} {'customer':<12} {'p':>4} {'value':>9} "
        + (f"{'uplift':>7} {'gain':>7} " if by_uplift else "")
        + f"{'segment':<18} {'campaign':<16} reasons"
    )
    first = at_risk.take((~at_risk.control).nonzero()[0][:10])  # the top of at_risk.csv
    for rank, r in enumerate(first.itertuples(), 1):
        _say(  # the rank in at_risk.csv
            f"  {rank:>6} {r.customer_id:<12} {r.p_churn:.2f} {r.value:9.2f} "
            + (f"{r.uplift:+7.3f} {r.expected_gain:7.2f} " if by_uplift else "")
            + f"{r.segment:<18} {r.campaign:<16} {r.reasons}"
        )


@app.command(epilog=EXIT_CODES)
def measure(
    export: Annotated[
        Path,
        typer.Option("--export", metavar="DIR", help="An exported list folder: EXPORTS/<as-of>."),
    ],
    orders_path: Annotated[
        str | None,
        typer.Option("--orders", metavar="PATH", help="Orders, including those placed since."),
    ] = None,
    window_days: Annotated[
        int | None,
        typer.Option(
            "--window-days",
            metavar="DAYS",
            min=1,
            help="Outcome window after the as-of (default: the horizon).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="DIR", help="Folder for measure.json/.csv/.html (default reports/...)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the readout as JSON instead of a table.")
    ] = False,
    track: TrackOpt = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Read out a campaign: treatment against control of an exported list.

    Joins the orders placed in (as-of, as-of + window] to the listed customers and reports,
    overall and per campaign group, the share who bought again and the revenue per customer of
    treatment and control, their difference with a 95% interval and p-value (normal
    approximation), the incremental revenue and the cost. Warns when the control group is too
    small to tell. Writes measure.json, measure.csv and measure.html and logs an MLflow run.
    """
    _verbose(verbose)
    from winback.jobs import check_tracking, measure_job

    cfg = _config(config, set_)
    target = out or Path("reports") / f"measure-{Path(os.path.abspath(export)).name}"
    _check_out(target)
    if track:
        check_tracking(cfg)
    orders = _load(orders_path, cfg, None)
    with _progress("measuring"):
        res = measure_job(orders, cfg, export, window_days=window_days, out=target, track=track)
    if as_json:
        _say(json.dumps(res.readout.to_dict(), indent=2, default=str))
        return
    _echo_readout(res.readout)
    _say(f"wrote {', '.join(str(f) for f in res.files)}")
    if res.run_id:
        _say(f"MLflow run {res.run_id}")


@app.command(epilog=EXIT_CODES)
def learn(
    exports: Annotated[
        Path,
        typer.Option(
            "--exports", metavar="DIR", help="The exports folder 'winback score' writes to."
        ),
    ],
    orders_path: Annotated[
        str | None,
        typer.Option("--orders", metavar="PATH", help="Orders, including those placed since."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", metavar="FILE", help="Where learned.json goes."),
    ] = Path("learned.json"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print learned.json instead of a table.")
    ] = False,
    track: TrackOpt = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Learn each campaign group's save rate from past campaigns.

    Reads every export under --exports whose outcome window (its horizon) has passed in the
    orders, and compares, per campaign group and pooled over campaigns, the share of treated
    and held-out customers who bought: the save rate is the share of the control's churners a
    contact kept, (treatment - control) / (1 - control), with a 95% interval. It is shrunk
    towards the group's save_rate in the config (a normal prior with standard deviation
    campaigns.learn_prior_sd), so a few held-out customers barely move it and thousands decide
    it.

    With two or more finished campaigns it also trains an uplift model (an X-learner on
    LightGBM) on all but the latest and judges it on the latest, which it did not see: Qini
    coefficient and uplift at the top 10/20/30%, against ranking by p_churn and at random.
    Only a model that beat p_churn is kept, beside learned.json.

    Writes learned.json and logs an MLflow run; set campaigns.learned to that file and score
    sizes the lists with the learned rates, and ranks them by the kept uplift model
    (campaigns.rank_by: auto or uplift).
    """
    _verbose(verbose)
    from winback.jobs import check_tracking, learn_job

    cfg = _config(config, set_)
    _check_out(out, file=True)
    if track:
        check_tracking(cfg)
    orders = _load(orders_path, cfg, None)
    with _progress("learning from past campaigns"):
        res = learn_job(orders, cfg, exports, out=out, track=track)
    doc = res.document
    run_log.counts |= {
        "exports": len(doc["exports"]),
        "skipped": len(doc["skipped"]),
        "learned": str(out),
    }
    if as_json:
        _say(json.dumps(doc, indent=2))
        return
    _say(
        f"learned from {len(doc['exports'])} campaign(s) whose window has passed"
        + (f"; {len(doc['skipped'])} still running" if doc["skipped"] else "")
    )
    for s in doc["skipped"]:
        _say(f"  skipped {s['export']}: {s['why']}")
    for w in doc["warnings"]:
        log.warning("warning: %s", w)
    _say(
        f"  {'group':<16} {'campaigns':>9} {'treated':>8} {'control':>8} "
        f"{'observed (se)':>16} {'prior':>6} {'learned [95% interval]':>26}"
    )
    for row in res.table.itertuples():
        seen = (
            "-"
            if math.isnan(row.save_rate_observed)
            else f"{row.save_rate_observed:.3f} ({row.save_rate_observed_se:.3f})"
        )
        _say(
            f"  {row.campaign:<16} {row.n_campaigns:>9} {row.n_treatment:>8,} "
            f"{row.n_control:>8,} {seen:>16} {row.prior:>6.3f} "
            f"{row.save_rate:>8.3f} [{row.save_rate_lo:.3f}, {row.save_rate_hi:.3f}]"
        )
    up = doc["uplift"]
    if not up["evaluated"]:
        _say(f"uplift model: not judged ({up['why']})")
    else:
        r = up["rankings"]
        line = (
            f"uplift model: trained on {len(up['trained_on'])} campaign(s), judged on "
            f"{up['evaluated_on']}: Qini {r['model']['qini']:.4f} "
            f"[{r['model']['qini_lo']:.4f}, {r['model']['qini_hi']:.4f}]"
        )
        if "p_churn" in r:
            line += f", ranking by p_churn {r['p_churn']['qini']:.4f}"
        _say(f"{line} (at random 0); {up['why']}")
        top = r["model"]
        _say(
            f"  uplift among its top 10%: {top['uplift_10'] * 100:+.1f} points "
            f"[{top['uplift_10_lo'] * 100:+.1f}, {top['uplift_10_hi'] * 100:+.1f}], "
            f"30%: {top['uplift_30'] * 100:+.1f}; at random "
            f"{up['random']['uplift'] * 100:+.1f} points"
        )
    _say(
        f"wrote {out}; set campaigns.learned to it to size the lists with these rates"
        + (
            " and rank them by uplift (campaigns.rank_by auto or uplift)"
            if up.get("model_file")
            else ""
        )
    )
    if res.run_id:
        _say(f"MLflow run {res.run_id}")


def _echo_readout(r) -> None:
    _say(
        f"campaign of {r.as_of:%Y-%m-%d}: outcomes over {r.window_days} days "
        f"({r.observed_days:.0f} observed)"
    )
    _say(
        f"  {'group':<16} {'treated':>8} {'control':>8} {'bought T':>9} {'bought C':>9} "
        f"{'uplift (95% interval)':>26} {'p':>6} {'p adj.':>6} "
        f"{'net revenue (95% interval)':>34} {'cost':>9}"
    )
    for row in r.table.itertuples():
        if math.isnan(row.incremental_retention):
            _say(f"  {row.scope:<16} {row.n_treatment:>8,} {row.n_control:>8,}  -")
            continue
        up = (
            f"{row.incremental_retention * 100:+.1f} pt [{row.incremental_retention_lo * 100:+.1f},"
            f" {row.incremental_retention_hi * 100:+.1f}]"
        )
        net = f"{row.net_revenue:,.0f} [{row.net_revenue_lo:,.0f}, {row.net_revenue_hi:,.0f}]"
        _say(
            f"  {row.scope:<16} {row.n_treatment:>8,} {row.n_control:>8,} "
            f"{row.retention_treatment:>9.1%} {row.retention_control:>9.1%} {up:>26} "
            f"{row.incremental_retention_p:>6.3f} {row.incremental_retention_p_adjusted:>6.3f} "
            f"{net:>34} {row.cost:>9,.0f}"
        )
    for w in r.warnings:
        _say(f"warning: {w}")


@app.command(epilog=EXIT_CODES)
def report(
    orders_path: OrdersOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="DATE",
            help="Report up to the end of this day (default: the last order).",
        ),
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            metavar="month|quarter|year",
            help="month, quarter or year (default: report.period).",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for report.html and CSVs.")
    ] = Path("reports"),
    exports: Annotated[
        Path | None,
        typer.Option(
            "--exports",
            metavar="DIR",
            help="Exports folder of 'score' (default: report.exports_dir).",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            metavar="champion|FILE",
            help="'champion' (from MLflow), a model file, or 'none'.",
        ),
    ] = "champion",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write the retention report: one self-contained HTML page and its tables as CSV.

    Churn over the model's horizon at the start of each period (the share of active customers
    who bought nothing in the next H days: what the lists score). Per period: customers active
    at the start (S) and end (E), new ones (N), retention
    (E - N) / S, churn, repeat purchase rate and revenue retention; the monthly cohort table and
    heatmap; churn by RFM segment and channel; and, when exports exist, the score distribution,
    list sizes over time and the treatment-against-control readout of recent campaigns; the
    gains curve of the champion model.
    """
    _verbose(verbose)
    from winback.jobs import report_job

    cfg = _config(config, set_)
    if period is not None and period not in ("month", "quarter", "year"):
        raise UsageError(f"--period must be month, quarter or year; got {period!r}.")
    day = parse_as_of(as_of)
    _check_out(out)
    orders = _load(orders_path, cfg, None, duckdb_only="report")
    with _progress("report") as bar:
        res = report_job(
            orders,
            cfg,
            out,
            as_of=day,
            period=period,
            exports_dir=exports,
            model=None if model == "none" else model,
            on_step=bar.update,
        )
    k = res.kpis.dropna(subset=["retention_rate"])
    if len(k):
        last = k.iloc[-1]
        _say(
            f"{last['period']}: {last['S']:,} active at the start, {last['N']:,} new, "
            f"{last['E']:,} at the end -> retention {last['retention_rate']:.1%}, churn "
            f"{last['churn_rate']:.1%} ({cfg.report.active_days or cfg.features.lookback_days}"
            f"-day activity), repeat purchase rate {last['repeat_purchase_rate']:.1%}"
        )
    h = res.horizon_churn.dropna(subset=["churn_rate"]) if res.horizon_churn is not None else []
    if len(h):
        _say(
            f"{h['period'].iloc[-1]}: {h['churn_rate'].iloc[-1]:.1%} of {h['active'].iloc[-1]:,} "
            f"active customers bought nothing in the next {res.horizon_days} days (the churn the "
            "lists score)"
        )
    for r in res.readouts[-1:]:
        _echo_readout(r)
    for note in res.notes:
        _say(f"note: {note}")
    _say(f"wrote {res.path} and {len(res.files) - 1} CSV tables")


def _scenario_help() -> str:
    from winback.synth import SCENARIOS

    return "The kind of shop: " + "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()) + "."


@app.command(epilog=EXIT_CODES)
def synth(
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Output Parquet file.")] = Path(
        "orders.parquet"
    ),
    scenario: Annotated[
        str, typer.Option("--scenario", metavar="NAME", help=_scenario_help())
    ] = "shop",
    customers: Annotated[
        int | None, typer.Option("--customers", metavar="N", help="Number of customers.")
    ] = None,
    orders_n: Annotated[
        int | None,
        typer.Option("--orders", metavar="N", help="About this many orders (sets --customers)."),
    ] = None,
    start: Annotated[
        str, typer.Option("--from", metavar="DATE", help="First day of the file.")
    ] = "2022-01-01",
    end: Annotated[
        str, typer.Option("--to", metavar="DATE", help="Last day of the file.")
    ] = "2024-12-31",
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed.")] = 7,
    verbose: VerboseOpt = False,
) -> None:
    """Generate a synthetic order history (Parquet), seeded: the same options give the same
    orders.

    Each --scenario is a shop in which BG/NBD is right (btyd) or wrong in a known way, to see
    what a model learns beyond it: a Nov-Dec peak with customers who buy only then (seasonal),
    years of history before the file starts (censored), purchase rates that fade (fading), or
    returns and falling order values that drive customers away (unhappy).
    """
    _verbose(verbose)
    from winback.synth import customers_for_orders, generate_orders, scenario_params

    if customers is not None and orders_n is not None:
        raise UsageError("Give --customers or --orders, not both.")
    _check_out(out, file=True)
    params = scenario_params(scenario, start=start, end=end, seed=seed)
    n = customers or (customers_for_orders(orders_n, params) if orders_n else 20_000)
    params = scenario_params(scenario, n_customers=n, start=start, end=end, seed=seed)
    t0 = time.perf_counter()
    df = generate_orders(params)
    from winback.atomic import atomic_parquet

    atomic_parquet(df, out)
    _say(
        f"wrote {len(df):,} orders of {df['customer_id'].nunique():,} customers ({scenario}) "
        f"to {out} in {time.perf_counter() - t0:.1f}s"
    )


@app.command(epilog=EXIT_CODES)
def demo(
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for the demo's files.")
    ] = Path("demo"),
    customers: Annotated[
        int, typer.Option("--customers", metavar="N", help="Synthetic customers.")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Random seed.")] = 7,
    verbose: VerboseOpt = False,
) -> None:
    """Run the pipeline end to end on synthetic data.

    synth -> validate -> profile -> features -> labels -> backtest of the churn model against
    the baselines -> a past campaign with a control group, its simulated effect and its readout
    -> the production model registered in MLflow -> tonight's lists -> the retention report.
    Everything is written inside --out (orders, exports, models, mlflow.db, reports).
    """
    _verbose(verbose)
    from winback.demo import run_demo

    _check_out(out)
    show = {
        "line": typer.echo,
        "lines": _echo_lines,
        "metrics": lambda bt: (_print_metrics(bt.metrics, bt.choices()), _print_timing(bt.timing)),
        "score": _echo_score,
        "train": _echo_train,
        "readout": _echo_readout,
    }
    run_demo(out, customers=customers, seed=seed, say=lambda kind, what: show[kind](what))


def main() -> None:
    """Entry point: run the app, turning errors into one line on stderr and an exit code: 1
    for a data, config or model problem, 2 for wrong usage (an unknown command or option, a
    missing or malformed value). With --log-format json that line, like every other, is a
    JSON object: the final ``done`` line, written on success too."""
    from typer.exceptions import TyperException

    debug = os.environ.get("WINBACK_DEBUG") == "1"
    _log_format_early(sys.argv[1:])
    try:
        app(standalone_mode=False)
    except UsageError as exc:
        _finish("usage_error", 2, f"usage error: {exc}")
    except WinbackError as exc:
        _finish("error", 1, f"error: {exc}")
    except typer.Exit as exc:
        _finish("ok" if not exc.exit_code else "error", exc.exit_code)
    except typer.Abort:
        _finish("error", 1, "aborted")
    except KeyboardInterrupt:
        _finish("interrupted", 130, "interrupted")
    except TyperException as exc:  # the command line parser's own errors (typer's click)
        code, message = _usage_failure(exc)
        _finish("usage_error" if code == 2 else ("ok" if code == 0 else "error"), code, message)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no raw traceback
        if debug:
            raise
        _finish(
            "error",
            1,
            f"error: unexpected {type(exc).__name__}: {exc} "
            "(set WINBACK_DEBUG=1 for the traceback, and please report it)",
        )
    _finish("ok", 0)


def _log_format_early(argv: list[str]) -> None:
    """The log format before the parser runs, so that even a usage error it finds is written
    in the format asked for."""
    fmt = os.environ.get("WINBACK_LOG_FORMAT", "text")
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            fmt = argv[i + 1]
        elif arg.startswith("--log-format="):
            fmt = arg.split("=", 1)[1]
    run_log.format = "json" if fmt.strip().lower() == "json" else "text"
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    run_log.command = next((a for a in argv if a in commands), None)


def _finish(status: str, code: int, message: str | None = None) -> None:
    """End the process: the message on stderr (JSON: the ``done`` line), then the exit code."""
    if run_log.json:
        typer.echo(run_log.done(status, code, message), err=True)
    elif message:
        typer.echo(message, err=True)
    sys.exit(code)


def _usage_failure(exc) -> tuple[int, str | None]:
    """The exit code and one line for a parser error (help for a bare 'winback')."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        typer.echo(ctx.get_help())
        return 0, None
    message = " ".join(exc.format_message().split()) if hasattr(exc, "format_message") else ""
    code = int(getattr(exc, "exit_code", 2))
    if code == 2:
        where = f"{ctx.command_path} --help" if ctx is not None else "winback --help"
        return code, f"usage error: {message} (see {where})"
    return code, f"error: {message}"
