"""Nightly scoring benchmark: ``winback score`` itself, through the command line, on 10M orders.

Each round is two nights in a fresh exports folder, each a fresh process with
``--log-format json``: the first night (``--as-of`` the first midnight a day or less before
the last order, nothing kept: every customer's features computed from the orders) and the
next night (a day later, after the last order, as a nightly job runs it: the features kept
by the first night carried for every customer whose orders did not change, the delta against
the first night's lists).
Each stage's time comes from the job's own stage hook (its ``stage`` events: model, scores,
lists, reasons, changes, export; ``load`` is the reading and validating of the orders);
``total`` is the whole process's wall time, from start to exit, and the peak RSS is the whole
process's. Reports the median of the rounds for each night. The
model is trained once on the 1M-order file (cached under benchmarks/data) with the same column
mapping, since what is measured is scoring.
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
from datetime import datetime, timedelta
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


def _run(orders_path: str, model_path: str, out: str, as_of: str) -> dict:
    """One night: ``winback score`` as a user runs it, in its own process, into the exports
    folder ``out`` (``as_of`` empty: the last order's day); its stages from its JSON log lines,
    its wall time and peak RSS from the operating system."""
    stages = {}
    cmd = [
        sys.executable, "-m", "winback", "--log-format", "json", "score",
        "--orders", orders_path, "--model", model_path, "--out", out,
        *[a for o in OVERRIDES for a in ("--set", o)],
        *(["--as-of", as_of] if as_of else []),
    ]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    wall = time.perf_counter() - t0
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    done = events[-1] if events else {}
    if res.returncode != 0 or done.get("status") != "ok":
        raise SystemExit(f"winback score failed ({res.returncode}):\n{res.stderr[-3000:]}")
    for e in events:
        if e["event"] == "progress" and e["step"] == "reading and validating orders":
            stages["load"] = e["seconds"]
        elif e["event"] == "stage":
            stages[e["stage"]] = e["seconds"]
    stages["total"] = wall
    manifest = json.loads((Path(done["folder"]) / "manifest.json").read_text())
    return {
        "stages": stages,
        "features": manifest["features"],
        "customers": done["scored"],
        "listed": {k: v["contact"] + v["control"] for k, v in done["listed"].items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
    }


NIGHTS = ("first night", "next night")


def first_night(last: datetime) -> str:
    """The first night's as-of for a history whose last order is at ``last``: the first
    midnight a day or less before it, so that the next night (:func:`next_night`) comes after
    the last order."""
    day_before = last.replace(tzinfo=None) - timedelta(days=1)
    midnight = datetime.combine(day_before.date(), datetime.min.time())
    return f"{midnight if midnight == day_before else midnight + timedelta(days=1):%Y-%m-%d}"


def next_night(first: str) -> str:
    """The night after ``first`` (as cron runs ``score --as-of $(date +%F)`` each midnight):
    its own export, the first night's its previous one, so its delta is a night's changes."""
    return f"{datetime.fromisoformat(first) + timedelta(days=1):%Y-%m-%d}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(_run(*args.run)))
        return
    import pyarrow.parquet as pq
    from bench_features import _data_file

    data = _data_file(args.orders)
    model = _model()
    last = pq.read_table(data, columns=["order_ts"]).column(0).to_pandas().max()
    before = first_night(last.to_pydatetime())
    runs: dict[str, list[dict]] = {night: [] for night in NIGHTS}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as out:
            for night, as_of in zip(NIGHTS, (before, next_night(before)), strict=True):
                res = json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--run", str(data), str(model), out, as_of],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                runs[night].append(res)
                st, f = res["stages"], res["features"]
                print(
                    f"round {r + 1}, {night}: "
                    + ", ".join(f"{k} {v:.1f}s" for k, v in st.items())
                    + f", peak {res['peak_rss_mb']:.0f} MB; features: "
                    + f"{f['customers_carried']:,} carried, {f['customers_computed']:,} computed",
                    flush=True,
                )
    first = runs[NIGHTS[0]][0]
    print(
        f"\n{args.orders:,} orders, {first['customers']:,} customers scored, lists "
        f"{first['listed']}; medians of {args.rounds} rounds:"
    )
    medians = {}
    for night in NIGHTS:
        med = {k: statistics.median(r["stages"][k] for r in runs[night]) for k in first["stages"]}
        rss = statistics.median(r["peak_rss_mb"] for r in runs[night])
        medians[night] = {"median_s": med, "peak_rss_mb": rss}
        print(f"  {night}:")
        for k, v in med.items():
            print(f"    {k:<15} {v:6.1f} s")
        print(f"    peak RSS        {rss:6.0f} MB")
    print("  (targets: total <= 30 s, peak RSS <= 3072 MB)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "score.json").write_text(
        json.dumps({"orders": args.orders, "nights": medians, "runs": runs}, indent=2)
    )


if __name__ == "__main__":
    main()
