"""Progress of long steps, told to whoever is listening (a bar on a terminal, a log line).

Library code never prints: a long step takes an optional ``progress(stage, done, total)``
callback and calls it as it goes; the command line decides how to show it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "tell"]

#: ``progress(stage, done, total)``: ``done`` of ``total`` units of the named stage are done.
Progress = Callable[[str, int, int], None]


def tell(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Call ``progress`` when there is one."""
    if progress is not None:
        progress(stage, done, total)
