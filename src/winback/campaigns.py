"""Campaign steps for win-back lists: segments, control groups, list size, reasons, safe CSV.

Pure functions over frames and arrays; the scoring job composes them.

RFM segments
------------
R and F are quintile scores (5 = most recent, most frequent) within the scored population. The
segment is read off the R x F grid that merchants use:

==================  =====================
segment             R, F
==================  =====================
Champions           R 5, F 4-5
Loyal               R 3-4, F 4-5
Potential loyalist  R 4-5, F 2-3
New                 R 5, F 1
Promising           R 4, F 1
Needs attention     R 3, F 3
About to sleep      R 3, F 1-2
At risk             R 1-2, F 3-4
Can't lose them     R 1-2, F 5
Hibernating         R 2, F 1-2
Lost                R 1, F 1-2
==================  =====================
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from winback.errors import UsageError

__all__ = [
    "SEGMENTS",
    "suppressed",
    "rfm_segments",
    "segment_name",
    "segments_of",
    "texts_of",
    "quintile_sql",
    "control_flags",
    "expected_gain",
    "size_list",
    "best_first",
    "reasons",
    "REASON_REFERENCES",
    "neutralize_csv",
]

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Needs attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)


def _quintile(values: pd.Series) -> np.ndarray:
    return np.clip(np.ceil(values.rank(pct=True, method="average").to_numpy() * 5), 1, 5)


def segment_name(r: int, f: int) -> str:
    """The RFM segment of an R and an F quintile score (1-5 each; see the grid above)."""
    if r == 5 and f >= 4:
        return "Champions"
    if r >= 3 and f >= 4:
        return "Loyal"
    if r >= 4 and f >= 2:
        return "Potential loyalist"
    if r == 5:
        return "New"
    if r == 4:
        return "Promising"
    if r == 3 and f == 3:
        return "Needs attention"
    if r == 3:
        return "About to sleep"
    if f == 5:
        return "Can't lose them"
    if f >= 3:
        return "At risk"
    if r == 2:
        return "Hibernating"
    return "Lost"


def texts_of(codes: np.ndarray, values: list[str], dtype: str = "str") -> pd.Categorical:
    """``values[code]`` for each code (-1: missing), each distinct text stored once: texts that
    repeat over millions of customers (lists, segments, groups, offers) cost a byte each.
    ``dtype`` is the text dtype of the categories, which the export files hold."""
    names = pd.Index(values, dtype=dtype).unique()
    at = np.append(names.get_indexer(pd.Index(values, dtype=dtype)), -1)  # code -1 stays -1
    return pd.Categorical.from_codes(at[codes], categories=names)


def segments_of(r: np.ndarray, f: np.ndarray, index=None, lapsed=None) -> pd.Series:
    """The RFM segment names of R and F quintile scores (arrays of 1-5), as a categorical of
    ``string`` names (each name stored once, not once per customer).

    ``lapsed`` marks customers of the lapsed list, whose quintiles are taken among lapsed
    customers: a lapsed customer is never a champion, whatever their rank among the lapsed, so
    the more recent two fifths of them read as R 2 and the rest as R 1 (At risk, Can't lose
    them, Hibernating or Lost)."""
    grid = [segment_name(a, b) for a in range(1, 6) for b in range(1, 6)]
    r, f = np.asarray(r, dtype=int), np.asarray(f, dtype=int)
    if lapsed is not None:
        r = np.where(np.asarray(lapsed, dtype=bool), np.where(r >= 4, 2, 1), r)
    return pd.Series(texts_of((r - 1) * 5 + (f - 1), grid, "string"), index=index)


def rfm_segments(recency_days: pd.Series, n_orders: pd.Series, lapsed: bool = False) -> pd.Series:
    """The RFM segment name of each customer (quintiles within the given customers; ``lapsed``:
    they are all lapsed customers, see :func:`segments_of`)."""
    r = _quintile(-recency_days.astype(float))
    f = _quintile(n_orders.astype(float))
    flags = np.full(len(r), lapsed) if lapsed else None
    return segments_of(r, f, recency_days.index, flags)


def quintile_sql(x: str, order: str = "ASC", partition: str | None = None) -> str:
    """SQL for the quintile score 1-5 of ``x`` (``order`` DESC scores the largest 1), exactly as
    :func:`rfm_segments` computes it: ``ceil(5 x average rank / count)``, ties sharing their
    average rank as in pandas' ``rank(pct=True, method="average")``. ``partition``: the
    column(s) to score within, or the whole query."""
    within = f"PARTITION BY {partition}" if partition else ""
    ties = f"PARTITION BY {partition + ', ' if partition else ''}{x}"
    pct = (
        f"(rank() OVER ({within} ORDER BY {x} {order}) "
        f"+ (count(*) OVER ({ties}) - 1) / 2.0) / count(*) OVER ({within})"
    )
    return f"greatest(1, least(5, ceil({pct} * 5)))::INTEGER"


def control_flags(
    customer_ids: Iterable[str], campaign: str, salt: str, share: float
) -> np.ndarray:
    """True for customers in the control group: ``sha256(salt|campaign|id)`` read as a number in
    [0, 1) falls below ``share``. The same customer gets the same flag on every run."""
    if not 0.0 <= share < 1.0:
        raise UsageError(f"The control share must be in [0, 1); got {share}.")
    prefix = f"{salt}|{campaign}|".encode()
    out = []
    for cid in customer_ids:
        digest = hashlib.sha256(prefix + str(cid).encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") / 2**64 < share)
    return np.array(out, dtype=bool)


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
    v = np.asarray(value, dtype=float)
    buys = (1.0 - p) + p * save_rate
    return p * save_rate * v - contact_cost - offer_cost * buys


def size_list(
    scores: pd.DataFrame,
    method: str = "profit",
    k: int | None = None,
    threshold: float | None = None,
    capacity: int | None = None,
) -> pd.DataFrame:
    """Choose who gets contacted.

    ``scores`` has ``p_churn`` and, for ``profit``, ``expected_gain``. Methods: ``profit`` (every
    customer with a positive expected gain, best first), ``top_k`` (the k riskiest) and
    ``threshold`` (``p_churn >= threshold``). ``capacity`` caps the list. Ties are broken by
    ``customer_id`` so the list is the same on every run. Returns the chosen rows, in order, with
    ``cumulative_gain`` when the gain is known.
    """
    if method == "profit":
        if "expected_gain" not in scores.columns:
            raise UsageError("size_list(method='profit') needs an 'expected_gain' column.")
        ranked = best_first(scores, "expected_gain")
        ranked = ranked[ranked["expected_gain"] > 0]
    elif method == "top_k":
        if k is None or k < 0:
            raise UsageError("size_list(method='top_k') needs k >= 0.")
        ranked = best_first(scores, "p_churn").head(k)
    elif method == "threshold":
        if threshold is None or not 0 <= threshold <= 1:
            raise UsageError("size_list(method='threshold') needs a threshold in [0, 1].")
        ranked = best_first(scores, "p_churn")
        ranked = ranked[ranked["p_churn"] >= threshold]
    else:
        raise UsageError(
            f"The list size method must be one of 'profit', 'top_k' or 'threshold'; got {method!r}."
        )
    if capacity is not None:
        ranked = ranked.head(max(int(capacity), 0))
    chosen = scores.loc[ranked.index]  # the chosen rows, copied once
    if "expected_gain" in chosen.columns:
        chosen = chosen.assign(cumulative_gain=chosen["expected_gain"].cumsum())
    return chosen


def best_first(scores: pd.DataFrame, by: str) -> pd.DataFrame:
    """``by`` and ``customer_id`` of ``scores`` (index kept), highest ``by`` first and ties by
    customer id, the order every list and curve uses: only the two keys are sorted, not every
    column. Missing ``by`` last. Sorted by Arrow, which compares the ids as they are stored
    (UTF-8 byte order is code point order, as Python compares them) instead of factorizing
    millions of them first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.table(
        {
            "by": pa.array(scores[by].to_numpy(dtype=float, na_value=np.nan), from_pandas=True),
            "id": pa.array(scores["customer_id"]),
        }
    )
    order = pc.sort_indices(keys, [("by", "descending"), ("id", "ascending")])  # nulls last
    return scores[[by, "customer_id"]].iloc[order.to_numpy()]


