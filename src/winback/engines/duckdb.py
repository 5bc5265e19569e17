"""The embedded DuckDB engine: runs the feature and label SQL next to the orders table."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime

import duckdb
import pandas as pd

__all__ = ["DuckDBEngine"]

_counter = itertools.count()


class DuckDBEngine:
    """Runs SQL on the DuckDB connection that holds the orders table.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection that owns the orders table.
    """

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def register_cutoffs(self, cutoffs: Sequence[datetime]) -> str:
        """Create a temporary table ``cutoff_ts TIMESTAMP`` and return its name."""
        name = f"_cutoffs_{next(_counter)}"
        frame = pd.DataFrame({"cutoff_ts": pd.to_datetime(list(cutoffs)).astype("datetime64[us]")})
        self.con.register(f"{name}_src", frame)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS "
            f"SELECT CAST(cutoff_ts AS TIMESTAMP) AS cutoff_ts FROM {name}_src"
        )
        self.con.unregister(f"{name}_src")
        return name

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def query_df(self, sql: str) -> pd.DataFrame:
        """Run a query; timestamp columns come back tz-aware UTC."""
        df = self.con.sql(sql).df()
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]) and df[col].dt.tz is None:
                df[col] = df[col].dt.tz_localize("UTC")
        return df
