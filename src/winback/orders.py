"""Read an order history, map its columns, validate it, and hold it as the orders contract.

The orders contract is one row per order::

    customer_id  VARCHAR        who bought
    order_id     VARCHAR        unique per order (if absent: made of customer, day and a counter)
    order_ts     TIMESTAMP      when, in UTC (stored without a zone; always UTC inside winback)
    amount       DECIMAL(18,4)  net order value; returns and cancellations are negative
    is_return    BOOLEAN        a return or cancellation: never a purchase, but seen by features
    category     VARCHAR        optional
    channel      VARCHAR        optional

Everything runs inside DuckDB, so a large CSV or Parquet file is never loaded whole into pandas.
Amounts are stored as exact decimals, so sums do not depend on the order of the input rows.
"""

from __future__ import annotations

import hashlib
import logging
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pandas as pd

from winback.config import OrdersConfig
from winback.csvfiles import (
    not_utf8_at,
)
from winback.engines.dialect import Dialect, java_pattern, quote_ident, sql_string
from winback.engines.duckdb import connect
from winback.errors import ConfigError, DataError
from winback.secrets import mask_url
from winback.sources import open_source, read_failure

__all__ = ["Orders", "Problem", "ValidationReport", "load_orders", "orders_from_frame"]

log = logging.getLogger(__name__)

_AMOUNT_TYPE = "DECIMAL(18,4)"
_N_EXAMPLES = 3
_OFFSET_RE = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"


@dataclass(frozen=True)
class Problem:
    """One failed check of the orders contract, with what was done about it."""

    check: str
    column: str
    count: int
    total: int
    examples: tuple[str, ...]
    policy: str
    what: str
    fix: str

    def describe(self) -> str:
        """One sentence: column, count, what, examples and the fix."""
        ex = ", ".join(repr(e) for e in self.examples)
        ex_txt = f" (e.g. {ex})" if ex else ""
        return (
            f"column '{self.column}': {self.count:,} of {self.total:,} rows {self.what}{ex_txt}"
            f" -> {self.fix}"
        )


@dataclass
class ValidationReport:
    """What was read, what was wrong, and what was dropped or kept."""

    source: str
    rows_read: int
    rows_kept: int | None = None  # input lines behind the orders kept
    problems: list[Problem] = field(default_factory=list)
    lines_aggregated: bool = False
    n_orders: int = 0
    n_customers: int = 0
    n_returns: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    notes: list[str] = field(default_factory=list)  # what was changed, not dropped

    @property
    def rows_dropped(self) -> int:
        """Input lines that are not in any order kept: rows read minus rows kept (a line that
        fails two checks is dropped once)."""
        if self.rows_kept is None:
            return sum(p.count for p in self.problems if p.policy == "drop")
        return self.rows_read - self.rows_kept

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the terminal."""
        out = [f"read {self.rows_read:,} rows from {self.source}"]
        if self.rows_dropped:
            out.append(f"{self.rows_dropped:,} of them dropped (each listed below)")
        if self.lines_aggregated:
            out.append("rows are order lines: aggregated to one row per order")
        out += [f"normalised: {note}" for note in self.notes]
        for p in self.problems:
            action = {"drop": "dropped", "keep": "kept", "fail": "FAILED"}[p.policy]
            out.append(f"{action}: {p.describe()}")
        if not self.problems:
            out.append("no problems found")
        out.append(
            f"{self.n_orders:,} orders ({self.n_returns:,} returns or cancellations) from "
            f"{self.n_customers:,} customers, {_fmt_ts(self.first_ts)} to {_fmt_ts(self.last_ts)}"
        )
        return out


def _fmt_ts(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    if ts.hour == ts.minute == ts.second == 0:
        return ts.strftime("%Y-%m-%d")
    return ts.strftime("%Y-%m-%d %H:%M:%S")


class Orders:
    """A validated order history in the orders contract, held in a DuckDB table.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection that owns the table.
    table : str
        Name of the table in the orders contract.
    report : ValidationReport
        How the table was made.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection | None,
        table: str,
        report: ValidationReport,
        engine=None,
    ):
        self.con = con
        self.table = table
        self.report = report
        self._engine = engine
        cols = self.engine().columns(table)
        self.has_category = "category" in cols
        self.has_channel = "channel" in cols

    def __len__(self) -> int:
        return self.report.n_orders

    def engine(self):
        """The engine that runs SQL next to this table (DuckDB unless made with another)."""
        from winback.engines.duckdb import DuckDBEngine

        return self._engine or DuckDBEngine(self.con)

    def with_table(self, table: str, report: ValidationReport) -> Orders:
        """Orders on the same connection and engine, held in another table or view (a subset
        of these, say)."""
        return Orders(self.con, table, report, engine=self._engine)

    @property
    def last_ts(self) -> datetime | None:
        """Timestamp of the last order (UTC, naive); the data is observed up to this instant."""
        return self.report.last_ts

    @property
    def first_ts(self) -> datetime | None:
        return self.report.first_ts

    def to_pandas(self) -> pd.DataFrame:
        """The orders as a pandas frame (``order_ts`` tz-aware UTC, ``amount`` float)."""
        extra = "".join(f", {c}" for c in ("category", "channel") if getattr(self, f"has_{c}"))
        return self.engine().query_df(
            f"SELECT customer_id, order_id, order_ts, CAST(amount AS DOUBLE) AS amount, "
            f"is_return{extra} FROM {self.table} ORDER BY customer_id, order_ts, order_id"
        )

    def fingerprint(self) -> dict[str, object]:
        """Rows, date range and a content hash that does not depend on row order (nor on the
        number of partitions); comparable between runs on the same engine."""
        engine = self.engine()
        row = "customer_id, order_id, order_ts, amount, is_return"
        d = engine.dialect
        n, lo, hi, h1, h2 = engine.fetchall(
            f"""SELECT count(*), min(order_ts), max(order_ts),
                   sum({d.row_hash_mod.format(cols=row, k=1000000007)}),
                   bit_xor({d.row_hash.format(cols=row)})
                FROM {self.table}"""
        )[0]
        digest = hashlib.sha256(f"{n}|{lo}|{hi}|{h1}|{h2}".encode()).hexdigest()[:16]
        return {
            "rows": int(n),
            "first_ts": _fmt_ts(lo),
            "last_ts": _fmt_ts(hi),
            "sha256_16": digest,
            "hashed_by": engine.name,  # each engine hashes rows with its own function
        }


