"""Accuracy benchmark: backtests of the churn model against its baselines on CDNOW (91 and 181
days) and on every synthetic scenario, each run as `winback backtest` in a fresh process.

For each setting it prints, for the model and each baseline, ROC-AUC with its 95% bootstrap
interval, Brier score and lift@10%; the model's margin over the best baseline; the candidate
the model chose; and the backtest's whole-process wall time (median of the rounds) and peak
memory. Then it checks what the model promises:

- no regret, on every setting: ROC-AUC >= the best baseline's - 0.001, Brier <= BG/NBD's,
  lift@10% >= the best baseline's - 0.01;
- btyd (BG/NBD is the true model): within 0.003 ROC-AUC of BG/NBD;
- seasonal, fading, unhappy: at least +0.02 ROC-AUC over the best baseline;
- censored: at least BG/NBD's ROC-AUC;
- every round gives the same predictions (seeds fixed).

Writes benchmarks/results/accuracy.json. Scenario files are generated once by `winback synth`
into benchmarks/data/.

Usage: python benchmarks/bench_accuracy.py [--rounds 3] [--only cdnow_91d,seasonal] [--src DIR]

--src DIR runs the same backtests with the winback of another checkout (DIR, with its own
configs/), e.g. a worktree of an earlier release, for a before/after table; its results go to
benchmarks/results/accuracy_src.json and its promises are checked all the same.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured, winback_cmd  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
BASELINES = ("bgnbd", "logreg", "rfm", "recency")
MAPPING = ["--set", "orders.columns.category=category", "--set", "orders.columns.channel=channel"]


@dataclass
class Setting:
    name: str
    args: list[str]
    target: str  # what the model must reach beyond no regret
    scenario: tuple[str, int, str] | None = None  # (scenario, customers, first day)
    extra: dict = field(default_factory=dict)


SETTINGS = [
    Setting(
        "cdnow_91d",
        ["--config", "configs/cdnow.yaml", "--as-of", "1998-03-31", "--horizon-days", "91"],
        "no regret",
    ),
    Setting(
        "cdnow_181d",
        ["--config", "configs/cdnow.yaml", "--as-of", "1997-12-31", "--horizon-days", "181"],
        "no regret",
    ),
    Setting("btyd", [], "within 0.003 of BG/NBD", ("btyd", 20_000, "2022-01-01")),
    Setting("seasonal", [], "+0.02 over the best baseline", ("seasonal", 20_000, "2022-01-01")),
    Setting("censored", [], "at least BG/NBD", ("censored", 40_000, "2023-07-01")),
    Setting("fading", [], "+0.02 over the best baseline", ("fading", 20_000, "2022-01-01")),
    Setting("unhappy", [], "+0.02 over the best baseline", ("unhappy", 20_000, "2022-01-01")),
]


def _scenario_file(scenario: str, customers: int, start: str) -> Path:
    path = DATA / f"scenario_{scenario}_{customers}_{start}.parquet"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        res = run_measured(
            winback_cmd(
                "synth", "--scenario", scenario, "--customers", str(customers),
                "--from", start, "--to", "2024-12-31", "--out", str(path),
            )
        )  # fmt: skip
        if res.returncode != 0:
            raise SystemExit(f"synth {scenario} failed:\n{res.stderr}")
    return path


def _command(src: Path | None, *args: str) -> tuple[list[str], dict | None]:
    """The winback command and its environment: this checkout's, or the one under ``src``."""
    if src is None:
        return winback_cmd(*args), None
    return [sys.executable, "-m", "winback", *args], {"PYTHONPATH": str(src / "src")}


def _backtest_args(s: Setting, src: Path | None = None) -> list[str]:
    if s.scenario is None:
        if src is not None:  # that checkout's own config (its settings may differ)
            return [str(src / a) if a.startswith("configs/") else a for a in s.args]
        return s.args
    path = _scenario_file(*s.scenario)
    args = ["--orders", str(path), "--as-of", "2024-09-30", "--horizon-days", "90", *MAPPING]
    if src is not None:  # that checkout's defaults, not this one's configs/default.yaml
        args += ["--config", str(src / "configs" / "default.yaml")]
    return args


def _row(r: dict) -> dict:
    keep = ("auc", "auc_lo", "auc_hi", "brier", "lift_10")
    return {k: r.get(k) for k in keep}


