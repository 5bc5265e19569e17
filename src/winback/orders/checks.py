"""The checks of :func:`winback.orders.load_orders`: the table of row checks (one entry per
check, each with its condition, its policy and its fix), exact copies of lines, and a few
example values to show with each problem."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from winback.config import OrdersConfig
from winback.engines.dialect import Dialect, quote_ident
from winback.orders.table import Problem, fmt_ts

_N_EXAMPLES = 3


def _hint(check: str, policy: str, remedy: str) -> str:
    """A problem's fix: the remedy, and what its policy does now or how to change it (never the
    setting that is already in force)."""
    if policy == "fail":
        return f"{remedy}, or set orders.policies.{check}=drop to leave those rows out"
    done = "dropped" if policy == "drop" else "kept"
    return f"{remedy}; {done} by orders.policies.{check}={policy}"


def order_ids_distinct(engine, key: str) -> bool:
    """Whether no two lines of ``_raw`` share a value of ``key``, the SQL of their order id
    (:func:`winback.orders.shape.text_expr` of its column), among the lines that have one."""
    n, n_distinct = engine.fetchall(f"SELECT count({key}), count(DISTINCT {key}) FROM _raw")[0]
    return n == n_distinct


def without_copies(
    engine, cfg: OrdersConfig, rows_read: int, problems: list, distinct_key: str | None = None
) -> str:
    """Count the input lines that are exact copies of another line (every column equal, as
    when yearly or monthly exports overlap) and apply ``policies.duplicate_line``: return the
    view to read the lines from (``_raw``, or ``_raw_distinct`` without the copies).

    ``distinct_key``: an expression of the line (its order id) that no two lines share where it
    is not null (:func:`order_ids_distinct`). Copies would share it, so only the lines where it
    is null can hold copies, and only those are looked at first."""
    names = [quote_ident(c, engine.dialect) for c in engine.columns("_raw")]
    # copies share their hash: when no two lines do, there are none (one 8-byte key a line
    # to count, not every column); else, or on a collision, the lines themselves are compared
    row_hash = engine.dialect.row_hash.format(cols=", ".join(names))
    if distinct_key is None:
        if engine.fetchall(f"SELECT count(DISTINCT {row_hash}) FROM _raw")[0][0] == rows_read:
            return "_raw"
    else:
        n, n_distinct = engine.fetchall(
            f"SELECT count(*), count(DISTINCT {row_hash}) FROM _raw WHERE {distinct_key} IS NULL"
        )[0]
        if n == n_distinct:
            return "_raw"
    distinct = engine.fetchall("SELECT count(*) FROM (SELECT DISTINCT * FROM _raw) AS u")[0][0]
    copies = int(rows_read - distinct)
    if copies == 0:
        return "_raw"
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


def examples(
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


def row_checks(cfg: OrdersConfig, d: Dialect, as_of_naive: datetime) -> list[Check]:
    """The row checks, one entry each: adding a check or a policy is one more entry here.
    ``as_of_naive``: the as-of in UTC, without a zone (later orders are future dates)."""
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
            f"are dated after the as-of {fmt_ts(as_of_naive)} (UTC)",
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
