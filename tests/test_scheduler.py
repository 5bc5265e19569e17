"""The example Airflow DAG's commands, read from its plain list and run in order, as a
scheduler would, against a temporary folder (Airflow itself is not needed)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pandas as pd

from tests.conftest import ROOT, run_cli


def _example():
    spec = importlib.util.spec_from_file_location("airflow_nightly", ROOT / "examples" /
                                                  "airflow_nightly.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dag_commands_train_score_and_report_in_order(tmp_path):
    home = tmp_path / "winback"
    home.mkdir()
    made = run_cli("synth", "--customers", "800", "--from", "2022-01-01", "--to", "2023-12-31",
                   "--out", str(home / "orders.parquet"), cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    (home / "winback.yaml").write_text(
        "orders:\n  source: orders.parquet\n"
        "  columns: {category: category, channel: channel}\n"
        f"tracking:\n  uri: sqlite:///{home / 'mlflow.db'}\n"
        "models_dir: models\n"
    )
    dag = _example()
    assert [task for task, _, _ in dag.COMMANDS] == ["train", "score", "report"]
    for task, _, command in dag.COMMANDS:
        line = dag.command_line(command, str(home), "2023-12-31")
        assert line[0] == "winback" and "--log-format" in line
        res = run_cli(*line[1:], cwd=tmp_path, timeout=600)
        assert res.returncode == 0, (task, res.stderr[-2000:])
        done = json.loads(res.stderr.splitlines()[-1])
        assert done["event"] == "done" and done["status"] == "ok", task
        if task == "train":
            assert done["promoted"] is True  # the first version is the champion
        if task == "score":
            export = home / "exports" / "2023-12-31"
            assert done["model_version"].startswith("registry v")
            assert done["scored"] == len(pd.read_parquet(export / "scores.parquet"))
    assert (home / "reports" / "2023-12-31" / "report.html").is_file()


def test_the_dag_file_reads_without_airflow():
    dag = _example()
    assert "airflow" not in sys.modules  # nothing of Airflow was needed to read the commands
    assert {when for _, when, _ in dag.COMMANDS} == {"@weekly", "@daily"}
