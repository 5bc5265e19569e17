"""Campaign readout: did the contacted customers (treatment) come back more than the randomized
control group that was left alone?

For an exported list with as-of T, the outcome of each listed customer is read from the orders in
the window ``(T, T + window_days]``: ``bought`` (at least one purchase, returns not counted) and
``revenue`` (net: returns subtracted). Then, overall and per campaign group:

- retention of treatment and control (share who bought) and their difference, the
  **incremental retention**, with a 95% Wald interval and the two-sided p-value of the same
  Wald test (normal approximation: ``se = sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c)``,
  ``z = d / se``), so the interval excludes zero exactly when p < 0.05; and that p-value
  adjusted for the number of comparisons in the readout (Holm: the overall row and each
  campaign group are tested at once, and one of several shows p < 0.05 by chance alone more
  often than 5% of the time);
- revenue per customer of both groups and their difference, the **incremental revenue per
  customer**, with a Welch interval and p-value (normal approximation; revenue is skewed, so
  small groups deserve caution);
- the campaign's **incremental customers** and **incremental revenue** (the differences times
  the treated customers) and its **cost**: the contact cost of every treated customer plus the
  offer cost of every treated customer who bought (an offer is redeemed with a purchase; an upper
  bound when not every buyer used it), and the net result with its interval (the incremental
  revenue's, less the cost).

A warning is added when the control group is too small to tell: no control at all, or fewer than
``min_control`` customers; and when the interval covers zero, the warning says how large an
uplift the groups could have told from chance (the minimum detectable uplift at 80% power, two
sided 5% test, reported for every row).

The control group is drawn with the same share in every campaign group, so the overall row pools
them; per-group rows are the finer read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from winback.errors import DataError, UsageError
from winback.export import read_lists, read_manifest
from winback.orders import Orders

__all__ = [
    "Readout",
    "READOUT_COLUMNS",
    "load_export",
    "customer_outcomes",
    "compare_groups",
    "measure_campaign",
    "holm",
    "plot_readout",
]

_Z = stats.norm.ppf(0.975)
_Z_POWER = stats.norm.ppf(0.80)

READOUT_COLUMNS = [
    "scope",
    "n_treatment",
    "n_control",
    "bought_treatment",
    "bought_control",
    "retention_treatment",
    "retention_control",
    "incremental_retention",
    "incremental_retention_lo",
    "incremental_retention_hi",
    "incremental_retention_p",
    "incremental_retention_p_adjusted",
    "min_detectable_uplift",
    "revenue_per_customer_treatment",
    "revenue_per_customer_control",
    "incremental_revenue_per_customer",
    "incremental_revenue_per_customer_lo",
    "incremental_revenue_per_customer_hi",
    "incremental_revenue_per_customer_p",
    "incremental_customers",
    "incremental_revenue",
    "incremental_revenue_lo",
    "incremental_revenue_hi",
    "cost",
    "net_revenue",
    "net_revenue_lo",
    "net_revenue_hi",
    "warning",
]


@dataclass
class Readout:
    """A campaign readout: the per-scope table and what it was measured on."""

    export: str
    as_of: datetime
    window_days: int
    observed_days: float
    table: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    model_version: str | None = None

    def to_dict(self) -> dict:
        rows = self.table.replace({np.nan: None}).to_dict(orient="records")
        return {
            "export": self.export,
            "as_of": self.as_of.isoformat(),
            "window_days": self.window_days,
            "window_end": (self.as_of + timedelta(days=self.window_days)).isoformat(),
            "observed_days": round(self.observed_days, 3),
            "model_version": self.model_version,
            "method": (
                "difference of shares (Wald 95% interval and Wald z-test, p-values also Holm-"
                "adjusted over the rows) and of means (Welch 95% interval, z-test), normal "
                "approximation"
            ),
            "warnings": self.warnings,
            "rows": rows,
        }


def load_export(export_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """The listed customers of an export (both lists, with ``campaign`` and ``group``) and its
    manifest, after checking every file against the manifest's checksums."""
    d = Path(export_dir)
    if not d.exists():
        raise UsageError(
            f"The export {d} does not exist; pass a folder written by 'winback score'."
        )
    manifest = read_manifest(d)
    frames = list(read_lists(d, ["customer_id", "list", "campaign", "group"]).values())
    if not frames:
        raise DataError(f"{d} has no at_risk.parquet or lapsed.parquet list.")
    lists = pd.concat(frames, ignore_index=True)
    bad = ~lists["group"].isin(["treatment", "control"])
    if bad.any():
        raise DataError(
            f"{d}: column 'group' must be treatment or control; {int(bad.sum())} rows are not "
            f"(e.g. {lists.loc[bad, 'group'].astype(str).unique()[:3].tolist()})."
        )
    lists["customer_id"] = lists["customer_id"].astype(str)
    return lists, manifest


