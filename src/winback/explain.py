"""Why a customer is at risk: per-feature contributions to the model's log-odds (TreeSHAP from
LightGBM, or the faster path contributions of a tree walk), and the plain-language reasons built
from them, each sentence true of the customer against the scored population."""

from __future__ import annotations

import math
import re
import threading
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "reasons",
    "reason_sentences",
    "ReasonTable",
    "REASON_REFERENCES",
    "path_contributions",
    "LIGHTGBM_LOCK",
]

#: Held around LightGBM's predictor when blocks are explained on several threads: one Booster
#: shared by two predictions at once sets its iteration range from both (LightGBM issue 6142).
#: Each prediction runs on every core anyway.
LIGHTGBM_LOCK = threading.Lock()


def _days(x: float) -> str:
    return f"{x:.0f} day" + ("" if round(x) == 1 else "s")


def _ago(x: float) -> str:
    """Whole days since an order, as the lists' ``days_since_last_order`` counts them."""
    return _days(float(math.floor(x)) if x == x else x)


#: Features whose sentence, for a given customer, is the same words (said once).
_GROUP = {
    **dict.fromkeys(
        ("recency_days", "overdue_ratio", "bgnbd_p_no_purchase", "bgnbd_p_alive"), "recency"
    ),
    **dict.fromkeys(("orders_trend_90d", "orders_trend_180d"), "trend"),
    **dict.fromkeys(("return_rate", "n_returns"), "returns"),
    **dict.fromkeys(
        ("n_orders", "n_order_days", "orders_per_year", "bgnbd_expected_purchases"), "orders"
    ),
    **dict.fromkeys(("monetary_total", "monetary_mean", "net_spend", "last_order_amount"), "spent"),
}


#: Features with a sentence (for some customers); besides these, ``orders_<w>d`` windows.
_SPEAKING = {*_GROUP, "spend_change_90d", "tenure_days"}
_WINDOW = re.compile(r"orders_(\d+)d")


def _can_speak(name: str) -> bool:
    """Whether :func:`_sentences` has a sentence for this feature (for some customer)."""
    return name in _SPEAKING or _WINDOW.fullmatch(name) is not None


def _missing(x) -> bool:
    """None, NaN or pd.NA (cheaper than pd.isna on one value)."""
    return x is None or x is pd.NA or (isinstance(x, float) and x != x)


#: Customers whose contributions are sorted at a time (a few MB, in the processor's cache).
SORT_ROWS = 25_000

#: Features whose sentence compares a customer with the scored population (its median).
REASON_REFERENCES = ("n_orders", "monetary_total", "gap_mean_days", "tenure_days")


