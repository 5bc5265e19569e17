"""Orders from a SQL database (PostgreSQL, MySQL, ...) through a SQLAlchemy URL.

The rows are streamed from the server in chunks of ``orders.chunk_rows`` (a server-side cursor)
and appended to a DuckDB table, so a table far larger than memory is read with the memory of one
chunk; validation then runs on that table like on any file. The password never appears in the
config or on a command line: it is read from the environment variable named by
``orders.password_env`` (``WINBACK_DB_PASSWORD`` by default), and every URL that is printed or
logged has it masked.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

import duckdb

from winback.config import OrdersConfig
from winback.engines.duckdb import registered
from winback.errors import ConfigError, DataError, UsageError
from winback.secrets import check_url, mask_url

__all__ = ["is_database_url", "redact_url", "read_database"]

log = logging.getLogger(__name__)

#: URL schemes (before any ``+driver``) that name a database rather than a file system.
DATABASE_SCHEMES = {
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "mssql",
    "oracle",
    "sqlite",
    "redshift",
    "snowflake",
    "trino",
}


def is_database_url(text: str) -> bool:
    """True for ``postgresql://...``, ``mysql+pymysql://...`` and the like."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9]*)(\+[a-zA-Z0-9_]+)?://", str(text))
    return bool(m) and m.group(1).lower() in DATABASE_SCHEMES


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (see :func:`winback.secrets.mask_url`)."""
    return mask_url(url)


def _url(url: str, cfg: OrdersConfig) -> tuple[object, str]:
    """The URL to connect with (the password from the environment) and a label without it."""
    try:
        import sqlalchemy
        from sqlalchemy.engine import make_url
    except ImportError:
        raise UsageError(
            "Database sources need SQLAlchemy and a driver: pip install 'winback[db]'."
        ) from None
    check_url(url, "orders.source")
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"Cannot read the database URL {redact_url(url)} ({exc}).") from None
    if parsed.password is not None:
        log.warning(
            "the database URL carries a password; put it in $%s instead, so it stays out of "
            "configs and shell histories",
            cfg.password_env,
        )
    label = parsed.render_as_string(hide_password=True)
    secret = os.environ.get(cfg.password_env)
    if secret:
        parsed = parsed.set(password=secret)
    return parsed, label


def read_database(
    con: duckdb.DuckDBPyConnection,
    url: str,
    cfg: OrdersConfig,
    on_chunk: Callable[[int], None] | None = None,
) -> str:
    """Stream ``orders.table`` (or ``orders.query``) into the DuckDB table ``_db_raw`` and make
    the view ``_raw`` over it; return a label for messages (without the password).

    ``on_chunk(rows_so_far)`` is called after each chunk (for a progress display).
    """
    import pandas as pd
    import sqlalchemy

    parsed, label = _url(url, cfg)
    if not cfg.table and not cfg.query:
        raise ConfigError(
            f"{label} is a database: set orders.table to the table that holds the orders "
            "(e.g. --set orders.table=public.orders) or orders.query to a SELECT."
        )
    secret = parsed.password
    hint = (
        ""
        if secret
        else f"; no password was given: set the environment variable {cfg.password_env}"
    )

    def scrub(exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return text.replace(str(secret), "***") if secret else text

    try:
        engine = sqlalchemy.create_engine(parsed)
    except (sqlalchemy.exc.ArgumentError, ImportError, ModuleNotFoundError) as exc:
        raise UsageError(
            f"Cannot open {label} ({scrub(exc)}); install its driver, e.g. "
            "pip install 'winback[db]' for PostgreSQL."
        ) from None
    if cfg.query:
        sql, what = cfg.query, "the query in orders.query"
    else:
        schema, _, name = cfg.table.rpartition(".")
        try:
            tables = sqlalchemy.inspect(engine).get_table_names(schema=schema or None)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise DataError(f"Could not connect to {label} ({scrub(exc)}{hint}).") from None
        if name not in tables:
            listed = ", ".join(sorted(tables)[:20]) or "none"
            raise DataError(
                f"{label} has no table '{cfg.table}' (tables: {listed}); set orders.table."
            )
        prep = engine.dialect.identifier_preparer
        sql = (f"{prep.quote(schema)}." if schema else "") + prep.quote(name)
        sql, what = f"SELECT * FROM {sql}", f"table {cfg.table}"
    rows = 0
    con.execute("DROP TABLE IF EXISTS _db_raw")
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, max_row_buffer=cfg.chunk_rows)
            for chunk in pd.read_sql_query(sqlalchemy.text(sql), conn, chunksize=cfg.chunk_rows):
                with registered(con, chunk, "_db_chunk") as name:
                    if rows == 0:
                        con.execute(f"CREATE TEMP TABLE _db_raw AS SELECT * FROM {name}")
                    else:
                        con.execute(f"INSERT INTO _db_raw BY NAME SELECT * FROM {name}")
                rows += len(chunk)
                if on_chunk:
                    on_chunk(rows)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise DataError(f"Could not read {what} from {label} ({scrub(exc)}{hint}).") from None
    finally:
        engine.dispose()
    if rows == 0:
        con.execute("CREATE OR REPLACE TEMP VIEW _raw AS SELECT NULL::VARCHAR AS x WHERE false")
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW _raw AS SELECT * FROM _db_raw")
    log.debug("read %d rows from %s in chunks of %d", rows, label, cfg.chunk_rows)
    return f"{label} ({what})"