def _hint(check: str, policy: str, remedy: str) -> str:
    """A problem's fix: the remedy, and what its policy does now or how to change it (never the
    setting that is already in force)."""
    if policy == "fail":
        return f"{remedy}, or set orders.policies.{check}=drop to leave those rows out"
    done = "dropped" if policy == "drop" else "kept"
    return f"{remedy}; {done} by orders.policies.{check}={policy}"


def _ts_expr(col: str, dtype: str, cfg: OrdersConfig, d: Dialect) -> str:
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


def _num_expr(col: str, dtype: str, d: Dialect) -> str:
    c = quote_ident(col, d)
    if dtype.upper() in {"VARCHAR", "TEXT", "STRING"}:
        return f"try_cast(trim({c}) AS DOUBLE)"
    return f"try_cast({c} AS DOUBLE)"


def _text_expr(col: str, dtype: str, d: Dialect) -> str:
    if dtype.upper() in {"VARCHAR", "TEXT", "STRING"}:
        return f"nullif(trim({quote_ident(col, d)}), '')"
    return f"CAST({quote_ident(col, d)} AS STRING)"


def _without_copies(engine, cfg: OrdersConfig, rows_read: int, problems: list) -> str:
    """Count the input lines that are exact copies of another line (every column equal, as
    when yearly or monthly exports overlap) and apply ``policies.duplicate_line``: return the
    view to read the lines from (``_raw``, or ``_raw_distinct`` without the copies)."""
    distinct = engine.fetchall("SELECT count(*) FROM (SELECT DISTINCT * FROM _raw) AS u")[0][0]
    copies = int(rows_read - distinct)
    if copies == 0:
        return "_raw"
    names = [quote_ident(c, engine.dialect) for c in engine.columns("_raw")]
    shown = ", ".join(f"coalesce(CAST({c} AS STRING), '')" for c in names[:4])
    rows = engine.fetchall(
        f"SELECT concat_ws(' | ', {shown}) AS v FROM _raw GROUP BY {', '.join(names)} "
        f"HAVING count(*) > 1 ORDER BY v LIMIT {_N_EXAMPLES}"
    )
    policy = cfg.policies.duplicate_line
    fix = {
        "drop": "dropped as copies (overlapping exports); set orders.policies.duplicate_line="
        "keep if identical lines are real repeat purchases",
        "keep": "kept as separate orders (orders.policies.duplicate_line=keep); set it to drop "
        "if they are copies of the same order",
        "fail": "remove the copies from the export, or set orders.policies.duplicate_line=drop",
    }[policy]
    problems.append(
        Problem(
            "duplicate_line",
            "all columns",
            copies,
            rows_read,
            tuple(str(r[0]) for r in rows),
            policy,
            "are exact copies of another line (every column equal)",
            fix,
        )
    )
    if policy != "drop":
        return "_raw"
    engine.create_view("_raw_distinct", "SELECT DISTINCT * FROM _raw")
    return "_raw_distinct"


