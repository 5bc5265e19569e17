"""What both engines decide the same way before reading a CSV export: its text encoding, whether
it is empty, and which delimiter separates its columns."""

from __future__ import annotations

import atexit
import codecs
import re
import shutil
import tempfile
from pathlib import Path

from winback.config import OrdersConfig
from winback.errors import DataError

__all__ = [
    "NATIVE_ENCODINGS",
    "SPARK_ENCODINGS",
    "empty_file",
    "encoding_name",
    "not_utf8",
    "not_utf8_at",
    "settle_delimiter",
    "utf8_copy",
]

#: Encodings the DuckDB CSV reader decodes itself, by the name it knows them under.
NATIVE_ENCODINGS = {"utf-8": "utf-8", "iso8859-1": "latin-1", "utf-16": "utf-16"}


#: Encodings Spark's CSV reader decodes itself, by the name it knows them under.
SPARK_ENCODINGS = {
    "utf-8": "utf-8",
    "iso8859-1": "iso-8859-1",
    "ascii": "us-ascii",
    "utf-16": "utf-16",
    "utf-16-be": "utf-16be",
    "utf-16-le": "utf-16le",
    "utf-32": "utf-32",
}


def encoding_name(encoding: str) -> str:
    """Python's canonical name of an encoding (``latin1`` and ``ISO-8859-1`` are one)."""
    return codecs.lookup(encoding).name


def utf8_copy(path: Path, encoding: str) -> Path:
    """A UTF-8 copy of a text file in another encoding, in a temporary folder removed when the
    process ends; streamed, so the file never sits in memory whole."""
    folder = Path(tempfile.mkdtemp(prefix="winback-csv-"))
    atexit.register(shutil.rmtree, folder, True)
    copy = folder / f"{path.stem}.utf8{path.suffix}"
    try:
        with (
            path.open(encoding=encoding, newline="") as src,
            copy.open("w", encoding="utf-8", newline="") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: byte 0x{exc.object[exc.start]:02x} is not {encoding} text; set "
            "orders.csv.encoding to the file's encoding (e.g. utf-8, latin-1, cp1252)."
        ) from None
    return copy


def empty_file(path: str | Path, blank_lines: bool = False) -> DataError:
    """The error for a file with nothing to read (no bytes, or only blank lines)."""
    what = "holds only blank lines" if blank_lines else "is empty (0 bytes)"
    return DataError(f"{path}: the file {what}; point orders.source at the order history.")


def not_utf8(path: str | Path, message: str) -> DataError | None:
    """The clear error for a reader's complaint that a file is not UTF-8, or None if the
    complaint is about something else."""
    text = message.lower()
    if "utf-8" not in text and "utf8" not in text and "unicode" not in text:
        return None
    line = re.search(r"line:?\s*(\d+)", message, re.IGNORECASE)
    where = f" (line {line.group(1)})" if line else ""
    return not_utf8_at(path, where)


def not_utf8_at(path: str | Path, where: str = "") -> DataError:
    """The error for a file that is not UTF-8 text (``where``: e.g. `` (line 2)``)."""
    return DataError(
        f"{path} is not UTF-8 text{where}; set orders.csv.encoding to its encoding "
        "(e.g. --set orders.csv.encoding=latin-1, or cp1252 for a Windows export)."
    )


def settle_delimiter(first_line: str, guessed: str, cfg: OrdersConfig) -> str:
    """The delimiter to read a CSV with, given its first line and a sniffer's guess (``""``
    when it found a single column).

    Text aligned with runs of blanks reads as ``whitespace``: a single column whose name holds
    blanks, or a tab or space guess under which the mapped column names are not all found while
    splitting on any run of blanks finds them (a header such as ``id<TAB>date  amount``).
    """
    tokens = first_line.split()
    if len(tokens) < 2:
        return guessed or ","
    if not guessed:
        return "whitespace"
    if cfg.csv.header and guessed in ("\t", " "):
        cols = cfg.columns
        wanted = [cols.customer_id, cols.order_ts]
        wanted += [cols.amount] if cols.amount is not None else [cols.quantity, cols.unit_price]
        names = [n.strip() for n in first_line.split(guessed)]
        if not all(w in names for w in wanted) and all(w in tokens for w in wanted):
            return "whitespace"
    return guessed
