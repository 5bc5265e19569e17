"""SQL expressions that turn a source's raw columns into the contract's types: timestamps
in UTC (ISO text with or without an offset, a strftime format, YYYYMMDD, Unix epochs), numbers,
text, and ids written as floats read as the integers they spell."""

from __future__ import annotations

from winback.config import OrdersConfig
from winback.engines.dialect import Dialect, java_pattern, quote_ident, sql_string
from winback.errors import ConfigError

_OFFSET_RE = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"

#: The engines' names of a text column's type.
TEXT_TYPES = frozenset({"VARCHAR", "TEXT", "STRING"})


def ts_expr(col: str, dtype: str, cfg: OrdersConfig, d: Dialect) -> str:
    """SQL expression turning the input column into a UTC TIMESTAMP (NULL if unparsable)."""
    c = quote_ident(col, d)
    dtype = dtype.upper()
    tz = cfg.timezone

    def localize(expr: str) -> str:
        if tz.upper() == "UTC":
            return expr
        return d.local_to_utc.format(x=expr, tz=sql_string(tz))

    if dtype.startswith("TIMESTAMP WITH TIME ZONE") or dtype == "TIMESTAMPTZ":
        return d.aware_to_utc.format(x=c)
    if dtype.startswith("TIMESTAMP") or dtype == "DATE":
        return localize(f"CAST({c} AS TIMESTAMP)")
    text = f"trim(CAST({c} AS STRING))"
    if cfg.date_format != "auto":
        fmt = cfg.date_format if d.strftime_formats else _java_pattern(cfg.date_format)
        return localize(d.strptime.format(x=text, fmt=sql_string(fmt)))
    eight = d.full_match.format(x=text, pattern="'[0-9]{8}'")
    yyyymmdd = d.strptime.format(
        x=text, fmt=sql_string("%Y%m%d" if d.strftime_formats else "yyyyMMdd")
    )
    naive = f"CASE WHEN {eight} THEN {yyyymmdd} ELSE {d.parse_ts.format(x=text)} END"
    return (
        f"CASE WHEN {d.full_match.format(x=text, pattern=sql_string(_EPOCH_RE))} "
        f"THEN {_epoch_expr(text, d)} "
        f"WHEN {d.search.format(x=text, pattern=sql_string(_OFFSET_RE))} "
        f"THEN {d.parse_ts_offset.format(x=text)} ELSE {localize(naive)} END"
    )


#: A Unix epoch number: 9-10 digits are seconds, 11-13 milliseconds, 14-16 microseconds and
#: 17-19 nanoseconds (each reads as a date between 1970 and 2286).
_EPOCH_RE = "[0-9]{9,19}"


def _epoch_expr(text: str, d: Dialect) -> str:
    """A Unix epoch number (text matching ``_EPOCH_RE``) as a UTC TIMESTAMP, its unit read from
    its number of digits."""
    n = f"length({text})"
    micros = (
        f"CASE WHEN {n} <= 10 THEN CAST({text} AS BIGINT) * 1000000 "
        f"WHEN {n} <= 13 THEN CAST({text} AS BIGINT) * 1000 "
        f"WHEN {n} <= 16 THEN CAST({text} AS BIGINT) "
        f"ELSE CAST(substr({text}, 1, {n} - 3) AS BIGINT) END"
    )
    return d.micros_to_ts.format(x=micros)


def _java_pattern(fmt: str) -> str:
    try:
        return java_pattern(fmt)
    except ValueError as exc:
        raise ConfigError(
            f"The 'orders.date_format' setting {fmt!r} cannot be used with the Spark engine "
            f"({exc}); use %Y %m %d %H %M %S %y %b %B %f %p %I %j %z, or date_format=auto."
        ) from None


def num_expr(col: str, dtype: str, d: Dialect) -> str:
    c = quote_ident(col, d)
    if dtype.upper() in TEXT_TYPES:
        return f"try_cast(trim({c}) AS DOUBLE)"
    return f"try_cast({c} AS DOUBLE)"


def text_expr(col: str, dtype: str, d: Dialect) -> str:
    if dtype.upper() in TEXT_TYPES:
        return f"nullif(trim({quote_ident(col, d)}), '')"
    return f"CAST({quote_ident(col, d)} AS STRING)"


_FLOAT_ID = "-?[0-9]+[.]0+"  # [.], not an escape: the same pattern on every engine


def normalise_ids(engine, view: str, cols, types: dict[str, str], label: str) -> dict[str, str]:
    """Ids written as floats (``13085.0``, from a spreadsheet or pandas) are read as the integer
    they spell (``13085``) when every non-empty value of the column is such a number; ids that
    are genuinely text (``02987``, ``A-1``) are never touched. Returns a note per normalised
    column (the :func:`id_expr` hint)."""
    d = engine.dialect
    notes: dict[str, str] = {}
    for field_name in ("customer_id", "order_id"):
        col = getattr(cols, field_name)
        if col is None or col not in types:
            continue
        dtype = types[col].upper()
        q = quote_ident(col, d)
        if dtype in {"DOUBLE", "FLOAT", "REAL", "DECIMAL"} or dtype.startswith("DECIMAL"):
            cond = f"{q} IS NOT NULL AND {q} <> floor({q})"
        elif dtype in TEXT_TYPES:
            text = f"nullif(trim({q}), '')"
            spelled = d.full_match.format(x=text, pattern=sql_string(_FLOAT_ID))
            cond = f"{text} IS NOT NULL AND NOT {spelled}"
        else:
            continue
        n_bad, n_ids = engine.fetchall(
            f"SELECT count(*) FILTER (WHERE {cond}), count({q}) FROM {view}"
        )[0]
        if n_ids and n_bad == 0:
            notes[field_name] = (
                f"column '{col}': its {n_ids:,} {field_name.replace('_', ' ')}s are whole numbers "
                f"written as floats (such as 13085.0); read as integers (13085) so that they "
                f"join with the shop's own ids"
            )
    return notes


def id_expr(col: str, dtype: str, d: Dialect, notes: dict[str, str]) -> str:
    """An id column as text; as the integer it spells when :func:`normalise_ids` said so."""
    if not any(f"column '{col}':" in n for n in notes.values()):
        return text_expr(col, dtype, d)
    q = quote_ident(col, d)
    if dtype.upper() in TEXT_TYPES:  # the text itself: no float rounding
        return f"regexp_replace(nullif(trim({q}), ''), '[.]0+$', '')"
    return f"CAST(CAST({q} AS BIGINT) AS STRING)"
