"""The command line, through real subprocess runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "winback", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd or ROOT,
    )


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
    res = run("demo", "--out", str(tmp_path / "demo"), "--customers", "3000")
    assert res.returncode == 0, res.stderr
    for name in ("orders.parquet", "features.parquet", "snapshots.parquet"):
        assert (tmp_path / "demo" / name).is_file()
    snap = pd.read_parquet(tmp_path / "demo" / "snapshots.parquet")
    assert snap["churned"].notna().all() and 0 < snap["churned"].mean() < 1
    assert "5/11 labels" in res.stdout and "6/11 backtest" in res.stdout
    assert "v1 (champion" in res.stdout and "11/11 retention report" in res.stdout
    # the past campaign and tonight's lists: two complete exports
    export = tmp_path / "demo" / "exports"
    folders = sorted(p for p in export.iterdir() if p.is_symlink())
    assert [p.name for p in folders] == ["2024-11-30", "2024-12-30"]
    for folder in folders:
        assert (folder / "at_risk.csv").is_file() and (folder / "manifest.json").is_file()
    assert "recovered within the 95% interval" in res.stdout
    readout = json.loads((tmp_path / "demo" / "reports" / "measure" / "measure.json").read_text())
    assert readout["rows"][0]["scope"] == "all" and readout["window_days"] == 30
    assert (tmp_path / "demo" / "reports" / "report.html").is_file()
    assert "  model  " in res.stdout and "  bgnbd  " in res.stdout
    assert (tmp_path / "demo" / "backtest" / "metrics.json").is_file()
    assert (tmp_path / "demo" / "mlflow.db").is_file()


def test_python_m_and_console_script_agree():
    exe = Path(sys.executable).parent / "winback"
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == run("--version").stdout.strip()