def _days(x: float) -> str:
    return f"{x:.0f} day" + ("" if round(x) == 1 else "s")


def _ago(x: float) -> str:
    """Whole days since an order, as the lists' ``days_since_last_order`` counts them."""
    return _days(float(np.floor(x)))


_SPEAKING = {
    "recency_days",
    "overdue_ratio",
    "bgnbd_p_no_purchase",
    "bgnbd_p_alive",
    "spend_change_90d",
    "orders_trend_90d",
    "orders_trend_180d",
    "return_rate",
    "n_returns",
    "n_orders",
    "n_order_days",
    "orders_per_year",
    "bgnbd_expected_purchases",
    "monetary_total",
    "monetary_mean",
    "net_spend",
    "last_order_amount",
    "tenure_days",
}
_WINDOW = re.compile(r"orders_(\d+)d")


def _can_speak(name: str) -> bool:
    """Whether :func:`_reason` has a sentence for this feature (for some customer)."""
    return name in _SPEAKING or _WINDOW.fullmatch(name) is not None


def _missing(x) -> bool:
    """None, NaN or pd.NA (cheaper than pd.isna on one value)."""
    return x is None or x is pd.NA or (isinstance(x, float) and x != x)


#: Features whose sentence compares a customer with the scored population (its median).
REASON_REFERENCES = ("n_orders", "monetary_total", "gap_mean_days", "tenure_days")