_FLOAT_ID = "-?[0-9]+[.]0+"  # [.], not an escape: the same pattern on every engine


def _normalise_ids(engine, view: str, cols, types: dict[str, str], label: str) -> dict[str, str]:
    """Ids written as floats (``13085.0``, from a spreadsheet or pandas) are read as the integer
    they spell (``13085``) when every non-empty value of the column is such a number; ids that
    are genuinely text (``02987``, ``A-1``) are never touched. Returns a note per normalised
    column (the :func:`_id_expr` hint)."""
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
        elif dtype in {"VARCHAR", "TEXT", "STRING"}:
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


def _id_expr(col: str, dtype: str, d: Dialect, notes: dict[str, str]) -> str:
    """An id column as text; as the integer it spells when :func:`_normalise_ids` said so."""
    if not any(f"column '{col}':" in n for n in notes.values()):
        return _text_expr(col, dtype, d)
    q = quote_ident(col, d)
    if dtype.upper() in {"VARCHAR", "TEXT", "STRING"}:  # the text itself: no float rounding
        return f"regexp_replace(nullif(trim({q}), ''), '[.]0+$', '')"
    return f"CAST(CAST({q} AS BIGINT) AS STRING)"


def _examples(
    engine, col: str, where: str, view: str = "_stage_raw", having: str | None = None
) -> tuple[str, ...]:
    """A few distinct values of ``col`` (its raw text, read again from the source, by default)
    in the rows of ``view`` where ``where`` holds, or, with ``having``, among the values whose
    rows meet that condition together (e.g. an order id seen twice)."""
    v = f"coalesce(CAST({col} AS STRING), '<empty>')"
    if having is None:
        sql = f"SELECT DISTINCT {v} AS v FROM {view} WHERE {where}"
    else:
        sql = f"SELECT {v} AS v FROM {view} WHERE {col} IS NOT NULL GROUP BY {col} HAVING {having}"
    rows = engine.fetchall(f"{sql} ORDER BY v LIMIT {_N_EXAMPLES}")
    return tuple(str(r[0]) for r in rows)


def load_orders(
    source: str | Path | pd.DataFrame,
    cfg: OrdersConfig | None = None,
    *,
    as_of: datetime | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    table: str = "orders",
    engine=None,
) -> Orders:
    """Read, map and validate an order history into the orders contract.

    Parameters
    ----------
    source : path or DataFrame
        A CSV file, a Parquet file or folder, a DuckDB database file (with ``cfg.table``), or a
        pandas frame whose columns are named as in ``cfg.columns``.
    cfg : OrdersConfig
        Column mapping, formats, returns rule and the policy for each kind of bad row.
    as_of : datetime, optional
        Orders after this instant (UTC) are future dates. Default: now.
    con : duckdb connection, optional
        Where the orders table is created; a new in-memory database by default.
    engine : SparkEngine, optional
        Read and validate on Spark instead (the same checks, in Spark SQL); the orders stay a
        cached Spark table.
    table : str
        Name of the table to create.

    Returns
    -------
    Orders
        The validated orders and a :class:`ValidationReport`.

    Raises
    ------
    DataError
        Missing columns, an empty input, or any problem whose policy is ``fail``. The one-line
        message lists every problem found, each with its column, count, examples and fix.
    """
    try:
        return _load_orders(source, cfg or OrdersConfig(), as_of, con, table, engine)
    except _UNREADABLE as exc:  # a bad byte, line or page past what the reader first looked at
        if isinstance(exc, _OUR_SQL):
            raise
        label = "a data frame" if isinstance(source, pd.DataFrame) else mask_url(str(source))
        raise read_failure(label, None, exc) from None


#: What DuckDB raises on a source it cannot read through; the subclasses in _OUR_SQL are
#: mistakes in winback's own SQL and keep their traceback.
_UNREADABLE = (duckdb.Error,)
_OUR_SQL = (
    duckdb.BinderException,
    duckdb.ParserException,
    duckdb.CatalogException,
    duckdb.NotImplementedException,
    duckdb.InternalException,
)


