"""Where the orders come from: one reader per engine for CSV, Parquet, a DuckDB file or a
database, each creating the view ``_raw`` that :func:`winback.orders.load_orders` maps and checks.

What both engines decide alike about a CSV (its encoding, emptiness and delimiter) is in
:mod:`winback.orders.csvfiles`; a database is streamed by :mod:`winback.orders.database`
(DuckDB only).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from winback.config import OrdersConfig
from winback.engines.dialect import quote_ident, sql_string
from winback.engines.spark import is_local, local_path
from winback.errors import ConfigError, DataError, UsageError, first_line
from winback.orders.csvfiles import (
    NATIVE_ENCODINGS,
    SPARK_ENCODINGS,
    empty_file,
    encoding_name,
    not_utf8,
    settle_delimiter,
    utf8_copy,
)
from winback.orders.database import is_database_url, read_database, redact_url

__all__ = ["open_source", "read_failure"]


def open_source(engine, source: str | Path | pd.DataFrame, cfg: OrdersConfig) -> str:
    """Create the view ``_raw`` over the orders source on ``engine`` (DuckDB: a file, a data
    frame or a database URL; Spark: a CSV or Parquet path); return a label for messages."""
    if engine.name == "spark":
        return _open_spark(engine, source, cfg)
    if isinstance(source, pd.DataFrame):
        engine.con.register("_raw_frame", source)
        engine.con.execute("CREATE OR REPLACE TEMP VIEW _raw AS SELECT * FROM _raw_frame")
        return "a data frame"
    return _open_duckdb(engine.con, source, cfg)


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "parquet"
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".duckdb", ".ddb", ".db"}:
        return "duckdb"
    return "csv"


def _csv_relation(con: duckdb.DuckDBPyConnection, path: Path, cfg: OrdersConfig) -> str:
    """Create a view ``_raw`` over a CSV file; all columns as text, parsed later."""
    if path.stat().st_size == 0:
        raise empty_file(path)
    encoding = encoding_name(cfg.csv.encoding)
    label = path
    if encoding not in NATIVE_ENCODINGS:
        path, encoding = utf8_copy(path, cfg.csv.encoding), "utf-8"
    p = sql_string(str(path))
    enc = f"encoding={sql_string(NATIVE_ENCODINGS[encoding])}"
    header = "true" if cfg.csv.header else "false"
    # whole lines, for the delimiter and for whitespace-separated text
    lines = (
        f"read_csv({p}, columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', "
        f"escape='', header=false, auto_detect=false, {enc})"
    )
    try:
        first_rows = con.execute(
            f"SELECT line FROM {lines} WHERE trim(line) <> '' LIMIT 1"
        ).fetchall()
        if not first_rows:
            raise empty_file(label, blank_lines=True)
        first = first_rows[0][0]
        delim = cfg.csv.delimiter
        if delim == "auto":
            sniff = con.execute(f"SELECT Delimiter, Columns FROM sniff_csv({p}, {enc})").fetchall()
            columns = sniff[0][1] or []
            delim = settle_delimiter(first, "" if len(columns) == 1 else sniff[0][0], cfg)
        if delim == "whitespace":
            # Whitespace-separated text (any run of spaces or tabs, leading blanks allowed):
            # split the lines in SQL, still streaming through DuckDB.
            first_fields = first.split()
            if cfg.csv.header:
                names = first_fields
            else:
                names = [f"column{i}" for i in range(len(first_fields))]
            sel = ", ".join(
                f"nullif(parts[{i + 1}], '') AS {quote_ident(n)}" for i, n in enumerate(names)
            )
            skip = "OFFSET 1" if cfg.csv.header else ""
            con.execute(
                f"""CREATE OR REPLACE TEMP VIEW _raw AS
                    SELECT {sel} FROM (
                        SELECT regexp_split_to_array(trim(line), '\\s+') AS parts
                        FROM (SELECT line FROM {lines} WHERE trim(line) <> '' {skip})
                    )"""
            )
            return "_raw"
        d = {"\\t": "\t", "tab": "\t"}.get(delim, delim)
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW _raw AS SELECT * FROM read_csv({p},
                delim={sql_string(d)}, header={header}, all_varchar=true, {enc})"""
        )
    except duckdb.Error as exc:
        raise read_failure(label, "CSV", exc) from None
    return "_raw"


def read_failure(label: str | Path, fmt: str | None, exc: BaseException) -> DataError:
    """The error for a source a reader could not read: its encoding, or the reader's words
    (``fmt`` None: it opened, then failed part way, as a damaged file does)."""
    why = first_line(exc)
    said = (
        f"could not read it through ({why}); the file may be damaged or cut short: export it again."
        if fmt is None
        else f"could not read it as {fmt} ({why})."
    )
    return not_utf8(label, str(exc)) or DataError(f"{label}: {said}")


