"""The Apache Spark engine: the orders, feature and label SQL of winback on a Spark session.

Nothing here defines a feature or a check: :mod:`winback.features` and :mod:`winback.orders`
write them once, and :data:`winback.engines.dialect.SPARK` spells the few functions Spark names
differently. This module opens sources with Spark's readers, runs that SQL, caches the tables
it materializes and hands results to pandas for the (much smaller) training and export steps.

Optional: ``pip install 'winback[spark]'`` installs PySpark; Spark needs Java 17 or newer.
The session is in UTC with Spark's non-ANSI arithmetic (a division by zero is NULL, as the
definitions expect), whatever the settings given in ``engine.spark.conf``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd

from winback.engines.dialect import SPARK
from winback.errors import UsageError

__all__ = ["INSTALL_HINT", "require_pyspark", "spark_session", "SparkEngine"]

INSTALL_HINT = "pip install 'winback[spark]'"

#: Settings the definitions rely on; they override anything in ``engine.spark.conf``.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
}

#: Defaults a config may change.
DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.shuffle.partitions": "16",
    # training and scoring collect their (customer-sized) results to the driver on purpose:
    # the driver's memory is the limit, not Spark's 1g default on result size
    "spark.driver.maxResultSize": "0",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}

_counter = itertools.count()


def require_pyspark():
    """The ``pyspark.sql`` module, or a UsageError that says how to install it."""
    try:
        with warnings.catch_warnings():
            # PySpark warns about every pandas major release it has not been tested with
            warnings.simplefilter("ignore", FutureWarning)
            import pyspark.sql
            import pyspark.sql.pandas.utils  # noqa: F401  (the version check runs here)
    except ImportError:
        raise UsageError(
            "The Spark engine needs PySpark, which is not installed: "
            f"{INSTALL_HINT} (and Java 17 or newer on the PATH or in JAVA_HOME). "
            "Or run on the default engine: --engine duckdb."
        ) from None
    return pyspark.sql


def spark_session(master: str | None = None, conf: dict[str, str] | None = None):
    """A Spark session: the one that is running (under ``spark-submit``) or a new one.

    The master URL comes from ``WINBACK_SPARK_MASTER``, else ``master``, else ``local[*]``;
    under ``spark-submit`` the master given to spark-submit is used.
    """
    sql = require_pyspark()
    master = os.environ.get("WINBACK_SPARK_MASTER") or master or "local[*]"
    builder = sql.SparkSession.builder.appName("winback")
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not launched by spark-submit
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: loopback
        # the Python workers run this interpreter (the same winback, model code and libraries);
        # under spark-submit, spark.pyspark.python says which
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**DEFAULT_CONF, **(conf or {}), **REQUIRED_CONF}.items():
        builder = builder.config(key, str(value))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            spark = builder.getOrCreate()
    except Exception as exc:  # a missing Java or a bad master URL surface here
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"Could not start Spark with master {master!r} ({first}). Spark needs Java 17 or "
            "newer (java on the PATH or JAVA_HOME); check engine.spark.master or "
            "WINBACK_SPARK_MASTER."
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    for key, value in REQUIRED_CONF.items():  # a session that was already running
        spark.conf.set(key, value)
    return spark


def is_local(path: str) -> bool:
    """Whether a Spark path is on this machine's file system."""
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> Path:
    """A local Spark path as a :class:`~pathlib.Path` (``file://`` removed)."""
    return Path(path.removeprefix("file://"))


_TYPES = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "timestamp_ntz": "TIMESTAMP"}