def _reason(name: str, row, population: dict[str, float] | None = None) -> str | None:
    """A plain-language sentence for a feature that raises a customer's risk, or None when no
    sentence about it would be true. A comparison ("fewer orders than most") is made only with
    ``population`` (medians over the scored customers) and only when it holds."""
    v = row.get(name)
    if _missing(v):
        return None
    pop = population or {}
    rec = row.get("recency_days")
    gap = row.get("gap_mean_days")
    days = row.get("n_order_days", 0)
    if name in ("recency_days", "overdue_ratio", "bgnbd_p_no_purchase", "bgnbd_p_alive"):
        if days == 1 and rec is not None:
            return f"bought once, {_ago(rec)} ago"
        if not _missing(gap) and gap > 0 and rec is not None:
            if rec >= gap:
                return f"no order for {_ago(rec)}, {rec / gap:.1f}x their usual gap"
            if days == 2:  # one interval is not a habit
                return f"bought twice, {_days(gap)} apart"
            typical = pop.get("gap_mean_days")
            if typical is not None and gap > typical:
                return (
                    f"buys less often than most customers: about every {_days(gap)} "
                    f"(typical: {_days(typical)})"
                )
            return None
        return f"no order for {_ago(rec)}" if rec is not None else None
    if name == "spend_change_90d" and v < 0:
        return f"spend down {-v:.0%} vs the previous 90 days"
    if name in ("orders_trend_90d", "orders_trend_180d") and v < 0:
        return "ordering less often than before"
    if name in ("return_rate", "n_returns") and row.get("n_returns", 0) > 0:
        return f"returned {int(row['n_returns'])} order(s)"
    if name in ("n_orders", "n_order_days", "orders_per_year", "bgnbd_expected_purchases"):
        n, typical = row.get("n_orders"), pop.get("n_orders")
        if _missing(n) or typical is None or not n < typical:
            return None
        n = int(n)
        return (
            f"{n} order{'' if n == 1 else 's'} so far, fewer than most customers "
            f"(typical: {typical:g})"
        )
    window = _WINDOW.fullmatch(name)
    if window and v == 0:
        return f"no order in the last {window.group(1)} days"
    if name in ("monetary_total", "monetary_mean", "net_spend", "last_order_amount"):
        spent, typical = row.get("monetary_total"), pop.get("monetary_total")
        if _missing(spent) or typical is None or not spent < typical:
            return None
        return f"spent {spent:,.0f} so far, less than most customers (typical: {typical:,.0f})"
    if name == "tenure_days":
        typical = pop.get("tenure_days")
        if typical is None or not v < typical:
            return None
        return f"a newer customer: first order {_ago(v)} ago (typical: {_days(typical)})"
    return None


