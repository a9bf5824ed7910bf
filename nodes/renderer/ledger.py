"""Exact energy and money integrals over raw telemetry, kept as 15-minute rollups per battery (pure, no I/O).

Why: KPIs (energy charged/discharged, realised revenue, efficiency loss, cycles) must not depend on how a
figure is downsampled. They are integrals over the raw samples, and an integral is additive: the total over
any period is the sum over the 15-minute buckets inside it. So raw samples are integrated once into
:class:`Buckets` (one row per 15-minute bucket, one column per additive quantity), days that can no longer
change are cached as :class:`DayChunk`, and any window's KPIs are a slice sum. Every window that covers the
same data gives the same numbers.

The energy model, interval by interval (``[t_k, t_k+1)`` between consecutive samples):

1. **measured**: the sample at ``t_k`` reports ``power_kw`` and the next sample follows within
   :data:`MAX_HOLD_S`: that power holds until the next sample (a setpoint-driven battery behaves so);
2. **derived from SOC**: otherwise, when both samples have an SOC and are at most :data:`MAX_SPAN_S` apart,
   the power is the SOC change over the interval (net energy stored; conversion losses are not visible);
3. **not covered**: otherwise nothing is integrated and the interval counts as a data gap.

Each interval is split at price-slot and bucket boundaries, so each piece is paid at its own slot's price:
revenue = power x hours x price / 1000 (kW x h x price/MWh -> money in the prices' currency,
:func:`nodes.contract.energy.value_at`),
+ when discharging (selling), - when charging (buying). Efficiency loss is additive too: over a measured piece it
is charged - discharged - the SOC change along the piece (SOC interpolated linearly between the samples); derived
pieces have none by construction.

Chunks: a UTC day's buckets depend only on the samples within :data:`MAX_SPAN_S` of the day (an interval
longer than that is never integrated), so a day computed from the raw rows of
``[day - MAX_SPAN_S, day end + MAX_SPAN_S)`` is final once that range is in the past.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from nodes.contract import energy
from nodes.renderer.series import FloatArray, PriceSeries, TelemetrySeries

MAX_HOLD_S: Final = 900.0
"""A measured power holds at most this long; a longer interval falls back to the SOC change."""
MAX_SPAN_S: Final = 6 * 3600.0
"""Samples further apart than this leave a data gap: nothing is integrated between them."""
BUCKET_S: Final = 900
"""Rollup resolution (15 minutes, the shortest day-ahead price slot); KPI periods start on this grid."""
DAY_S: Final = 86_400
BUCKETS_PER_DAY: Final = DAY_S // BUCKET_S

# Additive columns of a bucket row.
CHARGED, DISCHARGED, DERIVED, REVENUE, BUY_MONEY, PRICED_CHARGED, SELL_MONEY, PRICED_DISCHARGED = range(8)
UNPRICED, GAP_S, COVERED_S, LOSS, SAMPLES = range(8, 13)
N_COLUMNS: Final = 13


@dataclass(frozen=True, slots=True, eq=False)
class Buckets:
    """Integrals per bucket ``[edges[j], edges[j+1])``: ``sums[j, column]`` (columns above), plus the first and
    last sample (time, SOC) in each bucket (NaN where the bucket has no sample)."""

    edges: FloatArray
    sums: FloatArray
    first_t: FloatArray
    first_soc: FloatArray
    last_t: FloatArray
    last_soc: FloatArray

    @classmethod
    def empty(cls, edges: FloatArray) -> Buckets:
        n = max(edges.size - 1, 0)
        nan = np.full(n, np.nan)
        return cls(edges, np.zeros((n, N_COLUMNS)), nan, nan.copy(), nan.copy(), nan.copy())

    def __len__(self) -> int:
        return int(self.sums.shape[0])


def interval_power(
    time_s: FloatArray,
    soc_kwh: FloatArray,
    power_kw: FloatArray,
    max_hold_s: float = MAX_HOLD_S,
    max_span_s: float = MAX_SPAN_S,
) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The energy model of the module docstring, per interval between consecutive samples (sorted by time):
    power (kW, + discharge; NaN if not covered), measured?, derived from SOC?

    The one place that decides what a battery did between two readings: the KPIs integrate it and the power
    figure draws it (:func:`nodes.renderer.figures.power_intervals`).
    """
    dt = np.diff(time_s)
    measured = np.isfinite(power_kw[:-1]) & (dt <= max_hold_s)
    dsoc = np.diff(soc_kwh)
    derived = ~measured & np.isfinite(dsoc) & (dt <= max_span_s) & (dt > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(measured, power_kw[:-1], np.where(derived, energy.power_from_soc_kw(dsoc, dt), np.nan))
    return rate, measured, derived


def integrate(
    series: TelemetrySeries,
    prices: PriceSeries,
    edges: FloatArray,
    *,
    max_hold_s: float = MAX_HOLD_S,
    max_span_s: float = MAX_SPAN_S,
) -> Buckets:
    """Integrate ``series`` (sorted raw samples) into the buckets between consecutive ``edges``.

    Only the parts of intervals inside ``[edges[0], edges[-1])`` count; an interval needs both of its samples,
    so pass the samples up to :data:`MAX_SPAN_S` around the edges for exact sums at the ends.
    """
    edges = np.asarray(edges, dtype=np.float64)
    out = Buckets.empty(edges)
    n_buckets = len(out)
    t = series.time_s
    if n_buckets == 0:
        return out
    inside = (t >= edges[0]) & (t < edges[-1])
    if inside.any():
        which = np.searchsorted(edges, t[inside], side="right") - 1
        out.sums[:, SAMPLES] = np.bincount(which, minlength=n_buckets)
        ts, socs = t[inside], series.soc_kwh[inside]
        # t is sorted: the first occurrence of each bucket is its first sample, the last its last.
        first = np.unique(which, return_index=True)[1]
        last = which.size - 1 - np.unique(which[::-1], return_index=True)[1]
        used = which[first]
        out.first_t[used], out.first_soc[used] = ts[first], socs[first]
        out.last_t[used], out.last_soc[used] = ts[last], socs[last]
    if t.size < 2:
        return out

    rate, measured, derived = interval_power(series.time_s, series.soc_kwh, series.power_kw, max_hold_s, max_span_s)
    lo, hi = max(float(t[0]), float(edges[0])), min(float(t[-1]), float(edges[-1]))
    if hi <= lo:
        return out
    bounds = np.concatenate([prices.start_s, prices.end_s, edges])
    bounds = bounds[(bounds > lo) & (bounds < hi)]
    cuts = np.union1d(t[(t > lo) & (t < hi)], bounds)
    points = np.concatenate([[lo], cuts, [hi]])
    start = points[:-1]
    seconds = np.diff(points)
    k = np.clip(np.searchsorted(t, start, side="right") - 1, 0, rate.size - 1)
    bucket = np.searchsorted(edges, start, side="right") - 1
    ok = np.isfinite(rate[k])
    moved = energy.energy_kwh(np.where(ok, rate[k], 0.0), seconds)  # kWh, + discharged
    price = prices.price_at(start)
    priced = np.isfinite(price) & ok
    price0 = np.where(priced, price, 0.0)
    charged = np.where(moved < 0, -moved, 0.0)
    discharged = np.where(moved > 0, moved, 0.0)
    # Efficiency loss along measured pieces: energy in - energy out - SOC gained along the piece.
    dt = np.diff(t)
    soc_step = np.diff(series.soc_kwh)
    with np.errstate(invalid="ignore", divide="ignore"):
        soc_gain = np.where(dt[k] > 0, soc_step[k] * seconds / dt[k], 0.0)
    loss_ok = measured[k] & np.isfinite(soc_gain)
    loss = np.where(loss_ok, charged - discharged - np.where(loss_ok, soc_gain, 0.0), 0.0)

    def add(column: int, values: FloatArray) -> None:
        out.sums[:, column] = np.bincount(bucket, weights=values, minlength=n_buckets)

    add(CHARGED, charged)
    add(DISCHARGED, discharged)
    add(DERIVED, np.where(derived[k], np.abs(moved), 0.0))
    add(REVENUE, energy.value_at(moved, price0))
    add(BUY_MONEY, energy.value_at(charged, price0))
    add(PRICED_CHARGED, np.where(priced, charged, 0.0))
    add(SELL_MONEY, energy.value_at(discharged, price0))
    add(PRICED_DISCHARGED, np.where(priced, discharged, 0.0))
    add(UNPRICED, np.where(ok & ~priced, np.abs(moved), 0.0))
    add(GAP_S, np.where(ok, 0.0, seconds))
    add(COVERED_S, np.where(ok, seconds, 0.0))
    add(LOSS, loss)
    return out


@dataclass(frozen=True, slots=True)
class Totals:
    """The sums over a period ``[begin_s, end_s]``, with its first and last sample (time, SOC)."""

    sums: FloatArray
    begin_s: float | None
    end_s: float | None
    first_sample_s: float | None
    last_sample_s: float | None
    soc_start_kwh: float | None
    soc_end_kwh: float | None

    def __getitem__(self, column: int) -> float:
        return float(self.sums[column])


def totals(parts: list[Buckets], begin_s: float | None = None, end_s: float | None = None) -> Totals:
    """Sum bucket rows (in time order) into one :class:`Totals` for the period ``[begin_s, end_s]``
    (default: from the first sample to the last)."""
    rows = [p for p in parts if len(p)]
    if not rows:
        return Totals(np.zeros(N_COLUMNS), begin_s, end_s, None, None, None, None)
    sums = np.sum([p.sums.sum(axis=0) for p in rows], axis=0)
    first_t = np.concatenate([p.first_t for p in rows])
    first_soc = np.concatenate([p.first_soc for p in rows])
    last_t = np.concatenate([p.last_t for p in rows])
    last_soc = np.concatenate([p.last_soc for p in rows])
    has = np.flatnonzero(np.isfinite(first_t))
    if has.size == 0:
        return Totals(sums, begin_s, end_s, None, None, None, None)
    a, b = int(has[0]), int(has[-1])
    first, last = float(first_t[a]), float(last_t[b])
    return Totals(
        sums,
        first if begin_s is None else begin_s,
        last if end_s is None else end_s,
        first,
        last,
        _num(first_soc[a]),
        _num(last_soc[b]),
    )


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# -- caching per UTC day -----------------------------------------------------------------------------------


def day_of(time_s: float) -> int:
    """The UTC day number (days since 1970-01-01) containing ``time_s``."""
    return math.floor(time_s / DAY_S)


def whole_day(day: int, begin_s: float, end_s: float) -> bool:
    """Does ``[begin_s, end_s)`` hold all of UTC day ``day``?"""
    return begin_s <= day * DAY_S and end_s >= (day + 1) * DAY_S


def day_edges(day: int) -> FloatArray:
    """The 97 bucket edges of a UTC day."""
    return np.arange(BUCKETS_PER_DAY + 1, dtype=np.float64) * BUCKET_S + day * DAY_S


def fetch_range(day: int) -> tuple[float, float]:
    """The raw rows a day's exact buckets depend on: ``[day - MAX_SPAN_S, day end + MAX_SPAN_S)``."""
    return day * DAY_S - MAX_SPAN_S, (day + 1) * DAY_S + MAX_SPAN_S


@dataclass(frozen=True, slots=True)
class DayChunk:
    """A UTC day's buckets and when they were computed (``final``: from a complete, settled raw range)."""

    day: int
    buckets: Buckets
    computed_at_s: float
    final: bool
    currencies: tuple[str, ...] = ()
    """The currencies of the prices its money is in (none: nothing priced); a window never adds two."""

    @property
    def coarse(self) -> bool:
        """One row for the whole day (its stored totals): serves windows that hold the whole day only."""
        return len(self.buckets) == 1


@dataclass
class Ledger:
    """The cached days of one battery. Pure bookkeeping: the caller fetches raw rows and computes chunks.

    A late sample (a write with an old timestamp) invalidates the days whose chunks it can change.
    """

    days: OrderedDict[int, DayChunk] = field(default_factory=OrderedDict)
    """Least recently used first: the cache keeps what viewers look at, whatever its age."""
    max_days: int = 800
    invalidated_at_s: dict[int, float] = field(default_factory=dict)
    settle_s: float = 10.0
    """A day computed less than this after an invalidation may miss the late sample: it is recomputed."""

    def is_final(self, day: int, now_s: float) -> bool:
        """Can no sample arrive any more that changes ``day`` (by the clock, ignoring late writes)?"""
        return fetch_range(day)[1] + self.settle_s <= now_s

    def valid(self, day: int, *, fine: bool = False) -> DayChunk | None:
        """The cached chunk for ``day`` if it is final and not invalidated since (``fine``: with its buckets)."""
        chunk = self.days.get(day)
        if chunk is None or not chunk.final or (fine and chunk.coarse):
            return None
        self.days.move_to_end(day)
        touched = self.invalidated_at_s.get(day)
        if touched is not None and chunk.computed_at_s < touched + self.settle_s:
            return None
        return chunk

    def missing(self, first_day: int, last_day: int, now_s: float) -> list[int]:
        """Final days in ``[first_day, last_day]`` without a valid cached chunk."""
        return [d for d in range(first_day, last_day + 1) if self.is_final(d, now_s) and self.valid(d) is None]

    def put(self, chunk: DayChunk) -> None:
        """Cache a chunk (only final ones are kept); the least recently used days go when over ``max_days``."""
        if not chunk.final:
            return
        if chunk.coarse and self.valid(chunk.day, fine=True) is not None:
            return  # the buckets serve every window the totals serve, and more
        self.days[chunk.day] = chunk
        self.days.move_to_end(chunk.day)
        while len(self.days) > self.max_days:
            day, _chunk = self.days.popitem(last=False)
            self.invalidated_at_s.pop(day, None)

    def invalidate(self, time_s: float, now_s: float) -> None:
        """A sample at ``time_s`` arrived now: every day whose raw range contains it may change."""
        for day in range(day_of(time_s - MAX_SPAN_S), day_of(time_s + MAX_SPAN_S) + 1):
            if day in self.days:
                self.invalidated_at_s[day] = now_s


def bucket_range(begin_s: float, end_s: float) -> tuple[float, float]:
    """A window snapped to whole buckets: begin rounded up, end rounded down (the live end is kept as is
    by the caller). The KPI period never starts before the window."""
    lo = math.ceil(begin_s / BUCKET_S) * BUCKET_S
    hi = math.floor(end_s / BUCKET_S) * BUCKET_S
    return float(lo), float(max(hi, lo))


def slice_buckets(buckets: Buckets, begin_s: float, end_s: float) -> Buckets:
    """The rows of ``buckets`` whose bucket lies inside ``[begin_s, end_s)`` (both on the bucket grid)."""
    lo = int(np.searchsorted(buckets.edges, begin_s, side="left"))
    hi = int(np.searchsorted(buckets.edges, end_s, side="left"))
    hi = min(hi, len(buckets))
    lo = min(lo, hi)
    return Buckets(
        buckets.edges[lo : hi + 1],
        buckets.sums[lo:hi],
        buckets.first_t[lo:hi],
        buckets.first_soc[lo:hi],
        buckets.last_t[lo:hi],
        buckets.last_soc[lo:hi],
    )