@dataclass
class _Load:
    """What the stages of :func:`load_orders` hand on to each other."""

    engine: Any
    cfg: OrdersConfig
    label: str
    as_of: datetime  # naive UTC
    types: dict[str, str] = field(default_factory=dict)
    optional: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    source_view: str = "_raw"
    notes: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    has_order_id: bool = False
    lines: bool = False
    is_return: str = "false"
    dup: int = 0

    @property
    def extra(self) -> list[str]:
        """The optional columns an order carries on (category, channel)."""
        return [k for k in ("category", "channel") if k in self.optional]


class Check(NamedTuple):
    """A row check of :func:`load_orders`: rows where ``condition`` holds (SQL over the staged
    columns) are counted, shown by a few values of ``example_column``, and dropped, kept or
    refused by their ``policy``."""

    check: str
    column: str
    condition: str
    example_column: str
    what: str
    policy: str
    fix: str


def _load_orders(
    source: str | Path | pd.DataFrame,
    cfg: OrdersConfig,
    as_of: datetime | None,
    con: duckdb.DuckDBPyConnection | None,
    table: str,
    engine,
) -> Orders:
    """The stages of :func:`load_orders`, in order; each names what it does."""
    _check_timezone(cfg)
    if engine is None:
        from winback.engines.duckdb import DuckDBEngine

        con = con or connect()
        engine = DuckDBEngine(con)
    label = open_source(engine, source, cfg)
    table = engine.table_name(table)
    s = _Load(engine, cfg, label, (as_of or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None))
    _map_columns(s)
    _count_rows_and_copies(s)
    _stage_columns(s)
    _decide_lines(s)
    _check_rows(s)
    _returns_rule(s)
    _to_orders(s)
    _refuse_failures(s)
    kept_lines = _orders_table(s, table)
    report = _report(s, table, kept_lines)
    return Orders(con, table, report, engine=None if engine.name == "duckdb" else engine)


def _check_timezone(cfg: OrdersConfig) -> None:
    try:
        zoneinfo.ZoneInfo(cfg.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"The 'orders.timezone' setting must be an IANA zone such as UTC or Europe/Berlin; "
            f"got {cfg.timezone!r}."
        ) from None


def _map_columns(s: _Load) -> None:
    """Find the mapped columns in the source; refuse, in one line, any that is missing."""
    engine, cfg, label = s.engine, s.cfg, s.label
    types = engine.columns("_raw")
    cols = cfg.columns
    required = {"customer_id": cols.customer_id, "order_ts": cols.order_ts}
    if cols.amount is not None:
        required["amount"] = cols.amount
    else:
        required["quantity"] = cols.quantity  # type: ignore[assignment]
        required["unit_price"] = cols.unit_price  # type: ignore[assignment]
    optional = {
        k: getattr(cols, k)
        for k in ("order_id", "category", "channel", "status", "quantity", "unit_price")
        if getattr(cols, k) is not None and k not in required
    }
    missing = [f"'{v}' (for {k})" for k, v in required.items() if v not in types]
    # An optional column named explicitly but absent is a mapping mistake too, except the
    # default 'order_id', which many histories simply do not have.
    missing += [
        f"'{v}' (for {k})"
        for k, v in optional.items()
        if v not in types and not (k == "order_id" and v == "order_id")
    ]
    if missing:
        have = ", ".join(repr(t) for t in list(types)[:20])
        raise DataError(
            f"{label}: missing column(s) {', '.join(missing)}; the input has {have}. "
            "Map them in the config's orders.columns "
            "(e.g. --set orders.columns.order_ts=InvoiceDate)."
        )
    optional = {k: v for k, v in optional.items() if v in types}
    s.types, s.optional = types, optional


def _count_rows_and_copies(s: _Load) -> None:
    """Count the rows read (refuse an empty input), set exact copies of a line aside by their
    policy, and read float-typed ids as the integers they hold."""
    engine, cfg, label, types = s.engine, s.cfg, s.label, s.types
    cols = cfg.columns
    rows_read = engine.fetchall("SELECT count(*) FROM _raw")[0][0]
    if rows_read == 0:
        raise DataError(
            f"{label}: the input is empty (0 rows); point orders.source at the order history."
        )
    problems = s.problems
    source_view = _without_copies(engine, cfg, rows_read, problems)
    notes = _normalise_ids(engine, source_view, cols, types, label)

    s.rows_read, s.source_view, s.notes = rows_read, source_view, notes


