"""winback in Airflow: train weekly, score nightly, report nightly, and fail loudly.

Copy this file into the DAGs folder of an Airflow installation that can run ``winback`` (the
same virtual environment, or a container image with it), and set ``WINBACK_HOME`` to the folder
holding ``winback.yaml``: the config names the orders (``orders.source``), the MLflow store
(``tracking.uri``: a database URL, so that any worker finds the registry's champion) and
``models_dir``.

Every command is in :data:`COMMANDS`, a plain list, so the same steps can be read, tested or
run by any other scheduler (cron: see the README). Each writes JSON log lines
(``--log-format json``) that end with a ``done`` object holding the status and exit code; a
non-zero exit code fails the task:

- 1: a data, config or model problem (the ``message`` says which and how to fix it): the
  orders did not validate, the data drifted past ``drift.fail_psi``, no champion model yet;
- 2: wrong usage (a changed command line);
- the previous complete export stays published whatever fails (exports are atomic).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta

#: Where winback.yaml, exports/ and reports/ live on the workers.
HOME = os.environ.get("WINBACK_HOME", "/srv/winback")

#: (task, schedule, command) in the order they run; ``{home}`` is HOME and ``{as_of}`` the
#: day the run is for (Airflow's ``{{ ds }}``).
COMMANDS: list[tuple[str, str, list[str]]] = [
    (
        "train",
        "@weekly",
        ["winback", "--log-format", "json", "train", "--config", "{home}/winback.yaml",
         "--as-of", "{as_of}"],
    ),
    (
        "score",
        "@daily",
        ["winback", "--log-format", "json", "score", "--config", "{home}/winback.yaml",
         "--as-of", "{as_of}", "--model", "champion", "--out", "{home}/exports",
         "--wait", "600"],
    ),
    (
        "report",
        "@daily",
        ["winback", "--log-format", "json", "report", "--config", "{home}/winback.yaml",
         "--as-of", "{as_of}", "--exports", "{home}/exports", "--out", "{home}/reports/{as_of}"],
    ),
]  # fmt: skip


def command_line(command: list[str], home: str, as_of: str) -> list[str]:
    """A command of :data:`COMMANDS` with its placeholders filled in."""
    return [part.format(home=home, as_of=as_of) for part in command]


def _dags():
    """The Airflow DAGs: one for the weekly training, one for the nightly score and report."""
    import shlex

    from airflow import DAG
    from airflow.operators.bash import BashOperator

    defaults = {
        "owner": "winback",
        "retries": 0,  # a failed night is a problem to look at, not to hide by retrying
        "email_on_failure": True,
        "execution_timeout": timedelta(hours=2),
    }
    made = {}
    for schedule in ("@weekly", "@daily"):
        dag_id = "winback_train_weekly" if schedule == "@weekly" else "winback_score_nightly"
        with DAG(
            dag_id,
            schedule=schedule,
            start_date=datetime(2026, 1, 1),
            catchup=False,
            max_active_runs=1,
            default_args=defaults,
            tags=["winback"],
        ) as dag:
            previous = None
            for task, when, command in COMMANDS:
                if when != schedule:
                    continue
                line = shlex.join(command_line(command, HOME, "{{ ds }}"))
                op = BashOperator(task_id=task, bash_command=line)
                if previous is not None:
                    previous >> op  # the report reads the export the score just wrote
                previous = op
        made[dag_id] = dag
    return made


with contextlib.suppress(ImportError):  # Airflow is not needed to read or test the commands
    globals().update(_dags())
