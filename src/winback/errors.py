"""The exceptions winback raises: one base class, each also the builtin it resembles."""

from __future__ import annotations

__all__ = [
    "WinbackError",
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "UsageError",
    "first_line",
]


class WinbackError(Exception):
    """Base class of every error winback raises on purpose.

    The message is one line that says what is wrong, where, and how to fix it. The CLI prints it
    to stderr and exits with code 1 (2 for :class:`UsageError`).
    """


class ConfigError(WinbackError, ValueError):
    """A setting is missing, of the wrong type, or outside its allowed values."""


class DataError(WinbackError, ValueError):
    """The order history breaks the orders contract (columns, dates, ids, amounts)."""


class InsufficientDataError(DataError):
    """There is too little history to train or evaluate a model honestly."""


class UsageError(WinbackError, ValueError):
    """The command was called with options that do not fit together."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type's name when
    it has none: what a one-line error quotes of a library's failure."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
