"""The embedded DuckDB engine: runs the feature and label SQL next to the orders table."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Protocol

import duckdb
import pandas as pd

from winback.atomic import atomic_path
from winback.engines.dialect import DUCKDB

__all__ = ["DuckDBEngine", "connect", "connect_for", "registered"]

_counter = itertools.count()

#: Rows per Arrow batch when a query's result is handed to pandas.
ARROW_BATCH_ROWS = 1_000_000

#: What DuckDB keeps while it lends its memory (:meth:`DuckDBEngine.memory_lent`): the work
#: done meanwhile runs no query, and every megabyte more of its cached orders stays in memory
#: (of 10M orders loaded, 244 MB at 256MB against 61 at 64MB and 15 at 16MB).
LENT_MEMORY = "32MB"


def connect(
    memory_limit: str = "2GB", threads: int | None = None, temp_directory: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to disk past ``memory_limit``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    # memory DuckDB frees goes back to the system as it is freed, not when its allocator
    # next needs it: a sorted result of millions of rows handed to pandas otherwise stays
    # counted against the process (about 1 GB at 8M scored customers) for the rest of a run
    con.execute("SET allocator_background_threads = true")
    # DuckDB draws a progress bar on stdout for long queries, which would corrupt what the
    # command line prints there (tables, --json); winback shows its own on stderr
    con.execute("SET enable_progress_bar = false")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        con.execute("SET temp_directory = ?", [str(temp_directory)])
    return con


class EngineSettings(Protocol):
    """What :func:`connect_for` reads of a config's ``engine`` section."""

    memory_limit: str
    threads: int | None
    temp_directory: str | None


def connect_for(engine: EngineSettings) -> duckdb.DuckDBPyConnection:
    """A connection with the config's memory limit, threads and spill folder (``engine``: the
    config's ``engine`` section)."""
    return connect(engine.memory_limit, engine.threads, engine.temp_directory)


@contextmanager
def registered(
    con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, prefix: str = "_frame"
) -> Iterator[str]:
    """A pandas frame visible to SQL under a fresh name for the length of the block."""
    name = f"{prefix}_{next(_counter)}"
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)


class DuckDBEngine:
    """Runs SQL on the DuckDB connection that holds the orders table.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection that owns the orders table.
    """

    name = "duckdb"
    dialect = DUCKDB
    #: aggregations over many (customer, cutoff) groups run in customer hash partitions
    bounded_groups = True

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def register_cutoffs(self, cutoffs: Sequence[datetime]) -> str:
        """Create a temporary table ``cutoff_ts TIMESTAMP`` and return its name."""
        name = f"_cutoffs_{next(_counter)}"
        frame = pd.DataFrame({"cutoff_ts": pd.to_datetime(list(cutoffs)).astype("datetime64[us]")})
        with registered(self.con, frame, f"{name}_src") as src:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS "
                f"SELECT CAST(cutoff_ts AS TIMESTAMP) AS cutoff_ts FROM {src}"
            )
        return name

    def register_customers(self, ids: Sequence[str]) -> str:
        """Create a temporary table ``customer_id VARCHAR`` of the given ids; return its name."""
        name = f"_customers_{next(_counter)}"
        frame = pd.DataFrame({"customer_id": pd.array(list(ids), dtype="str")})
        with registered(self.con, frame, f"{name}_src") as src:
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS "
                f"SELECT CAST(customer_id AS VARCHAR) AS customer_id FROM {src}"
            )
        return name

    def registered(self, frame: pd.DataFrame, prefix: str = "_frame"):
        """A pandas frame visible to SQL under a fresh name for the length of a ``with`` block."""
        return registered(self.con, frame, prefix)

    def table_name(self, name: str) -> str:
        """The name to create a table under (the caller's own connection: as asked)."""
        return name

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def drop_view(self, name: str) -> None:
        self.con.execute(f"DROP VIEW IF EXISTS {name}")

    def fetchall(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def create_view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")

    def create_table(self, name: str, sql: str, temp: bool = True) -> None:
        """Materialize a query as a table (a temporary one unless ``temp`` is false)."""
        self.con.execute(f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE {name} AS {sql}")

    def columns(self, name: str) -> dict[str, str]:
        """Column name -> DuckDB type name of a table or view."""
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE {name}").fetchall()}

    def materialize_parts(
        self, parts: Sequence[str], on_part: Callable[[int, int], None] | None = None
    ) -> str:
        """Run queries with the same columns one after another into one temporary table and
        return its name. Only one part's working memory is live at a time; ``on_part(done,
        total)`` is called after each."""
        name = f"_parts_{next(_counter)}"
        self.con.execute(f"CREATE TEMP TABLE {name} AS {parts[0]}")
        try:
            if on_part:
                on_part(1, len(parts))
            for i, sql in enumerate(parts[1:], start=2):
                self.con.execute(f"INSERT INTO {name} {sql}")
                if on_part:
                    on_part(i, len(parts))
        except BaseException:
            self.drop(name)
            raise
        return name

    @contextmanager
    def memory_lent(self, limit: str = LENT_MEMORY) -> Iterator[None]:
        """Hold DuckDB to ``limit`` for a block of work done elsewhere (pandas): the pages it
        keeps cached (tables, freed working memory) go to its temp directory and come back on
        demand. Where they cannot be moved, DuckDB keeps its memory and the block runs anyway."""
        before = self.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        try:
            self.con.execute(f"SET memory_limit = '{limit}'")
        except duckdb.Error:
            lent = False
        else:
            lent = True
        try:
            yield
        finally:
            if lent:
                self.con.execute(f"SET memory_limit = '{before}'")

    def copy_to_parquet(self, sql: str, path: str) -> int:
        """Write a query's rows to a Parquet file (streamed by DuckDB, under a temporary name
        renamed at the end); return the row count."""
        with atomic_path(path) as tmp:
            quoted = "'" + str(tmp).replace("'", "''") + "'"
            self.con.execute(f"COPY ({sql}) TO {quoted} (FORMAT parquet, COMPRESSION zstd)")
            return int(
                self.con.execute(f"SELECT count(*) FROM read_parquet({quoted})").fetchall()[0][0]
            )

    def query_df(self, sql: str) -> pd.DataFrame:
        """Run a query; timestamp columns come back tz-aware UTC."""
        # streamed as Arrow batches, so the result is never held twice (DuckDB's and pandas')
        table = self.con.sql(sql).to_arrow_reader(ARROW_BATCH_ROWS).read_all()
        df = table.to_pandas(split_blocks=True, self_destruct=True)
        del table
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]) and df[col].dt.tz is None:
                df[col] = df[col].dt.tz_localize("UTC")
        return df
