"""Which history the renderer draws for a window, and how live telemetry joins it (pure: no I/O, no clock).

For drawing, the recorder answers raw rows when they fit ``max_points``, else means per bucket
(:func:`bucket_seconds`); the shell asks for raw rows first when the battery's recent density says they fit
(:func:`raw_may_fit`). A bucket mean stands for its bucket, but never for time before the window's first sample
or after the newest one (:func:`means_range`). Between reads, live telemetry is appended (:func:`with_live`).
Price history is read in whole UTC days (:func:`price_days`) and kept per range (:func:`covered`).
"""

from __future__ import annotations

import math
from collections.abc import Reversible, Sequence
from dataclasses import dataclass
from datetime import datetime

from nodes.contract.messages import Telemetry
from nodes.renderer.series import TelemetrySeries

DAY_S = 86_400.0
LATE_DELIVERY_S = 300.0
"""Live telemetry arrives in time order give or take this much (late deliveries): the live scan stops there."""


ROLLUP_STEPS_S: tuple[int, ...] = (3600, 60)
"""The recorder's rollup resolutions (nodes/recorder/rollups.py), coarsest first: a bucket that is a multiple of one
is served from that rollup instead of from raw points."""


def bucket_seconds(begin: datetime, end: datetime, max_points: int) -> int | None:
    """Downsampling bucket for a window: None (raw) when raw data fits, else whole seconds per point, rounded up to
    a multiple of a rollup resolution when at least half of one (so the window is served from the rollups and
    keeps at least half of ``max_points``)."""
    span_s = (end - begin).total_seconds()
    every = math.ceil(span_s / max_points)
    if every <= 2:
        return None
    for step in ROLLUP_STEPS_S:
        if every * 2 >= step:
            return -(-every // step) * step
    return every


@dataclass
class DisplayHistory:
    """The history drawn for one window, as last read from the recorder."""

    series: TelemetrySeries
    begin_s: float
    until_s: float
    read_at: float
    """``time.monotonic()`` of the read."""


def density(series: TelemetrySeries) -> float | None:
    """Raw rows per second over ``series`` (the open range of recent days), None with fewer than two rows."""
    if len(series) < 2:
        return None
    return len(series) / max(float(series.time_s[-1] - series.time_s[0]), 1.0)


def raw_may_fit(every_s: int | None, rows_per_s: float | None, span_s: float, max_points: int) -> bool:
    """Is asking for raw rows worth it: the window is short, or the battery's density says they fit?"""
    return every_s is None or rows_per_s is None or rows_per_s * span_s <= max_points


def means_range(begin_s: float, end_s: float, first_sample_s: float | None, latest_s: float | None
                ) -> tuple[float, float]:
    """The span bucket means are drawn over: the window, but not before its first sample nor after the newest
    sample known (``latest_s``; a hair past it, so that sample's bucket is kept)."""
    lo = max(begin_s, first_sample_s if first_sample_s is not None else -math.inf)
    hi = min(end_s, latest_s + 1e-6) if latest_s is not None else end_s
    return lo, hi


def with_live(
    live: Reversible[Telemetry], history: DisplayHistory | None, begin_s: float, end_s: float
) -> TelemetrySeries:
    """The history drawn for ``[begin_s, end_s)`` with the live samples after it appended (arrival order)."""
    since = history.until_s if history is not None else -math.inf
    recent = []
    for message in reversed(live):
        ts = message.ts.timestamp()
        if ts < since - LATE_DELIVERY_S:  # arrival order is time order, give or take late deliveries
            break
        if since <= ts < end_s and ts >= begin_s:
            recent.append(message)
    live_series = TelemetrySeries.from_telemetry(recent)
    if history is None:
        return live_series
    return history.series.between(begin_s, end_s).concat(live_series)


def price_days(begin_s: float, end_s: float) -> tuple[float, float]:
    """``[begin_s, end_s)`` widened to whole UTC days (price history is read and kept by day)."""
    return math.floor(begin_s / DAY_S) * DAY_S, math.ceil(end_s / DAY_S) * DAY_S


def covered(
    ranges: Sequence[tuple[float, float, float]], begin_s: float, end_s: float, *, recent: bool, now: float,
    refresh_s: float,
) -> bool:
    """Does a range already read (``(begin_s, end_s, read at)``) hold ``[begin_s, end_s)``? A ``recent`` range
    (prices may still change) counts only when read less than ``refresh_s`` before ``now``."""
    return any(
        lo <= begin_s and hi >= end_s and (not recent or now - read_at < refresh_s) for lo, hi, read_at in ranges
    )


__all__ = [
    "ROLLUP_STEPS_S",
    "DisplayHistory",
    "bucket_seconds",
    "covered",
    "density",
    "means_range",
    "price_days",
    "raw_may_fit",
    "with_live",
]
