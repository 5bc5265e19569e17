"""Nightly scoring benchmark: the real nightly job (``jobs.score_job``) on 10M orders, each stage
timed by the job's own stage hook (model, scores, lists, reasons, changes, export), after loading.

Each round runs in a fresh subprocess (so peak RSS is its own); reports the median of the rounds
for each stage and in all. The model is trained once on the 1M-order file (cached under
benchmarks/data) with the same column mapping, since what is measured is scoring.

Usage: python benchmarks/bench_score.py [--orders 10000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OVERRIDES = ["orders.columns.category=category", "orders.columns.channel=channel"]


def _model() -> Path:
    from bench_features import _data_file

    from winback.config import load_config
    from winback.jobs import train_job
    from winback.orders import load_orders

    path = HERE / "data" / "model"
    found = sorted(path.glob("*.joblib")) if path.is_dir() else []
    if found:
        return found[-1]
    cfg = load_config(
        None, [*OVERRIDES, f"models_dir={path}", "training.n_cutoffs=6", "training.spacing_days=30"]
    )
    orders = load_orders(_data_file(1_000_000), cfg.orders, as_of=datetime(2025, 1, 1))
    return train_job(orders, cfg, datetime(2024, 12, 30), track=False).path


def _run(orders_path: str, model_path: str) -> dict:
    """One round: load the orders, then the nightly job itself (``jobs.score_job``, what
    ``winback score`` runs), its stages timed by the job's own stage hook."""
    from winback.config import load_config
    from winback.engines.duckdb import connect
    from winback.jobs import score_job
    from winback.orders import load_orders

    stages = {}
    t0 = time.perf_counter()
    cfg = load_config(None, OVERRIDES)
    orders = load_orders(
        orders_path, cfg.orders, as_of=datetime(2025, 1, 1), con=connect(cfg.engine.memory_limit)
    )
    stages["load"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        result = score_job(
            orders,
            cfg,
            Path(out),
            model=model_path,
            on_stage=lambda s: stages.__setitem__(s.name, s.seconds),
        )
    stages["total"] = time.perf_counter() - t0
    return {
        "stages": stages,
        "customers": len(result.scores),
        "listed": {k: len(v) for k, v in result.lists.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(_run(*args.run)))
        return
    from bench_features import _data_file

    data = _data_file(args.orders)
    model = _model()
    runs = []
    for r in range(args.rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--run", str(data), str(model)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(res)
        st = res["stages"]
        print(
            f"round {r + 1}: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in st.items())
            + f", peak {res['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    med = {k: statistics.median(r["stages"][k] for r in runs) for k in runs[0]["stages"]}
    rss = statistics.median(r["peak_rss_mb"] for r in runs)
    print(
        f"\n{args.orders:,} orders, {runs[0]['customers']:,} customers scored, lists "
        f"{runs[0]['listed']}; medians of {args.rounds} rounds:"
    )
    for k, v in med.items():
        print(f"  {k:<17} {v:6.1f} s")
    print(f"  peak RSS          {rss:6.0f} MB   (targets: total <= 60 s, peak RSS <= 4096 MB)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "score.json").write_text(
        json.dumps(
            {"orders": args.orders, "median_s": med, "peak_rss_mb": rss, "runs": runs}, indent=2
        )
    )


if __name__ == "__main__":
    main()
