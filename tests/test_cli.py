"""The command line, through real subprocess runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, hidden_in_browser, run_cli


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd or ROOT, timeout=300)


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "orders.parquet"
    res = run(
        "synth",
        "--customers",
        "800",
        "--from",
        "2022-01-01",
        "--to",
        "2023-12-31",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "orders of 800 customers" in res.stdout
    return out


def test_help_lists_every_command():
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("validate", "profile", "features", "synth", "demo"):
        assert cmd in res.stdout


def test_features_at_one_cutoff_with_labels(synth_file, tmp_path):
    out = tmp_path / "f.parquet"
    res = run(
        "features",
        "--orders",
        str(synth_file),
        "--as-of",
        "2023-06-30",
        "--horizon-days",
        "90",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out)
    assert df["cutoff_ts"].nunique() == 1 and df["churned"].notna().all()
    assert {"recency_days", "gap_mean_days", "churned", "orders_in_horizon"} <= set(df.columns)
    assert df[["customer_id", "cutoff_ts"]].duplicated().sum() == 0


def test_features_every_30_days_and_explicit_list(synth_file, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    res = run(
        "features",
        "--orders",
        str(synth_file),
        "--every",
        "30d",
        "--from",
        "2023-01-01",
        "--to",
        "2023-12-27",
        "--horizon-days",
        "30",
        "--out",
        str(a),
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(a)
    assert df["cutoff_ts"].nunique() == 13  # 2023-12-27 back to 2023-01-01 (360 days)
    # the last cutoff's horizon runs past the data: labels stay empty, never 'churned'
    last = df[df["cutoff_ts"] == df["cutoff_ts"].max()]
    assert last["churned"].isna().all()
    assert "get no labels" in res.stderr
    cuts = ",".join(sorted({f"{t:%Y-%m-%d}" for t in df["cutoff_ts"]})[:3])
    res = run("features", "--orders", str(synth_file), "--cutoffs", cuts, "--out", str(b))
    assert res.returncode == 0, res.stderr
    first3 = df[df["cutoff_ts"].isin(pd.read_parquet(b)["cutoff_ts"].unique())]
    pd.testing.assert_frame_equal(
        pd.read_parquet(b).reset_index(drop=True),
        first3.drop(columns=["churned", "orders_in_horizon"]).reset_index(drop=True),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["features", "--as-of", "2023-01-01", "--cutoffs", "2023-01-01"],
        ["features", "--every", "30d"],
        ["features", "--every", "monthly", "--from", "2023-01-01", "--to", "2023-06-01"],
        ["features", "--as-of", "31.12.2023"],
    ],
)
def test_usage_errors_exit_2_with_one_line(synth_file, args):
    res = run(*args, "--orders", str(synth_file))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("usage error: ")


def test_profile_prints_a_suggested_horizon(synth_file):
    res = run("profile", str(synth_file))
    assert res.returncode == 0, res.stderr
    assert "suggested horizon:" in res.stdout and "repeat buyers" in res.stdout


def test_demo_runs_end_to_end(tmp_path):
    res = run("demo", "--out", "demo", "--customers", "3000", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # everything it writes stays inside --out: no ./mlruns, ./models or ./mlflow.db beside it
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
    demo, stdout = tmp_path / "demo", res.stdout
    assert (demo / "mlartifacts").is_dir() and (demo / "mlflow.db").is_file()
    for name in ("orders.parquet", "features.parquet", "snapshots.parquet"):
        assert (demo / name).is_file()
    snap = pd.read_parquet(demo / "snapshots.parquet")
    assert snap["churned"].notna().all() and 0 < snap["churned"].mean() < 1
    assert "5/11 labels" in stdout and "6/11 backtest" in stdout
    assert "v1 (champion" in stdout and "11/11 retention report" in stdout
    assert "(365-day activity)" in stdout and "bought nothing in the next 30 days" in stdout
    # the past campaign and tonight's lists: two complete exports
    folders = sorted(p for p in (demo / "exports").iterdir() if p.is_symlink())
    assert [p.name for p in folders] == ["2024-11-30", "2024-12-30"]
    for folder in folders:
        assert (folder / "at_risk.csv").is_file() and (folder / "manifest.json").is_file()
    assert "recovered within the 95% interval" in stdout
    readout = json.loads((demo / "reports" / "measure" / "measure.json").read_text())
    assert readout["rows"][0]["scope"] == "all" and readout["window_days"] == 30
    # every table and plot of the report fits a 1280-pixel browser window
    assert hidden_in_browser(demo / "reports" / "report.html") == []
    assert "  model  " in stdout and "  bgnbd  " in stdout
    assert (demo / "backtest" / "metrics.json").is_file()


def test_python_m_and_console_script_agree():
    exe = Path(sys.executable).parent / "winback"
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == run("--version").stdout.strip()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["score", "--bogus"], "No such option: --bogus"),
        (["scroe"], "No such command 'scroe'"),
        (["score", "--as-of"], "requires an argument"),
        (["backtest", "--as-of", "2024-01-01", "--horizon-days", "ninety"], "'--horizon-days'"),
        (["backtest", "--orders", "x.parquet"], "Missing option '--as-of'"),
        (["synth", "--customers", "10", "--orders", "100"], "not both"),
    ],
)
def test_wrong_usage_exits_2_with_one_line(args, says, tmp_path):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("usage error: ") and says in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_verbose_works_after_the_command_too(synth_file):
    res = run("validate", str(synth_file), "-v")
    assert res.returncode == 0, res.stderr
    assert "reading and validating orders" in res.stderr


def test_help_reads_well_in_80_columns():
    import os

    for cmd in ("backtest", "train", "score", "features", "synth", "validate"):
        res = subprocess.run(
            [sys.executable, "-m", "winback", cmd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "80"},
        )
        assert res.returncode == 0
        assert max(len(line) for line in res.stdout.splitlines()) <= 80
        assert "<list[str]>" not in res.stdout and "<bool>" not in res.stdout
        options = [line for line in res.stdout.splitlines() if line.lstrip().startswith("-")]
        assert options and not any("<str>" in line or "<int>" in line for line in options)
    backtest = run("backtest", "--help").stdout
    assert "--as-of DATE[,DATE...]" in backtest and "[required]" in backtest
    assert "pip install 'winback[spark]'" in " ".join(backtest.split())
    features = " ".join(run("features", "--help").stdout.split())
    assert "counted back from --to" in features


def test_a_config_reads_its_paths_from_its_own_folder(tmp_path):
    # the committed CDNOW config names the data relative to itself: it works from anywhere
    res = run("validate", "--config", str(ROOT / "configs" / "cdnow.yaml"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "69,659 orders" in res.stdout


def test_score_without_a_champion_fails_fast_and_creates_no_store(synth_file, tmp_path):
    res = run("score", "--orders", str(synth_file), "--out", "exports", cwd=tmp_path)
    assert res.returncode == 1 and "no 'champion' model" in res.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no exports
    (tmp_path / "taken").write_text("a file")
    res = run("score", "--orders", str(synth_file), "--out", "taken", cwd=tmp_path)
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr
