"""The score table of every customer, kept on Spark's executors.

On Spark the night's population stays where it was scored: the ranks, deciles and RFM
quintiles within each list are Spark windows, the score table's other columns, the
suppressions, the uplift and the campaign groups are the same pandas functions the DuckDB
path runs (:mod:`winback.score_table`), applied batch by batch on
the executors, and the lists are sized there too. The driver collects the customers the lists
take (:meth:`SparkPopulation.choose`), which the lists, their reasons and the delta are built
from exactly as on DuckDB; the score table of every customer and the profit curve are read a
block at a time as the export writes them (:class:`SparkRows`), so no step holds more than the
listed customers on the driver.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from winback.campaigns import suppressed
from winback.config import CampaignsConfig
from winback.drift import DRIFT_FEATURES
from winback.score_table import (
    ScoreRows,
    listable,
    suppression_counts,
    table_from,
    table_inputs_sql,
    uplift_gains,
    uplift_takers,
)
from winback.segments import quintile_sql, texts_of
from winback.timing import TIMING_INPUTS

__all__ = ["SparkPopulation", "SparkRows", "population_on_spark"]

#: Columns of the score table kept on the executors that the export files do not hold.
_ROW, _ELIGIBLE, _CURVE = "_row", "_eligible", "_curve"


def population_on_spark(
    remote,
    model,
    as_of: datetime,
    campaigns: CampaignsConfig,
    model_version: str,
    horizon_days: int,
) -> tuple[SparkPopulation, dict[str, float]]:
    """The scored customers of ``remote`` (:class:`winback.scoring._SparkFeatures`) ranked
    within their lists on the executors, and the drift figures (bin counts added up there).

    The inputs of the score table are columns of the scored snapshot (``value`` and
    ``expected_value``, and ``uplift`` when an uplift model ranks the lists, were added as it
    was scored, in the same pass); the rank by ``p_churn`` (ties by customer id), the risk
    decile and the R and F quintiles are windows over each list, and every row gets its
    position in customer id order, the order of the score table and of ``scores.parquet``."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    engine = remote.engine
    spark = engine.spark
    h, lookback = int(horizon_days), int(model.lookback_days)
    chosen = table_inputs_sql(h, lookback)
    extra = [c for c in [*DRIFT_FEATURES, "uplift"] if c in remote.frame.columns]
    extra = [c for c in extra if c not in ("recency_days", "n_orders")]  # already chosen
    # a view of the columns read, not of the cached snapshot itself: dropping a view of a
    # cached plan drops its cache too, and the snapshot is read again for the reasons
    read = ["customer_id", "recency_days", "p_churn", "value", "expected_value"]
    read += ["n_order_days", "n_orders", *TIMING_INPUTS, *extra]
    name = engine.table_name("_score_inputs")
    remote.frame.select(*dict.fromkeys(read)).createOrReplaceTempView(name)
    ranked = spark.sql(
        f"""
        SELECT *, CAST(ceil(rank * 10 / count(*) OVER (PARTITION BY lapsed)) AS BIGINT)
                  AS risk_decile
        FROM (
            SELECT *,
                   row_number() OVER (PARTITION BY lapsed ORDER BY p_churn DESC, customer_id)
                       AS rank,
                   {quintile_sql("recency_days", "DESC", "lapsed")} AS r,
                   {quintile_sql("n_orders", "ASC", "lapsed")} AS f
            FROM (SELECT {chosen}{"".join(f", {c}" for c in extra)} FROM {name})
        )
        """
    )
    # each row's position in customer id order: the ordered parts' sizes, added up
    ordered = ranked.orderBy("customer_id").withColumns(
        {"_part": F.spark_partition_id(), "_id": F.monotonically_increasing_id()}
    )
    ordered = ordered.persist(StorageLevel.MEMORY_AND_DISK)
    sizes = dict(ordered.groupBy("_part").count().collect())
    starts, start = [], 0
    for part in range(max(sizes, default=-1) + 1):
        starts.append(start)
        start += sizes.get(part, 0)
    offset = F.element_at(F.array(*(F.lit(s) for s in starts or [0])), F.col("_part") + 1)
    within = F.col("_id") - F.shiftleft(F.col("_part").cast("bigint"), 33)
    # (a column worked out as it is read from the cached parts: not a second cached copy)
    table = ordered.withColumn(_ROW, offset + within).drop("_part", "_id")
    n = sum(sizes.values())
    spark.catalog.dropTempView(name)

    def drift_counts(batches):
        for batch in batches:
            counts = model.drift_counts(batch, batch["p_churn"].to_numpy())
            yield pd.DataFrame(
                {
                    "feature": [f for f, c in counts.items() for _ in c],
                    "bin": [i for c in counts.values() for i in range(len(c))],
                    "n": [int(x) for c in counts.values() for x in c],
                }
            )

    trained_on = table.where(F.col("recency_days") < float(model.lookback_days))
    found = (
        trained_on.mapInPandas(drift_counts, "feature string, bin int, n long")
        .groupBy("feature", "bin")
        .agg(F.sum("n").alias("n"))
        .collect()
    )
    counts = model.drift_counts(table.limit(0).toPandas(), np.empty(0))  # every bin, at 0
    for row in found:
        counts[row["feature"]][row["bin"]] += row["n"]
    drift = model.drift_of(counts) if n else {}
    population = SparkPopulation(
        engine, remote, table, n, pd.Timestamp(as_of), campaigns, model_version, h
    )
    population.cached.append(ordered)
    return population, drift


