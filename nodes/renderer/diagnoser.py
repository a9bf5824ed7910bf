"""Diagnostics for the dashboard: read a window's raw history, diagnose it off the event loop, keep the answer.

Why its own cadence: the diagnostics are judged over hours to weeks of readings; recomputing them on every
telemetry message (every 2 s per battery) would re-read and re-integrate the whole window for a number that
moves in its last digit. A panel is computed when a page asks for it, kept for ``refresh_s``
(``BESS_RENDERER_DIAGNOSTICS_REFRESH_S``) for a live window and for good for a window in the past (until pushed
out of the cache), and one computation per battery and window runs at a time; a page asking meanwhile gets the
previous answer, or ``computing``.

Bounds: the raw telemetry is read in pages (``BESS_RENDERER_HISTORY_PAGE_ROWS``), and a window holding more than
``max_rows`` readings (``BESS_RENDERER_DIAGNOSTICS_MAX_ROWS``) is refused with the reason rather than half read:
a diagnostic over part of the window would not be the window's. The Commands are read from a day before the
window (the longest lease an operator may give, so a lease reaching into the window is known).

I/O is passed in (the node shell's history reads), so this module is tested without a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import BatterySpec, HistoryResult
from nodes.diagnostics.history import History
from nodes.diagnostics.report import diagnose
from nodes.renderer.diagnosis import DiagnosticsPanel, commands_from_history, panel_rows
from nodes.renderer.series import TelemetrySeries
from nodes.renderer.windows import TimeWindow
from nodes.runtime.errors import BusUnavailable

log = logging.getLogger(__name__)

COMMAND_LOOKBACK = timedelta(days=1)
"""Commands are read from this long before the window: the longest operator lease (BESS_MAX_OPERATOR_LEASE_S)."""
MAX_COMMANDS = 100_000
CACHE_ENTRIES = 64
WAIT_S = 2.0
"""A page's request waits this long for a computation before it is answered ``computing``."""
COMPUTING_REFRESH_S = 2.0
RETRY_S = 30.0
"""After a failed read, the page asks again this soon."""

Pages = Callable[..., AsyncIterator[tuple[HistoryResult, float]]]
"""``pages(kind, begin_s, end_s, battery=...)``: raw rows page by page (the node's ``_raw_pages``)."""
Read = Callable[..., Awaitable[HistoryResult]]
"""``read(kind, begin, end, every_s=None, limit=..., battery=...)``: one history request (the node's ``_history``)."""


class TooManyReadings(Exception):
    """The window holds more raw readings than the diagnostics read."""


class Diagnoser:
    """Diagnostics panels per battery and window, computed on demand at a bounded cadence."""

    def __init__(self, pages: Pages, read: Read, spec_of: Callable[[str], BatterySpec | None], *,
                 refresh_s: float = 300.0, max_rows: int = 1_000_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.pages = pages
        self.read = read
        self.spec_of = spec_of
        self.refresh_s = refresh_s
        self.max_rows = max_rows
        self.clock = clock
        self.cache: OrderedDict[tuple[str, str], tuple[float, DiagnosticsPanel]] = OrderedDict()
        """(battery, window key) -> (monotonic time it is good until, the panel)."""
        self.tasks: dict[tuple[str, str], asyncio.Task[DiagnosticsPanel]] = {}
        self.computed = 0

    async def panel(self, battery: str, window: TimeWindow) -> DiagnosticsPanel:
        """The panel of ``battery`` over ``window``: cached, else computed (waiting up to :data:`WAIT_S`)."""
        key = (battery, window.key)
        cached = self.cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self.tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._compute(battery, window), name=f"diagnostics-{battery}")
            self.tasks[key] = task
            task.add_done_callback(lambda done: self._store(key, window, done))
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(task), WAIT_S)
        if cached is not None:
            return cached[1]  # the previous answer until the new one is ready
        return DiagnosticsPanel(battery=battery, window=window.key, status="computing",
                                note="reading the raw history of the window", refresh_s=COMPUTING_REFRESH_S)

    def _store(self, key: tuple[str, str], window: TimeWindow, task: asyncio.Task[DiagnosticsPanel]) -> None:
        self.tasks.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("diagnostics of %s failed", key[0], exc_info=exc)
            return
        panel = task.result()
        if panel.status == "ready":
            live = window.is_live(self.clock())
            keep_s = self.refresh_s if live else 365 * 86400.0
        else:
            keep_s = RETRY_S
        self.cache[key] = (time.monotonic() + keep_s, panel)
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_ENTRIES:
            self.cache.popitem(last=False)

    async def _compute(self, battery: str, window: TimeWindow) -> DiagnosticsPanel:
        now = self.clock()
        begin, end = window.resolve(now)
        live = window.is_live(now)
        refresh = self.refresh_s if live else None

        def unavailable(note: str) -> DiagnosticsPanel:
            return DiagnosticsPanel(battery=battery, window=window.key, status="unavailable", note=note,
                                    computed_at=now, begin=begin, end=end, refresh_s=RETRY_S)

        spec = self.spec_of(battery)
        if spec is None:
            return unavailable("no spec received from the battery: every diagnostic compares with the spec")
        try:
            series = await self._telemetry(battery, begin, end)
            commands = await self.read("command", begin - COMMAND_LOOKBACK, end, every_s=None, limit=MAX_COMMANDS,
                                       battery=battery)
        except TooManyReadings:
            return unavailable(f"not computed: this window has more than {self.max_rows:,} raw readings "
                               "(BESS_RENDERER_DIAGNOSTICS_MAX_ROWS); choose a shorter window")
        except (TimeoutError, BusUnavailable, RuntimeError) as exc:
            return unavailable(f"history unavailable ({exc or 'the recorder did not answer'})")
        stored = commands_from_history(commands)
        note = "" if not commands.truncated else f"only the first {MAX_COMMANDS:,} commands were read"
        # numpy over up to max_rows readings: a worker thread keeps the event loop (pages, streams) responsive
        report = await asyncio.to_thread(diagnose, History.from_series(series), spec, stored, begin=begin, end=end)
        self.computed += 1
        return DiagnosticsPanel(battery=battery, window=window.key, status="ready", note=note, computed_at=now,
                                begin=begin, end=end, readings=report.readings, commands=len(stored),
                                rows=panel_rows(report), refresh_s=refresh)

    async def _telemetry(self, battery: str, begin: datetime, end: datetime) -> TelemetrySeries:
        parts: list[TelemetrySeries] = []
        read = 0
        async for result, _ in self.pages("telemetry", begin.timestamp(), end.timestamp(), battery=battery):
            read += len(result.rows)
            if read > self.max_rows:
                raise TooManyReadings
            parts.append(TelemetrySeries.from_history(result))
        if not parts:
            return TelemetrySeries.empty()
        return parts[0].concat(*parts[1:]) if len(parts) > 1 else parts[0]

    def forget(self, battery: str) -> None:
        """Drop a battery's cached panels (its spec changed: every comparison with it is out of date)."""
        for key in [k for k in self.cache if k[0] == battery]:
            del self.cache[key]

    def close(self) -> None:
        """Cancel computations still running (shutdown)."""
        for task in self.tasks.values():
            task.cancel()


__all__ = ["COMMAND_LOOKBACK", "Diagnoser", "TooManyReadings"]
