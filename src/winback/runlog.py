"""How a command tells what it does: plain lines for people, or JSON lines for schedulers.

With ``--log-format json`` (or ``WINBACK_LOG_FORMAT=json``) everything a command says goes to
stderr as one JSON object per line, so that Airflow, Kubernetes or any log shipper can parse
it. Every object has ``ts`` (UTC, ISO 8601), ``level``, ``command`` and ``event``:

- ``log``: a log line (``message``);
- ``progress``: a long step finished (``step``, ``seconds``, ``done``, ``total``);
- ``stage``: a stage of the job finished (``stage``, ``seconds``, ``peak_rss_mb``);
- ``output``: a line of the command's report (``text``), which goes to stdout in text form;
- ``done``: the last line, always written: ``status`` (``ok``, ``error``, ``usage_error``,
  ``interrupted``), ``exit_code``, ``seconds``, ``message`` on failure, and the command's
  counts (for ``score``: ``scored``, ``listed``, ``folder``, ...).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["FORMATS", "RunLog", "JsonLines", "event", "run_log"]

FORMATS = ("text", "json")


@dataclass
class RunLog:
    """The process's one command: how it logs, its name, when it started, its counts."""

    format: str = "text"
    command: str | None = None
    started: float = field(default_factory=time.perf_counter)
    counts: dict = field(default_factory=dict)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def done(self, status: str, exit_code: int, message: str | None = None) -> str:
        """The final JSON line."""
        doc = _head("error" if exit_code else "info", self.command, "done")
        doc |= {"status": status, "exit_code": int(exit_code)}
        doc["seconds"] = round(time.perf_counter() - self.started, 3)
        if message:
            doc["message"] = message
        return _dumps(doc | self.counts)


#: The command this process runs (set up by the command line).
run_log = RunLog()


def _head(level: str, command: str | None, name: str) -> dict:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"ts": ts, "level": level, "command": command, "event": name}


def _plain(value):
    """A value JSON can hold: paths and dates as text, NaN as null, numpy numbers as numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _dumps(doc: dict) -> str:
    return json.dumps(_plain(doc), ensure_ascii=False)


class JsonLines(logging.Formatter):
    """A log record as one JSON object (see the module's list of events)."""

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "event", "log")
        doc = _head(record.levelname.lower(), run_log.command, name)
        if name == "log":
            doc["message"] = record.getMessage()
            if record.exc_info:
                doc["exception"] = self.formatException(record.exc_info)
        return _dumps(doc | getattr(record, "fields", {}))


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log the event ``name`` with its fields (a JSON line; in text, ``name: k v, ...``)."""
    text = ", ".join(f"{k} {v}" for k, v in fields.items())
    logger.log(level, "%s: %s", name, text, extra={"event": name, "fields": fields})