def _stage_columns(s: _Load) -> None:
    """The typed columns (a table ``_stage``), and a view that adds the raw text for examples."""
    engine, cfg, types, optional, notes = s.engine, s.cfg, s.types, s.optional, s.notes
    cols, d, source_view = cfg.columns, s.engine.dialect, s.source_view
    if cols.amount is not None:
        amount = _num_expr(cols.amount, types[cols.amount], d)
        amount_raw = quote_ident(cols.amount, d)
    else:
        q, u = cols.quantity, cols.unit_price
        amount = f"({_num_expr(q, types[q], d)} * {_num_expr(u, types[u], d)})"  # type: ignore[arg-type]
        amount_raw = f"concat({quote_ident(q, d)}, ' x ', {quote_ident(u, d)})"  # type: ignore[arg-type]
    select = [
        f"{_id_expr(cols.customer_id, types[cols.customer_id], d, notes)} AS customer_id",
        f"{_ts_expr(cols.order_ts, types[cols.order_ts], cfg, d)} AS order_ts",
        f"{amount} AS amount_f",
    ]
    has_order_id = "order_id" in optional
    if has_order_id:
        oid = cols.order_id
        select.append(f"{_id_expr(oid, types[oid], d, notes)} AS order_id")  # type: ignore[arg-type,index]
    for k in ("category", "channel", "status"):
        if k in optional:
            select.append(f"{_text_expr(optional[k], types[optional[k]], d)} AS {k}")
    raw = [
        f"CAST({quote_ident(cols.order_ts, d)} AS STRING) AS order_ts_raw",
        f"CAST({amount_raw} AS STRING) AS amount_raw",
    ]
    engine.create_table("_stage", f"SELECT {', '.join(select)} FROM {source_view}")
    engine.create_view("_stage_raw", f"SELECT {', '.join(select + raw)} FROM {source_view}")
    staged = [x.rsplit(" AS ", 1)[1] for x in select if x.rsplit(" AS ", 1)[1] != "amount_f"]

    s.has_order_id, s.staged = has_order_id, staged


def _decide_lines(s: _Load) -> None:
    """Whether the rows are order lines (several rows of one order id) or orders."""
    engine, cfg, has_order_id = s.engine, s.cfg, s.has_order_id
    cols = cfg.columns
    n_dup_ids = 0
    could_be_lines = cols.quantity is not None and cols.unit_price is not None
    if has_order_id and cfg.lines == "auto" and could_be_lines:
        n_dup_ids = engine.fetchall(
            "SELECT count(*) - count(DISTINCT order_id) FROM _stage WHERE order_id IS NOT NULL"
        )[0][0]
    if cfg.lines == "yes" and not has_order_id:
        raise ConfigError(
            "orders.lines is 'yes' but no order id column is mapped; set orders.columns.order_id."
        )
    lines = cfg.lines == "yes" or (cfg.lines == "auto" and n_dup_ids > 0)

    s.lines = lines


