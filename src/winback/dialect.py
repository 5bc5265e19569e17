"""The few SQL spellings that differ between the engines that run the feature definitions.

:mod:`winback.features` writes every definition once; a :class:`Dialect` fills in the handful
of functions whose names or arguments differ between DuckDB and Spark SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dialect", "DUCKDB", "SPARK"]


@dataclass(frozen=True)
class Dialect:
    """The few SQL spellings that differ between engines."""

    name: str
    # (later, earlier) -> fractional days between two timestamps
    days_between: str = "(epoch_ms({later}) - epoch_ms({earlier})) / 86400000.0"
    # date of a timestamp
    to_date: str = "CAST({ts} AS DATE)"
    # whole calendar days between two dates
    date_diff_days: str = "date_diff('day', {earlier}, {later})"
    weekend: str = "dayofweek({ts}) IN (0, 6)"
    median: str = "median({x})"
    arg_max: str = "arg_max({value}, {key})"
    # an orderable pair, compared on a then b
    pair: str = "({a}, {b})"
    # a stable bucket in [0, k) from a column's hash
    hash_mod: str = "hash({col}) % {k}"
    to_double: str = "CAST({x} AS DOUBLE)"
    add_days: str = "{ts} + to_days({days})"
    # a naive-UTC TIMESTAMP as the zone-aware type written to files
    as_utc: str = "CAST({ts} AS TIMESTAMPTZ)"


DUCKDB = Dialect(name="duckdb")

#: Spark SQL with ``spark.sql.session.timeZone=UTC`` (timestamps are instants shown in UTC).
SPARK = Dialect(
    name="spark",
    days_between="(unix_millis({later}) - unix_millis({earlier})) / 86400000D",
    date_diff_days="datediff({later}, {earlier})",
    weekend="dayofweek({ts}) IN (1, 7)",
    median="median({x})",
    arg_max="max_by({value}, {key})",
    pair="struct({a}, {b})",
    hash_mod="pmod(hash({col}), {k})",
    add_days="{ts} + make_interval(0, 0, 0, {days})",
    as_utc="{ts}",
)
