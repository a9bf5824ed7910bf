"""HistoryQuery -> InfluxQL, built so that no part of a request can change the query's shape (pure).

* Identifiers (measurement, tag key, field names) come from :data:`nodes.recorder.table.SERIES` by ``kind``,
  never from the request, and are double-quoted anyway.
* The one tag value (``battery`` or ``zone``) must be an id (``[a-z0-9_-]{1,64}``) **and** is written as an
  escaped single-quoted string literal: the check alone would be enough, the quoting keeps it safe if the check
  is ever loosened.
* Times are formatted from ``datetime`` objects (RFC 3339, UTC, microseconds), ``every_s`` and the limit are
  formatted from ``int`` (``bool`` and anything else are refused), so no request text reaches the query.

Raw::

    SELECT "soc_kwh","power_kw",... FROM "telemetry" WHERE "battery"='b1' AND time >= '..' AND time < '..'
    ORDER BY time ASC LIMIT n+1

Downsampled (``every_s`` set; means of the numeric fields, empty buckets left out)::

    SELECT mean("soc_kwh") AS "soc_kwh",... FROM ... WHERE ... GROUP BY time(60s) fill(none) ORDER BY time ASC
    LIMIT n+1

A series with a currency (:attr:`Series.split_by`: prices, schedule) is never averaged across currencies:
:func:`split_values` lists the currencies in the range (``SELECT DISTINCT("currency")``); with one, the means
are labelled with it; with several, each currency gets its own means query (``... AND "currency"='AUD'``, see
:func:`to_influxql`), so a bucket that holds two currencies comes back as two rows (:mod:`nodes.recorder.split`).

``LIMIT n+1`` lets the caller see that more than ``n`` rows exist and set ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from nodes.contract.messages import HistoryQuery
from nodes.contract.topics import id_problems
from nodes.recorder.points import MASK, query_time
from nodes.recorder.table import SERIES, Series


class QueryError(ValueError):
    """The request cannot become a query (missing or invalid id, empty time range, unknown kind)."""


@dataclass(frozen=True)
class Plan:
    """A checked request: what to select and from where, plus the columns the result will have."""

    series: Series
    tag_value: str
    begin: datetime
    end: datetime
    limit: int
    every_s: int | None

    @property
    def columns(self) -> tuple[str, ...]:
        """Result columns after ``time``: all raw columns, or the numeric ones when downsampled (and the
        currency of the means, for a series that has one)."""
        if not self.every_s:
            return self.series.columns
        split = self.series.split_by
        return (*self.series.numeric, split) if split else self.series.numeric

    @property
    def query_columns(self) -> tuple[str, ...]:
        """What the query selects after ``time``: the result columns, plus the ``absent`` mask of a raw query
        and the counts of the optional fields of a downsampled one (the store uses both, then drops them)."""
        series = self.series
        if self.every_s:
            return (*series.numeric, *(count_column(name) for name in series.optional))  # the split value: added
        return (*series.columns, MASK) if series.optional else series.columns


def count_column(name: str) -> str:
    """The column holding how many values a bucket's mean of ``name`` was made of."""
    return f"{name}__count"


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QueryError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _check_time(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise QueryError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def plan(query: HistoryQuery, limit: int | None = None) -> Plan:
    """Validate ``query`` (``limit`` overrides ``query.limit``, e.g. capped by the node's row maximum)."""
    series = SERIES.get(query.kind)
    if series is None:
        raise QueryError(f"unknown history kind {query.kind!r}; use one of {sorted(SERIES)}")
    tag_value = getattr(query, series.tag, None)  # the name comes from the table, never from the request
    if tag_value is None:
        raise QueryError(f"kind {query.kind!r} needs {series.tag!r}")
    problems = id_problems(tag_value, series.tag) if isinstance(tag_value, str) else [f"{series.tag} must be text"]
    if problems:
        raise QueryError(problems[0])
    begin = _check_time(query.begin, "begin")
    end = _check_time(query.end, "end")
    if begin >= end:
        raise QueryError("begin must be before end")
    every_s = None if query.every_s is None else _check_int(query.every_s, "every_s", 1, 366 * 86400)
    rows = _check_int(query.limit if limit is None else limit, "limit", 1, 10_000_000)
    return Plan(series, tag_value, begin, end, rows, every_s)


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (names here are fixed, this only keeps the syntax uniform)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string_literal(value: str) -> str:
    """A single-quoted InfluxQL string literal with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def time_literal(value: datetime) -> str:
    """An RFC 3339 time literal in UTC with microseconds: ``'2025-01-16T10:00:00.000000Z'``."""
    return "'" + query_time(value) + "'"


def _where(checked: Plan) -> str:
    """The one tag value and the time range: the WHERE clause every statement of a query shares."""
    series = checked.series
    return (
        f"{ident(series.tag)}={string_literal(checked.tag_value)}"
        f" AND time >= {time_literal(checked.begin)} AND time < {time_literal(checked.end)}"
    )


def stale_values(checked: Plan) -> str | None:
    """For a downsampled query: the points whose ``absent`` names a field that still holds a value (an earlier
    write of the same point had it; the later write left it out, so it is not part of the record). The store takes
    them out of the means. Rare by nature, so this returns few rows; None when the series has no optional fields."""
    series = checked.series
    if not checked.every_s or not series.optional:
        return None
    select = ",".join(ident(name) for name in (MASK, *series.optional))
    return f"SELECT {select} FROM {ident(series.measurement)} WHERE {_where(checked)} AND ({stale_condition(series)})"


def stale_condition(series: Series) -> str:
    """The WHERE condition of :func:`stale_values`: a point whose ``absent`` names an optional field it holds."""
    return " OR ".join(
        f"({ident(MASK)} =~ /(^|,)({'|'.join(series.mask_words(name))})(,|$)/"
        f" AND ({ident(name)} >= 0 OR {ident(name)} < 0))"
        for name in series.optional
    )


def build(query: HistoryQuery, limit: int | None = None) -> tuple[str, Plan]:
    """The InfluxQL statement for ``query`` and the checked :class:`Plan` it came from."""
    checked = plan(query, limit)
    return to_influxql(checked), checked


def split_values(checked: Plan) -> str | None:
    """For a downsampled query of a series with :attr:`Series.split_by`: the statement listing the values (the
    currencies) in the range, one row each; None otherwise."""
    split = checked.series.split_by
    if not checked.every_s or not split:
        return None
    return f"SELECT DISTINCT({ident(split)}) FROM {ident(checked.series.measurement)} WHERE {_where(checked)}"


def to_influxql(checked: Plan, split_value: str | None = None) -> str:
    """Render a checked :class:`Plan` as one InfluxQL SELECT statement; ``split_value``: the means of the points
    whose :attr:`Series.split_by` field holds this value only (one currency)."""
    series = checked.series
    if checked.every_s:
        select = ",".join(
            [f"mean({ident(name)}) AS {ident(name)}" for name in series.numeric]
            + [f"count({ident(name)}) AS {ident(count_column(name))}" for name in series.optional]
        )
        group = f" GROUP BY time({int(checked.every_s)}s) fill(none)"
    else:
        select = ",".join(ident(name) for name in checked.query_columns)
        group = ""
    where = _where(checked)
    if split_value is not None:
        if not (checked.every_s and series.split_by):
            raise QueryError("only the means of a series with a currency are split by it")
        where += f" AND {ident(series.split_by)}={string_literal(split_value)}"
    return (
        f"SELECT {select} FROM {ident(series.measurement)} WHERE {where}{group}"
        f" ORDER BY time ASC LIMIT {int(checked.limit) + 1}"
    )


__all__ = [
    "Plan", "QueryError", "build", "count_column", "ident", "plan", "split_values", "stale_condition", "stale_values",
    "string_literal",
    "time_literal", "to_influxql",
]