def _row_checks(s: _Load) -> list[Check]:
    """The row checks, one entry each: adding a check or a policy is one more entry here."""
    cfg, d, as_of_naive = s.cfg, s.engine.dialect, s.as_of
    cols, pol, max_abs = cfg.columns, cfg.policies, cfg.max_abs_amount
    return [
        Check(
            "unparsable_date",
            cols.order_ts,
            "order_ts IS NULL",
            "order_ts_raw",
            "have a missing or unparsable date",
            pol.unparsable_date,
            _hint(
                "unparsable_date",
                pol.unparsable_date,
                "fix the dates, or set orders.date_format to their strftime format (e.g. "
                "%d/%m/%Y %H:%M); auto reads ISO dates, YYYYMMDD and Unix epoch numbers"
                if cfg.date_format == "auto"
                else f"they do not match orders.date_format {cfg.date_format!r}: set it to "
                "their format, or to auto (ISO dates, YYYYMMDD, Unix epoch numbers)",
            ),
        ),
        Check(
            "null_customer_id",
            cols.customer_id,
            "customer_id IS NULL",
            "customer_id",
            "have no customer id",
            pol.null_customer_id,
            _hint("null_customer_id", pol.null_customer_id, "fill the ids at the source"),
        ),
        Check(
            "bad_amount",
            cols.amount or f"{cols.quantity} x {cols.unit_price}",
            f"amount_f IS NULL OR isnan(amount_f) OR {d.is_inf.format(x='amount_f')}",
            "amount_raw",
            "have a missing or non-numeric amount",
            pol.bad_amount,
            _hint("bad_amount", pol.bad_amount, "fix the amounts at the source"),
        ),
        Check(
            "absurd_amount",
            cols.amount or f"{cols.quantity} x {cols.unit_price}",
            f"abs(amount_f) > {max_abs!r} AND NOT {d.is_inf.format(x='amount_f')} "
            "AND NOT isnan(amount_f)",
            "amount_raw",
            f"have an absurd amount (above {max_abs:,.0f} in absolute value)",
            pol.absurd_amount,
            _hint(
                "absurd_amount",
                pol.absurd_amount,
                "check them, and raise orders.max_abs_amount if they are real",
            ),
        ),
        Check(
            "future_date",
            cols.order_ts,
            f"order_ts > TIMESTAMP '{as_of_naive.isoformat(sep=' ')}'",
            "order_ts_raw",
            f"are dated after the as-of {_fmt_ts(as_of_naive)} (UTC)",
            pol.future_date,
            "check the clock or the as-of; dated after it, they "
            + (
                "are dropped (policies.future_date=drop)"
                if pol.future_date == "drop"
                else "are kept"
                if pol.future_date == "keep"
                else "fail the run (policies.future_date=fail)"
            ),  # fmt: skip
        ),
        Check(
            "control_characters",
            cols.customer_id,
            d.search.format(x="customer_id", pattern=d.control_chars),
            "customer_id",
            "have an id holding a control character (a tab, a line break, ...)",
            pol.control_characters,
            {
                "keep": "kept as they are (exported cells are quoted and made safe); clean them "
                "at the source, or set policies.control_characters=drop",
                "drop": "dropped (policies.control_characters=drop); clean them at the source",
                "fail": "clean the ids at the source, or set policies.control_characters=keep",
            }[pol.control_characters],
        ),
        Check(
            "zero_amount",
            cols.amount or f"{cols.quantity} x {cols.unit_price}",
            "amount_f = 0",
            "amount_raw",
            "have an amount of exactly 0",
            pol.zero_amount,
            "kept as purchases by default; set policies.zero_amount=drop to drop",
        ),
    ]


def _check_rows(s: _Load) -> None:
    """Run every row check at once, record the problems, and leave the view ``_clean`` of the
    rows their policies keep."""
    engine, label, problems, rows_read = s.engine, s.label, s.problems, s.rows_read
    d = engine.dialect
    checks = _row_checks(s)
    counts_sql = ", ".join(f"count(*) FILTER (WHERE {c.condition})" for c in checks)
    # U+FFFD in an id is the mark of text decoded in the wrong encoding (Spark's CSV reader puts
    # it in place of bytes that are not UTF-8, where DuckDB's refuses them)
    counts_sql += ", count(*) FILTER (WHERE instr(customer_id, '\ufffd') > 0)"
    *counts, n_undecodable = engine.fetchall(f"SELECT {counts_sql} FROM _stage")[0]
    if n_undecodable:
        raise not_utf8_at(
            label, f" ({n_undecodable:,} customer ids hold U+FFFD, a byte it could not decode)"
        )
    drop_conditions: list[str] = []
    for (check, column, cond, ex_col, what, policy, fix), n in zip(checks, counts, strict=True):
        if n == 0:
            continue
        problems.append(
            Problem(
                check, column, int(n), rows_read, _examples(engine, ex_col, cond), policy, what, fix
            )
        )
        if policy == "drop":
            drop_conditions.append(f"({cond})")

    keep_rows = "NOT (" + " OR ".join(drop_conditions) + ")" if drop_conditions else "true"
    engine.create_view(
        "_clean",
        f"""SELECT {", ".join(s.staged)}, CAST(round(amount_f, 4) AS {_AMOUNT_TYPE}) AS amount
            FROM _stage
            WHERE {keep_rows} AND order_ts IS NOT NULL AND customer_id IS NOT NULL
              AND amount_f IS NOT NULL AND NOT isnan(amount_f)
              AND NOT {d.is_inf.format(x="amount_f")} AND abs(amount_f) < 1e13""",
    )