def _open_duckdb(con: duckdb.DuckDBPyConnection, source: str | Path, cfg: OrdersConfig) -> str:
    """Create the view ``_raw`` over the source; return a label for messages."""
    text = str(source)
    if is_database_url(text):
        return read_database(con, text, cfg)
    path = Path(text)
    if not path.exists():
        raise DataError(f"Orders source {text} does not exist; pass a CSV, Parquet or DuckDB path.")
    fmt = _detect_format(path, cfg.format)
    try:
        if fmt == "csv":
            if path.is_dir():
                raise DataError(f"{path} is a folder; a CSV source must be one file.")
            _csv_relation(con, path, cfg)
            return str(path)
        if fmt == "parquet":
            glob = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
            parquet = f"read_parquet({sql_string(glob)})"
            con.execute(f"CREATE OR REPLACE TEMP VIEW _raw AS SELECT * FROM {parquet}")
            return str(path)
        # DuckDB database file
        if not cfg.table:
            raise ConfigError(
                f"{path} is a DuckDB database: set orders.table to the table that holds the "
                "orders (e.g. --set orders.table=orders)."
            )
        con.execute(f"ATTACH {sql_string(str(path))} AS _src (READ_ONLY)")
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = '_src'"
            ).fetchall()
        }
        if cfg.table not in tables:
            listed = ", ".join(sorted(tables)) or "none"
            raise DataError(
                f"{path} has no table '{cfg.table}' (tables: {listed}); set orders.table."
            )
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _raw AS SELECT * FROM _src.{quote_ident(cfg.table)}"
        )
        return f"{path}:{cfg.table}"
    except duckdb.Error as exc:
        raise read_failure(path, fmt, exc) from None


# -- Spark ----------------------------------------------------------------------------------------
def _open_spark(engine, source: str | Path | pd.DataFrame, cfg: OrdersConfig) -> str:
    """Create the view ``_raw`` over a Parquet or CSV source; return a label for messages."""
    if isinstance(source, pd.DataFrame):
        raise UsageError(
            "The Spark engine reads orders from files: write the frame to Parquet first."
        )
    text = str(source)
    if is_database_url(text):
        raise UsageError(
            "Database sources are read by the DuckDB engine; on Spark, export the table "
            f"to Parquet (or read it with Spark's JDBC source) first: {redact_url(text)}"
        )
    if is_local(text) and not local_path(text).exists():
        raise DataError(f"Orders source {text} does not exist; pass a CSV or Parquet path.")
    fmt = cfg.format
    if fmt == "auto":
        lower = text.lower().rstrip("/")
        is_dir = is_local(text) and local_path(text).is_dir()
        fmt = "parquet" if is_dir or lower.endswith((".parquet", ".pq")) else "csv"
    if fmt == "duckdb":
        raise ConfigError(
            "A DuckDB database file is read by the DuckDB engine; on Spark, export the "
            "table to Parquet first."
        )
    reader = engine.spark.read
    try:
        if fmt == "parquet":
            df = reader.parquet(text)
        else:
            df = _spark_csv(engine.spark, text, cfg)
    except Exception as exc:  # Spark's AnalysisException and friends
        raise DataError(f"{text}: could not read it as {fmt} ({first_line(exc)}).") from None
    df.createOrReplaceTempView("_raw")
    return text


def _spark_csv(spark, path: str, cfg: OrdersConfig):
    from pyspark.sql import functions as F

    if is_local(path) and local_path(path).is_file() and local_path(path).stat().st_size == 0:
        raise empty_file(path)
    delim = cfg.csv.delimiter
    encoding = SPARK_ENCODINGS.get(encoding_name(cfg.csv.encoding))
    if encoding is None:
        if not is_local(path):
            raise ConfigError(
                f"Spark reads CSV in {', '.join(sorted(set(SPARK_ENCODINGS.values())))}; "
                f"convert {path} from {cfg.csv.encoding} to UTF-8 first (e.g. iconv -f "
                f"{cfg.csv.encoding} -t utf-8)."
            )
        path, encoding = str(utf8_copy(local_path(path), cfg.csv.encoding)), "utf-8"
    # whole lines in the file's encoding (Spark's text reader knows only UTF-8)
    lines = (
        spark.read.option("encoding", encoding)
        .option("sep", "\u0001")
        .option("quote", "")
        .option("header", False)
        .csv(path)
        .select(F.col("_c0").alias("value"))
    )
    first_rows = lines.filter(F.trim(F.col("value")) != "").limit(1).collect()
    if not first_rows:
        raise empty_file(path, blank_lines=True)
    first = first_rows[0][0]
    if delim == "auto":
        counts = {c: first.count(c) for c in (",", ";", "\t", "|")}
        best = max(counts, key=counts.get)
        delim = settle_delimiter(first, best if counts[best] else "", cfg)
    if delim != "whitespace":
        d = {"\\t": "\t", "tab": "\t"}.get(delim, delim)
        return (
            spark.read.option("header", cfg.csv.header)
            .option("sep", d)
            .option("encoding", encoding)
            .option("inferSchema", False)
            .csv(path)
        )
    # whitespace-separated text: split each trimmed line on runs of blanks
    names = first.split() if cfg.csv.header else [f"column{i}" for i in range(len(first.split()))]
    stripped = F.regexp_replace(F.col("value"), r"^\s+|\s+$", "")
    rows = lines.select(stripped.alias("line")).filter(F.col("line") != "")
    if cfg.csv.header:
        rows = rows.filter(F.col("line") != first.strip())
    parts = F.split(F.col("line"), r"\s+")
    return rows.select(
        *[F.when(parts.getItem(i) != "", parts.getItem(i)).alias(n) for i, n in enumerate(names)]
    )
