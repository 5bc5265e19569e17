"""RFM segments: the names marketers read off the R x F grid, and the repeated texts of a score
table held as categories.

R and F are quintile scores (5 = most recent, most frequent) within the scored population. The
segment is read off the R x F grid that merchants use:

==================  =====================
segment             R, F
==================  =====================
Champions           R 5, F 4-5
Loyal               R 3-4, F 4-5
Potential loyalist  R 4-5, F 2-3
New                 R 5, F 1
Promising           R 4, F 1
Needs attention     R 3, F 3
About to sleep      R 3, F 1-2
At risk             R 1-2, F 3-4
Can't lose them     R 1-2, F 5
Hibernating         R 2, F 1-2
Lost                R 1, F 1-2
==================  =====================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "SEGMENTS",
    "segment_name",
    "segments_of",
    "rfm_segments",
    "quintile_sql",
    "quintiles",
    "texts_of",
]


SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Needs attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)


def quintiles(values) -> np.ndarray:
    """The quintile score 1-5 of each value (the largest 5): ``ceil(5 x rank / count)``, ties
    sharing their average rank (pandas' ``rank(pct=True, method="average")``)."""
    ranks = pd.Series(values, copy=False).rank(pct=True, method="average").to_numpy()
    return np.clip(np.ceil(ranks * 5), 1, 5)


def segment_name(r: int, f: int) -> str:
    """The RFM segment of an R and an F quintile score (1-5 each; see the grid above)."""
    if r == 5 and f >= 4:
        return "Champions"
    if r >= 3 and f >= 4:
        return "Loyal"
    if r >= 4 and f >= 2:
        return "Potential loyalist"
    if r == 5:
        return "New"
    if r == 4:
        return "Promising"
    if r == 3 and f == 3:
        return "Needs attention"
    if r == 3:
        return "About to sleep"
    if f == 5:
        return "Can't lose them"
    if f >= 3:
        return "At risk"
    if r == 2:
        return "Hibernating"
    return "Lost"


def texts_of(codes: np.ndarray, values: list[str], dtype: str = "str") -> pd.Categorical:
    """``values[code]`` for each code (-1: missing), each distinct text stored once: texts that
    repeat over millions of customers (lists, segments, groups, offers) cost a byte each.
    ``dtype`` is the text dtype of the categories, which the export files hold."""
    names = pd.Index(values, dtype=dtype).unique()
    at = np.append(names.get_indexer(pd.Index(values, dtype=dtype)), -1)  # code -1 stays -1
    return pd.Categorical.from_codes(at[codes], categories=names)


def segments_of(r: np.ndarray, f: np.ndarray, index=None, lapsed=None) -> pd.Series:
    """The RFM segment names of R and F quintile scores (arrays of 1-5), as a categorical of
    ``string`` names (each name stored once, not once per customer).

    ``lapsed`` (one flag per customer, when the segments describe the lists) tells the two lists
    apart, whose quintiles are each taken within the list, so that no name contradicts the list
    it stands on:

    - a lapsed customer is never a champion, whatever their rank among the lapsed: the more
      recent two fifths of them read as R 2 and the rest as R 1 (At risk, Can't lose them,
      Hibernating or Lost);
    - an at-risk customer bought within the horizon, so is never Hibernating or Lost: the least
      recent two fifths with few orders (R 1-2, F 1-2) read as About to sleep (R 3)."""
    grid = [segment_name(a, b) for a in range(1, 6) for b in range(1, 6)]
    r, f = np.asarray(r, dtype=int), np.asarray(f, dtype=int)
    if lapsed is not None:
        gone = np.asarray(lapsed, dtype=bool)
        r = np.where(gone, np.where(r >= 4, 2, 1), np.where((r <= 2) & (f <= 2), 3, r))
    return pd.Series(texts_of((r - 1) * 5 + (f - 1), grid, "string"), index=index)


def rfm_segments(
    recency_days: pd.Series, n_orders: pd.Series, lapsed: bool | None = None
) -> pd.Series:
    """The RFM segment name of each customer (quintiles within the given customers). ``lapsed``:
    they are the lapsed list (True) or the at-risk list (False), see :func:`segments_of`; None:
    the plain grid, not about a list."""
    r = quintiles(-recency_days.astype(float))
    f = quintiles(n_orders.astype(float))
    flags = None if lapsed is None else np.full(len(r), lapsed)
    return segments_of(r, f, recency_days.index, flags)


def quintile_sql(x: str, order: str = "ASC", partition: str | None = None) -> str:
    """SQL for the quintile score 1-5 of ``x`` (``order`` DESC scores the largest 1), exactly as
    :func:`rfm_segments` computes it: ``ceil(5 x average rank / count)``, ties sharing their
    average rank as in pandas' ``rank(pct=True, method="average")``. ``partition``: the
    column(s) to score within, or the whole query."""
    within = f"PARTITION BY {partition}" if partition else ""
    ordered = f"{within} ORDER BY {x} {order}"
    # a tie's first and last rank: rank(), and the rows up to its last peer (the default
    # frame of an ordered window) - one sort for both
    pct = (
        f"((rank() OVER ({ordered}) + count(*) OVER ({ordered})) / 2.0) / count(*) OVER ({within})"
    )
    return f"greatest(1, least(5, ceil({pct} * 5)))::INTEGER"
