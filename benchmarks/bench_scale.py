"""Scale benchmark: load, features and scoring of 50M synthetic orders on DuckDB and on Spark.

Scoring is the whole nightly score job, timed in two stages: ``scores`` (features, BG/NBD, the
model, ranks, deciles, segments and campaign groups of every customer) and ``lists`` (sizing,
control groups, reasons for the listed customers, the profit curve, the delta and the atomic
export).

Each engine runs the first night: load, features at the as-of (written to Parquet, what
``winback features`` does) and the score job with nothing kept, as of the first midnight a
day or less before the last order. On DuckDB a second process then runs the next night as cron
runs it: load and the score job a day later, after the last order, in the same exports folder
(the first night's export is its previous one, so its delta is one night's changes), carrying
the features the first night kept for every customer whose orders did not change (Spark keeps
none: its every night is a first night).

The orders are a folder of Parquet parts (10 shards of 5M orders, each its own customers),
generated once under benchmarks/data. Each run is a fresh subprocess; its peak memory is the
largest sum of the resident sets of it and all its children (Spark's JVM and Python workers
included), sampled every 0.2 s. Reports per-stage wall times, peak RSS and the Spark / DuckDB
ratios, measured side by side in one run (medians when --rounds > 1).

    python benchmarks/bench_scale.py [--orders 50000000] [--rounds 1] [--spark-master local[2]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
OVERRIDES = ["orders.columns.category=category", "orders.columns.channel=channel"]
SHARD_ORDERS = 5_000_000
STAGES = ("load", "features", "scores", "lists")


def data_folder(n_orders: int) -> Path:
    """``synth_<n>_parts/`` with one Parquet file per shard of 5M orders (made once)."""
    from winback.synth import SynthParams, customers_for_orders, generate_orders

    folder = DATA / f"synth_{n_orders}_parts"
    shards = max(1, round(n_orders / SHARD_ORDERS))
    if folder.is_dir() and len(list(folder.glob("*.parquet"))) == shards:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    per = customers_for_orders(n_orders // shards)
    for k in range(shards):
        part = folder / f"part-{k:03d}.parquet"
        if part.exists():
            continue
        params = SynthParams(n_customers=per, start="2022-01-01", end="2024-12-31", seed=100 + k)
        df = generate_orders(params)
        df["customer_id"] += k * 100_000_000  # each shard its own customers and order ids
        df["order_id"] += k * 100_000_000
        tmp = part.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.rename(part)
        print(f"  shard {k + 1}/{shards}: {len(df):,} orders", flush=True)
    return folder


def run_case(
    engine: str, folder: str, model_path: str, master: str, as_of: str, exports: str, night: str
) -> dict:
    """One night in this process: load, the features at the as-of (to Parquet; the ``first``
    night only) and the score job as of ``as_of`` into ``exports``. Its own files (DuckDB's
    spill, the features: gigabytes at 50M) go when it ends; the exports folder is the
    caller's."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="winback-bench-"))
    try:
        return _run_case(engine, folder, model_path, master, as_of, Path(exports), night, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_case(
    engine: str,
    folder: str,
    model_path: str,
    master: str,
    as_of: str,
    exports: Path,
    night: str,
    scratch: Path,
) -> dict:
    import winback.jobs as jobs
    from winback.config import load_config
    from winback.cutoffs import parse_as_of
    from winback.features import write_features
    from winback.orders import load_orders

    stages: dict[str, float] = {}

    def done(stage: str) -> None:  # a marker for the parent's memory timeline
        print(f"STAGE {stage} {time.time()}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    cfg = load_config(None, OVERRIDES)
    night_as_of = parse_as_of(as_of)
    if engine == "spark":
        from winback.engines.spark import SparkEngine, spark_session

        spark = spark_session(master, {"spark.driver.memory": "8g"})
        stages["start"] = time.perf_counter() - t0
        orders = load_orders(folder, cfg.orders, as_of=night_as_of, engine=SparkEngine(spark))
    else:
        from winback.engines.duckdb import connect

        stages["start"] = 0.0
        con = connect(cfg.engine.memory_limit, temp_directory=str(scratch / "spill"))
        orders = load_orders(folder, cfg.orders, as_of=night_as_of, con=con)
    stages["load"] = time.perf_counter() - t0 - stages["start"]
    done("load")
    rows = None
    if night == "first":  # the features command too
        t = time.perf_counter()
        out = scratch / "features.parquet"
        rows = write_features(orders, [night_as_of], out, cfg.features.lookback_days)
        stages["features"] = time.perf_counter() - t
        done("features")
    t = time.perf_counter()

    def told(stage) -> None:  # the job's own stage hook: scores, then the rest as lists
        if stage.name in ("model", "scores"):
            stages["scores"] = time.perf_counter() - t
            if stage.name == "scores":
                done("scores")

    result = jobs.score_job(
        orders, cfg, exports, model=model_path, as_of=night_as_of, on_stage=told
    )
    stages["lists"] = time.perf_counter() - t - stages["scores"]
    done("lists")
    stages["total"] = time.perf_counter() - t0
    return {
        "stages": stages,
        "orders": orders.report.n_orders,
        "feature_rows": rows,
        "features": result_features(exports, result.as_of),
        "scored": result.n_scored,
        "listed": sum(len(frame) for frame in result.lists.values()),
    }


def result_features(exports: Path, as_of: datetime) -> dict | None:
    """How the night's features were split between carried and computed (its manifest)."""
    manifest = exports / f"{as_of:%Y-%m-%d}" / "manifest.json"
    return json.loads(manifest.read_text()).get("features")


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child that just ended
            total += p.memory_info().rss
    return total


def measure(
    engine: str, folder: Path, model: Path, master: str, as_of: str, exports: Path, night: str
) -> dict:
    """Run one night (``first`` or ``next``) in a subprocess; add its peak tree RSS (MB)."""
    import psutil

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import bench_scale as b; "
        "print('RESULT' + json.dumps(b.run_case(*sys.argv[2:])))"
    )
    args = [engine, str(folder), str(model), master, as_of, str(exports), night]
    cmd = [sys.executable, "-c", code, str(HERE), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    timeline: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                timeline.append((time.time(), _tree_rss(ps)))
            time.sleep(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{err[-3000:]}")
    if "RESULT" not in out:
        raise SystemExit(f"{engine} run printed no result:\n{out[-2000:]}\n{err[-3000:]}")
    result = json.loads(out[out.rindex("RESULT") + len("RESULT") :].splitlines()[0])
    result["peak_rss_mb"] = max(r for _, r in timeline) / 2**20
    # the peak within each stage, from the child's stage markers
    marks = [ln.split() for ln in err.splitlines() if ln.startswith("STAGE ")]
    start, peaks = 0.0, {}
    for _, stage, at in marks:
        inside = [r for t, r in timeline if start < t <= float(at)]
        peaks[stage] = (max(inside) if inside else 0) / 2**20
        start = float(at)
    result["stage_peak_rss_mb"] = peaks
    return result


def _last_order(folder: Path) -> datetime:
    """The last order's timestamp in the Parquet parts."""
    import duckdb

    rel = duckdb.sql(f"SELECT max(order_ts) FROM read_parquet('{folder}/*.parquet')")
    return rel.fetchall()[0][0]


def _print_run(r: int, case: str, res: dict) -> None:
    st, sp = res["stages"], res["stage_peak_rss_mb"]
    ran = [k for k in STAGES if k in st]
    print(
        f"round {r + 1} {case}: total {st['total']:7.1f}s ("
        + ", ".join(f"{k} {st[k]:.1f}" for k in ran)
        + f"), peak RSS {res['peak_rss_mb']:,.0f} MB ("
        + ", ".join(f"{k} {sp.get(k, 0):,.0f}" for k in ran)
        + ")"
        + (f"; features {res['features']}" if res.get("features") else ""),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=50_000_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument(
        "--engines", default="duckdb,spark", help="Which engines to run (comma-separated)."
    )
    args = ap.parse_args()

    from bench_score import _model, first_night, next_night

    print(f"data: {args.orders:,} synthetic orders (made once under {DATA})", flush=True)
    folder = data_folder(args.orders)
    model = _model()
    before = first_night(_last_order(folder))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    # the nights each engine runs, in order, in one exports folder (Spark keeps no features)
    nights = {
        e: [(e, before, "first")]
        + ([(f"{e} next night", next_night(before), "next")] if e == "duckdb" else [])
        for e in engines
    }
    runs: dict[str, list[dict]] = {case: [] for e in engines for case, _, _ in nights[e]}
    for r in range(args.rounds):
        for engine in engines:  # alternate, so both see the same machine load
            with tempfile.TemporaryDirectory(prefix="winback-bench-exports-") as exports:
                for case, as_of, night in nights[engine]:
                    res = measure(
                        engine, folder, model, args.spark_master, as_of, Path(exports), night
                    )
                    runs[case].append(res)
                    _print_run(r, case, res)
    first = next(iter(runs.values()))[0]
    summary: dict = {"orders": first["orders"], "rounds": args.rounds, "first_night": before}
    for case, rs in runs.items():
        keys = rs[0]["stages"]
        summary[case] = {
            "median_seconds": {k: statistics.median(x["stages"][k] for x in rs) for k in keys},
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in rs),
            "stage_peak_rss_mb": {
                k: statistics.median(x["stage_peak_rss_mb"].get(k, 0) for x in rs)
                for k in STAGES
                if k in keys
            },
            "feature_rows": rs[0]["feature_rows"],
            "features": rs[0]["features"],
            "scored": rs[0]["scored"],
            "listed": rs[0]["listed"],
        }
    summary["spark_master"] = args.spark_master
    if "duckdb" in summary and "spark" in summary:
        d, s = summary["duckdb"], summary["spark"]
        summary["spark_over_duckdb"] = {
            k: s["median_seconds"][k] / d["median_seconds"][k]
            for k in (*STAGES, "total")
            if d["median_seconds"][k] > 0
        }
        rows = ("feature_rows", "scored", "listed")
        if [d[k] for k in rows] != [s[k] for k in rows]:
            raise SystemExit("the engines disagree on the number of rows")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "scale.json" if len(engines) > 1 else f"scale_{engines[0]}.json"
    (RESULTS / name).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
