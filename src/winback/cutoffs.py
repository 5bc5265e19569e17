"""Cutoffs, the key of every snapshot: how a date is read, how cutoffs are scheduled, which of
them can be labelled, and which a model is trained on.

A cutoff T is a naive UTC datetime. Features see orders at or before T; the label looks at
``(T, T + H]``; a model used at an as-of trains on cutoffs up to ``as_of - H``, whose labels are
all known by then.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

from winback.errors import InsufficientDataError, UsageError

__all__ = [
    "parse_cutoff",
    "parse_as_of",
    "cutoff_schedule",
    "normalize_cutoffs",
    "cutoffs_from_options",
    "split_labelled_cutoffs",
    "training_cutoffs",
    "MIN_TRAINING_HISTORY_DAYS",
]

log = logging.getLogger(__name__)

#: A training cutoff needs at least this much history before it.
MIN_TRAINING_HISTORY_DAYS = 28


def parse_cutoff(value: str | date | datetime) -> datetime:
    """A cutoff as a naive UTC datetime. A date means 00:00 UTC of that day.

    Strings: ``YYYY-MM-DD``, ``YYYYMMDD`` or an ISO timestamp (an offset is converted to UTC).
    """
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = str(value).strip()
    try:
        if len(text) == 8 and text.isdigit():
            return datetime.strptime(text, "%Y%m%d")
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"Cannot read {text!r} as a date; use YYYY-MM-DD (e.g. 2024-03-31)."
        ) from None
    return parse_cutoff(parsed)


def cutoff_schedule(start: datetime, end: datetime, every_days: int) -> list[datetime]:
    """Cutoffs every ``every_days`` days from ``end`` back to ``start`` (both included when hit),
    returned oldest first. Anchored at ``end`` so the latest cutoff is always the one asked for."""
    if every_days < 1:
        raise UsageError(f"The spacing must be a whole number of days >= 1; got {every_days}.")
    if start > end:
        raise UsageError(f"The first cutoff {start:%Y-%m-%d} is after the last {end:%Y-%m-%d}.")
    out = []
    t = end
    while t >= start:
        out.append(t)
        t -= timedelta(days=every_days)
    return sorted(out)


def normalize_cutoffs(cutoffs: Iterable[str | date | datetime] | str) -> list[datetime]:
    """Parse, deduplicate and sort cutoffs; refuse an empty list."""
    if isinstance(cutoffs, str):
        cutoffs = [c for c in cutoffs.split(",") if c.strip()]
    out = sorted({parse_cutoff(c) for c in cutoffs})
    if not out:
        raise UsageError("No cutoffs given; pass at least one date (e.g. --as-of 2024-03-31).")
    return out


def parse_as_of(value: str | None) -> datetime | None:
    """An as-of from the command line: a date as :func:`parse_cutoff` reads it, ``today`` (00:00
    UTC of the current day), or None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "today":
        now = datetime.now(UTC)
        return datetime(now.year, now.month, now.day)
    return parse_cutoff(value)


_EVERY_RE = re.compile(r"^\s*(\d+)\s*d?\s*$")


def cutoffs_from_options(
    as_of: str | None, cutoffs: str | None, every: str | None, start: str | None, end: str | None
) -> list[datetime]:
    given = sum(x is not None for x in (as_of, cutoffs, every))
    if given != 1:
        raise UsageError(
            "Give exactly one of --as-of DATE, --cutoffs DATE,DATE,... or "
            "--every 30d --from DATE --to DATE."
        )
    if as_of is not None:
        return [parse_as_of(as_of)]
    if cutoffs is not None:
        return normalize_cutoffs(cutoffs)
    m = _EVERY_RE.match(every or "")
    if not m:
        raise UsageError(f"--every takes a number of days such as 30d; got {every!r}.")
    if start is None or end is None:
        raise UsageError("--every needs both --from DATE and --to DATE.")
    return cutoff_schedule(parse_cutoff(start), parse_cutoff(end), int(m.group(1)))


def split_labelled_cutoffs(
    cutoffs: Sequence[datetime], observed_until: datetime, horizon_days: int
) -> tuple[list[datetime], list[datetime]]:
    """Split cutoffs into (labelled, unlabelled): labelled when ``T + H <= observed_until``.

    Unlabelled cutoffs are logged as a warning, so they are never left out silently."""
    if horizon_days < 1:
        raise UsageError(
            f"The 'horizon_days' setting must be a whole number of days >= 1; got {horizon_days}."
        )
    h = timedelta(days=horizon_days)
    labelled = [t for t in cutoffs if t + h <= observed_until]
    unlabelled = [t for t in cutoffs if t + h > observed_until]
    if unlabelled:
        log.warning(
            "%d cutoff(s) get no labels: their %d-day horizon runs past the data's end %s: %s",
            len(unlabelled),
            horizon_days,
            f"{observed_until:%Y-%m-%d}",
            ", ".join(f"{t:%Y-%m-%d}" for t in unlabelled),
        )
    return labelled, unlabelled


def training_cutoffs(
    as_of: datetime,
    horizon_days: int,
    spacing_days: int,
    n_cutoffs: int,
    first_ts: datetime,
) -> list[datetime]:
    """Training cutoffs for a model used at ``as_of``: the latest is ``as_of - horizon_days``."""
    last = as_of - timedelta(days=horizon_days)
    start = max(
        first_ts + timedelta(days=MIN_TRAINING_HISTORY_DAYS),
        last - timedelta(days=spacing_days * (n_cutoffs - 1)),
    )
    if last < start:
        raise InsufficientDataError(
            f"No training cutoff fits before {as_of:%Y-%m-%d}: the data starts "
            f"{first_ts:%Y-%m-%d} and labels need {horizon_days} days after a cutoff plus "
            f"{MIN_TRAINING_HISTORY_DAYS} days of history before it. Use a later as-of or a "
            "shorter horizon."
        )
    return cutoff_schedule(start, last, spacing_days)
