"""The README's tour of the command line runs as written, top to bottom, in an empty folder."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

from tests.conftest import ROOT


def tour_commands(readme: str) -> list[list[str]]:
    """The winback commands of the README's tour block, continuation lines joined and comments
    removed, as argument lists."""
    section = readme.split("## A short tour of the CLI", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "winback":
            commands.append(words[1:])
    return commands


def test_the_tour_is_parsed_from_the_readme():
    commands = tour_commands((ROOT / "README.md").read_text())
    assert [c[0] for c in commands] == [
        "synth", "validate", "profile", "features", "features", "backtest", "train", "score",
        "measure", "learn", "report",
    ]  # fmt: skip
    assert commands[5][-2:] == ["--out", "backtest"]  # the continuation line is joined


def test_the_readme_tour_runs_as_written(tmp_path):
    # a new user's shell: no tracking store set (the autouse fixture in conftest clears the one
    # MLflow may have left in this process's environment)
    for args in tour_commands((ROOT / "README.md").read_text()):
        res = subprocess.run(
            [sys.executable, "-m", "winback", *args],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
    # it writes what the README says, and nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backtest", "exports", "features.parquet", "learned.json", "mlartifacts", "mlflow.db",
        "models", "orders.parquet", "reports", "snapshots.parquet",
    ]  # fmt: skip
    manifest = json.loads((tmp_path / "exports" / "2024-09-30" / "manifest.json").read_text())
    assert manifest["files"]["at_risk.csv"]["rows"] > 0
    readout = json.loads((tmp_path / "reports" / "measure-2024-09-30" / "measure.json").read_text())
    assert readout["rows"][0]["scope"] == "all" and readout["window_days"] == 90
    learned = json.loads((tmp_path / "learned.json").read_text())
    assert [e["export"] for e in learned["exports"]] == ["2024-09-30"]
    assert (tmp_path / "reports" / "report.html").is_file()
    assert "campaign_2024-09-30.csv" in {p.name for p in (tmp_path / "reports").iterdir()}
