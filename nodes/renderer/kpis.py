"""Per-battery KPI bookkeeping: cached final days plus the raw samples of the days still open (pure, no I/O).

The node shell fetches raw rows and hands them over; :class:`KpiBook` decides what is missing, integrates the
open days on demand and answers "the sums over this window" (or "these days are still missing").

    book.open_from_s(now)          -> where the open raw range starts (fetch raw rows from there to now)
    book.merge_open(series, until) -> after a fetch
    book.add_live(telemetry)       -> a live sample (a back-dated one invalidates cached days)
    book.window(lo, hi, now, ...)  -> Totals, or the list of final days to fetch first
    book.accept_stored(chunks, now) -> final days read back from the store (``kpi_day`` totals, ``kpi`` buckets)
    book.take_unpublished()        -> days newly computed final, to publish (battery/{battery}/kpi/day)

Stored days (:mod:`nodes.renderer.kpi_store`) stand for their raw rows until the renderer learns that they are
outdated: a back-dated sample for a final day makes that day :attr:`KpiBook.stale` (computed again from raw
rows, never taken from the store, then republished: the same timestamps overwrite the stored points), and a
forecast with prices for a final day (:meth:`KpiBook.prices_arrived`) makes a stored copy holding unpriced
energy be computed again with them. A stored day with unpriced energy is otherwise kept as it is: the energy
stays counted as unpriced (the page says how much), never priced by a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nodes.contract.messages import Telemetry
from nodes.renderer import ledger
from nodes.renderer.ledger import BUCKET_S, DAY_S, MAX_SPAN_S, Buckets, DayChunk, Ledger, Totals
from nodes.renderer.series import PriceSeries, TelemetrySeries, to_datetime

MAX_TRACKED_DAYS = 5000
"""At most this many stale / re-price days are remembered per battery (a hostile back-dated flood stays bounded)."""

LATE_S = 120.0
"""Samples may reach the recorder this much later than their time (batching); a refresh re-reads that much."""


@dataclass
class KpiBook:
    """Everything needed for exact KPIs of one battery over any window."""

    ledger: Ledger = field(default_factory=Ledger)
    open_raw: TelemetrySeries = field(default_factory=TelemetrySeries.empty)
    open_start_s: float | None = None
    """The open raw range starts here (None: never fetched)."""
    fetched_until_s: float | None = None
    """Raw rows up to here came from the recorder; later samples are live ones."""
    live: list[Telemetry] = field(default_factory=list)
    needs_full_refetch: bool = False
    stale: set[int] = field(default_factory=set)
    """Final days whose stored copy is outdated (a back-dated sample): computed again from raw rows."""
    reprice: set[int] = field(default_factory=set)
    """Final days that got prices after they may have been stored: a stored copy with unpriced energy is redone."""
    unpublished: set[int] = field(default_factory=set)
    """Days computed final from raw rows and not published yet."""
    _open_cache: tuple[int, float, Buckets] | None = None
    _version: int = 0

    # -- the open range -----------------------------------------------------------------------------------

    def first_open_day(self, now_s: float) -> int:
        """The first UTC day that is not final yet (a sample can still arrive that changes it)."""
        return math.floor((now_s - MAX_SPAN_S - self.ledger.settle_s) / DAY_S)

    def open_from_s(self, now_s: float) -> float:
        """Where the raw samples needed for the open days start."""
        return self.first_open_day(now_s) * DAY_S - MAX_SPAN_S

    def fetch_begin_s(self, now_s: float) -> float:
        """Where the next refresh should start reading raw rows."""
        start = self.open_from_s(now_s)
        if self.needs_full_refetch or self.fetched_until_s is None or self.open_start_s is None:
            return start
        if self.open_start_s > start:
            return start
        return max(start, self.fetched_until_s - LATE_S)

    def merge_open(self, rows: TelemetrySeries, begin_s: float, until_s: float, now_s: float) -> None:
        """Raw rows of ``[begin_s, until_s)`` were read: they replace that part of the open range."""
        start = self.open_from_s(now_s)
        if self.open_start_s is None or begin_s <= max(start, self.open_start_s):
            merged = rows
            self.open_start_s = max(begin_s, start)
        else:
            merged = self.open_raw.between(None, begin_s).concat(rows)
            self.open_start_s = max(self.open_start_s, start)
        self.open_raw = merged.between(start, None)
        self.fetched_until_s = until_s
        self.needs_full_refetch = False
        # live samples up to the fetch are in the rows now (or the recorder refused them)
        self.live = [t for t in self.live if t.ts.timestamp() >= until_s - LATE_S]
        self._version += 1

    def add_live(self, message: Telemetry, now_s: float) -> None:
        """A live sample: kept until the next refresh; an old timestamp invalidates what it can change."""
        ts = message.ts.timestamp()
        self.live.append(message)
        if len(self.live) > 100_000:
            del self.live[: len(self.live) - 100_000]
        self._version += 1
        self.ledger.invalidate(ts, now_s)
        if self.fetched_until_s is not None and ts < self.fetched_until_s - LATE_S:
            self.needs_full_refetch = True
        first_open = self.first_open_day(now_s)
        if ts < first_open * DAY_S + MAX_SPAN_S:
            # a final day changes: its stored copy must not be used again
            days = range(ledger.day_of(ts - MAX_SPAN_S), min(ledger.day_of(ts + MAX_SPAN_S) + 1, first_open))
            _track(self.stale, days)
            for day in days:  # cached or not: a copy computed before the recorder stored the sample is not valid
                if day in self.stale:
                    self.ledger.invalidated_at_s[day] = now_s

    def prices_arrived(self, begin_s: float, end_s: float, now_s: float) -> None:
        """Prices for ``[begin_s, end_s)`` arrived: the final days in it are priced again where they held
        unpriced energy (cached ones at once, stored ones when read back)."""
        first_open = self.first_open_day(now_s)
        days = range(ledger.day_of(begin_s), min(ledger.day_of(end_s - 1e-6) + 1, first_open))
        if len(days) == 0:
            return
        _track(self.reprice, days)
        for day in days:
            chunk = self.ledger.days.get(day)
            if chunk is not None and chunk.buckets.sums[:, ledger.UNPRICED].sum() > 0:
                self.ledger.invalidated_at_s[day] = now_s
                self.stale.add(day)

    def accept_stored(self, chunks: list[DayChunk], now_s: float) -> set[int]:
        """Days read back from the store go into the ledger unless known to be outdated; the days taken."""
        taken: set[int] = set()
        for chunk in chunks:
            day = chunk.day
            if day in self.stale or not self.ledger.is_final(day, now_s):
                continue
            if day in self.reprice and chunk.buckets.sums[:, ledger.UNPRICED].sum() > 0:
                continue
            self.reprice.discard(day)
            # as computed then: a copy from before a back-dated sample (plus the settle time) is not valid
            self.ledger.put(chunk)
            if self.ledger.valid(day, fine=not chunk.coarse) is not None:
                taken.add(day)
        return taken

    def computed(self, chunk: DayChunk) -> None:
        """A day computed from raw rows: cached, and (when final) due to be published."""
        self.ledger.put(chunk)
        if chunk.final:
            if self.ledger.valid(chunk.day) is not None:  # not computed too soon after a back-dated sample
                self.stale.discard(chunk.day)
            self.reprice.discard(chunk.day)
            self.unpublished.add(chunk.day)

    def take_unpublished(self) -> list[DayChunk]:
        """The final days computed since the last call (oldest first), to publish."""
        out = [chunk for day in sorted(self.unpublished) if (chunk := self.ledger.days.get(day)) is not None]
        self.unpublished.clear()
        return out

    def stale_days(self, now_s: float) -> list[int]:
        """Final days to compute again (stale ones not cached as valid), oldest first."""
        settle = self.ledger.settle_s
        return sorted(
            d for d in self.stale
            if self.ledger.is_final(d, now_s) and self.ledger.valid(d) is None
            and now_s >= self.ledger.invalidated_at_s.get(d, -math.inf) + settle  # the recorder has it by now
        )

    def open_series(self) -> TelemetrySeries:
        """The open raw range with the live samples merged in."""
        if not self.live:
            return self.open_raw
        return self.open_raw.concat(TelemetrySeries.from_telemetry(self.live))

    def latest_s(self) -> float | None:
        """Time of the newest sample known (fetched or live)."""
        series = self.open_series()
        return float(series.time_s[-1]) if len(series) else None

    def _open_buckets(self, now_s: float, prices: PriceSeries, prices_version: int) -> Buckets:
        first = self.first_open_day(now_s)
        end = math.ceil((now_s + 1) / BUCKET_S) * BUCKET_S
        key = (self._version * 1_000_003 + prices_version, first * DAY_S)
        cached = self._open_cache
        if cached is not None and cached[0] == key[0] and cached[1] == key[1] and cached[2].edges[-1] >= end:
            return cached[2]
        edges = np.arange(first * DAY_S, end + BUCKET_S, BUCKET_S, dtype=np.float64)
        buckets = ledger.integrate(self.open_series(), prices, edges)
        self._open_cache = (key[0], key[1], buckets)
        return buckets

    def promote(self, now_s: float, prices: PriceSeries) -> None:
        """Days that became final while their raw rows are in the open range go into the ledger."""
        if self.open_start_s is None or self.fetched_until_s is None:
            return
        first = math.ceil((self.open_start_s + MAX_SPAN_S) / DAY_S)
        for day in range(first, self.first_open_day(now_s)):
            lo, hi = ledger.fetch_range(day)
            if lo < self.open_start_s or hi > self.fetched_until_s or self.ledger.valid(day) is not None:
                continue
            if not self.ledger.is_final(day, now_s):
                continue
            series = self.open_series().between(lo, hi)
            self.computed(
                DayChunk(day, ledger.integrate(series, prices, ledger.day_edges(day)), now_s, final=True,
                         currencies=day_currencies(prices, day))
            )

    # -- windows ------------------------------------------------------------------------------------------

    def window(
        self,
        begin_s: float,
        end_s: float,
        now_s: float,
        prices: PriceSeries,
        prices_version: int = 0,
    ) -> Totals | list[int]:
        """Sums over the window snapped to the 15-minute grid (begin up, end down; a window reaching now keeps
        the bucket in progress), or the final days that must be fetched first."""
        self.promote(now_s, prices)
        live = end_s >= now_s
        lo, hi = ledger.bucket_range(begin_s, end_s)
        if live:
            hi = math.ceil((now_s + 1) / BUCKET_S) * BUCKET_S
        if hi <= lo:
            return ledger.totals([], lo, lo)
        first_open = self.first_open_day(now_s)
        parts: list[Buckets] = []
        missing: list[int] = []
        for day in range(ledger.day_of(lo), ledger.day_of(hi - 1) + 1):
            if day >= first_open:
                break
            chunk = self.ledger.valid(day, fine=not ledger.whole_day(day, lo, hi))
            if chunk is None:
                missing.append(day)
            else:
                parts.append(ledger.slice_buckets(chunk.buckets, lo, hi))
        if missing:
            return missing
        if hi > first_open * DAY_S:
            if self.open_start_s is None:
                return [first_open]  # the open range was never read: the caller refreshes it
            parts.append(ledger.slice_buckets(self._open_buckets(now_s, prices, prices_version), lo, hi))
        result = ledger.totals(parts, lo, hi)
        if live and result.last_sample_s is not None:
            # nothing is known after the newest sample: the period ends there
            result = ledger.Totals(
                result.sums,
                result.begin_s,
                min(hi, result.last_sample_s),
                result.first_sample_s,
                result.last_sample_s,
                result.soc_start_kwh,
                result.soc_end_kwh,
            )
        elif live:
            result = ledger.Totals(result.sums, lo, min(hi, now_s), None, None, None, None)
        return result



def compute_day(day: int, series: TelemetrySeries, prices: PriceSeries, now_s: float, book: KpiBook) -> DayChunk:
    """Integrate one UTC day from its raw rows (those of :func:`ledger.fetch_range`) and cache it."""
    lo, hi = ledger.fetch_range(day)
    chunk = DayChunk(
        day, ledger.integrate(series.between(lo, hi), prices, ledger.day_edges(day)), now_s,
        final=book.ledger.is_final(day, now_s), currencies=day_currencies(prices, day),
    )
    book.computed(chunk)
    return chunk


def day_currencies(prices: PriceSeries, day: int) -> tuple[str, ...]:
    """The currencies of the price slots within a UTC day (what its money is in)."""
    window = prices.window(to_datetime(day * DAY_S), to_datetime((day + 1) * DAY_S))
    return tuple(sorted(window.currencies)) if len(window) else ()


def window_currencies(book: KpiBook, begin_s: float, end_s: float) -> set[str]:
    """The currencies of the cached days inside ``[begin_s, end_s)`` (their prices may no longer be loaded)."""
    found: set[str] = set()
    for day in range(ledger.day_of(begin_s), ledger.day_of(end_s) + 1):
        chunk = book.ledger.days.get(day)
        if chunk is not None:
            found.update(chunk.currencies)
    return found


def _track(days: set[int], new: range) -> None:
    days.update(new)
    while len(days) > MAX_TRACKED_DAYS:
        days.discard(min(days))


@dataclass
class DayFiller:
    """Turns raw pages of one run of consecutive days (read in time order) into days, keeping only the raw
    rows the next day still needs (about 1.5 days at most)."""

    days: list[int]
    buffer: TelemetrySeries = field(default_factory=TelemetrySeries.empty)

    @property
    def begin_s(self) -> float:
        return ledger.fetch_range(self.days[0])[0]

    @property
    def end_s(self) -> float:
        return ledger.fetch_range(self.days[-1])[1]

    def feed(self, rows: TelemetrySeries, complete_until_s: float) -> list[tuple[int, TelemetrySeries]]:
        """Add a page; every day whose raw range is complete up to ``complete_until_s`` is handed back."""
        self.buffer = self.buffer.concat(rows) if len(self.buffer) else rows
        ready: list[tuple[int, TelemetrySeries]] = []
        while self.days and ledger.fetch_range(self.days[0])[1] <= complete_until_s:
            day = self.days.pop(0)
            lo, hi = ledger.fetch_range(day)
            ready.append((day, self.buffer.between(lo, hi)))
            self.buffer = self.buffer.between(ledger.fetch_range(day + 1)[0], None)
        return ready


def runs(days: list[int]) -> list[list[int]]:
    """Consecutive runs of sorted day numbers: ``[3, 4, 7] -> [[3, 4], [7]]``."""
    out: list[list[int]] = []
    for day in sorted(set(days)):
        if out and out[-1][-1] == day - 1:
            out[-1].append(day)
        else:
            out.append([day])
    return out
