"""CSV exports of the dashboard: a table of named columns -> RFC 4180 bytes (pure).

Why a writer of its own and not ``str(value)``: every export must read back the same in a spreadsheet and in
code. Times are always UTC, written ISO 8601 with ``Z`` in columns whose names say ``_utc``; numbers are written
in full (``repr`` precision, no thousands separators, ``.`` as the decimal mark); a missing value is an empty
cell, never ``0``, ``None`` or ``nan``. A text cell that a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'`` (OWASP's advice against CSV
injection): alarm messages and node notes are text from the bus.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Table:
    """A CSV export: a file name stem, column names (units in the names) and rows of plain values."""

    name: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]] = field(default_factory=list)
    note: str = ""
    """What the rows are (sent as the ``X-BESS-Export-Note`` header, e.g. "means over 60 s buckets")."""


def utc_text(ts: datetime) -> str:
    """A time as the exports write it: ISO 8601 in UTC with ``Z`` (naive times are taken as UTC)."""
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    text = aware.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def cell(value: object) -> str:
    """One value as CSV text (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, datetime):
        return utc_text(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_bytes(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """The header and the rows as UTF-8 CSV (``\\r\\n`` line ends, quoted where needed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} values for {len(columns)} columns")
        writer.writerow([cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def table_bytes(table: Table) -> bytes:
    """:func:`csv_bytes` of a :class:`Table`."""
    return csv_bytes(table.columns, table.rows)


__all__ = ["FORMULA_STARTS", "Table", "cell", "csv_bytes", "table_bytes", "utc_text"]