def _sentences(name: str, rows: np.ndarray, nums: _Numbers, pop: dict[str, float]) -> np.ndarray:
    """The sentence of ``name`` for each customer in ``rows``, customers for whom
    :func:`_says` holds: a plain-language reason that raises their risk, true of them. A
    comparison ("fewer orders than most") is made with ``pop`` (medians over the scored
    customers) and only when it holds. Sentences are put together column by column; only the
    numbers that differ from customer to customer are written one by one."""
    group = _GROUP.get(name, name)
    v = nums.get(name)[rows]
    if group == "recency":
        rec = nums.get("recency_days")[rows]
        days = nums.get_or("n_order_days", 0.0)[rows]
        gap = nums.get_or("gap_mean_days", np.nan)[rows]
        out = np.empty(len(rows), dtype=object)
        with np.errstate(invalid="ignore"):
            once = days == 1
            has_gap = ~once & (gap > 0)  # a usual gap to compare with (NaN compares False)
            over = has_gap & (rec >= gap)
            twice = has_gap & ~over & (days == 2)  # one interval is not a habit
            slower = has_gap & ~over & ~twice  # slower than the typical customer (_says)
        plain = ~once & ~has_gap
        ago = _ago_all(rec)
        out[once] = "bought once, " + ago[once] + " ago"
        ratio = np.array([f"{x:.1f}x" for x in (rec[over] / gap[over]).tolist()], dtype=object)
        out[over] = "no order for " + ago[over] + ", " + ratio + " their usual gap"
        out[twice] = "bought twice, " + _days_all(gap[twice]) + " apart"
        if slower.any():
            typical = f" (typical: {_days(pop.get('gap_mean_days'))})"
            out[slower] = (
                "buys less often than most customers: about every "
                + _days_all(gap[slower])
                + typical
            )
        out[plain] = "no order for " + ago[plain]
        return out
    if group == "spend_change_90d":
        return np.array(
            [f"spend down {-x:.0%} vs the previous 90 days" for x in v.tolist()], dtype=object
        )
    if group == "trend":
        return np.full(len(rows), "ordering less often than before", dtype=object)
    if group == "returns":
        return _each_distinct(nums.get("n_returns")[rows], lambda x: f"returned {int(x)} order(s)")
    if group == "orders":
        typical = pop["n_orders"]
        return _each_distinct(
            nums.get("n_orders")[rows],
            lambda x: (
                f"{int(x)} order{'' if int(x) == 1 else 's'} so far, fewer than most "
                f"customers (typical: {typical:g})"
            ),
        )
    if group == "spent":
        typical = pop["monetary_total"]
        # to whole units as the format rounds (half to even, from the exact value): the
        # same text, and far fewer distinct values to write
        return _each_distinct(
            np.rint(nums.get("monetary_total")[rows]),
            lambda x: f"spent {x:,.0f} so far, less than most customers (typical: {typical:,.0f})",
        )
    if group == "tenure_days":
        typical = f" ago (typical: {_days(pop['tenure_days'])})"
        return "a newer customer: first order " + _ago_all(v) + typical
    window = _WINDOW.fullmatch(name)
    return np.full(len(rows), f"no order in the last {window.group(1)} days", dtype=object)


def _each_distinct(x: np.ndarray, write) -> np.ndarray:
    """``write(value)`` for each value of ``x``, called once per distinct value."""
    distinct, at = np.unique(x, return_inverse=True)
    return np.array([write(d) for d in distinct.tolist()], dtype=object)[at.reshape(-1)]


def _days_all(x: np.ndarray) -> np.ndarray:
    """:func:`_days` of each value, each distinct value written once."""
    return _each_distinct(x, _days)


def _ago_all(x: np.ndarray) -> np.ndarray:
    """:func:`_ago` of each value (whole days since an order), each distinct day written once."""
    return _each_distinct(np.floor(x), _ago)  # _ago of a whole day is that day's


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


class _Columns:
    """A frame's columns as arrays, each converted when first asked for (the reasons read a
    handful of a snapshot's sixty)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame, self.done = frame, {}

    def get(self, name: str, default=None):
        if name not in self.done:
            self.done[name] = self.frame[name].to_numpy() if name in self.frame else None
        col = self.done[name]
        return default if col is None else col

    def __getitem__(self, name: str):
        col = self.get(name)
        if col is None:
            raise KeyError(name)
        return col


class _Row:
    """Read access to one row of column arrays, like a Series' ``get``."""

    __slots__ = ("cols", "i")

    def __init__(self, cols: _Columns | dict[str, np.ndarray], i: int):
        self.cols, self.i = cols, i

    def get(self, name: str, default=None):
        col = self.cols.get(name)
        return default if col is None else col[self.i]

    def __getitem__(self, name: str):
        return self.cols[name][self.i]


#: What joins a customer's sentences into their reasons.
REASON_SEPARATOR = "; "


def reasons(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    top: int = 3,
    population: dict[str, float] | None = None,
) -> pd.Series:
    """The top drivers of each customer's risk, in plain language, joined by '; '
    (:func:`reason_sentences`, each customer's run joined by Arrow in one pass)."""
    runs = reason_sentences(contributions, features, top, population)
    text = pc.binary_join(runs, pa.scalar(REASON_SEPARATOR, pa.large_string()))
    return pd.Series(pd.arrays.ArrowStringArray(text), index=contributions.index)


