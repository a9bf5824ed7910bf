"""Column containers the figures and insights take: telemetry and prices as numpy arrays (pure, no I/O).

Why arrays: a year of 1-minute telemetry is 525 600 rows. Plotly validates numpy arrays ~20x faster than
lists, and the arithmetic (integration, bucketing, correlation) is vectorised. Time is held as POSIX seconds
(float64, UTC; microsecond resolution for current dates) so intervals are a subtraction; ``x`` gives the
``datetime64[ms]`` array a plot wants. Missing values (``None`` on the wire) are ``NaN``.

Both containers are built from either live messages (``Telemetry`` list, ``PriceForecast``) or a recorder
answer (``HistoryResult`` whose ``columns[0]`` is ``time`` as RFC 3339 text). :func:`downsample` is the
fallback when the recorder did not aggregate: equal-time buckets, NaN-aware means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from nodes.contract.messages import (
    BMS_NUMBERS,
    DEFAULT_CURRENCY,
    HistoryResult,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
TimeArray = npt.NDArray[np.datetime64]

TELEMETRY_COLUMNS = ("time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw")
PRICE_COLUMNS = ("time", "price_per_mwh", "currency")
DEFAULT_SLOT_S = 3600.0
"""Length given to the last price slot of a history answer when it cannot be inferred (one row only)."""

_EMPTY = np.empty(0, dtype=np.float64)


def _to_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _floats(values: Sequence[Any]) -> FloatArray:
    """A float column; None (missing on the wire) becomes NaN, and so does anything unreadable."""
    try:
        # numpy turns None into NaN for a float dtype: the fast path for well-formed columns.
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.fromiter((_to_float(v) for v in values), dtype=np.float64, count=len(values))


def epoch_s(value: Any) -> float:
    """POSIX seconds of an RFC 3339 string, a datetime (naive means UTC) or a number; NaN if unreadable."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return float("nan")
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def parse_times(values: Sequence[Any]) -> FloatArray:
    """POSIX seconds for a column of RFC 3339 strings / datetimes; unreadable entries become NaN."""
    if values and all(type(v) is str and v.endswith("Z") for v in values):
        # The recorder writes UTC with a "Z": numpy parses the naive part ~3x faster than fromisoformat.
        try:
            parsed = np.array([v[:-1] for v in values], dtype="datetime64[us]")
        except ValueError:
            pass
        else:
            return parsed.astype(np.int64).astype(np.float64) / 1e6
    return np.fromiter((epoch_s(v) for v in values), dtype=np.float64, count=len(values))


def to_datetime64(time_s: FloatArray) -> TimeArray:
    """``datetime64[ms]`` (naive, UTC) for plotting: Plotly.js ignores zones, so the axes are labelled UTC."""
    return np.rint(time_s * 1000.0).astype(np.int64).astype("datetime64[ms]")


def to_datetime(time_s: float) -> datetime:
    """An aware UTC datetime for POSIX seconds."""
    return datetime.fromtimestamp(time_s, tz=UTC)


def _sorted_unique(time_s: FloatArray, columns: Sequence[FloatArray]) -> tuple[FloatArray, list[FloatArray]]:
    """Drop rows without a time, sort by time, keep the last row of equal timestamps (a correction wins)."""
    keep = np.isfinite(time_s)
    if not keep.all():
        time_s = time_s[keep]
        columns = [c[keep] for c in columns]
    if time_s.size > 1 and not (np.diff(time_s) > 0).all():
        order = np.argsort(time_s, kind="stable")
        time_s = time_s[order]
        columns = [c[order] for c in columns]
        # Last occurrence of each timestamp: a row is kept if the next one has a different time.
        last = np.append(time_s[1:] != time_s[:-1], True)
        time_s = time_s[last]
        columns = [c[last] for c in columns]
    return time_s, list(columns)


