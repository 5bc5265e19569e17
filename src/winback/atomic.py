"""Files: write so that readers see the old version or the new one, never half; checksum."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from winback.errors import DataError, UsageError

__all__ = [
    "atomic_path",
    "atomic_parquet",
    "check_writable",
    "check_writable_file",
    "sha256_file",
]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it over ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_parquet(frame, path: str | Path) -> None:
    """Write a pandas frame to Parquet (no index) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def check_writable(folder: str | Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be written (an existing file, a read-only folder or
    file system) before any work is done, with a message that says how to fix it. The nearest
    folder that exists is tried with a real file, which also tells a read-only mount."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder} is a file, not a folder; give a folder to write to.")
    probe = folder
    while not probe.exists():  # the nearest folder that exists must let us create the rest
        probe = probe.parent
    why = "not a folder"
    if probe.is_dir():
        try:
            with tempfile.TemporaryFile(dir=probe):
                return
        except OSError as exc:
            why = exc.strerror or "cannot create a file"
    raise DataError(
        f"{option} {folder}: cannot write in {probe} ({why}); choose a folder you can write "
        "to, or fix its permissions."
    )


def check_writable_file(path: str | Path, option: str = "--out") -> None:
    """Refuse an output file that cannot be written: a folder in its place, or a folder that
    cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(
            f"{option} {path} is a folder; give a file name (e.g. {path / 'out.parquet'})."
        )
    check_writable(path.parent, option)
