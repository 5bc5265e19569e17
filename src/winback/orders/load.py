"""``load_orders``: a short sequence of named stages from a source to the orders table.

Open the source, map its columns, count rows and exact copies, stage typed columns, decide
whether rows are lines of orders, run the row checks, apply the returns rule, build orders,
refuse what a policy fails, write the table, and report."""

from __future__ import annotations

import logging
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from winback.config import OrdersConfig
from winback.engines.dialect import quote_ident, sql_string
from winback.engines.duckdb import connect
from winback.errors import ConfigError, DataError
from winback.orders.checks import examples, order_ids_distinct, row_checks, without_copies
from winback.orders.csvfiles import not_utf8_at
from winback.orders.shape import (
    TEXT_TYPES,
    id_expr,
    normalise_ids,
    num_expr,
    text_expr,
    ts_expr,
)
from winback.orders.sources import open_source, read_failure
from winback.orders.table import Orders, Problem, ValidationReport, fmt_ts
from winback.secrets import mask_url

log = logging.getLogger(__name__)


_AMOUNT_TYPE = "DECIMAL(18,4)"


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
    ids_distinct: bool = False  # no two lines share an order id, as read and as staged

    @property
    def extra(self) -> list[str]:
        """The optional columns an order carries on (category, channel)."""
        return [k for k in ("category", "channel") if k in self.optional]


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
    policy, and read float-typed ids as the integers they hold.

    When an order id column is mapped and no two lines share an id, copies can only be among
    the lines without one, and no order id repeats once staged: one count of distinct ids
    stands for the search for copies over every line and the later count of repeated ids
    (at 10M lines, 1.1 s against 2.5 s)."""
    engine, cfg, label, types = s.engine, s.cfg, s.label, s.types
    cols = cfg.columns
    rows_read = engine.fetchall("SELECT count(*) FROM _raw")[0][0]
    if rows_read == 0:
        raise DataError(
            f"{label}: the input is empty (0 rows); point orders.source at the order history."
        )
    problems = s.problems
    key = None
    if cols.order_id is not None and cols.order_id in types:
        # equal lines have equal keys, and two ids that differ here differ as staged
        # (id_expr), unless read from floats written as text (below): text trimmed, other
        # types as they are (their text is one to one with them, and slower to count)
        dtype = types[cols.order_id]
        key = (
            text_expr(cols.order_id, dtype, engine.dialect)
            if dtype.upper() in TEXT_TYPES
            else quote_ident(cols.order_id, engine.dialect)
        )
        if not order_ids_distinct(engine, key):
            key = None
    source_view = without_copies(engine, cfg, rows_read, problems, distinct_key=key)
    notes = normalise_ids(engine, source_view, cols, types, label)
    # '12.0' and '12.00' are two ids as text and one once read as the integer 12
    text_floats = "order_id" in notes and types[cols.order_id].upper() in TEXT_TYPES  # type: ignore[index]

    s.rows_read, s.source_view, s.notes = rows_read, source_view, notes
    s.ids_distinct = key is not None and not text_floats


def _stage_columns(s: _Load) -> None:
    """The typed columns (a table ``_stage``), and a view that adds the raw text for examples."""
    engine, cfg, types, optional, notes = s.engine, s.cfg, s.types, s.optional, s.notes
    cols, d, source_view = cfg.columns, s.engine.dialect, s.source_view
    if cols.amount is not None:
        amount = num_expr(cols.amount, types[cols.amount], d)
        amount_raw = quote_ident(cols.amount, d)
    else:
        q, u = cols.quantity, cols.unit_price
        amount = f"({num_expr(q, types[q], d)} * {num_expr(u, types[u], d)})"  # type: ignore[arg-type]
        amount_raw = f"concat({quote_ident(q, d)}, ' x ', {quote_ident(u, d)})"  # type: ignore[arg-type]
    select = [
        f"{id_expr(cols.customer_id, types[cols.customer_id], d, notes)} AS customer_id",
        f"{ts_expr(cols.order_ts, types[cols.order_ts], cfg, d)} AS order_ts",
        f"{amount} AS amount_f",
    ]
    has_order_id = "order_id" in optional
    if has_order_id:
        oid = cols.order_id
        select.append(f"{id_expr(oid, types[oid], d, notes)} AS order_id")  # type: ignore[arg-type,index]
    for k in ("category", "channel", "status"):
        if k in optional:
            select.append(f"{text_expr(optional[k], types[optional[k]], d)} AS {k}")
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
    if has_order_id and cfg.lines == "auto" and could_be_lines and not s.ids_distinct:
        n_dup_ids = engine.fetchall(
            "SELECT count(*) - count(DISTINCT order_id) FROM _stage WHERE order_id IS NOT NULL"
        )[0][0]
    if cfg.lines == "yes" and not has_order_id:
        raise ConfigError(
            "orders.lines is 'yes' but no order id column is mapped; set orders.columns.order_id."
        )
    lines = cfg.lines == "yes" or (cfg.lines == "auto" and n_dup_ids > 0)

    s.lines = lines


def _check_rows(s: _Load) -> None:
    """Run every row check at once, record the problems, and leave the view ``_clean`` of the
    rows their policies keep."""
    engine, label, problems, rows_read = s.engine, s.label, s.problems, s.rows_read
    d = engine.dialect
    checks = row_checks(s.cfg, d, s.as_of)
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
                check, column, int(n), rows_read, examples(engine, ex_col, cond), policy, what, fix
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
            ex = examples(engine, "order_id", "true", "_clean", "count(DISTINCT customer_id) > 1")
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
        if has_order_id and not s.ids_distinct:
            dup = engine.fetchall(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM _orders0 "
                "WHERE order_id IS NOT NULL GROUP BY order_id HAVING count(*) > 1) AS c"
            )[0][0]
            if dup:
                ex = examples(engine, "order_id", "true", "_orders0", "count(*) > 1")
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
            f"{fmt_ts(as_of_naive)} (UTC): there is nothing before it to use. Give a later "
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