def _returns_rule(s: _Load) -> None:
    """The SQL condition that makes a row a return or cancellation (on lines or orders alike)."""
    cfg, optional, has_order_id, d = s.cfg, s.optional, s.has_order_id, s.engine.dialect
    ret = cfg.returns
    ret_terms = []
    if ret.negative_amount:
        ret_terms.append("amount < 0")
    if ret.status_values and "status" in optional:
        vals = ", ".join(sql_string(v) for v in ret.status_values)
        ret_terms.append(f"coalesce(status IN ({vals}), false)")
    if ret.order_id_prefix and has_order_id:
        starts = d.starts_with.format(x="order_id", prefix=sql_string(ret.order_id_prefix))
        ret_terms.append(f"coalesce({starts}, false)")
    if ret.status_values and "status" not in optional:
        raise ConfigError(
            "orders.returns.status_values is set but no status column is mapped; "
            "set orders.columns.status."
        )
    is_return = " OR ".join(ret_terms) if ret_terms else "false"

    s.is_return = is_return


def _to_orders(s: _Load) -> None:
    """Aggregate order lines to orders (view ``_orders0``), or count repeated order ids."""
    engine, cfg, problems, rows_read = s.engine, s.cfg, s.problems, s.rows_read
    lines, has_order_id, is_return, extra = s.lines, s.has_order_id, s.is_return, s.extra
    cols, pol, d = cfg.columns, cfg.policies, engine.dialect
    dup = 0
    if lines:
        no_id = engine.fetchall("SELECT count(*) FROM _clean WHERE order_id IS NULL")[0][0]
        if no_id:
            problems.append(
                Problem(
                    "null_order_id",
                    cols.order_id or "order_id",
                    int(no_id),
                    rows_read,
                    (),
                    "drop",
                    "are order lines without an order id",
                    "fill the order ids: lines cannot be grouped into orders without them",
                )
            )
        conflict = engine.fetchall(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT order_id, count(*) AS n FROM _clean "
            "WHERE order_id IS NOT NULL GROUP BY order_id "
            "HAVING count(DISTINCT customer_id) > 1) AS c"
        )[0]
        if conflict[0]:
            ex = _examples(engine, "order_id", "true", "_clean", "count(DISTINCT customer_id) > 1")
            problems.append(
                Problem(
                    "conflicting_customer",
                    cols.order_id or "order_id",
                    int(conflict[1]),
                    rows_read,
                    ex,
                    pol.conflicting_customer,
                    "are lines of an order id that carries more than one customer id",
                    "fix the ids, or set policies.conflicting_customer=drop to drop those orders",
                )
            )
        extra_agg = "".join(
            f", {d.arg_max.format(value=k, key='abs(amount)')} AS {k}" for k in extra
        )
        engine.create_view(
            "_orders0",
            f"""SELECT order_id, min(customer_id) AS customer_id, min(order_ts) AS order_ts,
                       CAST(sum(amount) AS {_AMOUNT_TYPE}) AS amount,
                       bool_or({is_return}) AS is_return{extra_agg}
                FROM _clean WHERE order_id IS NOT NULL
                GROUP BY order_id
                HAVING count(DISTINCT customer_id) = 1""",
        )
    else:
        id_expr = "order_id" if has_order_id else "CAST(NULL AS STRING)"
        engine.create_view(
            "_orders0",
            f"""SELECT {id_expr} AS order_id, customer_id, order_ts, amount,
                       ({is_return}) AS is_return{"".join(", " + k for k in extra)}
                FROM _clean""",
        )
        if has_order_id:
            dup = engine.fetchall(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM _orders0 "
                "WHERE order_id IS NOT NULL GROUP BY order_id HAVING count(*) > 1) AS c"
            )[0][0]
            if dup:
                ex = _examples(engine, "order_id", "true", "_orders0", "count(*) > 1")
                problems.append(
                    Problem(
                        "duplicate_order_id",
                        cols.order_id or "order_id",
                        int(dup),
                        rows_read,
                        ex,
                        pol.duplicate_order_id,
                        "repeat an order id already seen",
                        "drop the copies (default), or set orders.lines=yes for order lines",
                    )
                )

    s.dup = dup


def _refuse_failures(s: _Load) -> None:
    """Refuse, in one line, every problem whose policy is ``fail``."""
    problems, label = s.problems, s.label
    failures = [p for p in problems if p.policy == "fail"]
    if failures:
        raise DataError(
            f"{label}: {len(failures)} problem(s) with fail policy: "
            + "; ".join(p.describe() for p in failures)
        )