def reason_sentences(
    contributions: pd.DataFrame,
    features: pd.DataFrame,
    top: int = 3,
    population: dict[str, float] | None = None,
) -> pa.ListArray:
    """The top drivers of each customer's risk, in plain language: a list of at most ``top``
    sentences per customer (an Arrow list of texts, aligned with the rows), most risk first.

    ``contributions`` are per-feature contributions to the churn log-odds (positive = more
    risk), aligned with ``features`` by position. Features whose sentence would repeat another's
    are skipped; features without a true sentence are skipped. ``population`` holds the medians
    of :data:`REASON_REFERENCES` over the scored customers: a customer is called low on orders,
    spend or tenure, or slow to buy, only when below (or above) that median, and the sentence
    says what typical is. A customer with none left gets the plain fact of their last order.

    Which sentences a customer gets is decided for all customers at once (:func:`_says` tells,
    column by column, where a feature's sentence would be true); only the chosen sentences are
    written, a feature's at a time.
    """
    c = contributions.to_numpy(dtype=float)
    names = list(contributions.columns)
    n = c.shape[0]
    cols = _Columns(features)
    nums = _Numbers(cols, n)
    k = min(3 * top + 3, c.shape[1])
    # each customer's k largest contributions, in order (ties by column), and whether each
    # raises the risk
    candidates = np.empty((n, k), dtype=np.intp)
    rises = np.empty((n, k), dtype=bool)
    for start in range(0, n, SORT_ROWS):
        stop = min(start + SORT_ROWS, n)
        # negated, a customer's side by side in memory: the sort runs along rows
        neg = np.negative(c[start:stop], out=np.empty((stop - start, c.shape[1]), order="C"))
        top_k = np.argsort(neg, axis=1, kind="stable")[:, :k]
        candidates[start:stop] = top_k
        rises[start:stop] = ~(np.take_along_axis(neg, top_k, axis=1) >= 0)  # > 0, or NaN
    # the walk down each customer's candidates stops at the first that does not raise the risk
    alive = np.cumprod(rises, axis=1).astype(bool)
    says = np.zeros((n, len(names)), dtype=bool)
    for j, name in enumerate(names):
        if _can_speak(name):
            says[:, j] = _says(name, nums, population or {})
    rows = np.arange(n)[:, None]
    ok = alive & says[rows, candidates]
    # the sentence group of each candidate as a number, and a sentence already said (same
    # group, same words) is not repeated: the groups each customer has said so far are marked,
    # slot by slot
    group = pd.factorize(np.array([_GROUP.get(name, name) for name in names]))[0][candidates]
    said = np.zeros((n, int(group.max(initial=0)) + 1), dtype=bool)
    keep = ok.copy()
    everyone = np.arange(n)
    for i in range(k):
        keep[:, i] &= ~said[everyone, group[:, i]]
        said[everyone[keep[:, i]], group[keep[:, i], i]] = True
    keep &= np.cumsum(keep, axis=1) <= top
    # a customer with nothing said gets the plain fact of their last order, in a last slot
    last = ~keep.any(axis=1)
    keep = np.concatenate([keep, last[:, None]], axis=1)
    # every sentence said, customer by customer and slot by slot within a customer (row-major
    # order), then joined along each customer's run by Arrow in one pass
    _, slot = np.nonzero(keep)
    flat = np.empty(len(slot), dtype=object)
    for i in range(k):
        at = np.flatnonzero(keep[:, i])
        if not len(at):
            continue
        said = np.empty(len(at), dtype=object)
        chosen = candidates[at, i]
        for j in np.unique(chosen):  # each feature's sentences written together
            mine = chosen == j
            said[mine] = _sentences(names[j], at[mine], nums, population or {})
        flat[slot == i] = said
    flat[slot == k] = [_last_order(_Row(cols, r)) for r in np.flatnonzero(last)]
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.large_string()))