def _column_values(result: HistoryResult, name: str) -> list[Any] | None:
    """One column of a history answer by name (None if absent); short rows read as None."""
    try:
        index = result.columns.index(name)
    except ValueError:
        return None
    try:
        return [row[index] for row in result.rows]
    except IndexError:
        return [row[index] if index < len(row) else None for row in result.rows]


def _column(result: HistoryResult, name: str) -> FloatArray:
    values = _column_values(result, name)
    return np.full(len(result.rows), np.nan) if values is None else _floats(values)


def _history_times(result: HistoryResult) -> FloatArray:
    if not result.ok:
        raise ValueError(f"history query failed: {result.error or 'no reason given'}")
    values = _column_values(result, "time")
    if values is None:
        raise ValueError(f"history result has no 'time' column (columns: {result.columns})")
    return parse_times(values)


@dataclass(frozen=True, slots=True, eq=False)
class TelemetrySeries:
    """Telemetry as columns. ``power_kw`` is + discharging, - charging; NaN where it was not reported.

    ``span_s`` is set for rows that are means over a time bucket (the recorder's downsampled answer): such a
    row stands for ``[time_s, time_s + span_s)`` (clipped to the query's range), not for one instant. NaN (or
    no ``span_s`` at all) marks a raw sample.
    """

    time_s: FloatArray
    soc_kwh: FloatArray
    power_kw: FloatArray
    target_charge_kw: FloatArray
    target_discharge_kw: FloatArray
    span_s: FloatArray | None = None
    bms: dict[str, FloatArray] = field(default_factory=dict)
    """The BMS number columns (:data:`~nodes.contract.messages.BMS_NUMBERS`) the battery reported in this
    series, by name; a column the battery never reported is not here at all."""

    def __post_init__(self) -> None:
        n = self.time_s.shape[0]
        for name in ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", "span_s"):
            column = getattr(self, name)
            if column is not None and column.shape[0] != n:
                raise ValueError(f"TelemetrySeries.{name} has {column.shape[0]} values, time has {n}")
        for name, column in self.bms.items():
            if column.shape[0] != n:
                raise ValueError(f"TelemetrySeries.bms[{name!r}] has {column.shape[0]} values, time has {n}")

    def column(self, name: str) -> FloatArray:
        """A BMS column by name (all NaN when the battery did not report it)."""
        found = self.bms.get(name)
        return np.full(len(self), np.nan) if found is None else found

    @property
    def spans(self) -> FloatArray:
        """``span_s`` with NaN for raw samples (never None)."""
        return np.full(len(self), np.nan) if self.span_s is None else self.span_s

    @property
    def is_aggregated(self) -> bool:
        """Does any row stand for a bucket mean rather than a sample?"""
        return self.span_s is not None and bool(np.isfinite(self.span_s).any())

    @property
    def centre_s(self) -> FloatArray:
        """Where a row belongs on a time axis: the sample time, or the middle of its bucket."""
        spans = self.spans
        return np.where(np.isfinite(spans), self.time_s + spans / 2.0, self.time_s)

    @classmethod
    def empty(cls) -> TelemetrySeries:
        """A series with no rows (figures draw their "waiting for telemetry" state)."""
        return cls(_EMPTY, _EMPTY, _EMPTY, _EMPTY, _EMPTY)

    @classmethod
    def from_arrays(
        cls,
        time_s: npt.ArrayLike,
        soc_kwh: npt.ArrayLike,
        power_kw: npt.ArrayLike | None = None,
        target_charge_kw: npt.ArrayLike | None = None,
        target_discharge_kw: npt.ArrayLike | None = None,
        *,
        bms: Mapping[str, npt.ArrayLike] | None = None,
    ) -> TelemetrySeries:
        """Build from array-likes (None entries become NaN); rows are sorted by time and de-duplicated.

        ``bms``: BMS columns by name; a column without any value is left out."""
        t = np.asarray(time_s, dtype=np.float64)
        n = t.shape[0]

        def col(values: npt.ArrayLike | None) -> FloatArray:
            return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)

        extra = {name: col(values) for name, values in (bms or {}).items()}
        names = [name for name, values in extra.items() if np.isfinite(values).any()]
        t, cols = _sorted_unique(t, [col(soc_kwh), col(power_kw), col(target_charge_kw), col(target_discharge_kw),
                                     *(extra[name] for name in names)])
        soc, power, charge, discharge = cols[:4]
        return cls(t, soc, power, charge, discharge, bms=dict(zip(names, cols[4:], strict=True)))

    @classmethod
    def from_telemetry(cls, items: Iterable[Telemetry]) -> TelemetrySeries:
        """Build from live messages (any order; a later message with the same ``ts`` wins)."""
        rows = list(items)
        reported = [name for name in BMS_NUMBERS if any(getattr(m, name) is not None for m in rows)]
        return cls.from_arrays(
            [m.ts.timestamp() for m in rows],
            [m.soc_kwh for m in rows],
            _floats([m.power_kw for m in rows]),
            _floats([m.target_charge_kw for m in rows]),
            _floats([m.target_discharge_kw for m in rows]),
            bms={name: _floats([getattr(m, name) for m in rows]) for name in reported},
        )

    @classmethod
    def from_history(
        cls,
        result: HistoryResult,
        *,
        bucket_s: float | None = None,
        begin_s: float | None = None,
        end_s: float | None = None,
    ) -> TelemetrySeries:
        """Build from a recorder answer with (a subset of) :data:`TELEMETRY_COLUMNS`, matched by name.

        ``bucket_s``: the answer holds means per bucket (``every_s``), stamped at the bucket start as InfluxDB
        does; each row then gets its span, clipped to the queried ``[begin_s, end_s)`` (the first bucket
        starts on InfluxDB's grid, before the range, but holds only data from inside it).
        Raises ``ValueError`` when the answer is an error or has no ``time`` column.
        """
        t = _history_times(result)
        bms = {name: _column(result, name) for name in BMS_NUMBERS if name in result.columns}
        soc, power, charge, discharge = (_column(result, name) for name in TELEMETRY_COLUMNS[1:])
        series = cls.from_arrays(t, soc, power, charge, discharge, bms=bms)
        if not bucket_s or len(series) == 0:
            return series
        start = series.time_s
        end = start + float(bucket_s)
        if begin_s is not None:
            start = np.maximum(start, begin_s)
        if end_s is not None:
            end = np.minimum(end, end_s)
        return TelemetrySeries(
            start,
            series.soc_kwh,
            series.power_kw,
            series.target_charge_kw,
            series.target_discharge_kw,
            np.maximum(end - start, 0.0),
            series.bms,
        )

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def x(self) -> TimeArray:
        """Times as ``datetime64[ms]`` (UTC) for a plot axis."""
        return to_datetime64(self.time_s)

    @property
    def times(self) -> list[datetime]:
        """Times as aware UTC datetimes (convenient, but slow for big series: prefer ``time_s``)."""
        return [to_datetime(t) for t in self.time_s.tolist()]

    @property
    def last_time(self) -> datetime | None:
        """Time of the latest row, or None when empty."""
        return to_datetime(float(self.time_s[-1])) if len(self) else None

    def window(self, begin: datetime | None = None, end: datetime | None = None) -> TelemetrySeries:
        """Rows with ``begin <= time < end`` (either bound may be open)."""
        lo = 0 if begin is None else int(np.searchsorted(self.time_s, begin.timestamp(), side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.time_s, end.timestamp(), side="left"))
        return self._take(slice(lo, hi))

    def between(self, begin_s: float | None, end_s: float | None) -> TelemetrySeries:
        """Rows with ``begin_s <= time < end_s`` (POSIX seconds; either bound may be open)."""
        lo = 0 if begin_s is None else int(np.searchsorted(self.time_s, begin_s, side="left"))
        hi = len(self) if end_s is None else int(np.searchsorted(self.time_s, end_s, side="left"))
        return self._take(slice(lo, max(lo, hi)))

    def _take(self, index: slice | npt.NDArray[np.bool_]) -> TelemetrySeries:
        return TelemetrySeries(
            self.time_s[index],
            self.soc_kwh[index],
            self.power_kw[index],
            self.target_charge_kw[index],
            self.target_discharge_kw[index],
            None if self.span_s is None else self.span_s[index],
            {name: column[index] for name, column in self.bms.items()},
        )

    def concat(self, *others: TelemetrySeries) -> TelemetrySeries:
        """History plus live rows in one series: sorted, a later duplicate timestamp wins."""
        parts = (self, *others)
        names = [name for name in BMS_NUMBERS if any(name in p.bms for p in parts)]
        t, cols = _sorted_unique(
            np.concatenate([p.time_s for p in parts]),
            [
                np.concatenate([p.soc_kwh for p in parts]),
                np.concatenate([p.power_kw for p in parts]),
                np.concatenate([p.target_charge_kw for p in parts]),
                np.concatenate([p.target_discharge_kw for p in parts]),
                np.concatenate([p.spans for p in parts]),
                *(np.concatenate([p.column(name) for p in parts]) for name in names),
            ],
        )
        soc, power, target_charge, target_discharge, spans = cols[:5]
        return TelemetrySeries(
            t, soc, power, target_charge, target_discharge, spans if np.isfinite(spans).any() else None,
            dict(zip(names, cols[5:], strict=True)),
        )