def _orders_table(s: _Load, table: str) -> int:
    """Final ids (copies dropped or told apart, ids made where there are none) into the orders
    table; return how many input lines its orders hold."""
    engine, cfg, lines, has_order_id, dup = s.engine, s.cfg, s.lines, s.has_order_id, s.dup
    extra, source_view, d = s.extra, s.source_view, engine.dialect
    dup_policy = cfg.policies.duplicate_order_id
    rank = (
        "row_number() OVER (PARTITION BY order_id "
        "ORDER BY order_ts, customer_id, amount, is_return" + "".join(f", {k}" for k in extra) + ")"
    )
    made_id = (
        f"customer_id || '-' || {d.day_key.format(ts='order_ts')} || '-' || "
        "CAST(row_number() OVER (PARTITION BY customer_id, CAST(order_ts AS DATE) "
        "ORDER BY order_ts, amount, is_return" + "".join(f", {k}" for k in extra) + ") AS STRING)"
    )
    extra_sel = "".join(f", {k}" for k in extra)
    if lines or not has_order_id:
        body = f"""SELECT customer_id, coalesce(order_id, {made_id}) AS order_id, order_ts,
                          amount, is_return{extra_sel} FROM _orders0"""
    elif dup == 0:  # ids are unique: nothing to rank
        body = f"SELECT customer_id, order_id, order_ts, amount, is_return{extra_sel} FROM _orders0"
    elif dup_policy == "drop":
        body = f"""SELECT customer_id, coalesce(order_id, {made_id}) AS order_id, order_ts, amount,
                          is_return{extra_sel}
                   FROM (SELECT *, {rank} AS _k FROM _orders0) AS r WHERE _k = 1"""
    else:  # keep: the copies stay, as separate orders with a suffixed id
        body = f"""SELECT customer_id,
                          CASE WHEN _k = 1 THEN coalesce(order_id, {made_id})
                               ELSE order_id || '~' || CAST(_k AS STRING) END AS order_id,
                          order_ts, amount, is_return{extra_sel}
                   FROM (SELECT *, {rank} AS _k FROM _orders0) AS r"""
    engine.create_table(
        table,
        f"""SELECT customer_id, order_id, order_ts,
                   CAST(CASE WHEN is_return THEN -abs(amount) ELSE amount END AS {_AMOUNT_TYPE})
                       AS amount,
                   is_return{extra_sel}
            FROM ({body}) AS o""",
        temp=False,
    )
    if lines:  # the lines of the orders that were kept
        kept_lines = engine.fetchall(
            f"SELECT count(*) FROM _clean WHERE order_id IN (SELECT order_id FROM {table})"
        )[0][0]
    else:  # a line is an order
        kept_lines = engine.fetchall(f"SELECT count(*) FROM {table}")[0][0]
    engine.drop_view("_orders0")
    engine.drop_view("_clean")
    engine.drop_view("_stage_raw")
    engine.drop("_stage")
    if source_view != "_raw":
        engine.drop_view(source_view)

    return int(kept_lines)


def _report(s: _Load, table: str, kept_lines: int) -> ValidationReport:
    """What reading found; refuse an input with no order left."""
    engine, label, problems, rows_read = s.engine, s.label, s.problems, s.rows_read
    lines, notes, as_of_naive = s.lines, s.notes, s.as_of
    n, n_cust, n_ret, lo, hi = engine.fetchall(
        f"SELECT count(*), count(DISTINCT customer_id), count(*) FILTER (WHERE is_return), "
        f"min(order_ts), max(order_ts) FROM {table}"
    )[0]
    report = ValidationReport(
        source=label,
        rows_read=int(rows_read),
        rows_kept=int(kept_lines),
        problems=problems,
        lines_aggregated=lines,
        n_orders=int(n),
        n_customers=int(n_cust),
        n_returns=int(n_ret),
        first_ts=lo,
        last_ts=hi,
        notes=list(notes.values()),
    )
    future = [p for p in problems if p.check == "future_date" and p.count == rows_read]
    if n == 0 and future:
        raise DataError(
            f"{label}: every one of its {rows_read:,} rows is dated after the as-of "
            f"{_fmt_ts(as_of_naive)} (UTC): there is nothing before it to use. Give a later "
            "--as-of, within the orders."
        )
    if n == 0:
        raise DataError(
            f"{label}: no orders left after validation ("
            + "; ".join(p.describe() for p in problems)
            + ")."
        )
    for line in report.summary_lines():
        log.debug(line)
    return report


def orders_from_frame(
    df: pd.DataFrame, cfg: OrdersConfig | None = None, *, as_of: datetime | None = None
) -> Orders:
    """Validate an in-memory frame (columns named as in the contract by default)."""
    return load_orders(df, cfg, as_of=as_of)