class ReasonTable:
    """The reasons of many customers, told a block at a time (from several threads), held as
    numbers: each distinct sentence once, numbered as first told, and for each customer the
    numbers of their sentences in order. Many customers' reasons read alike and most
    sentences recur (tens of thousands of distinct sentences among millions of customers),
    so this holds ``4 x top`` bytes a customer where their texts, even each distinct text
    once, would take far more, and no block's texts wait to be merged with the others'.

    Parameters
    ----------
    n : int
        How many customers (rows) the table holds.
    top : int
        The most sentences a customer has (:func:`reason_sentences`' ``top``).
    """

    def __init__(self, n: int, top: int = 3):
        self.said = np.full((n, top), -1, dtype=np.int32)  # -1: no sentence in this slot
        self.sentences = pa.array([], pa.large_string())  # numbered by their place here
        self._lock = threading.Lock()

    def _number(self, words: pa.Array) -> np.ndarray:
        """The numbers of distinct sentences ``words``, new ones numbered after those told.
        Looked up by Arrow, outside Python's lock: a block of a long-lapsed list holds more
        than a hundred thousand distinct sentences (days, amounts), and a dictionary of
        Python strings held the lock as long as the block's own sentences took to write."""
        with self._lock:  # the first thread to tell a sentence numbers it
            number = pc.index_in(words, value_set=self.sentences).fill_null(-1).to_numpy()
            number = number.astype(np.int32)  # a copy to write to
            new = number < 0
            number[new] = len(self.sentences) + np.arange(new.sum(), dtype=np.int32)
            if new.any():
                self.sentences = pa.concat_arrays([self.sentences, words.filter(pa.array(new))])
        return number

    def add(self, rows: np.ndarray, runs: pa.ListArray) -> None:
        """Keep the sentences ``runs`` (:func:`reason_sentences`) of the customers at
        ``rows``."""
        runs = runs.cast(pa.large_list(pa.large_string()))
        offsets = runs.offsets.to_numpy()
        counts = np.diff(offsets)
        if counts.max(initial=0) > self.said.shape[1]:
            raise ValueError(f"a customer has more than {self.said.shape[1]} sentences")
        words = pc.dictionary_encode(runs.flatten())
        number = self._number(words.dictionary)
        of = np.repeat(np.arange(len(runs)), counts)  # the customer of each sentence
        slot = np.arange(len(of)) - (offsets[:-1] - offsets[0])[of]
        self.said[np.asarray(rows)[of], slot] = number[words.indices.to_numpy()]

    def dictionary(self) -> tuple[np.ndarray, pa.Array]:
        """Each customer's reasons as a code into the distinct texts (-1: none told), and
        those texts, in the order the rows first say them; each distinct text is spelled once.
        """
        told = np.flatnonzero(self.said[:, 0] >= 0)
        said = self.said if len(told) == len(self.said) else self.said[told]
        # the customers' runs of sentence numbers, each distinct run numbered as first seen
        run = np.zeros(len(said), dtype=np.int64)
        width = len(self.sentences) + 1
        for j in range(said.shape[1]):
            run = pd.factorize(run * width + (said[:, j].astype(np.int64) + 1))[0]
        first = np.flatnonzero(~pd.Series(run).duplicated().to_numpy())  # run 0, 1, 2, ...
        code = np.full(len(self.said), -1, dtype=np.int32)
        code[told] = run
        separator = pa.scalar(REASON_SEPARATOR, pa.large_string())
        texts = []
        for start in range(0, len(first), _JOIN_ROWS):
            runs = said[first[start : start + _JOIN_ROWS]]
            counts = (runs >= 0).sum(axis=1)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            words = self.sentences.take(pa.array(runs[runs >= 0]))
            listed = pa.LargeListArray.from_arrays(pa.array(offsets), words)
            texts.append(pc.binary_join(listed, separator))
        if not texts:
            return code, pa.array([], pa.large_string())
        return code, pa.concat_arrays(texts)


#: Distinct reasons spelled at a time by :meth:`ReasonTable.dictionary`.
_JOIN_ROWS = 250_000


class _Numbers:
    """The feature columns as float arrays (NaN where missing); None for an absent column."""

    def __init__(self, cols: _Columns, n: int):
        self.cols, self.n, self.done = cols, n, {}

    def get(self, name: str) -> np.ndarray | None:
        if name not in self.done:
            col = self.cols.get(name)
            self.done[name] = (
                None
                if col is None
                else pd.Series(col).astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            )
        return self.done[name]

    def get_or(self, name: str, default: float) -> np.ndarray:
        col = self.get(name)
        return np.full(self.n, default, dtype=float) if col is None else col