class SparkEngine:
    """Runs the definitions' SQL on a Spark session; materialized tables are cached views.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        A session made by :func:`spark_session` (UTC, non-ANSI arithmetic).
    """

    name = "spark"
    dialect = SPARK
    #: Spark spreads large aggregations over shuffle partitions itself
    bounded_groups = False

    def __init__(self, spark):
        self.spark = spark
        self._cached: dict[str, object] = {}

    # -- tables -------------------------------------------------------------------------------
    def _keep(self, name: str, df) -> None:
        from pyspark import StorageLevel

        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        df.count()  # materialize now, so later queries read the cache
        self.drop(name)
        df.createOrReplaceTempView(name)
        self._cached[name] = df

    def register_cutoffs(self, cutoffs: Sequence[datetime]) -> str:
        """A temporary view ``cutoff_ts TIMESTAMP`` (UTC) and its name."""
        name = f"_cutoffs_{next(_counter)}"
        values = ", ".join(f"(TIMESTAMP '{c.isoformat(sep=' ')}')" for c in cutoffs)
        self.spark.sql(f"SELECT * FROM VALUES {values} AS t(cutoff_ts)").createOrReplaceTempView(
            name
        )
        return name

    def register_customers(self, ids: Sequence[str]) -> str:
        """A cached view ``customer_id STRING`` of the given ids, and its name."""
        from pyspark.sql.types import StringType, StructField, StructType

        name = f"_customers_{next(_counter)}"
        schema = StructType([StructField("customer_id", StringType(), False)])
        self._keep(name, self.spark.createDataFrame([(str(i),) for i in ids], schema))
        return name

    @contextmanager
    def registered(self, frame: pd.DataFrame, prefix: str = "_frame") -> Iterator[str]:
        """A pandas frame visible to SQL under a fresh name for the length of the block."""
        name = f"{prefix}_{next(_counter)}"
        self.spark.createDataFrame(frame).createOrReplaceTempView(name)
        try:
            yield name
        finally:
            self.drop(name)

    def table_name(self, name: str) -> str:
        """A name of its own: views are shared by everything on the session."""
        return f"{name}_{next(_counter)}"

    def drop(self, name: str) -> None:
        df = self._cached.pop(name, None)
        if df is not None:
            df.unpersist()
        self.spark.catalog.dropTempView(name)

    drop_view = drop

    def create_view(self, name: str, sql: str) -> None:
        self.spark.sql(sql).createOrReplaceTempView(name)

    def create_table(self, name: str, sql: str, temp: bool = True) -> None:
        """Materialize a query as a cached view (Spark has no session tables; ``temp`` is
        accepted for the engines' common interface)."""
        self._keep(name, self.spark.sql(sql))

    def materialize_parts(
        self, parts: Sequence[str], on_part: Callable[[int, int], None] | None = None
    ) -> str:
        """The union of queries with the same columns as one cached view; its name."""
        df = self.spark.sql(parts[0])
        for sql in parts[1:]:
            df = df.unionByName(self.spark.sql(sql))
        name = f"_parts_{next(_counter)}"
        self._keep(name, df)
        if on_part:
            on_part(len(parts), len(parts))
        return name

    def columns(self, name: str) -> dict[str, str]:
        """Column name -> type name, spelled as DuckDB does for the orders reader."""
        fields = self.spark.table(name).schema.fields
        return {
            f.name: _TYPES.get(f.dataType.simpleString(), f.dataType.simpleString().upper())
            for f in fields
        }

    # -- results ------------------------------------------------------------------------------
    def _utc_naive(self, sql_or_frame):
        """The query with its instants as UTC wall times, so Python never applies its own zone."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import TimestampType

        df = self.spark.sql(sql_or_frame) if isinstance(sql_or_frame, str) else sql_or_frame
        for f in df.schema.fields:
            if isinstance(f.dataType, TimestampType):
                df = df.withColumn(f.name, F.col(f.name).cast("timestamp_ntz"))
        return df

    def fetchall(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self._utc_naive(sql).collect()]

    def query_df(self, sql: str) -> pd.DataFrame:
        """Run a query and collect it; timestamp columns come back tz-aware UTC."""
        return self.query_df_frame(self.spark.sql(sql))

    def query_df_frame(self, frame) -> pd.DataFrame:
        """Collect a Spark DataFrame to pandas; timestamp columns come back tz-aware UTC."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            df = self._utc_naive(frame).toPandas()
        for col in df.columns:
            if pd.api.types.is_datetime64_any_dtype(df[col]) and df[col].dt.tz is None:
                df[col] = df[col].dt.tz_localize("UTC")
        return df

    def copy_to_parquet(self, sql: str, path: str) -> int:
        """Write a query's rows as a folder of Parquet parts; return the row count.

        A local folder is written under a temporary name and swapped in at the end, so readers
        never see half of it; other file systems get Spark's overwrite."""
        df = self.spark.sql(sql)
        if not is_local(path):
            df.write.mode("overwrite").parquet(path)
            return self.spark.read.parquet(path).count()
        out = local_path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        try:
            df.write.mode("overwrite").parquet(str(tmp))
            n = self.spark.read.parquet(str(tmp)).count()
            if out.is_dir():
                out.rename(old)
            elif out.exists():
                out.unlink()
            tmp.rename(out)
            return n
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