def _last_order(row) -> str:
    """The plain fact of a customer's last order (true of everyone with one)."""
    rec = row.get("recency_days")
    if _missing(rec):
        return "no order on record"
    return (
        f"bought once, {_ago(rec)} ago"
        if row.get("n_order_days", 0) == 1
        else (f"last order {_ago(rec)} ago")
    )


class _Row:
    """Read access to one row of column arrays, like a Series' ``get``."""

    __slots__ = ("cols", "i")

    def __init__(self, cols: dict[str, np.ndarray], i: int):
        self.cols, self.i = cols, i

    def get(self, name: str, default=None):
        col = self.cols.get(name)
        return default if col is None else col[self.i]

    def __getitem__(self, name: str):
        return self.cols[name][self.i]


def reasons(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    top: int = 3,
    population: dict[str, float] | None = None,
) -> pd.Series:
    """The top drivers of each customer's risk, in plain language, joined by '; '.

    ``contributions`` are per-feature contributions to the churn log-odds (positive = more
    risk), aligned with ``features`` by position. Features whose sentence would repeat another's
    are skipped; features without a true sentence are skipped. ``population`` holds the medians
    of :data:`REASON_REFERENCES` over the scored customers: a customer is called low on orders,
    spend or tenure, or slow to buy, only when below (or above) that median, and the sentence
    says what typical is. A customer with none left gets the plain fact of their last order.
    """
    c = contributions.to_numpy(dtype=float)
    names = list(contributions.columns)
    speaks = np.array([_can_speak(n) for n in names])  # features that have a sentence at all
    candidates = np.argsort(-c, axis=1, kind="stable")[:, : min(3 * top + 3, c.shape[1])]
    cols = {name: features[name].to_numpy() for name in features.columns}
    out = []
    for i in range(c.shape[0]):
        row = _Row(cols, i)
        said: list[str] = []
        for j in candidates[i]:
            if c[i, j] <= 0:
                break
            if not speaks[j]:
                continue
            text = _reason(names[j], row, population)
            if text and text not in said:
                said.append(text)
                if len(said) == top:
                    break
        if not said:  # nothing stands out: the one fact every listed customer has
            said.append(_last_order(row))
        out.append("; ".join(said))
    return pd.Series(out, index=contributions.index, dtype="string")


def neutralize_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that start with ``=``, ``+``, ``-`` or ``@`` (also after blanks or
    control characters), or with a tab or CR, with a quote, so spreadsheets show them instead of
    running them (CSV injection). Numbers are left alone."""
    out = frame.copy(deep=False)
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype):  # each distinct text once
            names = s.cat.categories
            if pd.api.types.is_string_dtype(names) or names.dtype == object:
                safe = _neutralized(pd.Series(names))
                out[col] = (
                    s.cat.rename_categories(safe.to_numpy())
                    if safe.is_unique
                    else _neutralized(s)  # "=x" and "'=x" both there: cell by cell
                )
        elif pd.api.types.is_string_dtype(s) or s.dtype == object:
            out[col] = _neutralized(s)
    return out


#: A cell a spreadsheet may run as a formula: one that starts with = + - or @, also after any
#: blanks or control characters (some programs drop those first), or with a tab or a CR.
_FORMULA = r"^(?:[\x00-\x20\x7f]*[=+\-@]|[\t\r])"


def _neutralized(s: pd.Series) -> pd.Series:
    text = s.astype("string")
    risky = text.str.contains(_FORMULA, regex=True, na=False)
    return text.where(~risky, "'" + text) if risky.any() else text


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