def _says(name: str, nums: _Numbers, pop: dict[str, float]) -> np.ndarray:
    """Where :func:`_sentences` has a true sentence for ``name``, for every customer at once
    (column by column)."""
    none = np.zeros(nums.n, dtype=bool)
    v = nums.get(name)
    if v is None:
        return none
    present = ~np.isnan(v)
    with np.errstate(invalid="ignore"):
        group = _GROUP.get(name, name)
        if group == "recency":
            rec = nums.get("recency_days")
            if rec is None:
                return none
            days = nums.get_or("n_order_days", 0.0)
            gap = nums.get_or("gap_mean_days", np.nan)
            has_gap = ~np.isnan(gap) & (gap > 0)
            typical = pop.get("gap_mean_days")
            slower = gap > typical if typical is not None else none
            told = (rec >= gap) | (days == 2) | slower
            return present & ((days == 1) | ~has_gap | told)
        if group in ("spend_change_90d", "trend"):
            return present & (v < 0)
        if group == "returns":
            return present & (nums.get_or("n_returns", 0.0) > 0)
        if group in ("orders", "spent"):
            ref = "n_orders" if group == "orders" else "monetary_total"
            x, typical = nums.get(ref), pop.get(ref)
            if x is None or typical is None:
                return none
            return present & ~np.isnan(x) & (x < typical)
        if _WINDOW.fullmatch(name):
            return present & (v == 0)
        if group == "tenure_days":
            typical = pop.get("tenure_days")
            return none if typical is None else present & (v < typical)
    return none


def _leaf_paths(tree: dict[str, Any]) -> tuple[float, dict[int, dict[int, float]]]:
    """One tree of LightGBM's model dump: its root value, and for each leaf (by its
    ``leaf_index``) what each feature split on along the way from the root changed the value by
    (Saabas). A single-leaf tree has no leaf index: it is leaf 0, with nothing credited."""
    root = tree["tree_structure"]
    if "leaf_value" in root:
        return float(root["leaf_value"]), {0: {}}
    paths: dict[int, dict[int, float]] = {}
    stack: list[tuple[dict, dict[int, float]]] = [(root, {})]
    while stack:
        node, credit = stack.pop()
        if "leaf_value" in node:
            paths[int(node["leaf_index"])] = credit
            continue
        f = int(node["split_feature"])
        for side in ("left_child", "right_child"):
            child = node[side]
            value = child["leaf_value"] if "leaf_value" in child else child["internal_value"]
            mine = dict(credit)
            mine[f] = mine.get(f, 0.0) + value - node["internal_value"]
            stack.append((child, mine))
    return float(root["internal_value"]), paths


def path_contributions(
    booster: lgb.Booster, X: np.ndarray, num_iteration: int, chunk_rows: int = 25_000
) -> np.ndarray:
    """Saabas contributions, the last column the bias.

    What a tree credits each feature with depends only on the leaf a row lands in (the splits on
    the way there), so LightGBM's own predictor finds the leaves (``pred_leaf``: its handling of
    missing values, natively) and each tree adds its leaf's credits, a feature column at a
    time, ``chunk_rows`` rows at a time (LightGBM gives the leaves as floats, 8 bytes a row and
    a tree: small chunks hold little and stay in the processor's cache)."""
    with LIGHTGBM_LOCK:
        trees = booster.dump_model(num_iteration=num_iteration)["tree_info"][:num_iteration]
    n, m = X.shape
    bias = 0.0
    tables: list[list[tuple[int, np.ndarray]]] = []  # per tree: (feature, credit by leaf)
    for tree in trees:
        root, paths = _leaf_paths(tree)
        bias += root
        by_leaf = np.zeros((max(paths) + 1, m + 1))
        for leaf, credit in paths.items():
            for f, v in credit.items():
                by_leaf[leaf, f] += v
        used = np.flatnonzero(np.any(by_leaf != 0, axis=0))
        tables.append([(int(f), by_leaf[:, f].copy()) for f in used])
    out = np.zeros((m + 1, n))  # a feature's column contiguous while trees add to it
    out[m] = bias
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        with LIGHTGBM_LOCK:
            leaves = booster.predict(X[start:stop], num_iteration=num_iteration, pred_leaf=True)
        # a tree's leaves contiguous too: gathers along a column of rows run 7x slower
        leaves = np.ascontiguousarray(np.reshape(leaves, (stop - start, -1)).T, dtype=np.intp)
        for credits, at in zip(tables, leaves, strict=True):
            for f, by_leaf in credits:
                out[f, start:stop] += np.take(by_leaf, at)
    return out.T
