"""Score customers as of a date and build the win-back lists.

Two lists, both ranked by the model's calibrated ``p_churn``:

- ``at_risk``: customers whose last purchase is at most H days before the as-of (prevention);
- ``lapsed``: last purchase more than H days ago but within ``campaigns.reactivation_days``
  (reactivation). Lapsed customers older than the model's lookback are scored by extrapolation:
  use their ranking, not their probability at face value.

Each customer gets ``value`` (spend over the last ``value_days``), ``expected_value`` (BG/NBD's
expected purchases over H times their mean order value), ``value_at_risk = p_churn x value``, an
RFM segment, the first campaign group whose rules hold (with its offer, channel and costs),
``expected_gain = p_churn x save_rate x value - contact_cost - offer_cost``, and the top three
reasons for their risk. Each group's list is sized by maximum expected profit (or top-k, or a
threshold) and capped by its capacity; then a deterministic share of it becomes the control
group, which is not contacted and measures the campaign later.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from winback.campaigns import control_flags, expected_gain, reasons, rfm_segments, size_list
from winback.config import CampaignGroupConfig, CampaignsConfig
from winback.model import DRIFT_FEATURES, ChurnModel
from winback.orders import Orders
from winback.snapshots import build_snapshots

__all__ = [
    "Scored",
    "score_customers",
    "add_reasons",
    "build_lists",
    "profit_curve",
    "delta",
    "LIST_COLUMNS",
]


@dataclass
class Scored:
    """Scores of every customer, the drift figures, and the features they were scored on
    (aligned by position with ``scores``), in memory or, for large populations, in a folder
    of Parquet parts read back only for the customers who are listed."""

    scores: pd.DataFrame
    drift: dict[str, float]
    features: pd.DataFrame
    features_path: Path | None = None

    def features_of(self, rows: np.ndarray) -> pd.DataFrame:
        """The full feature rows of ``scores[rows]``, in that order."""
        if self.features_path is None:
            return self.features[rows].reset_index(drop=True)
        import pyarrow.dataset as ds

        ids = self.scores.loc[rows, "customer_id"]
        table = ds.dataset(self.features_path, format="parquet").to_table(
            filter=ds.field("customer_id").isin(ids.to_numpy())
        )
        found = table.to_pandas().set_index("customer_id")
        return found.loc[ids.to_numpy()].reset_index()


LIST_COLUMNS = [
    "customer_id",
    "as_of",
    "list",
    "rank",
    "p_churn",
    "risk_decile",
    "value",
    "expected_value",
    "value_at_risk",
    "segment",
    "campaign",
    "offer",
    "channel",
    "expected_gain",
    "group",
    "reasons",
    "model_version",
]


def score_customers(
    orders: Orders,
    model: ChurnModel,
    as_of: datetime,
    campaigns: CampaignsConfig,
    windows_days=(30, 90, 180, 365),
    model_version: str = "",
) -> Scored:
    """Every customer of both lists with their scores (before list sizing and control groups,
    and without reasons: :func:`add_reasons` explains the customers who are exported), and the
    drift of the model's population (a purchase within its lookback) against training: the
    population stability index of key features and of ``p_churn``."""
    h = int(model.horizon_days)
    lookback = max(int(model.lookback_days), h + 1, int(campaigns.reactivation_days))
    windows = sorted(set(windows_days) | {int(campaigns.value_days)})
    if orders.engine().name == "spark":  # features and predictions on the executors
        from winback.engines.spark import score_distributed

        snap = score_distributed(orders, model, as_of, h, lookback, windows)
        p_churn = snap.pop("p_churn")
        folder = None
    elif orders.report.n_customers > SCORE_PARTITION_CUSTOMERS:  # out of core: in partitions
        snap, folder = _score_in_parts(orders, model, as_of, h, lookback, windows, campaigns)
        p_churn = snap.pop("p_churn")
    else:
        snap = build_snapshots(orders, [as_of], h, lookback, windows, labels=False)
        p_churn, folder = None, None
    if snap.empty:
        return Scored(pd.DataFrame(columns=LIST_COLUMNS), {}, snap)
    order = snap["customer_id"].sort_values(kind="stable").index
    snap = snap.loc[order].reset_index(drop=True)
    out = pd.DataFrame({"customer_id": snap["customer_id"]})
    out["as_of"] = f"{as_of:%Y-%m-%d}"
    out["list"] = np.where(snap["recency_days"] <= h, "at_risk", "lapsed")
    out["p_churn"] = (
        model.predict_proba(snap)[:, 1] if p_churn is None else p_churn.loc[order].to_numpy()
    )
    out["value"] = snap[f"spend_{campaigns.value_days}d"].astype(float)
    out["expected_value"] = (snap["bgnbd_expected_purchases"] * snap["monetary_mean"]).astype(float)
    out["value_at_risk"] = out["p_churn"] * out["value"]
    out["segment"] = rfm_segments(snap["recency_days"], snap["n_orders"])
    out["reasons"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["model_version"] = model_version
    out["n_order_days"] = snap["n_order_days"]
    for _, part in out.groupby("list"):
        ranked = part.sort_values(["p_churn", "customer_id"], ascending=[False, True])
        out.loc[ranked.index, "rank"] = np.arange(1, len(ranked) + 1)
        out.loc[ranked.index, "risk_decile"] = np.ceil(
            np.arange(1, len(ranked) + 1) * 10 / len(ranked)
        )
    out["rank"] = out["rank"].astype(int)
    out["risk_decile"] = out["risk_decile"].astype(int)
    _assign_groups(out, campaigns.groups)
    trained_on = (snap["recency_days"] < model.lookback_days).to_numpy()
    drift_cols = [c for c in DRIFT_FEATURES if c in snap.columns]  # not a copy of every column
    drift = model.drift(snap.loc[trained_on, drift_cols], out.loc[trained_on, "p_churn"].to_numpy())
    scored = Scored(out, drift, snap if folder is None else snap.iloc[:0], folder)
    release_memory()
    if folder is not None:  # the parts go when the scores do
        weakref.finalize(scored, shutil.rmtree, folder, True)
    return scored


#: Above this many customers, DuckDB scores in customer hash partitions of about
#: SCORE_PARTITION_ROWS customers: each partition's full snapshot goes to a Parquet part and
#: only the columns the lists need stay in memory.
SCORE_PARTITION_CUSTOMERS = 1_000_000
SCORE_PARTITION_ROWS = 500_000


def release_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps them otherwise, and after a
    partition's frames are freed they would count against the process for the whole run)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _fit_bgnbd_in_sql(engine, summary_sql: str):
    """:func:`winback.snapshots.fit_bgnbd` on a query's summaries, bringing only the sampled
    customers' four numbers to pandas, not every customer's."""
    from winback.engines.duckdb import registered
    from winback.snapshots import BGNBD, fit_positions

    n = int(engine.fetchall(f"SELECT count(*) FROM ({summary_sql}) AS s")[0][0])
    ranked = (
        f"SELECT customer_id, frequency, recency, T, "
        f"row_number() OVER (ORDER BY customer_id) - 1 AS _pos FROM ({summary_sql}) AS s"
    )
    positions = fit_positions(n)
    if positions is None:
        rows = engine.query_df(f"SELECT * FROM ({ranked}) AS r ORDER BY _pos")
    else:
        with registered(engine.con, pd.DataFrame({"_pos": positions}), "_fit_pos") as pos:
            rows = engine.query_df(f"SELECT r.* FROM ({ranked}) AS r JOIN {pos} USING (_pos)")
        rows = rows.set_index("_pos").loc[positions]
    return BGNBD().fit(rows["frequency"], rows["recency"], rows["T"])


def _score_in_parts(orders, model, as_of, horizon_days, lookback, windows, campaigns):
    """``(snapshot columns the lists need + p_churn, folder of the full snapshot)``; the same
    rows and values as :func:`build_snapshots` followed by ``predict_proba``."""
    import math
    import tempfile

    from winback.features import _spec_for, bgnbd_summary_sql, feature_sql
    from winback.snapshots import bgnbd_predictions

    engine = orders.engine()
    spec = _spec_for(orders, lookback, windows)
    keep = list(
        dict.fromkeys(
            [
                "customer_id",
                "cutoff_ts",
                "recency_days",
                "n_orders",
                "n_order_days",
                "monetary_mean",
                f"spend_{campaigns.value_days}d",
                "bgnbd_expected_purchases",
                *DRIFT_FEATURES,
            ]
        )
    )
    k = max(1, math.ceil(orders.report.n_customers / SCORE_PARTITION_ROWS))
    folder = Path(tempfile.mkdtemp(prefix="winback-scoring-"))
    cut = engine.register_cutoffs([as_of])
    parts = []
    try:
        fitted = _fit_bgnbd_in_sql(engine, bgnbd_summary_sql(orders.table, cut, engine.dialect))
        for i in range(k):
            f = engine.query_df(feature_sql(orders.table, cut, spec, engine.dialect, (i, k)))
            if f.empty:
                continue
            part = (
                f"(SELECT * FROM {orders.table} WHERE "
                f"{engine.dialect.hash_mod.format(col='customer_id', k=k)} = {i}) AS part"
            )
            s = engine.query_df(bgnbd_summary_sql(part, cut, engine.dialect))
            s = s.set_index("customer_id").loc[f["customer_id"].to_numpy()]
            f = f.assign(**bgnbd_predictions(fitted, s, horizon_days))
            f.to_parquet(folder / f"part-{i:05d}.parquet", index=False)
            parts.append(f[keep].assign(p_churn=model.predict_proba(f)[:, 1]))
            del f, s
            release_memory()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        engine.drop(cut)
    if not parts:
        return pd.DataFrame(columns=[*keep, "p_churn"]), folder
    return pd.concat(parts, ignore_index=True), folder


#: Above this many listed customers, ``auto`` explains with path contributions, not TreeSHAP.
SHAP_MAX_ROWS = 50_000


def add_reasons(
    scored: Scored, model: ChurnModel, lists: dict[str, pd.DataFrame], method: str = "auto"
) -> dict[str, pd.DataFrame]:
    """Fill ``reasons`` for the customers on the lists (in the lists and in ``scored.scores``).

    ``method``: ``shap``, ``path`` or ``auto`` (``shap`` up to ``SHAP_MAX_ROWS`` customers)."""
    ids = pd.concat([f["customer_id"] for f in lists.values()]).unique()
    rows = scored.scores["customer_id"].isin(ids).to_numpy()
    if rows.any():
        feats = scored.features_of(rows)
        if method == "auto":
            method = "shap" if len(feats) <= SHAP_MAX_ROWS else "path"
        text = reasons(model.contributions(feats, method), feats).to_numpy()
        scored.scores.loc[rows, "reasons"] = text
    by_id = scored.scores.set_index("customer_id")["reasons"]
    return {
        name: frame.assign(reasons=frame["customer_id"].map(by_id).astype("string"))
        for name, frame in lists.items()
    }


def _assign_groups(out: pd.DataFrame, groups: list[CampaignGroupConfig]) -> None:
    out["campaign"] = pd.Series(pd.NA, index=out.index, dtype="string")
    for g in groups:
        free = out["campaign"].isna() & (out["list"] == g.list)
        rule = free.copy()
        if g.min_order_days is not None:
            rule &= out["n_order_days"] >= g.min_order_days
        if g.max_order_days is not None:
            rule &= out["n_order_days"] <= g.max_order_days
        if g.min_spend_share is not None:
            in_list = out["list"] == g.list
            cut = out.loc[in_list, "value"].quantile(1 - g.min_spend_share)
            rule &= out["value"] >= cut
        out.loc[rule, "campaign"] = g.name
        out.loc[rule, "offer"] = g.offer
        out.loc[rule, "channel"] = g.channel
        out.loc[rule, "expected_gain"] = expected_gain(
            out.loc[rule, "p_churn"],
            out.loc[rule, "value"],
            g.save_rate,
            g.contact_cost,
            g.offer_cost,
        )


def build_lists(
    scores: pd.DataFrame, campaigns: CampaignsConfig, suppress: pd.Series | None = None
) -> dict[str, pd.DataFrame]:
    """The ``at_risk`` and ``lapsed`` lists: suppressed customers left out, each group sized and
    capped, then split into treatment and control. Rows are ordered by list rank.

    ``suppress`` (aligned with ``scores``) holds why a customer must not be contacted, or NA.
    """
    if suppress is not None:
        scores = scores[suppress.isna().to_numpy()]
    lists = {}
    for list_name in ("at_risk", "lapsed"):
        parts = []
        for g in campaigns.groups:
            if g.list != list_name:
                continue
            members = scores[(scores["campaign"] == g.name) & (scores["list"] == list_name)]
            chosen = size_list(
                members,
                campaigns.size_by,
                k=campaigns.top_k,
                threshold=campaigns.threshold,
                capacity=g.capacity,
            )
            chosen = chosen.assign(
                group=np.where(
                    control_flags(
                        chosen["customer_id"], g.name, campaigns.salt, campaigns.control_share
                    ),
                    "control",
                    "treatment",
                )
            )
            parts.append(chosen)
        frame = pd.concat(parts) if parts else scores.head(0).assign(group="")
        lists[list_name] = frame.sort_values("rank", kind="stable")[LIST_COLUMNS].reset_index(
            drop=True
        )
    return lists


def profit_curve(scores: pd.DataFrame, suppress: pd.Series | None = None) -> pd.DataFrame:
    """Cumulative expected gain of contacting the eligible customers of each list, best first:
    ``list, n_contacted, customer_id, expected_gain, cumulative_gain``. The maximum of
    ``cumulative_gain`` is where the profit-sized list stops."""
    s = scores if suppress is None else scores[suppress.isna().to_numpy()]
    s = s[s["expected_gain"].notna()]
    parts = []
    for name, part in s.groupby("list", sort=True):
        ranked = part.sort_values(["expected_gain", "customer_id"], ascending=[False, True])
        parts.append(
            pd.DataFrame(
                {
                    "list": name,
                    "n_contacted": np.arange(1, len(ranked) + 1),
                    "customer_id": ranked["customer_id"].to_numpy(),
                    "expected_gain": ranked["expected_gain"].to_numpy(),
                    "cumulative_gain": ranked["expected_gain"].cumsum().to_numpy(),
                }
            )
        )
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(
            columns=["list", "n_contacted", "customer_id", "expected_gain", "cumulative_gain"]
        )
    )


def delta(new: dict[str, pd.DataFrame], old: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """Who entered and who left each list since the previous export, with reasons:
    ``list, change, customer_id, p_churn, campaign, reasons`` (the new row's values for entered,
    the old row's for left)."""
    cols = ["customer_id", "p_churn", "campaign", "reasons"]
    rows = []
    for name, frame in new.items():
        before = (old or {}).get(name)
        before = before if before is not None else frame.head(0)
        entered = frame[~frame["customer_id"].isin(before["customer_id"])][cols]
        left = before[~before["customer_id"].isin(frame["customer_id"])][cols]
        rows.append(entered.assign(list=name, change="entered"))
        rows.append(left.assign(list=name, change="left"))
    out = pd.concat(rows, ignore_index=True)
    return (
        out[["list", "change", *cols]]
        .sort_values(["list", "change", "customer_id"], kind="stable")
        .reset_index(drop=True)
    )
