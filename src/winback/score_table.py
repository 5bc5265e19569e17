"""The score table's rows, made the same way on either engine: from a customer's inputs and
their rank within their list, the columns of the table, the campaign groups, the uplift gains,
who may be listed and the manifest's counts. Pure functions over frames and arrays, so a part
of the customers gives the rows the whole table would (:mod:`winback.scoring` applies them to
the whole table on DuckDB, :mod:`winback.spark_scores` to batches on Spark's executors), and
:class:`ScoreRows`, what a table read a block at a time offers the export's writers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd

from winback.campaigns import expected_gain, incremental_gain
from winback.config import CampaignGroupConfig, CampaignsConfig
from winback.segments import segments_of, texts_of
from winback.timing import TIMING_INPUTS, timing_columns

__all__ = [
    "RISK_BANDS",
    "ScoreRows",
    "listable",
    "spend_cut",
    "suppression_counts",
    "table_from",
    "table_inputs_sql",
    "uplift_gains",
    "uplift_takers",
]


#: The risk band of each risk decile (1 = riskiest tenth).
RISK_BANDS = {"high": (1, 3), "medium": (4, 7), "low": (8, 10)}


def table_inputs_sql(horizon_days: int, lookback_days: int) -> str:
    """The select list that reads a score table's inputs from the scored customers' columns
    (``p_churn``, ``value``, ``expected_value`` and the snapshot's own), on either engine:
    whether the customer is lapsed, the value at risk, whole days since the last order, whether
    the probability is extrapolated."""
    return f"""customer_id,
        CASE WHEN recency_days <= {int(horizon_days)} THEN FALSE ELSE TRUE END AS lapsed,
        p_churn, value, expected_value, p_churn * value AS value_at_risk,
        CAST(n_order_days AS BIGINT) AS n_order_days, recency_days, n_orders,
        CAST(floor(recency_days) AS BIGINT) AS days_since_last_order,
        recency_days >= {int(lookback_days)} AS extrapolated,
        {", ".join(TIMING_INPUTS)}"""


def table_from(
    t: pd.DataFrame,
    rank: np.ndarray,
    decile: np.ndarray,
    r: np.ndarray,
    f: np.ndarray,
    horizon_days: int,
    as_of: datetime,
    campaigns: CampaignsConfig,
    model_version: str,
    spend_cuts: dict[str, float] | None = None,
) -> pd.DataFrame:
    """The score table's rows of the inputs ``t`` (:func:`table_inputs_sql`), given their
    rank, risk decile and R and F quintiles within their list (:func:`_ranks_within_lists`),
    campaign groups included. ``spend_cuts`` are the ``min_spend_share`` groups' cuts when
    ``t`` is a part of the customers (:func:`spend_cut`); else they are taken from ``t``."""
    n = len(t)
    band = np.full(n, -1, dtype=np.int8)
    for i, (lo, hi) in enumerate(RISK_BANDS.values()):
        band[(decile >= lo) & (decile <= hi)] = i
    one = np.zeros(n, dtype=np.int8)
    due = timing_columns(
        t["p_churn"].to_numpy(dtype=float),
        *(t[c].to_numpy(dtype=float) for c in TIMING_INPUTS),
        horizon_days,
        pd.Timestamp(as_of),
    )
    out = pd.DataFrame(
        {
            "customer_id": t["customer_id"],
            "as_of": texts_of(one, [f"{as_of:%Y-%m-%d}"]),
            "list": texts_of(t["lapsed"].to_numpy(dtype=np.int8), ["at_risk", "lapsed"]),
            "p_churn": t["p_churn"],
            **due,
            "extrapolated": t["extrapolated"].astype(bool),
            "days_since_last_order": t["days_since_last_order"].astype("int64"),
            "value": t["value"],
            "expected_value": t["expected_value"],
            "value_at_risk": t["value_at_risk"],
            "currency": texts_of(one, [campaigns.currency or ""]),
            "segment": segments_of(r, f, t.index, t["lapsed"]),
            "reasons": pd.Series(pd.NA, index=t.index, dtype="string"),
            "model_version": texts_of(one, [model_version]),
            "n_order_days": t["n_order_days"],
            "rank": rank,
            "risk_decile": decile,
            "risk_band": texts_of(band, list(RISK_BANDS)),
        },
        copy=False,
    )
    _assign_groups(out, campaigns.groups, spend_cuts)
    return out


def _assign_groups(
    out: pd.DataFrame, groups: list[CampaignGroupConfig], cuts: dict[str, float] | None = None
) -> None:
    """Each customer's first campaign group whose rules hold (in config order), with its
    offer, channel and expected gain; missing where no group takes them. ``cuts``: each
    ``min_spend_share`` group's least value, when ``out`` is not its whole list."""
    which = np.full(len(out), -1, dtype=np.int16)
    gain = np.full(len(out), np.nan)
    n_order_days = out["n_order_days"].to_numpy()
    value = out["value"].to_numpy(dtype=float)
    p_churn = out["p_churn"].to_numpy(dtype=float)
    for i, g in enumerate(groups):
        in_list = (out["list"] == g.list).to_numpy(dtype=bool)
        rule = in_list & (which == -1)
        if g.min_order_days is not None:
            rule &= n_order_days >= g.min_order_days
        if g.max_order_days is not None:
            rule &= n_order_days <= g.max_order_days
        if g.min_spend_share is not None and cuts is not None:
            rule &= value >= cuts[g.name]
        elif g.min_spend_share is not None and in_list.any():  # the top share of the list
            rule &= value >= spend_cut(value[in_list], g.min_spend_share)
        which[rule] = i
        gain[rule] = expected_gain(
            p_churn[rule], value[rule], g.save_rate, g.contact_cost, g.offer_cost
        )
    out["campaign"] = texts_of(which, [g.name for g in groups], "string")
    out["offer"] = texts_of(which, [g.offer for g in groups])
    out["channel"] = texts_of(which, [g.channel for g in groups])
    out["uplift"] = np.full(len(out), np.nan)  # set when an uplift model ranks the lists
    out["expected_gain"] = gain


def spend_cut(value: np.ndarray, share: float) -> float:
    """The least value of the top ``share`` of a list by value (missing values left out)."""
    return float(np.nanquantile(value, 1 - share))


def suppression_counts(
    scores: pd.DataFrame, why: pd.Series, min_p_churn: float | None
) -> dict[str, int]:
    """The manifest's counts of the customers of a score table: how many are suppressed, by
    why (``why``, :func:`winback.campaigns.suppressed`), and how many of the others in a
    campaign group fall below ``min_p_churn``. Counts of parts add up to the whole's."""
    in_group = scores["campaign"].notna().to_numpy()
    return {
        "opted_out": int((why == "opted out").sum()),
        "cooldown": int(why.str.startswith("contacted", na=False).sum()),
        "recent_buyer": int(why.str.startswith("bought", na=False).sum()),
        "below_min_p_churn": int(
            (in_group & why.isna().to_numpy() & ~listable(scores, min_p_churn)).sum()
        ),
    }


def listable(
    scores: pd.DataFrame, min_p_churn: float | None, suppress: pd.Series | None = None
) -> np.ndarray:
    """Who may be listed: nothing suppresses them and ``p_churn >= min_p_churn`` (any risk when
    ``min_p_churn`` is None)."""
    ok = np.ones(len(scores), dtype=bool) if suppress is None else suppress.isna().to_numpy().copy()
    if min_p_churn is not None:
        ok &= scores["p_churn"].to_numpy(dtype=float, na_value=np.nan) >= min_p_churn
    return ok


def uplift_takers(
    scores: pd.DataFrame, campaigns: CampaignsConfig, suppress: pd.Series | None = None
) -> np.ndarray:
    """Who gets an uplift (:func:`add_uplift`): in a campaign group and :func:`listable`."""
    in_group = scores["campaign"].notna().to_numpy()
    return in_group & listable(scores, campaigns.min_p_churn, suppress)


def uplift_gains(scores: pd.DataFrame, uplift: np.ndarray, campaigns: CampaignsConfig) -> None:
    """Set ``uplift`` (missing for whom it is NaN) and, where it is known, ``expected_gain``
    by each customer's group's costs (:func:`add_uplift`)."""
    gain = np.full(len(scores), np.nan)
    p_churn = scores["p_churn"].to_numpy(dtype=float)
    value = scores["value"].to_numpy(dtype=float)
    group = scores["campaign"].to_numpy(dtype=object, na_value=None)
    for g in campaigns.groups:
        mine = (group == g.name) & ~np.isnan(uplift)
        gain[mine] = incremental_gain(
            uplift[mine], p_churn[mine], value[mine], g.contact_cost, g.offer_cost
        )
    scores["uplift"] = uplift
    scores["expected_gain"] = gain


class ScoreRows:
    """Rows (of the score table: ``rows``, positions in it) read as a table of ``columns``:
    what :class:`CampaignList`, :class:`ProfitCurve` and :class:`Delta` share. ``take`` reads
    a block of them; one column, or all of them, is a block of every row."""

    rows: np.ndarray
    columns: list[str]
    take: Callable[..., pd.DataFrame]  # (positions of the rows, columns) -> a frame

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), len(self.columns)

    def __getitem__(self, column: str) -> pd.Series:
        """One column, in the rows' order."""
        if column not in self.columns:
            raise KeyError(column)
        return self.take(np.arange(len(self)), [column])[column]

    def frame(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Every row as a frame (a copy: for small tables and for tests)."""
        return self.take(np.arange(len(self)), columns)