class SparkPopulation:
    """Every scored customer's score table row, on the executors (:func:`population_on_spark`).

    :meth:`choose` adds the suppressions, the uplift gains and the campaign groups, sizes the
    lists and returns the customers they take; after it, :attr:`curve` is the profit curve,
    :attr:`counts` the manifest's counts and :meth:`rows` the score table to export."""

    def __init__(self, engine, remote, ranked, n, as_of, campaigns, model_version, h):
        self.engine, self.remote, self.ranked, self.n = engine, remote, ranked, n
        self.as_of, self.campaigns = as_of, campaigns
        self.model_version, self.horizon_days = model_version, h
        self.table = None
        self.cached: list = []  # what the cache holds for it, to let go of
        self.curve: SparkRows | None = None
        self.counts: dict[str, int] = {}

    def __len__(self) -> int:
        return self.n

    def choose(
        self,
        contacts: pd.DataFrame | None = None,
        opted_out: pd.Series | None = None,
        order_by: str = "p_churn",
    ) -> pd.DataFrame:
        """The score table's rows of the customers the lists take (before their control
        groups), in customer id order, with the score table's columns and types and
        ``suppressed``: :func:`winback.scoring.build_lists` of them makes the same lists as of
        the whole table. ``contacts`` and ``opted_out`` are the suppression files' rows."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        camp, as_of = self.campaigns, self.as_of
        cuts = self._spend_cuts()
        spark = self.engine.spark
        shipped = spark.sparkContext.broadcast(
            (camp, as_of, self.model_version, self.horizon_days, cuts, contacts, opted_out)
        )

        def rows_of(batches):
            args = shipped.value
            for batch in batches:
                yield _for_spark(_table_part(batch, *args))

        self.proto = _table_part(self.ranked.limit(0).toPandas(), *shipped.value)
        schema = _spark_schema(self.proto)
        table = self.ranked.mapInPandas(rows_of, schema).persist(StorageLevel.MEMORY_AND_DISK)
        table.count()
        self.close()  # the ranked rows are in the table now
        self.table = table
        self.cached.append(table)
        self.counts = self._counts()
        eligible = table.where(F.col(_ELIGIBLE))
        by = "expected_gain" if camp.size_by == "profit" else order_by
        if camp.size_by == "profit":
            eligible = eligible.where(F.col("expected_gain") > 0)
        elif camp.size_by == "threshold":
            eligible = eligible.where(F.col("p_churn") >= float(camp.threshold))
        place = Window.partitionBy("campaign").orderBy(
            F.col(by).desc_nulls_last(), F.col("customer_id")
        )
        limit = F.lit(None).cast("bigint")
        for g in camp.groups:  # a group's list stops at its top k and at its capacity
            caps = [g.capacity, camp.top_k if camp.size_by == "top_k" else None]
            caps = [max(int(c), 0) for c in caps if c is not None]
            if caps:
                limit = F.when(F.col("campaign") == g.name, F.lit(min(caps))).otherwise(limit)
        taken = (
            eligible.withColumn("_place", F.row_number().over(place))
            .where(limit.isNull() | (F.col("_place") <= limit))
            .drop("_place")
        )
        listed = self.engine.query_df_frame(taken).sort_values(_ROW, kind="stable")
        self.curve = self._curve()
        return _like(listed.reset_index(drop=True), self.proto)

    def _spend_cuts(self) -> dict[str, float]:
        """Each ``min_spend_share`` group's cut (:func:`winback.scoring.spend_cut`) over its
        whole list: NumPy's linear interpolation between the two values it falls between."""
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        cuts = {}
        for g in self.campaigns.groups:
            if g.min_spend_share is None:
                continue
            mine = self.ranked.where(
                (F.col("lapsed") == (g.list == "lapsed")) & F.col("value").isNotNull()
            ).select("value")
            n = mine.count()
            if n == 0:
                cuts[g.name] = float("nan")
                continue
            at = (1 - g.min_spend_share) * (n - 1)  # where NumPy's quantile falls
            lo = int(np.floor(at))
            hi = min(lo + 1, n - 1)
            place = F.row_number().over(Window.orderBy("value")) - 1
            found = mine.withColumn("_i", place).where(F.col("_i").between(lo, hi)).collect()
            values = [r["value"] for r in sorted(found, key=lambda r: r["_i"])]
            pair = np.array([values[0], values[-1]], dtype=float)
            cuts[g.name] = float(np.quantile(pair, at - lo)) if hi > lo else float(pair[0])
        return cuts

    def _counts(self) -> dict[str, int]:
        camp = self.campaigns

        def counted(batches):
            for batch in batches:
                got = suppression_counts(batch, batch["suppressed"], camp.min_p_churn)
                yield pd.DataFrame({k: [v] for k, v in got.items()})

        names = list(suppression_counts(self.proto, self.proto["suppressed"], None))
        schema = ", ".join(f"{k} long" for k in names)
        cols = self.table.select("campaign", "suppressed", "p_churn")
        sums = cols.mapInPandas(counted, schema).groupBy().sum().collect()
        row = sums[0] if sums else None
        return {k: int(row[f"sum({k})"] or 0) if row else 0 for k in names}

    def _curve(self) -> SparkRows:
        """The profit curve (:func:`winback.scoring.profit_curve`): each list's customers who
        may be listed, best first, and the running sum of their gains, on the executors."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        kept = self.table.where(F.col(_CURVE))
        best = Window.partitionBy("list").orderBy(
            F.col("expected_gain").desc(), F.col("customer_id")
        )
        running = best.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        curve = kept.select(
            "list",
            F.row_number().over(best).alias("n_contacted"),
            "customer_id",
            "expected_gain",
            F.sum("expected_gain").over(running).alias("cumulative_gain"),
        )
        sizes = dict(kept.groupBy("list").count().collect())
        names = sorted(sizes)
        starts = np.cumsum([0, *(sizes[n] for n in names)])
        start = F.lit(0).cast("bigint")
        for name, s in zip(names, starts[:-1], strict=True):
            start = F.when(F.col("list") == name, F.lit(int(s))).otherwise(start)
        curve = curve.withColumn(_ROW, start + F.col("n_contacted") - 1)
        curve = curve.persist(StorageLevel.MEMORY_AND_DISK)
        curve.count()
        self.cached.append(curve)
        proto = pd.DataFrame(
            {
                "list": texts_of(np.empty(0, dtype=np.int8), names),
                "n_contacted": np.empty(0, dtype=np.int64),
                "customer_id": self.proto["customer_id"],
                "expected_gain": np.empty(0),
                "cumulative_gain": np.empty(0),
            }
        )
        return SparkCurve(self.engine, curve, int(starts[-1]), proto, names, starts)

    def rows(self, listed: pd.DataFrame) -> SparkRows:
        """The score table of every customer to export, with the ``group`` and ``reasons`` of
        the listed ones from ``listed`` (the rows :meth:`choose` returned, with them)."""
        proto = self.proto.drop(columns=[_ROW, _ELIGIBLE, _CURVE]).assign(
            group=listed["group"].iloc[:0]
        )
        return SparkRows(self.engine, self.table, self.n, proto, fill=_Fill(listed))

    def close(self) -> None:
        """Let go of what the cache holds for it."""
        with contextlib.suppress(Exception):  # at exit the session may be gone
            while self.cached:
                self.cached.pop().unpersist()


def _table_part(
    t: pd.DataFrame,
    campaigns: CampaignsConfig,
    as_of: pd.Timestamp,
    model_version: str,
    horizon_days: int,
    cuts: dict[str, float],
    contacts: pd.DataFrame | None,
    opted_out: pd.Series | None,
) -> pd.DataFrame:
    """The score table's rows of ranked inputs, as the DuckDB path makes them in its scores
    and lists stages: :func:`winback.scoring.table_from`, ``suppressed``, the uplift gains
    when an uplift model ranks, and who may be listed and drawn on the profit curve."""
    out = table_from(
        t,
        t["rank"].to_numpy(dtype=np.int64),
        t["risk_decile"].to_numpy(dtype=np.int64),
        t["r"].to_numpy(dtype=np.int64),
        t["f"].to_numpy(dtype=np.int64),
        horizon_days,
        as_of,
        campaigns,
        model_version,
        cuts,
    )
    why = suppressed(
        out["customer_id"],
        as_of,
        contacts,
        campaigns.cooldown_days,
        opted_out,
        out["days_since_last_order"],
        campaigns.recent_days,
    ).astype("category")
    out["suppressed"] = why
    takers = uplift_takers(out, campaigns, why)
    if "uplift" in t.columns:
        uplift_gains(out, np.where(takers, t["uplift"].to_numpy(dtype=float), np.nan), campaigns)
    out[_ROW] = t[_ROW].to_numpy(dtype=np.int64)
    out[_ELIGIBLE] = takers
    gain_known = out["expected_gain"].notna().to_numpy()
    out[_CURVE] = gain_known & listable(out, campaigns.min_p_churn, why)
    return out


def _for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    """A score table part as Spark takes it from pandas: texts as texts, dates as dates."""
    from winback.export import plain_columns

    out = plain_columns(frame)
    dates = [c for c, s in out.items() if _is_date(s.dtype)]
    return out.assign(**{c: out[c].astype(object) for c in dates}) if dates else out


def _is_date(dtype) -> bool:
    import pyarrow as pa

    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_date32(dtype.pyarrow_dtype)


def _spark_schema(frame: pd.DataFrame, like=None):
    """The Spark schema of a pandas frame's columns (types of ``like``, a Spark schema, where
    it has the column)."""
    from pyspark.sql import types as T

    known = {f.name: f for f in like.fields} if like is not None else {}
    fields = []
    for c, s in frame.items():
        if c in known:
            fields.append(T.StructField(c, known[c].dataType))
            continue
        dtype = s.dtype.categories.dtype if isinstance(s.dtype, pd.CategoricalDtype) else s.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = T.BooleanType()
        elif pd.api.types.is_integer_dtype(dtype):
            kind = {1: T.ByteType(), 2: T.ShortType(), 4: T.IntegerType()}.get(
                np.dtype(dtype).itemsize, T.LongType()
            )
        elif pd.api.types.is_float_dtype(dtype):
            kind = T.DoubleType()
        elif _is_date(dtype):
            kind = T.DateType()
        else:
            kind = T.StringType()
        fields.append(T.StructField(c, kind))
    return T.StructType(fields)


def _like(frame: pd.DataFrame, proto: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (collected from Spark) with the column types of ``proto``: categories where
    the score table keeps them, Arrow dates, its text types."""
    out = {}
    for c in proto.columns:
        s, dtype = frame[c], proto[c].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            texts = s.astype(dtype.categories.dtype)
            out[c] = pd.Categorical(texts, categories=texts.dropna().unique())
        elif _is_date(dtype):
            out[c] = pd.array(s.to_numpy(dtype=object), dtype=dtype)  # dates or None
        else:
            out[c] = s.astype(dtype)
    return pd.DataFrame(out, index=frame.index)