@dataclass(frozen=True, slots=True, eq=False)
class PriceSeries:
    """Price slots ``[start, end)`` as columns, sorted by start, not overlapping.

    Each slot knows its currency: ``currency_ix`` indexes ``codes`` (None: every slot is in ``codes[0]``), so a
    window keeps only the currencies of its own slots and a zone whose source changed currency is not mixed up.
    """

    start_s: FloatArray
    end_s: FloatArray
    price_per_mwh: FloatArray
    currency_ix: FloatArray | None = None
    codes: tuple[str, ...] = (DEFAULT_CURRENCY,)

    def __post_init__(self) -> None:
        n = self.start_s.shape[0]
        if self.end_s.shape[0] != n or self.price_per_mwh.shape[0] != n:
            raise ValueError("PriceSeries columns must have the same length")
        if self.currency_ix is not None and self.currency_ix.shape[0] != n:
            raise ValueError("PriceSeries columns must have the same length")
        if not self.codes:
            raise ValueError("PriceSeries needs at least one currency code")

    @classmethod
    def empty(cls) -> PriceSeries:
        """No prices known."""
        return cls(_EMPTY, _EMPTY, _EMPTY)

    def _ix(self) -> FloatArray:
        return np.zeros(len(self)) if self.currency_ix is None else self.currency_ix

    @property
    def currencies(self) -> frozenset[str]:
        """The currencies of the slots (empty for no slots)."""
        return frozenset(self.codes[int(i)] for i in np.unique(self._ix()))

    @classmethod
    def from_arrays(
        cls,
        start_s: npt.ArrayLike,
        end_s: npt.ArrayLike,
        price_per_mwh: npt.ArrayLike,
        currency_ix: npt.ArrayLike | None = None,
        codes: tuple[str, ...] = (DEFAULT_CURRENCY,),
    ) -> PriceSeries:
        """Build from array-likes; sorted by start, a later duplicate start wins, empty slots are dropped."""
        start = np.asarray(start_s, dtype=np.float64)
        end = np.asarray(end_s, dtype=np.float64)
        price = np.asarray(price_per_mwh, dtype=np.float64)
        ix = np.zeros(start.shape) if currency_ix is None else np.asarray(currency_ix, dtype=np.float64)
        keep = np.isfinite(end) & (end > start)
        start, (end, price, ix) = _sorted_unique(start[keep], [end[keep], price[keep], ix[keep]])
        # Overlaps (a revised forecast with other slot lengths): a slot ends where the next one starts.
        if start.size > 1:
            end = np.minimum(end, np.append(start[1:], np.inf))
        return cls(start, end, price, None if len(codes) == 1 else ix, codes)

    @classmethod
    def from_slots(cls, slots: Iterable[PriceSlot | ScheduleSlot], currency: str = DEFAULT_CURRENCY) -> PriceSeries:
        """Build from forecast slots or plan slots (both carry ``start``, ``end``, ``price_per_mwh``)."""
        items = list(slots)
        return cls.from_arrays(
            [s.start.timestamp() for s in items],
            [s.end.timestamp() for s in items],
            [s.price_per_mwh for s in items],
            codes=(currency,),
        )

    @classmethod
    def from_forecast(cls, forecast: PriceForecast) -> PriceSeries:
        """Build from a live price forecast."""
        return cls.from_slots(forecast.slots, forecast.currency)

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> PriceSeries:
        """The prices a plan was made with (a fallback when no forecast has been received)."""
        return cls.from_slots(schedule.slots, schedule.currency)

    @classmethod
    def from_history(cls, result: HistoryResult, slot_s: float | None = None) -> PriceSeries:
        """Build from a recorder answer with columns ``time``, ``price_per_mwh`` and ``currency``.

        History rows only carry the slot start: each slot ends at the next start, but no later than
        ``slot_s`` after its own start (a gap in the data stays a gap). ``slot_s`` defaults to the median
        spacing of the rows (or :data:`DEFAULT_SLOT_S` for a single row). A row without a currency (stored
        before prices named theirs) is in :data:`~nodes.contract.messages.DEFAULT_CURRENCY`, as its message was.
        """
        start = _history_times(result)
        price = _column(result, "price_per_mwh")
        named = _column_values(result, "currency") or [None] * start.shape[0]
        row_codes = [c if isinstance(c, str) and c else DEFAULT_CURRENCY for c in named]
        codes = tuple(sorted(set(row_codes))) or (DEFAULT_CURRENCY,)
        ix = np.array([codes.index(c) for c in row_codes], dtype=np.float64)
        ends = _column_values(result, "end")
        stored_end = np.full(start.shape, np.nan) if ends is None else parse_times(ends)
        start, (price, stored_end, ix) = _sorted_unique(start, [price, stored_end, ix])
        if start.size == 0:
            return cls.empty()
        # Spacing and slot ends come from every row, priced or not: a row without a price is a slot
        # without a price, not a reason to stretch the previous slot over it.
        steps = np.diff(start)
        length = float(slot_s) if slot_s else float(np.median(steps)) if steps.size else DEFAULT_SLOT_S
        end = np.minimum(np.append(start[1:], np.inf), start + length)
        # A raw answer carries each slot's own end: exact, also for a lone slot or mixed slot lengths.
        end = np.where(np.isfinite(stored_end) & (stored_end > start), stored_end, end)
        keep = np.isfinite(price)
        return cls.from_arrays(start[keep], end[keep], price[keep], ix[keep], codes)

    def __len__(self) -> int:
        return int(self.start_s.shape[0])

    def merge(self, *newer: PriceSeries) -> PriceSeries:
        """One series from several (history, then the live forecast): a newer slot wins on the same start."""
        parts = (self, *newer)
        codes = tuple(sorted({c for p in parts for c in p.codes}))
        ix = [np.array([codes.index(p.codes[int(i)]) for i in p._ix()], dtype=np.float64) for p in parts]
        return PriceSeries.from_arrays(
            np.concatenate([p.start_s for p in parts]),
            np.concatenate([p.end_s for p in parts]),
            np.concatenate([p.price_per_mwh for p in parts]),
            np.concatenate(ix),
            codes,
        )

    def slot_index(self, time_s: FloatArray) -> IntArray:
        """Index of the slot containing each time, -1 where no slot does."""
        if len(self) == 0:
            return np.full(time_s.shape, -1, dtype=np.int64)
        idx = np.searchsorted(self.start_s, time_s, side="right").astype(np.int64) - 1
        inside = (idx >= 0) & (time_s < self.end_s[np.clip(idx, 0, None)])
        return np.where(inside, idx, -1)

    def price_at(self, time_s: FloatArray) -> FloatArray:
        """Price of the slot containing each time (per MWh, in the slot's currency), NaN outside every slot."""
        idx = self.slot_index(time_s)
        if len(self) == 0:
            return np.full(time_s.shape, np.nan)
        return np.where(idx >= 0, self.price_per_mwh[np.clip(idx, 0, None)], np.nan)

    def window(self, begin: datetime | None = None, end: datetime | None = None) -> PriceSeries:
        """Slots overlapping ``[begin, end)``."""
        keep = np.ones(len(self), dtype=bool)
        if begin is not None:
            keep &= self.end_s > begin.timestamp()
        if end is not None:
            keep &= self.start_s < end.timestamp()
        ix = None if self.currency_ix is None else self.currency_ix[keep]
        return PriceSeries(self.start_s[keep], self.end_s[keep], self.price_per_mwh[keep], ix, self.codes)


