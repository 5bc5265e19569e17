"""The command line, through real subprocess runs."""

from __future__ import annotations

import json
import re
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
    # three past campaigns, 30 days apart, and tonight's lists: four complete exports
    folders = sorted(p for p in (demo / "exports").iterdir() if p.is_symlink())
    past = ["2024-10-01", "2024-10-31", "2024-11-30"]
    assert [p.name for p in folders] == [*past, "2024-12-30"]
    for folder in folders:
        assert (folder / "at_risk.csv").is_file() and (folder / "manifest.json").is_file()
    assert "recovered within the 95% interval" in stdout
    # the loop closes: save rates learned from the campaigns size tonight's lists
    learned = json.loads((demo / "learned.json").read_text())
    assert [e["export"] for e in learned["exports"]] == past
    taught = [g for g, row in learned["groups"].items() if row["weight"]]
    assert taught and all(f"    {g}: save rate " in stdout for g in taught)
    manifest = json.loads((folders[-1] / "manifest.json").read_text())
    sizing = manifest["sizing"]["groups"]
    for g in taught:
        assert sizing[g]["save_rate_source"].startswith("learned: ")
        assert sizing[g]["save_rate"] == pytest.approx(max(learned["groups"][g]["save_rate"], 0))
    # the uplift model, judged out of time against the oracle, ranks tonight's lists if it won
    up = learned["uplift"]
    assert up["trained_on"] == past[:2] and up["evaluated_on"] == past[2]
    assert "of the oracle's" in stdout and "uplift model, trained on 2 campaigns" in stdout
    # on this seeded shop the model gets at least half the oracle's Qini (73% measured) and
    # beats ranking by p_churn (-0.0069 measured)
    share = re.search(r"Qini (-?[\d.]+) \[.*?\], (\d+)% of the oracle's", stdout)
    assert share and int(share.group(2)) >= 50
    assert float(share.group(1)) > up["rankings"]["p_churn"]["qini"]
    assert manifest["ranking"]["by"] == ("uplift" if up["beats_p_churn"] else "p_churn")
    tonight = pd.read_parquet(folders[-1] / "at_risk.parquet")
    if up["beats_p_churn"]:
        assert tonight["uplift"].notna().all()
        assert tonight["expected_gain"].is_monotonic_decreasing
        assert (demo / learned["uplift"]["model_file"]).is_file()
    else:
        assert tonight["uplift"].isna().all()
    readout = json.loads((demo / "reports" / "measure" / "measure.json").read_text())
    assert readout["rows"][0]["scope"] == "all" and readout["window_days"] == 30
    # the report says what was learned: save rates over the campaigns, the uplift model
    page = (demo / "reports" / "report.html").read_text()
    assert "What we learned from past campaigns" in page and "Qini coefficient" in page
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


def _json_lines(stderr: str) -> list[dict]:
    """Every line of stderr as JSON (the test fails on any line that is not)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_log_format_json_tells_a_scheduler_every_stage_and_the_outcome(synth_file, tmp_path):
    models, out = tmp_path / "models", tmp_path / "exports"
    train = run(
        "--log-format", "json", "train", "--orders", str(synth_file), "--no-track",
        "--set", f"models_dir={models}",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert train.stdout == ""  # everything is on stderr, as JSON
    events = _json_lines(train.stderr)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    assert stages == ["gate", "backtest", "snapshots", "fit", "save"]  # untracked: no 'track'
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok" and done["exit_code"] == 0
    assert Path(done["model_file"]).is_file() and done["rows"] > 0
    model = done["model_file"]

    score = run(
        "--log-format", "json", "score", "--orders", str(synth_file), "--model", model,
        "--out", str(out), "--as-of", "2023-12-31",
    )  # fmt: skip
    assert score.returncode == 0, score.stderr
    events = _json_lines(score.stderr)
    assert all({"ts", "level", "command", "event"} <= e.keys() for e in events)
    assert {e["command"] for e in events} == {"score"}
    stages = [e for e in events if e["event"] == "stage"]
    assert [e["stage"] for e in stages] == ["model", "scores", "lists", "reasons", "changes",
                                            "export"]  # fmt: skip
    assert all(e["seconds"] >= 0 and e["peak_rss_mb"] > 0 for e in stages)
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok" and done["exit_code"] == 0
    assert [e for e in events if e["event"] == "done"] == [done]  # one final line
    folder = Path(done["folder"])
    assert done["scored"] == len(pd.read_parquet(folder / "scores.parquet"))
    for name, n in done["listed"].items():
        assert n["contact"] == len(pd.read_csv(folder / f"{name}.csv"))
        assert n["control"] == len(pd.read_csv(folder / f"{name}_control.csv"))
    # the report's lines are there too, as output events
    texts = [e["text"] for e in events if e["event"] == "output"]
    assert texts[0].startswith(f"scored {done['scored']:,} customers as of 2023-12-31")


@pytest.mark.parametrize(
    "args, status, code",
    [
        (["score", "--orders", "missing.parquet", "--model", "missing.joblib"], "error", 1),
        (["score", "--no-such-option"], "usage_error", 2),
        (["frobnicate"], "usage_error", 2),
    ],
)
def test_log_format_json_ends_a_failed_run_with_its_status(args, status, code, tmp_path):
    res = run("--log-format", "json", *args, cwd=tmp_path)
    assert res.returncode == code
    assert "Traceback" not in res.stderr
    (done,) = _json_lines(res.stderr)
    assert done["event"] == "done" and done["status"] == status and done["exit_code"] == code
    assert done["level"] == "error" and done["message"]


def test_log_format_from_the_environment_and_a_bad_one_refused(tmp_path):
    import os

    env = {**os.environ, "WINBACK_LOG_FORMAT": "json"}
    res = subprocess.run(
        [sys.executable, "-m", "winback", "frobnicate"], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and json.loads(res.stderr)["status"] == "usage_error"
    bad = run("--log-format", "yaml", "synth", "--out", str(tmp_path / "o.parquet"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage error: --log-format must be text or json; got 'yaml'")
