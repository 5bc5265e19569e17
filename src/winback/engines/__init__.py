"""Engines that run winback's SQL definitions: DuckDB (embedded, the default) and Spark.

The ground floor of winback: an engine runs SQL written once (with the few spellings of its
:class:`~winback.engines.dialect.Dialect`) and knows nothing of orders, features or models.
Everything above reaches a database through the :class:`Engine` interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

import pandas as pd

from winback.engines.dialect import Dialect
from winback.engines.duckdb import DuckDBEngine

__all__ = ["Engine", "DuckDBEngine"]


@runtime_checkable
class Engine(Protocol):
    """What winback asks of an engine (:class:`DuckDBEngine`, or ``SparkEngine`` from
    :mod:`winback.engines.spark`)."""

    #: ``duckdb`` or ``spark``
    name: str
    #: its SQL spellings
    dialect: Dialect

    def register_cutoffs(self, cutoffs: Sequence[datetime]) -> str:
        """A temporary table ``cutoff_ts`` of the cutoffs; its name."""
        ...

    def register_customers(self, ids: Sequence[str]) -> str:
        """A temporary table ``customer_id`` of the ids; its name."""
        ...

    def registered(
        self, frame: pd.DataFrame, prefix: str = "_frame"
    ) -> AbstractContextManager[str]:
        """A pandas frame visible to SQL under a fresh name for the length of a ``with``."""
        ...

    def table_name(self, name: str) -> str:
        """The name a table is created under."""
        ...

    def create_view(self, name: str, sql: str) -> None: ...

    def create_table(self, name: str, sql: str, temp: bool = True) -> None: ...

    def drop(self, name: str) -> None: ...

    def drop_view(self, name: str) -> None: ...

    def columns(self, name: str) -> dict[str, str]:
        """Column name -> type name of a table or view."""
        ...

    def fetchall(self, sql: str) -> list[tuple]: ...

    def query_df(self, sql: str) -> pd.DataFrame:
        """A query's rows as a pandas frame on this machine."""
        ...

    def materialize_parts(
        self, parts: Sequence[str], on_part: Callable[[int, int], None] | None = None
    ) -> str:
        """The union of queries, materialized one part at a time; the table's name."""
        ...

    def copy_to_parquet(self, sql: str, path: str) -> int:
        """A query's rows written to Parquet; how many."""
        ...