def _verdict(s: Setting, m: dict) -> tuple[bool, list[str]]:
    """Whether the model keeps its promises on this setting, and what fails."""
    model, base = m["model"], {b: m[b] for b in BASELINES}
    best_auc = max(v["auc"] for v in base.values())
    best_lift = max(v["lift_10"] for v in base.values())
    fails = []
    if model["auc"] < best_auc - 0.001:
        fails.append(f"ROC-AUC {model['auc']:.4f} < best baseline {best_auc:.4f} - 0.001")
    if model["brier"] > base["bgnbd"]["brier"]:
        fails.append(f"Brier {model['brier']:.4f} > BG/NBD's {base['bgnbd']['brier']:.4f}")
    if model["lift_10"] < best_lift - 0.01:
        fails.append(f"lift@10% {model['lift_10']:.3f} < best baseline {best_lift:.3f} - 0.01")
    gap_bg = model["auc"] - base["bgnbd"]["auc"]
    if s.target.startswith("within") and abs(gap_bg) > 0.003:
        fails.append(f"ROC-AUC {gap_bg:+.4f} from BG/NBD, beyond 0.003")
    if s.target.startswith("+0.02") and model["auc"] - best_auc < 0.02:
        fails.append(f"ROC-AUC only {model['auc'] - best_auc:+.4f} over the best baseline")
    if s.target.startswith("at least") and gap_bg < 0:
        fails.append(f"ROC-AUC {gap_bg:+.4f} below BG/NBD")
    return not fails, fails


def run(settings: list[Setting], rounds: int, src: Path | None = None) -> dict:
    report = {"rounds": rounds, "src": str(src) if src else None, "settings": {}}
    for s in settings:
        args = _backtest_args(s, src)
        out = RESULTS / "accuracy" / s.name
        walls, peaks, first = [], [], None
        for i in range(rounds):
            shutil.rmtree(out, ignore_errors=True)
            cmd, env = _command(src, "backtest", *args, "--out", str(out), "--no-track")
            res = run_measured(cmd, env=env)
            if res.returncode != 0:
                raise SystemExit(f"{s.name}: backtest failed:\n{res.stderr[-3000:]}")
            doc = json.loads((out / "metrics.json").read_text())
            preds = (out / "predictions.parquet").read_bytes()
            if first is None:
                first = (doc["metrics"], preds)
            elif (doc["metrics"], preds) != first:
                raise SystemExit(f"{s.name}: round {i + 1} gave other predictions than round 1")
            walls.append(res.wall_s)
            peaks.append(res.peak_rss_mb)
            print(f"  {s.name} round {i + 1}: {res.wall_s:.1f}s", file=sys.stderr, flush=True)
        (cutoff,) = [k for k in doc["metrics"] if k != "pooled"]
        m = {score: _row(r) for score, r in doc["metrics"][cutoff].items()}
        ok, fails = _verdict(s, m)
        # a release before the candidate choice records none
        choice = doc.get("models", {}).get(cutoff, {"candidate": "-", "n_trees": None})
        report["settings"][s.name] = {
            "cutoff": cutoff,
            "target": s.target,
            "customers": doc["metrics"][cutoff]["model"]["customers"],
            "scores": m,
            "candidate": choice["candidate"],
            "n_trees": choice["n_trees"],
            "candidates": {k: v["log_loss"] for k, v in choice.get("candidates", {}).items()},
            "wall_s": statistics.median(walls),
            "wall_s_rounds": walls,
            "peak_rss_mb": max(peaks),
            "ok": ok,
            "fails": fails,
        }
    return report


def print_table(report: dict) -> None:
    print(
        f"{'setting':<11} {'score':<8} {'ROC-AUC [95% CI]':>25} {'Brier':>7} {'lift@10':>8} "
        f"{'vs best':>8}  {'model':<13} {'wall':>6} {'peak':>7}"
    )
    for name, r in report["settings"].items():
        sc = r["scores"]
        best = max(BASELINES, key=lambda b: sc[b]["auc"])
        for score in ("model", *BASELINES):
            v = sc[score]
            brier = f"{v['brier']:.4f}" if v["brier"] is not None else ""
            margin = f"{v['auc'] - sc[best]['auc']:+.4f}" if score == "model" else ""
            tail = ""
            if score == "model":
                tail = f"  {r['candidate']:<13} {r['wall_s']:>5.1f}s {r['peak_rss_mb']:>5.0f}MB"
            label = name if score == "model" else ""
            print(
                f"{label:<11} {score:<8} {v['auc']:.4f} [{v['auc_lo']:.4f}, {v['auc_hi']:.4f}] "
                f"{brier:>7} {v['lift_10']:>8.3f} {margin:>8}{tail}"
            )
    print()
    for name, r in report["settings"].items():
        verdict = "ok" if r["ok"] else "MISSED: " + "; ".join(r["fails"])
        target = "no regret" if r["target"] == "no regret" else f"no regret and {r['target']}"
        print(f"{name:<11} {target}: {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="backtests per setting (median wall)")
    ap.add_argument("--only", help="comma-separated setting names")
    ap.add_argument("--src", type=Path, help="root of another checkout to run instead")
    args = ap.parse_args()
    settings = SETTINGS
    if args.only:
        wanted = set(args.only.split(","))
        settings = [s for s in SETTINGS if s.name in wanted]
        if not settings:
            raise SystemExit(f"--only names none of {[s.name for s in SETTINGS]}")
    src = args.src.resolve() if args.src else None
    report = run(settings, args.rounds, src)
    print_table(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("accuracy_src.json" if src else "accuracy.json")
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