def _buckets(time_s: FloatArray, max_points: int) -> tuple[IntArray, int]:
    span = float(time_s[-1] - time_s[0])
    bucket = np.floor((time_s - time_s[0]) / span * max_points).astype(np.int64) if span > 0 else None
    if bucket is None:
        return np.zeros(time_s.shape, dtype=np.int64), 1
    return np.minimum(bucket, max_points - 1), max_points


def _nanmean(bucket: IntArray, n: int, values: FloatArray, weights: FloatArray | None = None) -> FloatArray:
    ok = ~np.isnan(values)
    w = ok.astype(np.float64) if weights is None else np.where(ok, weights, 0.0)
    sums = np.bincount(bucket, weights=np.where(ok, values, 0.0) * w, minlength=n)
    counts = np.bincount(bucket, weights=w, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


@overload
def downsample(series: TelemetrySeries, max_points: int) -> TelemetrySeries: ...
@overload
def downsample(series: PriceSeries, max_points: int) -> PriceSeries: ...
def downsample(series: TelemetrySeries | PriceSeries, max_points: int) -> TelemetrySeries | PriceSeries:
    """At most ``max_points`` rows: equal-time buckets, each the NaN-aware mean of its rows.

    The recorder normally aggregates (``every_s``); this is the fallback for raw answers. A bucket's time is
    the mean time of its rows, so a mean power times the bucket length keeps the bucket's energy for
    regularly sampled data. Price slots are merged into one slot per bucket (duration-weighted price).
    """
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    if len(series) <= max_points:
        return series
    if isinstance(series, PriceSeries) and len(series.currencies) > 1:
        return series  # a bucket must not average two currencies; the figures refuse a mixed series anyway
    if isinstance(series, TelemetrySeries):
        bucket, n = _buckets(series.time_s, max_points)
        counts = np.bincount(bucket, minlength=n)
        used = counts > 0
        t = np.bincount(bucket, weights=series.time_s, minlength=n)[used] / counts[used]
        cols = [
            _nanmean(bucket, n, c)[used]
            for c in (series.soc_kwh, series.power_kw, series.target_charge_kw, series.target_discharge_kw)
        ]
        bms = {name: _nanmean(bucket, n, c)[used] for name, c in series.bms.items()}
        soc, power, charge, discharge = cols
        return TelemetrySeries(t, soc, power, charge, discharge, bms=bms)
    bucket, n = _buckets(series.start_s, max_points)
    counts = np.bincount(bucket, minlength=n)
    used = counts > 0
    first = np.full(n, np.inf)
    np.minimum.at(first, bucket, series.start_s)
    last = np.full(n, -np.inf)
    np.maximum.at(last, bucket, series.end_s)
    price = _nanmean(bucket, n, series.price_per_mwh, weights=series.end_s - series.start_s)
    return PriceSeries(first[used], last[used], price[used], codes=tuple(series.currencies) or series.codes)
