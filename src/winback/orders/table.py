"""The orders contract as winback holds it: :class:`Orders` (the validated table on its
engine) and the :class:`ValidationReport` of what loading found (:class:`Problem`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pandas as pd


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
            f"{self.n_customers:,} customers, {fmt_ts(self.first_ts)} to {fmt_ts(self.last_ts)}"
        )
        return out


def fmt_ts(ts: datetime | None) -> str:
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
            "first_ts": fmt_ts(lo),
            "last_ts": fmt_ts(hi),
            "sha256_16": digest,
            "hashed_by": engine.name,  # each engine hashes rows with its own function
        }
