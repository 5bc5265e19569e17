"""Features carried from one night to the next: only the customers whose orders changed are
computed afresh.

A nightly ``score`` of a large population (out of core, on DuckDB) keeps what it computed in
the exports folder, under ``.features/``: every scored customer's feature row, and for every
customer their BG/NBD summary (purchase days, first to last, first to the cutoff) and a count
and a hash sum of their orders up to that night's cutoff. The next night
checks each customer's orders up to that cutoff against the kept count and sum
(:func:`~winback.features.order_checks_sql`), in one pass over the orders. A customer whose
orders are the same, with none since and none crossing the edge of a feature's window, has
the features and the summary kept, moved on by the date
(:func:`~winback.features.carried_sql`, :func:`~winback.features.carried_summary_sql`): the
same values as computing them from every order. Every other customer (a new
order, a late or corrected one, a window edge crossed, a new customer) is computed from the
orders. On a typical night that is a few percent of the customers.

The kept features are used only when they were computed by the same winback and DuckDB with
the same feature settings (lookback, windows, category and channel columns, the data's first
order), at a cutoff no later than tonight's; anything else computes every customer afresh and
keeps the result for the next night. The kept folder is swapped in whole, under the exports
folder's lock, after the export is published: a failed night leaves the last good one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from winback import __version__
from winback.engines.dialect import sql_string
from winback.features import FeatureSpec, order_checks_sql

__all__ = [
    "KEPT_DIR",
    "Carry",
    "KeptFeatures",
    "carry_over",
    "find_kept",
    "keep_features",
    "kept_key",
]

log = logging.getLogger(__name__)

#: The folder of the exports folder that holds the features kept for the next night.
KEPT_DIR = ".features"
_CURRENT = "current"
_META = "meta.json"
_CHECKS = "checks.parquet"
_SUMMARIES = "summaries.parquet"
_FEATURES = "features"


@dataclass(frozen=True)
class KeptFeatures:
    """Features kept by an earlier night: their folder and the cutoff they were computed at."""

    folder: Path
    cutoff: datetime
    parts: int  # the customer hash partitions it was computed in, a file each


@dataclass
class Carry:
    """Tonight's split of the customers: ``orders`` (the orders of the customers to compute
    afresh: a table of them, or all orders on a night without kept features), ``checks``
    (``customer_id`` and ``carried``: whether their features carry over), ``rows`` (the kept
    feature rows, by hash partition when tonight's partitions are last night's, else under
    None; empty on a night without kept features), the kept cutoff, and counts."""

    orders: str
    checks: str
    rows: dict[int | None, str]
    since: datetime | None
    n_carried: int
    n_computed: int
    summaries: str | None = None  # the kept BG/NBD summaries (a relation), if any
    work: Path | None = None  # where tonight's summaries are written for the next night

    def keep_summaries(self, engine, table: str) -> None:
        """Write tonight's BG/NBD summaries (``table``, one cutoff) for the next night."""
        if self.work is not None:
            engine.con.execute(
                f"COPY (SELECT customer_id, frequency, recency, T FROM {table}) "
                f"TO {_quoted(self.work / _SUMMARIES)} (FORMAT parquet)"
            )

    def rows_of(self, part: tuple[int, int] | None) -> tuple[str | None, bool]:
        """The kept rows of hash partition ``part`` (None: every customer's): a relation (None
        when there are none) and whether it holds other partitions' rows too."""
        if part is not None and part[0] in self.rows:
            return self.rows[part[0]], False
        if part is not None and self.rows and None not in self.rows:
            return None, False  # kept in the same partitions: this one had none
        return self.rows.get(None), part is not None

    def record(self) -> dict:
        """What the export's manifest says about it."""
        return {
            "carried_from": self.since.isoformat() if self.since else None,
            "customers_carried": self.n_carried,
            "customers_computed": self.n_computed,
        }


def kept_key(spec: FeatureSpec) -> str:
    """What features must agree on to be carried: winback's and DuckDB's versions and the
    feature settings."""
    import duckdb

    settings = asdict(spec)
    settings["data_start"] = spec.data_start.isoformat() if spec.data_start else None
    settings["windows_days"] = list(spec.windows_days)
    return json.dumps(
        {"winback": __version__, "duckdb": duckdb.__version__, "features": settings},
        sort_keys=True,
    )


def find_kept(folder: Path, key: str, cutoff: datetime) -> KeptFeatures | None:
    """The features kept in ``folder`` (an exports folder's :data:`KEPT_DIR`), if computed
    with ``key`` at a cutoff at or before ``cutoff``; else None, with the reason logged."""
    current = folder / _CURRENT
    meta = _meta(current)
    if meta is None:
        return None
    kept_at = datetime.fromisoformat(meta["cutoff"])
    if meta.get("key") != key:
        log.info("features: the kept ones were computed with other settings; computing all")
        return None
    if kept_at > cutoff:
        log.info("features: the kept ones are of a later date (%s); computing all", kept_at)
        return None
    target = current.resolve()
    if not all((target / f).exists() for f in (_CHECKS, _SUMMARIES, _FEATURES)):
        return None
    return KeptFeatures(target, kept_at, int(meta.get("parts", 0)))