def customer_outcomes(
    orders: Orders, customer_ids: pd.Series, start: datetime, end: datetime
) -> pd.DataFrame:
    """``customer_id, bought, revenue`` in ``(start, end]`` for the given customers (every one of
    them, zero when they placed no order)."""
    engine = orders.engine()
    ids = pd.DataFrame({"customer_id": pd.Series(customer_ids, dtype=str).unique()})
    with engine.registered(ids, "_wb_measure_ids") as name:
        return engine.query_df(
            f"""
            SELECT i.customer_id,
                   coalesce(bool_or(NOT o.is_return), false) AS bought,
                   CAST(coalesce(sum(o.amount), 0) AS DOUBLE) AS revenue
            FROM {name} i LEFT JOIN {orders.table} o
              ON o.customer_id = i.customer_id
             AND o.order_ts > TIMESTAMP '{start:%Y-%m-%d %H:%M:%S.%f}'
             AND o.order_ts <= TIMESTAMP '{end:%Y-%m-%d %H:%M:%S.%f}'
            GROUP BY i.customer_id
            """
        )


def _p_two_sided(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def compare_groups(
    bought_t: np.ndarray,
    revenue_t: np.ndarray,
    bought_c: np.ndarray,
    revenue_c: np.ndarray,
    contact_cost: float = 0.0,
    offer_cost: float = 0.0,
    min_control: int = 100,
) -> dict:
    """Treatment against control for one scope (see the module docstring for the method)."""
    bt = np.asarray(bought_t, dtype=float)
    bc = np.asarray(bought_c, dtype=float)
    rt = np.asarray(revenue_t, dtype=float)
    rc = np.asarray(revenue_c, dtype=float)
    nt, nc = bt.size, bc.size
    nan = float("nan")
    row: dict = {"n_treatment": nt, "n_control": nc}
    row["bought_treatment"] = int(bt.sum())
    row["bought_control"] = int(bc.sum())
    pt = bt.mean() if nt else nan
    pc = bc.mean() if nc else nan
    row["retention_treatment"], row["retention_control"] = pt, pc
    row["revenue_per_customer_treatment"] = rt.mean() if nt else nan
    row["revenue_per_customer_control"] = rc.mean() if nc else nan
    row["cost"] = contact_cost * nt + offer_cost * row["bought_treatment"]
    keys = [c for c in READOUT_COLUMNS if c.startswith("incremental") or c == "net_revenue"]
    row.update(dict.fromkeys(keys, nan))
    row["min_detectable_uplift"] = nan
    if nt == 0 or nc == 0:
        row["warning"] = (
            "no control group: the effect cannot be measured" if nc == 0 else "no treated customers"
        )
        return row
    d = pt - pc
    se = math.sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
    pooled = (bt.sum() + bc.sum()) / (nt + nc)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / nt + 1 / nc))
    row["incremental_retention"] = d
    row["incremental_retention_lo"] = d - _Z * se
    row["incremental_retention_hi"] = d + _Z * se
    # the p-value of the test the interval comes from: both say the same about zero
    row["incremental_retention_p"] = _p_two_sided(d / se) if se > 0 else (1.0 if d == 0 else 0.0)
    row["min_detectable_uplift"] = (_Z + _Z_POWER) * (se0 if se0 > 0 else se)
    dm = rt.mean() - rc.mean()
    vt = rt.var(ddof=1) if nt > 1 else 0.0
    vc = rc.var(ddof=1) if nc > 1 else 0.0
    se_m = math.sqrt(vt / nt + vc / nc)
    row["incremental_revenue_per_customer"] = dm
    row["incremental_revenue_per_customer_lo"] = dm - _Z * se_m
    row["incremental_revenue_per_customer_hi"] = dm + _Z * se_m
    row["incremental_revenue_per_customer_p"] = (
        _p_two_sided(dm / se_m) if se_m > 0 else (1.0 if dm == 0 else 0.0)
    )
    row["incremental_customers"] = d * nt
    row["incremental_revenue"] = dm * nt
    row["incremental_revenue_lo"] = row["incremental_revenue_per_customer_lo"] * nt
    row["incremental_revenue_hi"] = row["incremental_revenue_per_customer_hi"] * nt
    _net(row)
    mde = row["min_detectable_uplift"]
    if nc < min_control:
        row["warning"] = (
            f"control group too small to tell: {nc} customers (fewer than {min_control}); "
            f"only an uplift above {mde * 100:.0f} points would show"
        )
    elif row["incremental_retention_lo"] <= 0 <= row["incremental_retention_hi"]:
        row["warning"] = (
            f"no effect shown: with {nc} control customers only an uplift above "
            f"{mde * 100:.0f} points could be told from chance"
        )
    else:
        row["warning"] = ""
    return row


