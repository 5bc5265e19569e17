"""A plain-pandas reference implementation of the feature definitions in :mod:`winback.features`.

Written independently of the SQL, one cutoff at a time, for readability rather than speed. The
tests check that the DuckDB engine agrees with it, and the benchmark measures both.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd

from winback.features import FeatureSpec, feature_names

__all__ = ["reference_features", "reference_labels"]


def _days(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() / 86400.0


def _one_cutoff(orders: pd.DataFrame, t: pd.Timestamp, spec: FeatureSpec) -> pd.DataFrame:
    o = orders[orders["order_ts"] <= t]
    p = o[~o["is_return"]].copy()
    r = o[o["is_return"]]
    p["age"] = _days(t - p["order_ts"])
    g = p.groupby("customer_id", sort=True)
    out = pd.DataFrame({"recency_days": g["age"].min()})
    out = out[out["recency_days"] < spec.lookback_days]
    keep = out.index
    p = p[p["customer_id"].isin(keep)]
    g = p.groupby("customer_id", sort=True)
    out["tenure_days"] = g["age"].max()
    out["n_orders"] = g.size()
    days = p.assign(day=p["order_ts"].dt.normalize())[["customer_id", "day"]].drop_duplicates()
    out["n_order_days"] = days.groupby("customer_id").size()
    out["monetary_total"] = g["amount"].sum()
    out["monetary_mean"] = out["monetary_total"] / out["n_orders"]
    out["max_order_amount"] = g["amount"].max()
    last = p.sort_values(["customer_id", "order_ts", "amount"]).groupby("customer_id").tail(1)
    out["last_order_amount"] = last.set_index("customer_id")["amount"]
    first = p.sort_values(["customer_id", "order_ts", "amount"], ascending=[True, True, False])
    out["first_order_amount"] = (
        first.groupby("customer_id").head(1).set_index("customer_id")["amount"]
    )
    out["last_vs_first_amount"] = out["last_order_amount"] / out["first_order_amount"].replace(
        0, np.nan
    )
    out["last_vs_mean_amount"] = out["last_order_amount"] / out["monetary_mean"].replace(0, np.nan)

    def window(lo: float, hi: float) -> tuple[pd.Series, pd.Series]:
        sel = p[(p["age"] >= lo) & (p["age"] < hi)].groupby("customer_id")
        n = sel.size().reindex(keep, fill_value=0)
        s = sel["amount"].sum().reindex(keep, fill_value=0.0)
        return n, s

    for w in spec.windows_days:
        out[f"orders_{w}d"], out[f"spend_{w}d"] = window(0, w)
    n90, s90 = window(0, 90)
    out["orders_prev_90d"], out["spend_prev_90d"] = window(90, 180)
    prev90 = out["orders_prev_90d"]
    out["orders_trend_90d"] = (n90 - prev90) / (n90 + prev90).replace(0, np.nan)
    out["spend_change_90d"] = s90 / out["spend_prev_90d"].replace(0, np.nan) - 1
    n180, _ = window(0, 180)
    nprev180, _ = window(180, 360)
    out["orders_trend_180d"] = (n180 - nprev180) / (n180 + nprev180).replace(0, np.nan)

    days = days.sort_values(["customer_id", "day"])
    days["gap"] = _days(days.groupby("customer_id")["day"].diff()).round()
    gaps = days.dropna(subset=["gap"]).groupby("customer_id")["gap"]
    out["gap_mean_days"] = gaps.mean()
    out["gap_median_days"] = gaps.median()
    out["gap_std_days"] = gaps.std(ddof=1)
    out["last_gap_days"] = gaps.last()
    out["overdue_ratio"] = out["recency_days"] / out["gap_mean_days"].replace(0, np.nan)
    out["orders_per_year"] = out["n_orders"] * 365.0 / out["tenure_days"].clip(lower=30.0)

    rg = r[r["customer_id"].isin(keep)].groupby("customer_id")
    out["n_returns"] = rg.size().reindex(keep, fill_value=0)
    out["return_amount"] = (-rg["amount"].sum()).reindex(keep, fill_value=0.0)
    out["return_rate"] = out["n_returns"] / (out["n_orders"] + out["n_returns"])
    out["net_spend"] = out["monetary_total"] - out["return_amount"]
    r_age = _days(t - r["order_ts"])
    out["returns_90d"] = r[r_age < 90].groupby("customer_id").size().reindex(keep, fill_value=0)
    out["days_since_return"] = r_age.groupby(r["customer_id"]).min().reindex(keep)
    out["returned_since_last_order"] = (out["days_since_return"] < out["recency_days"]).astype(int)
    weekend = p["order_ts"].dt.day_of_week >= 5
    out["weekend_share"] = (
        p[weekend].groupby("customer_id").size().reindex(keep, fill_value=0) / out["n_orders"]
    )
    out["orders_ahead_90d_last_year"], _ = window(275, 365)
    if spec.has_category:
        pc = p.dropna(subset=["category"])
        counts = pc.groupby(["customer_id", "category"]).size()
        by_c = counts.groupby(level="customer_id")
        out["n_categories"] = by_c.size().reindex(keep, fill_value=0)
        out["top_category_share"] = by_c.max() / by_c.sum()
    if spec.has_channel:
        out["n_channels"] = g["channel"].nunique()
    angle = 2 * np.pi * (t.day_of_year - 1) / 365.25
    out["cutoff_season_sin"] = np.sin(angle)
    out["cutoff_season_cos"] = np.cos(angle)
    start = pd.Timestamp(spec.data_start or "1970-01-01", tz="UTC")
    out["history_days"] = (t - start).total_seconds() / 86400.0
    out = out.reset_index()
    out.insert(1, "cutoff_ts", t)
    return out


def reference_features(
    orders: pd.DataFrame, cutoffs: Iterable[datetime], spec: FeatureSpec
) -> pd.DataFrame:
    """Features of the active population at each cutoff, computed with pandas only.

    ``orders`` is a frame in the orders contract with ``order_ts`` tz-aware UTC (as from
    :meth:`winback.orders.Orders.to_pandas`).
    """
    frames = []
    for c in sorted(cutoffs):
        t = pd.Timestamp(c)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        frames.append(_one_cutoff(orders, t, spec))
    out = pd.concat(frames, ignore_index=True)
    cols = ["customer_id", "cutoff_ts", *feature_names(spec)]
    return out[cols].sort_values(["cutoff_ts", "customer_id"]).reset_index(drop=True)


def reference_labels(
    orders: pd.DataFrame, cutoffs: Iterable[datetime], horizon_days: int, lookback_days: int
) -> pd.DataFrame:
    """Labels with pandas only: churned = no purchase in ``(T, T + H]``."""
    p = orders[~orders["is_return"]]
    rows = []
    for c in sorted(cutoffs):
        t = pd.Timestamp(c)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        lo = t - pd.Timedelta(days=lookback_days)
        active = p[(p["order_ts"] <= t) & (p["order_ts"] > lo)]["customer_id"].unique()
        future = p[(p["order_ts"] > t) & (p["order_ts"] <= t + pd.Timedelta(days=horizon_days))]
        n = future.groupby("customer_id").size()
        for cid in sorted(active):
            k = int(n.get(cid, 0))
            rows.append((cid, t, k, k == 0))
    return pd.DataFrame(rows, columns=["customer_id", "cutoff_ts", "orders_in_horizon", "churned"])
