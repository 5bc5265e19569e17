"""Atomic exports of the win-back lists: all files or none, never a mix.

``DIR/<as-of>`` is a symbolic link to an immutable folder under ``DIR/.versions/``. A run
writes every file into a fresh folder there, the manifest last, and then swaps the link with one
atomic rename. A crash (even ``kill -9``) at any moment leaves the link on the previous complete
export or on the new complete one; leftovers of crashed runs are removed by the next run. A lock
(``flock`` on ``DIR/.winback.lock``, released by the kernel when a process dies) keeps two runs
from writing the same ``DIR`` at once.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from winback.atomic import sha256_file
from winback.errors import WinbackError

__all__ = [
    "export_lists",
    "export_lock",
    "read_manifest",
    "list_exports",
    "previous_export",
    "write_csv",
    "neutralize_csv",
    "write_parquet",
    "plain_columns",
    "spelled_texts",
    "list_file_rows",
    "read_lists",
    "read_list_rows",
    "list_parquet_files",
    "for_people",
    "readme_text",
    "CSV_DECIMALS",
]

_VERSIONS = ".versions"


class Rows(Protocol):
    """What the writers read of a table: a frame, or a list kept as rows of the score table
    (:class:`winback.scoring.CampaignList`), whose rows are read a block at a time."""

    columns: Any
    shape: tuple[int, int]

    def __len__(self) -> int: ...

    def __getitem__(self, column: str) -> pd.Series: ...

    def take(self, at: np.ndarray) -> pd.DataFrame: ...


@contextmanager
def export_lock(out_dir: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the export lock of ``out_dir``; wait up to ``wait_seconds`` for another run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ".winback.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise WinbackError(
                        f"Another winback run (pid {holder}) is writing {out_dir}; wait for it "
                        "to finish, or pass --wait SECONDS to queue behind it."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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


def write_csv(
    frame: Rows, path: Path, rows: np.ndarray | None = None, people: bool = False
) -> None:
    """UTF-8 CSV with spreadsheet formulas neutralised, every text cell quoted (a line break or
    CR inside an id stays inside its cell, so any CSV reader finds the rows written) and Unix
    line ends. ``rows``: only the rows at these positions, in this order, ranked 1..n (a list's
    file, see :func:`list_file_rows`); ``people``: the numbers rounded by :func:`for_people`.

    The bytes are pandas' ``to_csv`` with ``QUOTE_NONNUMERIC`` (text quoted, quotes doubled,
    numbers as Python writes them, missing cells ``""``), built column by column in Arrow, a
    block of rows at a time: for a list of a million customers that is seconds faster than
    pandas' row-by-row writer, and no copy of the whole frame is made. A frame with a column
    type this does not know is written by pandas itself."""
    named = len(frame.columns) > 0 and all(isinstance(c, str) for c in frame.columns)
    # the column types, from no rows of a list (its columns are read from the score table)
    probe = frame if isinstance(frame, pd.DataFrame) else frame.take(np.empty(0, dtype=np.intp))
    if not named or not all(_csv_known(probe[c]) for c in probe.columns):
        whole = next(_blocks(frame, rows, len(frame) if rows is None else len(rows)))
        safe = neutralize_csv(for_people(whole) if people else whole)
        safe.to_csv(
            path, index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC, encoding="utf-8"
        )
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.large_string()
    comma, newline, none = (pa.scalar(t, text) for t in (",", "\n", ""))
    header = ",".join('"' + str(c).replace('"', '""') + '"' for c in frame.columns) + "\n"
    with open(path, "wb") as f:
        f.write(header.encode("utf-8"))
        for block in _blocks(frame, rows, CSV_BLOCK_ROWS):  # a block's text in memory at a time
            if len(block) == 0:
                break
            safe = neutralize_csv(for_people(block) if people else block)
            lines = pc.binary_join_element_wise(*(_csv_cells(safe[c]) for c in safe), comma)
            lines = pc.binary_join_element_wise(lines, newline, none)  # each line ends in \n
            offsets, data = lines.buffers()[1], lines.buffers()[2]
            at = lines.offset
            ends = np.frombuffer(offsets, dtype=np.int64)[at : at + len(lines) + 1]
            f.write(memoryview(data)[int(ends[0]) : int(ends[-1])])


def _blocks(frame: Rows, rows: np.ndarray | None, size: int) -> Iterator[pd.DataFrame]:
    """``frame``, or its rows at the positions ``rows`` (ranked 1..n in that order), ``size``
    rows at a time; one empty block when there are none, so a file still gets its columns.
    A categorical column with more categories than the block has rows, and an Arrow
    dictionary of texts (the reasons, nearly one text a customer), comes spelled out: its
    cells are then written once each, not every category for every block."""
    n = len(frame) if rows is None else len(rows)
    for start in range(0, max(n, 1), max(size, 1)):
        if rows is None:
            if isinstance(frame, pd.DataFrame):
                yield _few_categories(frame.iloc[start : start + size])
            else:  # rows of the score table, read a block at a time
                yield _few_categories(frame.take(np.arange(start, min(start + size, n))))
            continue
        block = frame.take(rows[start : start + size]).reset_index(drop=True)
        if "rank" in block.columns:
            block["rank"] = np.arange(start + 1, start + len(block) + 1, dtype=np.int64)
        yield _few_categories(block)


def _few_categories(block: pd.DataFrame) -> pd.DataFrame:
    """``block`` with each categorical column that has more categories than rows, and each
    Arrow dictionary of texts (:func:`spelled_texts`), spelled out."""
    many = [
        c
        for c, s in block.items()
        if (isinstance(s.dtype, pd.CategoricalDtype) and len(s.cat.categories) > len(block))
        or _text_dictionary(s.dtype)
    ]
    return block.assign(**{c: _spelled_out(block[c]) for c in many}) if many else block


def _text_dictionary(dtype) -> bool:
    """An Arrow dictionary of texts (the score table's reasons: a code a customer)."""
    import pyarrow as pa

    return (
        isinstance(dtype, pd.ArrowDtype)
        and pa.types.is_dictionary(dtype.pyarrow_dtype)
        and pa.types.is_large_string(dtype.pyarrow_dtype.value_type)
    )


def spelled_texts(data):
    """A column (Series) or a frame with its Arrow dictionaries of texts spelled out as the
    files hold them (``string``); anything else as it is."""
    if isinstance(data, pd.Series):
        return _spelled_out(data) if _text_dictionary(data.dtype) else data
    codes = [c for c, s in data.items() if _text_dictionary(s.dtype)]
    return data.assign(**{c: _spelled_out(data[c]) for c in codes}) if codes else data


#: Rows of a CSV file built in memory at a time.
CSV_BLOCK_ROWS = 100_000


def _csv_known(s: pd.Series) -> bool:
    """Whether :func:`_csv_cells` writes this column (else pandas writes the file)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _csv_known(pd.Series(s.cat.categories))
    if _text_dictionary(s.dtype):  # spelled out in each block (_few_categories)
        return True
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return True
    if dtype == np.float64 or _is_date(dtype):
        return True
    if pd.api.types.is_string_dtype(dtype):  # objects: text only; numbers are pandas' to quote
        return dtype.kind != "O" or pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")
    return False


def _csv_cells(s: pd.Series):
    """One column's CSV cells as :func:`write_csv` writes them (an Arrow large_string array
    without nulls), for a column :func:`_csv_known` accepts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.large_string()
    empty = pa.scalar('""', text)
    if isinstance(s.dtype, pd.CategoricalDtype):  # each category written once
        names = _csv_cells(pd.Series(s.cat.categories))
        codes = pa.array(s.cat.codes.to_numpy(), mask=s.cat.codes.to_numpy() < 0)
        return pc.fill_null(pc.take(names, codes), empty)
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        flags = pa.array(s, from_pandas=True, type=pa.bool_())
        words = pc.if_else(flags, pa.scalar("True", text), pa.scalar("False", text))
        return pc.fill_null(words, empty)
    if pd.api.types.is_integer_dtype(dtype):
        return pc.fill_null(pc.cast(pa.array(s, from_pandas=True), text), empty)
    if dtype == np.float64:
        return _csv_floats(s.to_numpy())
    if _is_date(dtype):  # quoted YYYY-MM-DD, as pandas writes a date
        dates = pc.cast(pa.array(s.array), text)
        return pc.fill_null(
            pc.binary_join_element_wise(pa.scalar('"', text), dates, pa.scalar('"', text),
                                        pa.scalar("", text)), empty)  # fmt: skip
    if pd.api.types.is_string_dtype(dtype):
        plain = dtype.kind == "O"
        values = pa.array(s.to_numpy(dtype=object) if plain else s, from_pandas=True)
        values = pc.cast(values, text)
        quote = pa.scalar('"', text)
        quoted = pc.binary_join_element_wise(
            quote, pc.replace_substring(values, '"', '""'), quote, pa.scalar("", text)
        )
        return pc.fill_null(quoted, empty)
    raise TypeError(f"no CSV cells for {dtype}")  # _csv_known said no


