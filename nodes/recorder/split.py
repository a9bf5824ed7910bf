"""Means that never mix currencies (pure): the rows of a downsampled query of prices or plans, one per currency.

A zone's prices are in one currency until the operator changes the source or its ``BESS_MARKET_CURRENCY``; a
bucket around that moment then holds points in two currencies, and one mean over both would be a number in no
currency at all. So the store asks for the currencies in the range first (:func:`nodes.recorder.influxql.
split_values`): with one, every mean row is labelled with it (:func:`label`); with several, it asks for each
currency's means on their own and :func:`merge` interleaves them, so such a bucket is two rows with the same
time, each naming its currency. Rows here are a query's rows with the time as epoch microseconds, before
:func:`nodes.recorder.store._result` shapes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def values(rows: Iterable[list[Any]]) -> list[str]:
    """The distinct non-empty values of a ``SELECT DISTINCT`` answer (rows of ``[time, value]``), sorted."""
    return sorted({str(row[1]) for row in rows if row[1] not in (None, "")})


def label(rows: list[list[Any]], value: str | None) -> list[list[Any]]:
    """Every row with ``value`` (the range's one currency) appended; None when the range names none."""
    return [[*row, value] for row in rows]


def merge(parts: Mapping[str, list[list[Any]]]) -> list[list[Any]]:
    """The rows of each currency's means, labelled and in time order (one currency after another within a
    bucket, alphabetically), so a bucket holding two currencies is two rows."""
    rows = [[*row, value] for value, part in parts.items() for row in part]
    rows.sort(key=lambda row: (int(row[0]), str(row[-1])))
    return rows


__all__ = ["label", "merge", "values"]
