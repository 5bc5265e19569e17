"""Run a command as a child process and measure it as a user would see it: the whole process's
wall time and its peak resident memory (from the kernel's accounting of that one child)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measured", "run_measured", "winback_cmd"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    returncode: int
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str


def winback_cmd(*args: str) -> list[str]:
    """The ``winback`` command of this checkout's environment."""
    import sys

    exe = Path(sys.executable).with_name("winback")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "winback", *args]


def run_measured(cmd: list[str], cwd: Path = ROOT, env: dict | None = None) -> Measured:
    """Run ``cmd``; wall seconds from start to exit, and the child's peak RSS (MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, wall, usage.ru_maxrss / 1024.0, out.read(), err.read())
