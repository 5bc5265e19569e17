"""Campaign steps for win-back lists: who must not be contacted, control groups, the expected
gain of a contact and the size of each list.

Pure functions over frames and arrays; the scoring job composes them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from winback.errors import UsageError

__all__ = [
    "suppressed",
    "control_flags",
    "expected_gain",
    "incremental_gain",
    "size_list",
    "best_first",
    "best_first_rows",
]


def control_flags(
    customer_ids: Iterable[str], campaign: str, salt: str, share: float
) -> np.ndarray:
    """True for customers in the control group: the first 8 bytes of
    ``sha256(salt|campaign|id)`` (UTF-8) read as a big-endian number over 2^64 fall below
    ``share``. The same customer gets the same flag on every run.

    The digests are computed in DuckDB, on all cores (a million customers in a fraction of a
    second; one at a time in Python took seconds)."""
    if not 0.0 <= share < 1.0:
        raise UsageError(f"The control share must be in [0, 1); got {share}.")
    from winback.engines.duckdb import connect

    ids = customer_ids if isinstance(customer_ids, pd.Series) else pd.Series(list(customer_ids))
    ids = pd.DataFrame({"cid": ids.astype("str").reset_index(drop=True), "_i": np.arange(len(ids))})
    con = connect()
    try:
        con.register("_ids", ids)
        found = con.execute(
            "SELECT _i, CAST('0x' || left(sha256(? || cid), 16) AS UBIGINT) AS h FROM _ids",
            [f"{salt}|{campaign}|"],
        ).fetchnumpy()
    finally:
        con.close()
    number = np.empty(len(ids), dtype=np.uint64)
    number[found["_i"]] = found["h"]
    # a uint64 to float rounds as Python's int / 2**64 does: to the nearest double
    return number.astype(np.float64) / 2.0**64 < share


def expected_gain(
    p_churn, value, save_rate: float, contact_cost: float, offer_cost: float
) -> np.ndarray:
    """Expected gain of contacting a customer, under the cost model ``measure`` reads out with:

    ``p_churn x save_rate x value - contact_cost - offer_cost x P(buys | contacted)``, where
    ``P(buys | contacted) = (1 - p_churn) + p_churn x save_rate``.

    ``value`` is what the customer is worth if kept (e.g. spend over the next period). Every
    contacted customer costs the contact; the offer is paid when it is redeemed, with a purchase:
    by the customers it saves and by those who would have bought anyway (an upper bound when not
    every buyer uses it). The same rule gives a campaign's cost in its readout.
    """
    p = np.asarray(p_churn, dtype=float)
    return incremental_gain(p * save_rate, p, value, contact_cost, offer_cost)


def incremental_gain(uplift, p_churn, value, contact_cost: float, offer_cost: float) -> np.ndarray:
    """Expected gain of contacting a customer whom a contact makes ``uplift`` more likely to buy
    within the horizon (an uplift model's estimate; :func:`expected_gain` is the case ``uplift =
    p_churn x save_rate``): ``uplift x value - contact_cost - offer_cost x P(buys |
    contacted)``, with ``P(buys | contacted) = (1 - p_churn) + uplift``."""
    u = np.asarray(uplift, dtype=float)
    buys = (1.0 - np.asarray(p_churn, dtype=float)) + u
    return u * np.asarray(value, dtype=float) - contact_cost - offer_cost * buys


def size_list(
    scores: pd.DataFrame,
    method: str = "profit",
    k: int | None = None,
    threshold: float | None = None,
    capacity: int | None = None,
    by: str = "p_churn",
) -> pd.DataFrame:
    """Choose who gets contacted.

    ``scores`` has ``p_churn`` and, for ``profit``, ``expected_gain``. Methods: ``profit`` (every
    customer with a positive expected gain, best first), ``top_k`` (the k highest by ``by``: the
    riskiest, or with ``by="expected_gain"`` the most profitable) and ``threshold`` (``p_churn
    >= threshold``, highest ``by`` first). ``capacity`` caps the list. Ties are broken by
    ``customer_id`` so the list is the same on every run. Returns the chosen rows, in order, with
    ``cumulative_gain`` when the gain is known.
    """
    if method == "profit":
        if "expected_gain" not in scores.columns:
            raise UsageError("size_list(method='profit') needs an 'expected_gain' column.")
        order = best_first_rows(scores, "expected_gain")
        order = order[scores["expected_gain"].to_numpy(dtype=float, na_value=np.nan)[order] > 0]
    elif method == "top_k":
        if k is None or k < 0:
            raise UsageError("size_list(method='top_k') needs k >= 0.")
        order = best_first_rows(scores, by)[:k]
    elif method == "threshold":
        if threshold is None or not 0 <= threshold <= 1:
            raise UsageError("size_list(method='threshold') needs a threshold in [0, 1].")
        order = best_first_rows(scores, by)
        order = order[scores["p_churn"].to_numpy(dtype=float, na_value=np.nan)[order] >= threshold]
    else:
        raise UsageError(
            f"The list size method must be one of 'profit', 'top_k' or 'threshold'; got {method!r}."
        )
    if capacity is not None:
        order = order[: max(int(capacity), 0)]
    chosen = scores.iloc[order]  # the chosen rows, copied once
    if "expected_gain" in chosen.columns:
        chosen = chosen.assign(cumulative_gain=chosen["expected_gain"].cumsum())
    return chosen


def best_first(scores: pd.DataFrame, by: str) -> pd.DataFrame:
    """``by`` and ``customer_id`` of ``scores`` (index kept), in :func:`best_first_rows`'s
    order: only the two keys are taken, not every column."""
    return scores[[by, "customer_id"]].iloc[best_first_rows(scores, by)]


def best_first_rows(scores: pd.DataFrame, by: str) -> np.ndarray:
    """The positions of the rows of ``scores``, highest ``by`` first and ties by customer id,
    the order every list and curve uses; missing ``by`` last. Sorted by Arrow, which compares
    the ids as they are stored (UTF-8 byte order is code point order, as Python compares them)
    instead of factorizing millions of them first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.table(
        {
            "by": pa.array(scores[by].to_numpy(dtype=float, na_value=np.nan), from_pandas=True),
            "id": pa.array(scores["customer_id"]),
        }
    )
    order = pc.sort_indices(keys, [("by", "descending"), ("id", "ascending")])  # nulls last
    return order.to_numpy().astype(np.intp)