def _is_date(dtype) -> bool:
    """An Arrow date column (the score table's next-order dates)."""
    import pyarrow as pa

    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_date32(dtype.pyarrow_dtype)


def _csv_floats(x: np.ndarray):
    """Floats as Python's ``repr`` writes them (NaN: ``""``): Arrow's shortest digits, with the
    ``.0`` Python keeps on whole numbers, and ``repr`` itself where the two switch to exponents
    at different sizes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.large_string()
    out = pc.cast(pa.array(x, from_pandas=True), text)
    with np.errstate(invalid="ignore"):
        odd = ~np.isnan(x) & ~((x == 0) | ((np.abs(x) >= 1e-4) & (np.abs(x) < 1e9)))
        # whole numbers short of 1e9: Arrow writes them without a point or an exponent
        bare = ~odd & np.isfinite(x) & (x == np.trunc(x))
    whole = pc.binary_join_element_wise(out, pa.scalar(".0", text), pa.scalar("", text))
    out = pc.if_else(pa.array(bare), whole, out)
    if odd.any():
        cells = np.array(out.to_pylist(), dtype=object)
        cells[odd] = [repr(v) for v in x[odd].tolist()]
        out = pa.array(cells, type=text)
    return pc.fill_null(out, pa.scalar('""', text))


def plain_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its categorical columns (the score table keeps repeated texts as
    categories) back as columns of their categories' dtype, and its Arrow dictionaries of
    texts as ``string``, as the export files hold them."""
    cats = [
        c
        for c, s in frame.items()
        if isinstance(s.dtype, pd.CategoricalDtype) or _text_dictionary(s.dtype)
    ]
    return frame.assign(**{c: _spelled_out(frame[c]) for c in cats}) if cats else frame