def _net(row: dict) -> None:
    """The net result and its interval: the incremental revenue's, less the (observed) cost."""
    for part in ("", "_lo", "_hi"):
        row[f"net_revenue{part}"] = row[f"incremental_revenue{part}"] - row["cost"]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN left out and kept): the k-th smallest of
    m is multiplied by m - k + 1, made non-decreasing, capped at 1."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def measure_campaign(
    lists: pd.DataFrame,
    outcomes: pd.DataFrame,
    costs: dict[str, tuple[float, float]] | None = None,
    min_control: int = 100,
) -> pd.DataFrame:
    """The readout table: one row for all listed customers (``scope = 'all'``) and one per
    campaign group. ``lists`` has ``customer_id, campaign, group``; ``outcomes`` has
    ``customer_id, bought, revenue``; ``costs`` maps a campaign to (contact, offer) cost."""
    costs = costs or {}
    data = lists.merge(outcomes, on="customer_id", how="left", validate="many_to_one")
    data["bought"] = data["bought"].fillna(False).astype(bool)
    data["revenue"] = data["revenue"].fillna(0.0).astype(float)
    rows = []

    def one(scope: str, part: pd.DataFrame, contact: float, offer: float) -> None:
        t = part[part["group"] == "treatment"]
        c = part[part["group"] == "control"]
        row = compare_groups(
            t["bought"].to_numpy(),
            t["revenue"].to_numpy(),
            c["bought"].to_numpy(),
            c["revenue"].to_numpy(),
            contact,
            offer,
            min_control,
        )
        rows.append({"scope": scope, **row})

    groups = sorted(data["campaign"].dropna().astype(str).unique())
    total_cost = 0.0
    for g in groups:
        contact, offer = costs.get(g, (0.0, 0.0))
        one(g, data[data["campaign"] == g], contact, offer)
        total_cost += rows[-1]["cost"]
    one("all", data, 0.0, 0.0)
    overall = rows.pop()
    overall["cost"] = total_cost
    if not math.isnan(overall["incremental_revenue"]):
        _net(overall)
    rows.insert(0, overall)
    table = pd.DataFrame(rows, columns=READOUT_COLUMNS)
    table["incremental_retention_p_adjusted"] = holm(table["incremental_retention_p"].to_numpy())
    chance = (table["warning"] == "") & (table["incremental_retention_p_adjusted"] >= 0.05)
    n = int(table["incremental_retention_p"].notna().sum())
    table.loc[chance, "warning"] = [
        f"p = {p:.3f} alone, but {q:.3f} after adjusting for {n} comparisons: this could be chance"
        for p, q in table.loc[
            chance, ["incremental_retention_p", "incremental_retention_p_adjusted"]
        ].itertuples(index=False)
    ]
    return table


def plot_readout(table: pd.DataFrame, ax=None):
    """Share who bought again, treatment against control, per scope, with the 95% interval of
    the difference drawn on the treatment bar."""
    from winback.plots import new_ax

    ax = ax or new_ax((6.5, 0.5 * len(table) + 2.2))
    y = np.arange(len(table))
    ax.barh(y + 0.2, table["retention_control"], height=0.4, label="control", color="#9aa5b1")
    lo = table["incremental_retention_lo"] + table["retention_control"]
    hi = table["incremental_retention_hi"] + table["retention_control"]
    err = np.vstack(
        [
            (table["retention_treatment"] - lo).clip(lower=0).fillna(0),
            (hi - table["retention_treatment"]).clip(lower=0).fillna(0),
        ]
    )
    ax.barh(
        y - 0.2,
        table["retention_treatment"],
        height=0.4,
        xerr=err,
        label="treatment (95% interval of the uplift)",
        color="#2f6db3",
        capsize=3,
    )
    ax.set_yticks(y, table["scope"])
    ax.invert_yaxis()
    ax.set(xlabel="share who bought again in the window", title="Treatment against control")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)
    return ax