def suppressed(
    customer_ids: pd.Series,
    as_of: pd.Timestamp,
    contacts: pd.DataFrame | None = None,
    cooldown_days: int = 30,
    opted_out: Iterable[str] | None = None,
    days_since_last_order: pd.Series | None = None,
    recent_days: int = 0,
) -> pd.Series:
    """Why each customer must not be contacted: ``"opted out"``, ``"contacted on <date>"``
    (within ``cooldown_days`` before ``as_of``), ``"bought in the last <n> days"`` (whole days
    since the last order below ``recent_days``: a win-back offer to someone who just bought
    reads as a mistake), or missing when they may be. The first that applies is given.

    ``contacts`` has ``customer_id`` and ``contacted_at``; contacts after ``as_of`` are ignored.
    """
    ids = customer_ids.astype(str)
    why = pd.Series(pd.NA, index=customer_ids.index, dtype="string")
    if days_since_last_order is not None and recent_days > 0:
        recent = (days_since_last_order < recent_days).to_numpy(dtype=bool, na_value=False)
        why = why.mask(recent, f"bought in the last {recent_days} days")
    if contacts is not None and len(contacts):
        c = contacts.assign(customer_id=contacts["customer_id"].astype(str))
        at = pd.to_datetime(c["contacted_at"], utc=True)
        t = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
        recent = c[(at <= t) & (at > t - pd.Timedelta(days=cooldown_days))]
        last = pd.to_datetime(recent["contacted_at"], utc=True).groupby(recent["customer_id"]).max()
        hit = ids.map(last)
        why = why.where(hit.isna(), "contacted on " + hit.dt.strftime("%Y-%m-%d"))
    if opted_out is not None:
        out = set(str(x) for x in opted_out)
        why = why.mask(ids.isin(out), "opted out")
    return why
