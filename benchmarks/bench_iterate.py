"""How fast a data scientist iterates on 1M orders: `winback backtest` at one evaluation cutoff and
`winback train`, each the real command in a fresh process, rounds interleaved.

Prints the medians of whole-process wall time and the peak RSS of each command and checks the
targets on a 2-core machine: backtest <= 60 s and <= 3 GB, train <= 90 s. Writes
benchmarks/results/iterate.json. The 1M-order synthetic file is generated once (the same one
`bench_features.py` uses).

Usage: python benchmarks/bench_iterate.py [--rounds 3] [--src DIR]

--src DIR times another checkout's winback (DIR/src) in the same rounds, interleaved with this
one's, for a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured, winback_cmd  # noqa: E402
from bench_features import _data_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"backtest": (60.0, 3072.0), "train": (90.0, None)}


def _commands(orders: Path, scratch: Path) -> dict[str, list[str]]:
    common = ["--orders", str(orders), "--horizon-days", "90", "--no-track"]
    return {
        "backtest": ["backtest", *common, "--as-of", "2024-09-30", "--out", str(scratch / "bt")],
        "train": [
            "train", *common, "--as-of", "2024-12-30", "--set", f"models_dir={scratch / 'models'}",
        ],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--src", type=Path, help="root of another checkout to time side by side")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    orders = _data_file(1_000_000)
    sides = {"this": None} if args.src is None else {"this": None, "src": args.src.resolve()}
    runs: dict[str, dict[str, list]] = {}
    for i in range(args.rounds):
        for side, src in sides.items():
            with tempfile.TemporaryDirectory() as tmp:
                for name, cmd_args in _commands(orders, Path(tmp)).items():
                    if src is None:
                        cmd, env = winback_cmd(*cmd_args), None
                    else:
                        cmd = [sys.executable, "-m", "winback", *cmd_args]
                        env = {"PYTHONPATH": str(src / "src")}
                    res = run_measured(cmd, cwd=Path(tmp), env=env)
                    if res.returncode != 0:
                        raise SystemExit(f"{side} {name} failed:\n{res.stderr[-3000:]}")
                    runs.setdefault(side, {}).setdefault(name, []).append(
                        (res.wall_s, res.peak_rss_mb)
                    )
                    print(
                        f"  round {i + 1} {side} {name}: {res.wall_s:.1f}s {res.peak_rss_mb:.0f}MB",
                        file=sys.stderr,
                        flush=True,
                    )
                shutil.rmtree(tmp, ignore_errors=True)
    report: dict = {"rounds": args.rounds, "orders": str(orders), "commands": {}}
    print(f"{'command':<10} {'side':<5} {'wall (median)':>14} {'peak RSS':>10}  target")
    ok = True
    for name, (max_wall, max_mb) in TARGETS.items():
        for side in sides:
            walls = [w for w, _ in runs[side][name]]
            peak = max(m for _, m in runs[side][name])
            wall = statistics.median(walls)
            met = wall <= max_wall and (max_mb is None or peak <= max_mb)
            if side == "this":
                ok &= met
            target = f"<= {max_wall:.0f}s" + (f", <= {max_mb / 1024:.0f} GB" if max_mb else "")
            verdict = ("ok" if met else "MISSED") if side == "this" else ""
            print(f"{name:<10} {side:<5} {wall:>13.1f}s {peak:>8.0f}MB  {target} {verdict}")
            report["commands"].setdefault(name, {})[side] = {
                "wall_s": wall, "wall_s_rounds": walls, "peak_rss_mb": peak, "ok": met,
            }  # fmt: skip
        if "src" in sides:
            ratio = (
                report["commands"][name]["src"]["wall_s"]
                / report["commands"][name]["this"]["wall_s"]
            )
            report["commands"][name]["speedup"] = ratio
            print(f"{name:<10} src/this wall ratio {ratio:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "iterate.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {RESULTS / 'iterate.json'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
