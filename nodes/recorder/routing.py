"""Means per bucket served from the coarsest rollup that fits, stitched with finer ones and raw points.

A downsampled history request (``every_s``) of a kind with rollups (:data:`rollups.ROUTES`: telemetry) is
answered from the coarsest rollup whose resolution divides ``every_s`` (1 h when ``every_s % 3600 == 0``, else
1 min when ``every_s % 60 == 0``, else raw as before). The range is cut into segments (:func:`segments`):

* the rollup serves the whole buckets it covers: from its coverage start (:mod:`nodes.recorder.rollup_admin`;
  never before what its retention still holds) up to its newest bucket, which is left out while it is within its
  CQ's look-back (the next run may still add late samples to it);
* a finer level (the 1-min rollup, then raw points) serves what is left: the partial buckets at the edges of the
  range, history from before the rollup's coverage, and the newest minutes the CQs have not rolled yet, so a live
  window has no hole at its right edge.

Every segment returns per request bucket the **sum** and the **count** of each field (a rollup's ``f_sum`` and
``f_count`` summed), and segments that share a bucket are added: the mean is ``sum / count`` of all the raw points
in the bucket, whatever served them, so it equals the raw mean to float rounding. Raw segments get the stale-values
correction (:func:`nodes.recorder.influxql.stale_values`) as before; rollups hold the values as stored (see the
README, "History rollups"). Two requests: one for coverage and the newest bucket of each rollup, one for the
segments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from nodes.recorder import rollups
from nodes.recorder.influxql import Plan, ident, stale_values, string_literal, time_literal
from nodes.recorder.points import MASK
from nodes.recorder.rollups import Rollup

Segment = tuple[Rollup | None, datetime, datetime]
"""Which level (None: raw points) serves ``[begin, end)``."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def chain(checked: Plan) -> tuple[Rollup, ...]:
    """The rollups that may serve ``checked`` (finer first), empty when none (raw means, as before)."""
    every = checked.every_s
    if not every:
        return ()
    routes = rollups.ROUTES.get(checked.series.measurement, ())
    return tuple(r for r in routes if every % r.resolution_s == 0)


def newest_statement(database: str, checked: Plan, rollup: Rollup) -> str:
    """The newest bucket of ``rollup`` for the request's tag value in its range (its time is the bucket start)."""
    return (f"SELECT last({ident(rollup.marker)}) FROM {rollups.target_ref(database, rollup)} WHERE "
            f"{ident(rollup.tag)}={string_literal(checked.tag_value)} AND time >= {time_literal(checked.begin)} "
            f"AND time < {time_literal(checked.end)}")


def segments(begin: datetime, end: datetime, levels: list[tuple[Rollup, datetime, datetime]]) -> list[Segment]:
    """``[begin, end)`` cut between the levels: ``levels`` are ``(rollup, covered from, covered until)``, finer
    first; the coarsest serves the whole buckets it covers, finer levels (and raw points last) the rest."""
    if not levels or begin >= end:
        return [(None, begin, end)] if begin < end else []
    *finer, (rollup, since, until) = levels
    res = rollup.resolution_s
    lo = rollups.align_up(max(begin, since), res)
    hi = rollups.align_down(min(end, until), res)
    if lo >= hi:
        return segments(begin, end, finer)
    return [*segments(begin, lo, finer), (rollup, lo, hi), *segments(hi, end, finer)]


def segment_statement(database: str, checked: Plan, segment: Segment) -> str:
    """Per request bucket: the sum and the count of every numeric field over one segment."""
    rollup, begin, end = segment
    series = checked.series
    if rollup is None:
        select = ",".join(f"sum({ident(f)}) AS {ident(f + '__sum')},count({ident(f)}) AS {ident(f + '__n')}"
                          for f in series.numeric)
        source = ident(series.measurement)
    else:
        select = ",".join(f"sum({ident(f + '_sum')}) AS {ident(f + '__sum')},"
                          f"sum({ident(f + '_count')}) AS {ident(f + '__n')}" for f in series.numeric)
        source = rollups.target_ref(database, rollup)
    return (f"SELECT {select} FROM {source} WHERE {ident(series.tag)}={string_literal(checked.tag_value)} "
            f"AND time >= {time_literal(begin)} AND time < {time_literal(end)} "
            f"GROUP BY time({int(checked.every_s or 0)}s) fill(none) ORDER BY time ASC LIMIT {checked.limit + 1}")


def segment_columns(checked: Plan) -> list[str]:
    """The columns of a :func:`segment_statement` answer (time, then ``f__sum``, ``f__n`` per field)."""
    return ["time", *(c for f in checked.series.numeric for c in (f + "__sum", f + "__n"))]


def stale_statement(checked: Plan, segment: Segment) -> str | None:
    """The stale-values statement of a raw segment (None for a rollup segment or a series without them)."""
    rollup, begin, end = segment
    if rollup is not None:
        return None
    return stale_values(dataclasses.replace(checked, begin=begin, end=end))


Sums = dict[int, list[float | None]]
"""Bucket time (epoch us) -> ``[sum, count]`` per numeric field, flattened."""


def add_rows(into: Sums, rows: list[list[Any]]) -> None:
    """Add one segment's rows (``[time, f__sum, f__n, ...]``) to the buckets."""
    for row in rows:
        bucket = into.setdefault(int(row[0]), [None] * (len(row) - 1))
        for i, value in enumerate(row[1:]):
            if value is not None:
                old = bucket[i]
                bucket[i] = float(value) if old is None else old + float(value)


