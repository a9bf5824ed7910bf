"""Final days of KPI integrals as stored messages and back (pure: no I/O, no clock).

Why: a window's KPIs are sums of 15-minute bucket integrals (:mod:`nodes.renderer.ledger`), and a UTC day's
buckets never change once the day is final. Computing them needs the raw rows of the day (86,400 at 1 Hz), so
the renderer computes a final day once, publishes it as a :class:`~nodes.contract.messages.KpiDay`
(``battery/{battery}/kpi/day``), the recorder stores its buckets as ``kpi_15m`` points, and any later window
(after a restart too) reads 96 rows per day instead of the raw ones (history kind ``kpi``).

The database cannot compute these itself (a continuous query has means, sums and counts, not this energy model:
hold-last power between samples, SOC-derived spans, each piece paid at its own price slot), so the integrals
come from the renderer; every stored number but the first/last sample is additive, so an hourly rollup of
``kpi_15m`` is a plain ``sum()`` per field.

Round trip: :func:`day_message` then :func:`chunks_from_result` gives back the same floats bit for bit (JSON
and InfluxDB carry float64 exactly; sample times are microsecond datetimes on the wire and float seconds in
the store, exact both ways).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from nodes.contract.messages import KPI_SAMPLE_COLUMNS, KPI_SUM_FIELDS, HistoryResult, KpiBucket, KpiDay
from nodes.renderer import ledger
from nodes.renderer.ledger import BUCKETS_PER_DAY, DAY_S, N_COLUMNS, Buckets, DayChunk
from nodes.renderer.series import parse_times

SUM_FIELDS = KPI_SUM_FIELDS
"""The KpiBucket field of each ledger column, in column order (``SUM_FIELDS[ledger.CHARGED]`` ...)."""
SAMPLE_COLUMNS = KPI_SAMPLE_COLUMNS

assert len(SUM_FIELDS) == N_COLUMNS


def _time(value: float) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if math.isfinite(value) else None


def _opt(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def day_message(chunk: DayChunk) -> KpiDay:
    """The wire form of a final day (all 96 buckets, zero ones too: a stored day is known to be complete)."""
    b = chunk.buckets
    buckets = [
        KpiBucket(
            start=datetime.fromtimestamp(float(b.edges[j]), UTC),
            **{name: float(b.sums[j, column]) for column, name in enumerate(SUM_FIELDS)},
            first_ts=_time(float(b.first_t[j])),
            first_soc_kwh=_opt(float(b.first_soc[j])),
            last_ts=_time(float(b.last_t[j])),
            last_soc_kwh=_opt(float(b.last_soc[j])),
        )
        for j in range(len(b))
    ]
    return KpiDay(
        day=datetime.fromtimestamp(chunk.day * DAY_S, UTC),
        computed_at=datetime.fromtimestamp(chunk.computed_at_s, UTC),
        buckets=buckets,
        currencies=sorted(chunk.currencies),
    )


def chunk_from_message(message: KpiDay) -> DayChunk:
    """A :class:`DayChunk` from its wire form (the tests' round trip; the renderer reads stored rows)."""
    day = ledger.day_of(message.day.timestamp())
    out = Buckets.empty(ledger.day_edges(day))
    for j, bucket in enumerate(message.buckets):
        for column, name in enumerate(SUM_FIELDS):
            out.sums[j, column] = getattr(bucket, name)
        out.first_t[j] = np.nan if bucket.first_ts is None else bucket.first_ts.timestamp()
        out.first_soc[j] = np.nan if bucket.first_soc_kwh is None else bucket.first_soc_kwh
        out.last_t[j] = np.nan if bucket.last_ts is None else bucket.last_ts.timestamp()
        out.last_soc[j] = np.nan if bucket.last_soc_kwh is None else bucket.last_soc_kwh
    return DayChunk(day, out, message.computed_at.timestamp(), final=True, currencies=tuple(message.currencies))


def _floats(rows: list[list[Any]], index: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([np.nan if row[index] is None else float(row[index]) for row in rows], dtype=np.float64)


def _number(value: Any, absent: float) -> float:
    return absent if value is None else float(value)


def chunks_from_result(result: HistoryResult) -> list[DayChunk]:
    """The complete days in a ``kind="kpi"`` answer (rows in time order). A day with fewer than its 96 buckets
    (a write the store refused in part) is left out: the renderer computes it again from raw rows."""
    if not result.ok:
        raise ValueError(f"history query failed: {result.error or 'no reason given'}")
    if not result.rows:
        return []
    position = {name: i for i, name in enumerate(result.columns)}
    starts = parse_times([row[0] for row in result.rows])
    sums = np.column_stack([_floats(result.rows, position[name]) for name in SUM_FIELDS])
    sums = np.nan_to_num(sums, nan=0.0)
    first_t, first_soc, last_t, last_soc = (_floats(result.rows, position[name]) for name in SAMPLE_COLUMNS)
    currency_ix, computed_ix = position["currency"], position["computed_at"]
    days = np.floor(starts / DAY_S).astype(np.int64)
    out: list[DayChunk] = []
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        edges = ledger.day_edges(int(day))
        if rows.size != BUCKETS_PER_DAY or not np.array_equal(starts[rows], edges[:-1]):
            continue
        first_row = result.rows[int(rows[0])]
        text = first_row[currency_ix] or ""
        computed = first_row[computed_ix]
        computed_s = (
            datetime.fromisoformat(str(computed).replace("Z", "+00:00")).timestamp() if computed else 0.0
        )
        buckets = Buckets(edges, sums[rows], first_t[rows], first_soc[rows], last_t[rows], last_soc[rows])
        currencies = tuple(c for c in str(text).split(",") if c)
        out.append(DayChunk(int(day), buckets, computed_s, final=True, currencies=currencies))
    return out


def totals_from_result(result: HistoryResult) -> list[DayChunk]:
    """The whole stored days in a ``kind="kpi_day"`` answer as coarse chunks (one row: the day's totals and its
    first/last sample); a day stored with fewer than its 96 buckets is left out."""
    if not result.ok:
        raise ValueError(f"history query failed: {result.error or 'no reason given'}")
    position = {name: i for i, name in enumerate(result.columns)}
    out: list[DayChunk] = []
    for row in result.rows:
        if row[position["buckets"]] != BUCKETS_PER_DAY:
            continue
        start = float(parse_times([row[0]])[0])
        day = ledger.day_of(start)
        if start != day * DAY_S:
            continue
        sums = np.array([[_number(row[position[name]], 0.0) for name in SUM_FIELDS]], dtype=np.float64)
        first_t, first_soc, last_t, last_soc = (
            np.array([_number(row[position[name]], math.nan)], dtype=np.float64) for name in SAMPLE_COLUMNS
        )
        edges = np.array([day * DAY_S, (day + 1) * DAY_S], dtype=np.float64)
        computed = row[position["computed_at"]]
        computed_s = datetime.fromisoformat(str(computed).replace("Z", "+00:00")).timestamp() if computed else 0.0
        currencies = tuple(c for c in str(row[position["currency"]] or "").split(",") if c)
        out.append(DayChunk(day, Buckets(edges, sums, first_t, first_soc, last_t, last_soc), computed_s, final=True,
                            currencies=currencies))
    return out


def day_range(days: list[int]) -> tuple[float, float]:
    """The ``kind="kpi"`` read covering a run of consecutive days: ``[first day 00:00, last day + 1 00:00)``."""
    return float(days[0] * DAY_S), float((days[-1] + 1) * DAY_S)


__all__ = [
    "SAMPLE_COLUMNS", "SUM_FIELDS", "chunk_from_message", "chunks_from_result", "day_message", "day_range",
    "totals_from_result",
]
