"""Engines that run winback's SQL definitions: DuckDB (embedded default)."""

from winback.engines.duckdb import DuckDBEngine

__all__ = ["DuckDBEngine"]
