"""The few SQL spellings that differ between the engines that run the feature definitions.

:mod:`winback.features` writes every definition once; a :class:`Dialect` fills in the handful
of functions whose names or arguments differ between DuckDB and Spark SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dialect", "DUCKDB", "SPARK", "java_pattern", "quote_ident", "sql_string"]


@dataclass(frozen=True)
class Dialect:
    """The few SQL spellings that differ between engines."""

    name: str
    ident_quote: str = '"'
    # (later, earlier) -> fractional days between two timestamps
    days_between: str = "(epoch_ms({later}) - epoch_ms({earlier})) / 86400000.0"
    # date of a timestamp
    to_date: str = "CAST({ts} AS DATE)"
    # whole calendar days between two dates
    date_diff_days: str = "date_diff('day', {earlier}, {later})"
    weekend: str = "dayofweek({ts}) IN (0, 6)"
    median: str = "median({x})"
    arg_max: str = "arg_max({value}, {key})"
    # the key that orders a customer's purchases by time, then amount: the largest is the last
    # (of several at one instant, the largest amount); and the key whose largest is the first
    # (to the millisecond, as ``days_between`` counts; then the largest amount). DuckDB packs
    # both parts into one 128-bit number (a DECIMAL(18,4) amount in ten-thousandths, shifted
    # to be non-negative, below 2^64), which it compares far faster than a pair
    latest_key: str = (
        "(CAST(epoch_us({ts}) AS HUGEINT) * 18446744073709551616"
        " + CAST({amount} * 10000 AS HUGEINT) + 9223372036854775808)"
    )
    earliest_key: str = (
        "(CAST(-epoch_ms({ts}) AS HUGEINT) * 18446744073709551616"
        " + CAST({amount} * 10000 AS HUGEINT) + 9223372036854775808)"
    )
    # a stable bucket in [0, k) from a column's hash
    hash_mod: str = "hash({col}) % {k}"
    to_double: str = "CAST({x} AS DOUBLE)"
    add_days: str = "{ts} + to_days({days})"
    # a naive-UTC TIMESTAMP as the zone-aware type written to files
    as_utc: str = "CAST({ts} AS TIMESTAMPTZ)"
    # reading the orders: text to timestamps, zones, checks
    is_inf: str = "isinf({x})"
    full_match: str = "regexp_full_match({x}, {pattern})"
    search: str = "regexp_matches({x}, {pattern})"
    parse_ts: str = "try_cast({x} AS TIMESTAMP)"  # naive text, read as UTC wall time
    parse_ts_offset: str = "timezone('UTC', try_cast({x} AS TIMESTAMPTZ))"  # text with an offset
    strptime: str = "try_strptime({x}, {fmt})"
    micros_to_ts: str = "make_timestamp({x})"  # microseconds since 1970 (UTC) as a TIMESTAMP
    millis_to_ts: str = "epoch_ms({x})"  # milliseconds since 1970 (UTC) as a TIMESTAMP
    ts_to_millis: str = "epoch_ms({ts})"  # a TIMESTAMP as milliseconds since 1970, as above
    strftime_formats: bool = True  # False: formats are Java patterns (see java_pattern)
    local_to_utc: str = "timezone('UTC', timezone({tz}, {x}))"
    aware_to_utc: str = "timezone('UTC', {x})"
    day_key: str = "strftime({ts}, '%Y%m%d')"
    starts_with: str = "starts_with({x}, {prefix})"
    # a regular expression (as an SQL literal) that finds a control character in a text
    control_chars: str = "'[[:cntrl:]]'"
    # a row's hash, and that hash modulo k (non-negative)
    row_hash: str = "hash({cols})"
    row_hash_mod: str = "hash({cols}) % {k}"


DUCKDB = Dialect(name="duckdb")

#: Spark SQL with ``spark.sql.session.timeZone=UTC`` (timestamps are instants shown in UTC).
SPARK = Dialect(
    name="spark",
    ident_quote="`",
    days_between="(unix_millis({later}) - unix_millis({earlier})) / 86400000D",
    date_diff_days="datediff({later}, {earlier})",
    weekend="dayofweek({ts}) IN (1, 7)",
    median="median({x})",
    arg_max="max_by({value}, {key})",
    latest_key="struct({ts}, {amount})",
    earliest_key="struct(-unix_millis({ts}), {amount})",
    hash_mod="pmod(hash({col}), {k})",
    add_days="{ts} + make_interval(0, 0, 0, {days})",
    as_utc="{ts}",
    is_inf="abs({x}) = double('infinity')",
    full_match="{x} RLIKE concat('^(?:', {pattern}, ')$')",
    search="{x} RLIKE {pattern}",
    parse_ts="try_cast({x} AS TIMESTAMP)",
    parse_ts_offset="try_cast({x} AS TIMESTAMP)",
    strptime="try_to_timestamp({x}, {fmt})",
    micros_to_ts="timestamp_micros({x})",
    millis_to_ts="timestamp_millis({x})",
    ts_to_millis="unix_millis({ts})",
    strftime_formats=False,
    local_to_utc="to_utc_timestamp({x}, {tz})",
    aware_to_utc="{x}",
    day_key="date_format({ts}, 'yyyyMMdd')",
    starts_with="startswith({x}, {prefix})",
    control_chars="'\\\\p{Cntrl}'",
    row_hash="xxhash64({cols})",
    row_hash_mod="pmod(xxhash64({cols}), {k})",
)

_JAVA = {
    "Y": "yyyy",
    "y": "yy",
    "m": "MM",
    "d": "dd",
    "H": "HH",
    "I": "hh",
    "M": "mm",
    "S": "ss",
    "f": "SSSSSS",
    "p": "a",
    "b": "MMM",
    "B": "MMMM",
    "j": "DDD",
    "z": "Z",
}


def java_pattern(fmt: str) -> str:
    """A strftime format (``%d/%m/%Y %H:%M``) as the Java pattern Spark parses with
    (``dd/MM/yyyy HH:mm``); letters outside directives are quoted."""
    out, i = [], 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            code = fmt[i + 1]
            if code == "%":
                out.append("%")
            elif code in _JAVA:
                out.append(_JAVA[code])
            else:
                raise ValueError(f"%{code} has no Spark equivalent")
            i += 2
            continue
        out.append("''" if ch == "'" else f"'{ch}'" if ch.isalpha() else ch)
        i += 1
    return "".join(out)


def quote_ident(name: str, d: Dialect = DUCKDB) -> str:
    """A column or table name quoted for ``d`` (its quote character doubled inside)."""
    q = d.ident_quote
    return q + name.replace(q, q + q) + q


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled inside), the same on every engine."""
    return "'" + value.replace("'", "''") + "'"