def take_out_stale(checked: Plan, sums: Sums, stale: list[list[Any]]) -> None:
    """Take values a later write left out (rows ``[time us, absent, optional fields...]``) out of raw sums."""
    every_us = int(checked.every_s or 0) * 1_000_000
    series = checked.series
    index = {name: i for i, name in enumerate(series.numeric)}
    for point in stale:
        bucket = sums.get(int(point[0]) - int(point[0]) % every_us)
        if bucket is None:
            continue
        absent = series.masked(str(point[1] or ""))
        for offset, name in enumerate(series.optional):
            value = point[2 + offset]
            if name in absent and value is not None and (bucket[2 * index[name] + 1] or 0) > 0:
                i = 2 * index[name]
                bucket[i] = (bucket[i] or 0.0) - float(value)
                bucket[i + 1] = (bucket[i + 1] or 0.0) - 1


def mean_rows(checked: Plan, sums: Sums) -> list[list[Any]]:
    """Rows in ``checked.query_columns`` order (time in us, means, counts of the optional fields), buckets with no
    value at all left out, at most ``limit + 1`` (the caller sets ``truncated``)."""
    series = checked.series
    index = {name: i for i, name in enumerate(series.numeric)}
    rows: list[list[Any]] = []
    for bucket_us in sorted(sums):
        values = sums[bucket_us]
        counts = [values[2 * i + 1] or 0 for i in range(len(series.numeric))]
        if not any(counts):
            continue
        means = [(values[2 * i] or 0.0) / n if n else None for i, n in enumerate(counts)]
        rows.append([bucket_us, *means, *(int(counts[index[name]]) for name in series.optional)])
        if len(rows) > checked.limit:
            break
    return rows


class QueryRunner(Protocol):
    """What the router needs from the store: its database and InfluxQL requests (``epoch=u``)."""

    database: str

    async def influxql(self, statements: list[str]) -> list[dict[str, Any]]:
        """Run statements in one request; the answer of each."""


RowsOf = Callable[[dict[str, Any], list[str]], list[list[Any]]]


@dataclass
class Router:
    """Routes downsampled requests to the rollups (:func:`chain`), from their coverage on."""

    retention_s: dict[str, int | None]
    """Rollup RP -> its configured duration (older buckets are gone: not covered)."""
    rows_of: RowsOf
    """How one statement's answer becomes rows in a column order (the store's own parser)."""
    look_back_s: dict[str, int] = dataclasses.field(default_factory=dict)
    """Rollup name -> how far back its CQ re-rolls: a newest bucket older than that is final and served (raw
    retention may have deleted its points); a newer one may still grow and comes from the finer level."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    served: dict[str, int] = dataclasses.field(default_factory=dict)
    """Segments served per level (``raw``, ``telemetry_1m``, ...): what the tests and the status can read."""

    async def rows(self, store: QueryRunner, checked: Plan) -> list[list[Any]] | None:
        """Rows in ``checked.query_columns`` order (time in us), or None when no rollup covers any of the range
        (the caller runs its usual raw means)."""
        levels = chain(checked)
        if not levels:
            return None
        database = store.database
        answers = await store.influxql([rollups.coverage_query(),
                                        *(newest_statement(database, checked, r) for r in levels)])
        coverage = _coverage(self.rows_of(answers[0], ["since_us", "content", "rollup"]))
        now = self.clock()
        usable: list[tuple[Rollup, datetime, datetime]] = []
        for rollup, answer in zip(levels, answers[1:], strict=True):
            found = coverage.get(rollup.name)
            newest = self.rows_of(answer, ["time"])
            if found is None or found[1] != rollups.content_hash(database, rollup) or not newest:
                continue
            since = found[0]
            kept = self.retention_s.get(rollup.rp)
            if kept is not None:
                since = max(since, now - timedelta(seconds=kept) + timedelta(seconds=rollup.resolution_s))
            newest_start = _EPOCH + timedelta(microseconds=int(newest[-1][0]))
            newest_end = newest_start + timedelta(seconds=rollup.resolution_s)
            settled = newest_end <= now - timedelta(seconds=self.look_back_s.get(rollup.name, 0))
            usable.append((rollup, since, newest_end if settled else newest_start))
        parts = segments(checked.begin, checked.end, usable)
        if all(level is None for level, _, _ in parts):
            return None
        statements: list[str] = []
        for part in parts:
            statements.append(segment_statement(database, checked, part))
            stale = stale_statement(checked, part)
            if stale is not None:
                statements.append(stale)
        results = iter(await store.influxql(statements))
        columns = segment_columns(checked)
        sums: Sums = {}
        for part in parts:
            own: Sums = {}
            add_rows(own, self.rows_of(next(results), columns))
            if stale_statement(checked, part) is not None:
                take_out_stale(checked, own, self.rows_of(next(results), ["time", MASK, *checked.series.optional]))
            add_rows(sums, [[t, *v] for t, v in own.items()])
            name = "raw" if part[0] is None else part[0].name
            self.served[name] = self.served.get(name, 0) + 1
        return mean_rows(checked, sums)


def _coverage(rows: list[list[Any]]) -> dict[str, tuple[datetime, str]]:
    found: dict[str, tuple[datetime, str]] = {}
    for since_us, content, name in rows:
        if isinstance(since_us, int) and isinstance(name, str):
            found[name] = (_EPOCH + timedelta(microseconds=since_us), str(content or ""))
    return found


__all__ = [
    "Router", "Segment", "add_rows", "chain", "mean_rows", "newest_statement", "segment_columns",
    "segment_statement", "segments", "stale_statement", "take_out_stale",
]