@dataclass
class _Fill:
    """The ``group`` and ``reasons`` of the listed customers, put into blocks of the score
    table by their position in it."""

    listed: pd.DataFrame

    def __call__(self, block: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
        import pyarrow as pa

        own = self.listed[_ROW].to_numpy(dtype=np.int64)
        at = np.searchsorted(own, rows)
        hit = np.zeros(len(rows), dtype=bool)
        if len(own):
            hit = (at < len(own)) & (own[np.minimum(at, len(own) - 1)] == rows)
        codes = np.full(len(rows), -1, dtype=np.int8)
        group = self.listed["group"]
        codes[hit] = group.cat.codes.to_numpy()[at[hit]]
        block["group"] = pd.Categorical.from_codes(codes, dtype=group.dtype)
        if hit.any():  # the block's rows of the reasons' dictionary, then spelled: not all
            said = pa.array(self.listed["reasons"].array)
            reasons = said.take(pa.array(np.where(hit, at, 0), mask=~hit))
            reasons = reasons.cast(pa.large_string())
        else:
            reasons = pa.nulls(len(rows), pa.large_string())
        block["reasons"] = pd.array(reasons, dtype="string")
        return block


class SparkRows(ScoreRows):
    """A table kept on Spark's executors, in the order of its column ``_row`` (0..n-1), read
    as the export's writers read a table: blocks of consecutive rows (:meth:`take`), each a
    Spark query of those rows (the cached table's batches hold their range of ``_row``, so the
    others are skipped). ``proto`` gives the columns and their types; ``fill`` sets columns
    the driver holds."""

    def __init__(self, engine, frame, n: int, proto: pd.DataFrame, fill=None):
        self.engine, self.kept, self.n, self.proto, self.fill = engine, frame, n, proto, fill
        self.columns = list(proto.columns)
        self.rows = np.arange(n)

    def take(self, at: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        from pyspark.sql import functions as F

        at = np.asarray(at, dtype=np.int64)
        wanted = self.columns if columns is None else list(columns)
        kept = [c for c in wanted if c in self.kept.columns]
        if len(at):
            lo, hi = int(at.min()), int(at.max())
            found = self.engine.query_df_frame(
                self.kept.where(F.col(_ROW).between(lo, hi)).select(_ROW, *kept)
            )
            found = found.sort_values(_ROW, kind="stable").reset_index(drop=True)
            if len(found) != hi - lo + 1:
                raise RuntimeError(f"rows {lo}..{hi} of a Spark table came back incomplete")
            block = found.iloc[at - lo].reset_index(drop=True)
        else:
            block = pd.DataFrame({_ROW: np.empty(0, dtype=np.int64), **{c: [] for c in kept}})
        block = _like(block, self.proto[kept]).assign(**{_ROW: block[_ROW].to_numpy()})
        if self.fill is not None:
            block = self.fill(block, block[_ROW].to_numpy())
        for c in wanted:  # columns only the driver holds
            if c not in block.columns:
                block[c] = self.proto[c].iloc[:0].reindex(range(len(block)))
        return block[wanted]


class SparkCurve(SparkRows):
    """The profit curve on the executors (:class:`winback.scoring.ProfitCurve`'s columns)."""

    def __init__(self, engine, frame, n, proto, names, starts):
        super().__init__(engine, frame, n, proto)
        self.names, self.starts = names, starts

    def lines(self):
        """Each list's name, and the customers contacted and cumulative gain at the points
        the plot draws (:func:`winback.plots.plot_profit_curve`: about ``CURVE_PLOT_POINTS``
        of them, its last and its peak), in name order."""
        from pyspark.sql import functions as F

        from winback.plots import CURVE_PLOT_POINTS

        for i, name in enumerate(self.names):
            n = int(self.starts[i + 1] - self.starts[i])
            mine = self.kept.where(F.col("list") == name)
            top = mine.agg(F.max("cumulative_gain")).collect()[0][0]
            best = mine.where(F.col("cumulative_gain") == top).agg(F.min("n_contacted"))
            best = int(best.collect()[0][0])
            step = max(1, n // CURVE_PLOT_POINTS)
            at = ((F.col("n_contacted") - 1) % step == 0) | F.col("n_contacted").isin(n, best)
            points = self.engine.query_df_frame(
                mine.where(at).select("n_contacted", "cumulative_gain")
            ).sort_values("n_contacted")
            yield (
                name,
                points["n_contacted"].to_numpy(dtype=np.int64),
                points["cumulative_gain"].to_numpy(dtype=float),
            )