@contextmanager
def carry_over(
    engine,
    orders: str,
    cutoff: datetime,
    spec: FeatureSpec,
    kept: KeptFeatures | None,
    work: Path,
    parts: int,
) -> Iterator[Carry]:
    """Split tonight's customers into those carried from ``kept`` and those to compute (all
    of them without ``kept``), and write every customer's order count and hash sum up to
    ``cutoff`` to ``work`` for the next night. Tonight runs in ``parts`` customer hash
    partitions: when the kept features were computed in as many, each partition reads only
    its own file. DuckDB only; the tables go on leaving."""
    con = engine.con
    stamp = time.time_ns()
    checks, changed = f"_checks_{stamp}", f"_changed_orders_{stamp}"
    since = kept.cutoff if kept else cutoff
    if kept is not None:  # linked into tonight's folder: another run may replace the kept ones
        kept = _linked(kept, work / "kept")
    sql = order_checks_sql(orders, cutoff, since, spec, engine.dialect)
    if kept is None:
        same = "FALSE"
        source = f"({sql}) AS c"
    else:
        kept_checks = _quoted(kept.folder / _CHECKS)
        same = (
            "coalesce(p.n_orders = c.n_since AND p.orders_hash = c.sum_since "
            "AND c.n_now = c.n_since AND NOT c.crossing, FALSE)"
        )
        source = f"({sql}) AS c LEFT JOIN read_parquet({kept_checks}) AS p USING (customer_id)"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {checks} AS "
        f"SELECT customer_id, c.n_now, c.sum_now, {same} AS carried FROM {source}"
    )
    rows: dict[int | None, str] = {}
    try:
        con.execute(
            f"COPY (SELECT customer_id, n_now AS n_orders, sum_now AS orders_hash "
            f"FROM {checks}) TO {_quoted(work / _CHECKS)} (FORMAT parquet)"
        )
        n_carried, n_all = con.execute(
            f"SELECT count(*) FILTER (WHERE carried), count(*) FROM {checks}"
        ).fetchall()[0]
        if kept is not None:  # their orders set apart once, not found again in every partition
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {changed} AS SELECT o.* FROM {orders} o "
                f"SEMI JOIN (SELECT customer_id FROM {checks} WHERE NOT carried) AS c "
                "ON c.customer_id = o.customer_id"
            )
            import pyarrow.dataset as ds

            files = sorted((kept.folder / _FEATURES).glob("part-*.arrow"))
            if kept.parts == parts:  # the same partitions: part i's file holds partition i
                named = {int(f.stem.split("-")[1]): [f] for f in files}
            else:
                named = {None: files}
            for i, found in named.items():
                rows[i] = f"_kept_rows_{stamp}_{'all' if i is None else i}"
                con.register(rows[i], ds.dataset([str(f) for f in found], format="ipc"))
        yield Carry(
            orders=changed if kept is not None else orders,
            checks=checks,
            rows=rows,
            since=kept.cutoff if kept else None,
            n_carried=int(n_carried),
            n_computed=int(n_all - n_carried),
            summaries=f"read_parquet({_quoted(kept.folder / _SUMMARIES)})" if kept else None,
            work=work,
        )
    finally:
        for name in rows.values():
            con.unregister(name)
        con.execute(f"DROP TABLE IF EXISTS {changed}")
        con.execute(f"DROP TABLE IF EXISTS {checks}")


def keep_features(work: Path, folder: Path, key: str, cutoff: datetime, parts: int) -> Path | None:
    """Keep tonight's features (``work``: the feature parts under ``features/``, one file per
    customer hash partition of ``parts``, the order checks and BG/NBD's summaries) in
    ``folder`` for the next night, swapped in whole; features kept at a later cutoff stay.
    Call under the exports folder's lock. Returns the kept folder."""
    current = folder / _CURRENT
    meta = _meta(current)
    kept_at = datetime.fromisoformat(meta["cutoff"]) if meta else None
    if kept_at is not None and kept_at > cutoff:
        log.info("features: kept ones of a later date (%s) stay", kept_at)
        return None
    state = folder / f"state-{time.time_ns()}-{os.getpid()}"
    state.mkdir()
    os.replace(work / _FEATURES, state / _FEATURES)
    os.replace(work / _CHECKS, state / _CHECKS)
    os.replace(work / _SUMMARIES, state / _SUMMARIES)
    meta = {"key": key, "cutoff": cutoff.isoformat(), "parts": int(parts)}
    (state / _META).write_text(json.dumps(meta))
    link = folder / f".{_CURRENT}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(state.name, link)
    os.replace(link, current)  # the one atomic step
    _cleanup(folder, keep=state.name)
    return state


def _meta(kept: Path) -> dict | None:
    """The kept folder's meta.json (key, cutoff, partitions); None when there is none whole."""
    try:
        meta = json.loads((kept / _META).read_text())
        datetime.fromisoformat(meta["cutoff"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _linked(kept: KeptFeatures, to: Path) -> KeptFeatures:
    """``kept`` with its files hard-linked under ``to`` (the same file system), so they stay
    readable whatever another run does to the kept folder; as it is where links are refused."""
    try:
        (to / _FEATURES).mkdir(parents=True)
        files = [kept.folder / _CHECKS, kept.folder / _SUMMARIES]
        for f in [*files, *(kept.folder / _FEATURES).glob("*.arrow")]:
            os.link(f, to / f.relative_to(kept.folder))
    except OSError:
        shutil.rmtree(to, ignore_errors=True)
        return kept
    return replace(kept, folder=to)


def work_folder(folder: Path) -> Path:
    """A fresh folder in ``folder`` for tonight's features (the same file system as the kept
    ones, so keeping them is a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    work = folder / f"work-{os.getpid()}-{time.time_ns()}"
    work.mkdir()
    return work


def _cleanup(folder: Path, keep: str) -> None:
    """Remove kept folders no longer current and work folders of runs that ended."""
    for p in folder.iterdir():
        stale = p.name.startswith("state-") and p.name != keep
        ended = p.name.startswith("work-") and not _alive(int(p.name.split("-")[1]))
        if stale or ended:
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _quoted(path: Path) -> str:
    return sql_string(str(path))