def _spelled_out(s: pd.Series) -> pd.Series:
    """A categorical column as its categories' dtype (an Arrow dictionary of texts as
    ``string``). Texts are taken from the categories by code in Arrow (four times faster than
    pandas' ``astype`` on a million rows)."""
    if _text_dictionary(s.dtype):
        import pyarrow as pa

        texts = pa.array(s.array).cast(pa.large_string())
        return pd.Series(pd.array(texts, dtype="string"), index=s.index, name=s.name)
    dtype = s.cat.categories.dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        return s.astype(dtype)
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = s.cat.codes.to_numpy()
    names = pa.array(s.cat.categories, from_pandas=True)
    texts = pc.take(names, pa.array(codes, mask=codes < 0))
    return pd.Series(pd.array(texts, dtype=dtype), index=s.index, name=s.name)


#: Decimals of the numbers in the CSV list files, which people read and CRMs import; the Parquet
#: files keep full precision.
CSV_DECIMALS = {
    "p_churn": 3,
    "p_no_order_30d": 3,
    "p_no_order_60d": 3,
    "p_no_order_90d": 3,
    "value": 2,
    "expected_value": 2,
    "value_at_risk": 2,
    "uplift": 4,
    "expected_gain": 2,
}


def for_people(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the numbers of :data:`CSV_DECIMALS` rounded (the CSV's copy)."""
    rounded = {c: frame[c].astype(float).round(d) for c, d in CSV_DECIMALS.items() if c in frame}
    return frame.assign(**rounded) if rounded else frame


def list_file_rows(lists: dict[str, Rows]) -> dict[str, tuple[Rows, np.ndarray]]:
    """The files of the lists, each as its list and the positions of its rows in it:
    ``<list>`` holds the customers to contact (the treatment group) and ``<list>_control`` the
    control group, which must not be contacted, so that a file uploaded as it is never mails
    the control group. Each file is ranked 1..n in list order (by the writers, a block at a
    time: no list is copied whole)."""
    files = {}
    for name, frame in lists.items():
        control = (frame["group"] == "control").to_numpy(dtype=bool)
        files[name] = (frame, np.flatnonzero(~control))
        files[f"{name}_control"] = (frame, np.flatnonzero(control))
    return files


def list_parquet_files(export_dir: Path) -> dict[str, list[Path]]:
    """The Parquet files of each list of an export: its treatment file, then its control file
    (as :func:`list_file_rows` split them); lists without a file are left out."""
    found = {}
    for name in ("at_risk", "lapsed"):
        files = [
            f
            for f in (export_dir / f"{name}.parquet", export_dir / f"{name}_control.parquet")
            if f.is_file()
        ]
        if files:
            found[name] = files
    return found


def read_lists(export_dir: Path, columns: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The lists of an export, each with its treatment and control rows together (as
    :func:`list_file_rows` split them), the list's own order kept. Lists without a file are left
    out."""
    return {
        name: pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
        for name, files in list_parquet_files(export_dir).items()
    }


def read_list_rows(
    export_dir: Path, name: str, rows: np.ndarray, columns: list[str]
) -> pd.DataFrame:
    """The ``columns`` of the list ``name`` of an export at the positions ``rows`` of
    :func:`read_lists`' frame of it, in that order (the same values and types as that frame's
    rows), read a row group at a time: no more of the list is held than the rows asked for."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = np.argsort(rows, kind="stable")
    wanted = np.asarray(rows)[order]
    found, start = [], 0
    for f in list_parquet_files(export_dir)[name]:  # in the order read_lists puts them
        source = pq.ParquetFile(f)
        found.append(source.schema_arrow.empty_table().select(columns))  # a file of no rows
        for batch in source.iter_batches(columns=columns):
            lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
            found.append(pa.Table.from_batches([batch]).take(pa.array(wanted[lo:hi] - start)))
            start += batch.num_rows
    table = pa.concat_tables(found, promote_options="default")
    return table.take(pa.array(np.argsort(order))).to_pandas()


def readme_text(column_docs: dict[str, str], manifest: dict[str, Any]) -> str:
    """The README.txt of an export: what each file holds, what every column of the list files
    means, and what the list sizing assumed (from the manifest's ``sizing``)."""
    sizing = manifest.get("sizing", {})
    currency = sizing.get("currency") or "not stated (set campaigns.currency)"
    lines = [
        f"winback export as of {manifest.get('as_of', '?')[:10]}, scored by the model "
        f"{manifest.get('model_version', '?')} over a {manifest.get('horizon_days', '?')}-day "
        "horizon.",
        "",
        "FILES",
        "  at_risk.csv, lapsed.csv    the customers to contact (treatment group), riskiest first"
        + (" (ranked by uplift: most profitable first)" if _by_uplift(manifest) else ""),
        "  at_risk_control.csv,       the control group: DO NOT CONTACT. Kept out of the campaign "
        "at random,",
        "  lapsed_control.csv         they measure it later ('winback measure' reads them).",
        "  *.parquet                  the same rows at full precision; scores.parquet holds every "
        "scored customer",
        "  delta.csv                  who entered and who left each list since the previous export",
        "  profit_curve.csv, .png     cumulative expected gain as the lists grow, best first",
        "  manifest.json              checksums, row counts, the model, warnings, sizing",
        "",
        "CSV FORMAT",
        "  UTF-8, comma-separated, the first line is the header, every text cell in double quotes "
        "(ids stay text:",
        "  import customer_id as text to keep leading zeros), one row per customer. Numbers are "
        "rounded for reading:",
        "  "
        + ", ".join(f"{c} to {d} decimals" for c, d in CSV_DECIMALS.items())
        + ". Amounts are in "
        + currency
        + ".",
        "",
        "COLUMNS OF THE LIST FILES",
    ]
    width = max(len(c) for c in column_docs) + 2
    lines += [f"  {c:<{width}}{doc}" for c, doc in column_docs.items()]
    lines += ["", "HOW THE LISTS WERE SIZED (assumptions, not measurements)"]
    for key in ("rule", "value", "min_p_churn", "recent_days", "method"):
        if key in sizing:
            lines.append(f"  {key}: {sizing[key]}")
    for name, g in sizing.get("groups", {}).items():
        lines.append(
            f"  group {name} ({g['list']}): save_rate {g['save_rate']} ({g['save_rate_source']}),"
            f" contact_cost {g['contact_cost']}, offer_cost {g['offer_cost']}"
            + (f", capacity {g['capacity']}" if g.get("capacity") is not None else "")
        )
    ranking = manifest.get("ranking")
    if ranking:
        lines += ["", "HOW THE LISTS WERE RANKED"]
        lines.append(
            f"  by {ranking['by']} (campaigns.rank_by {ranking['requested']}): {ranking['why']}"
        )
        if _by_uplift(manifest):
            lines.append(
                "  expected_gain = uplift x value - contact_cost - offer_cost x (1 - p_churn + "
                "uplift), and the save rates above are not used to rank or size"
            )
    return "\n".join(lines) + "\n"


def _by_uplift(manifest: dict[str, Any]) -> bool:
    return (manifest.get("ranking") or {}).get("by") == "uplift"


#: Rows converted and written at a time by :func:`write_parquet` (one Parquet row group).
PARQUET_SLICE_ROWS = 1 << 18


def write_parquet(frame: Rows, path: Path, rows: np.ndarray | None = None) -> None:
    """``frame`` to Parquet with :func:`plain_columns`, a row group at a time, so a score table
    of millions of customers never needs its texts spelled out in memory all at once.
    ``rows``: only the rows at these positions, in this order, ranked 1..n (a list's file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for block in _blocks(frame, rows, PARQUET_SLICE_ROWS):
            part = plain_columns(block)
            table = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            del block, part, table
            pa.default_memory_pool().release_unused()
    finally:
        if writer is not None:
            writer.close()


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cleanup(out_dir: Path, keep: set[str]) -> None:
    """Remove version folders that no link points to (finished or crashed runs)."""
    versions = out_dir / _VERSIONS
    if not versions.is_dir():
        return
    linked = {os.readlink(p).split("/")[-1] for p in out_dir.iterdir() if p.is_symlink()} | keep
    for v in versions.iterdir():
        if v.name not in linked:
            shutil.rmtree(v, ignore_errors=True)
    for stray in out_dir.glob(".*.link-*"):
        stray.unlink(missing_ok=True)


def export_lists(
    out_dir: str | Path,
    as_of_key: str,
    lists: dict[str, Rows],
    scores: pd.DataFrame,
    manifest: dict[str, Any],
    wait_seconds: float = 0.0,
    extras: dict[str, Callable[[Path], None]] | None = None,
    tables: dict[str, Rows] | None = None,
) -> Path:
    """Write ``<list>.csv`` and ``.parquet`` (the customers to contact) and
    ``<list>_control.csv`` and ``.parquet`` (the control group) for each list (see
    :func:`list_file_rows`; the CSVs rounded by :func:`for_people`), ``scores.parquet`` and
    ``manifest.json`` (last) to ``out_dir/as_of_key``, atomically. Returns that path.

    ``tables`` maps more CSV file names to tables (a delta, a profit curve); ``extras`` maps
    other file names to functions that write them (a plot). The manifest gets ``files`` (name
    -> sha256, and rows for every table) added to the given fields.
    """
    out = Path(out_dir)
    link = out / as_of_key
    with export_lock(out, wait_seconds):
        if link.exists() and not link.is_symlink():
            raise WinbackError(
                f"{link} is a plain folder, not a winback export; move it away and rerun."
            )
        versions = out / _VERSIONS
        versions.mkdir(exist_ok=True)
        _cleanup(out, keep=set())
        stamp = f"{as_of_key}-{time.time_ns()}-{os.getpid()}"
        folder = versions / stamp
        folder.mkdir()
        # the tables' files are written two at a time (Arrow and the Parquet writer do most
        # of their work outside Python's lock), the largest first, so that no thread is left
        # writing a large one alone at the end; plots and texts on this thread
        # (how to write it, its rows, its columns, its kind)
        tasks: dict[str, tuple[Callable[[Path], None], int, int, str]] = {}
        for name, (frame, rows) in list_file_rows(lists).items():
            shape = (len(rows), frame.shape[1])
            people = partial(write_csv, frame, rows=rows, people=True)
            tasks[f"{name}.csv"] = (people, *shape, "csv")
            tasks[f"{name}.parquet"] = (partial(write_parquet, frame, rows=rows), *shape, "parquet")
        for name, frame in (tables or {}).items():
            tasks[name] = (partial(write_csv, frame), *frame.shape, "csv")
        tasks["scores.parquet"] = (partial(write_parquet, scores), *scores.shape, "parquet")
        done: dict[str, Future] = {}
        with ThreadPoolExecutor(max_workers=EXPORT_THREADS) as pool:
            for name in sorted(tasks, key=lambda n: -_write_cost(*tasks[n][1:])):
                write, n_rows = tasks[name][:2]
                done[name] = pool.submit(_table_file, write, folder / name, n_rows)
            written = {}
            for name, write in (extras or {}).items():
                write(folder / name)
                written[name] = {"sha256": sha256_file(folder / name)}
            # the manifest lists the files in the order they always came in
            files: dict[str, dict[str, Any]] = {
                name: done[name].result() for name in tasks if name != "scores.parquet"
            }
            files |= written
            files["scores.parquet"] = done["scores.parquet"].result()
        doc = {**manifest, "files": files}
        (folder / "manifest.json").write_text(json.dumps(doc, indent=2, default=str))
        for f in folder.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        _sync_dir(folder)
        tmp_link = out / f".{as_of_key}.link-{os.getpid()}"
        tmp_link.unlink(missing_ok=True)
        os.symlink(f"{_VERSIONS}/{stamp}", tmp_link)
        os.replace(tmp_link, link)  # the one atomic step
        _sync_dir(out)
        _cleanup(out, keep={stamp})
    return link


#: Files of an export written at once.
EXPORT_THREADS = 2


def _write_cost(rows: int, columns: int, kind: str) -> int:
    """About how long a table's file takes to write, to start the longest first: its cells,
    a CSV cell counting twice a Parquet one (each is formatted as text)."""
    return rows * columns * (2 if kind == "csv" else 1)


def _table_file(write: Callable[[Path], None], path: Path, rows: int) -> dict[str, Any]:
    write(path)
    return {"rows": rows, "sha256": sha256_file(path)}


def read_manifest(export_dir: str | Path) -> dict[str, Any]:
    """The manifest of an export, after checking every file against its sha256."""
    d = Path(export_dir)
    path = d / "manifest.json"
    if not path.is_file():
        raise WinbackError(f"{d} has no manifest.json: not a complete winback export.")
    doc = json.loads(path.read_text())
    for name, meta in doc.get("files", {}).items():
        if sha256_file(d / name) != meta["sha256"]:
            raise WinbackError(f"{d / name} does not match the manifest's sha256.")
    return doc


def list_exports(out_dir: str | Path) -> list[Path]:
    """The complete exports in ``out_dir`` (links named by an as-of date, to a folder with a
    manifest), oldest first. Other links there (a user's ``latest``) are not exports."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if not p.is_symlink() or not (p / "manifest.json").is_file():
            continue
        try:
            datetime.fromisoformat(p.name)
        except ValueError:
            continue
        found.append(p)
    return sorted(found)


def previous_export(out_dir: str | Path, as_of_key: str) -> Path | None:
    """The latest complete export in ``out_dir`` dated before ``as_of_key``, if any."""
    earlier = [p for p in list_exports(out_dir) if p.name < as_of_key]
    return earlier[-1] if earlier else None
