"""The renderer: Plotly figures on MQTT and the live dashboard.

Consumes: ``battery/+/telemetry``, ``battery/+/spec``, ``battery/+/state``, ``battery/+/control``,
``battery/+/schedule``, ``battery/+/alarm/+``, ``market/{zone}/prices``, ``node/+/status``, and for the control
panel ``battery/+/set`` (the running command) and ``battery/+/request/result`` (the gateway's verdicts); history
from the recorder over ``history/request`` (never the database directly), the stored alarms and commands too.
Produces: ``battery/{battery}/figure/{soc|power|prices|cells|schedule|insights|alarms}`` (retained Plotly JSON) for
the default window (the last 24 h) whenever a battery's inputs change (at most every ``BESS_RENDERER_INTERVAL_S``),
for the published batteries (only those and the viewed ones are drawn at all: :mod:`nodes.renderer.attention`),
and the dashboard on ``BESS_DASHBOARD_PORT``, where every viewer picks its own window (figures for other
windows are computed on demand and cached for ``BESS_RENDERER_FIGURE_CACHE_S``), and the derived
``battery/{battery}/revenue`` (DayRevenue, retained: today's realised revenue, the dashboard's own KPI since
midnight on ``BESS_RENDERER_DAY_TZ``, at most every ``BESS_RENDERER_REVENUE_INTERVAL_S``), and for the
dashboard's control panel ``battery/{battery}/request/{power,mode,replan}`` (source ``dashboard``, after the
dashboard's token and CSRF checks: :mod:`nodes.renderer.guard`, :mod:`nodes.renderer.control`), and the derived
``battery/{battery}/kpi/day`` (KpiDay, not retained: a final day's KPI integrals, for the recorder to store).

Two kinds of history:

* for drawing, the recorder's answer for the window: raw rows when they fit ``BESS_RENDERER_MAX_POINTS``, else means
  per bucket (each drawn over the bucket it stands for), re-read every ``BESS_RENDERER_HISTORY_REFRESH_S`` with live
  telemetry appended in between;
* for KPIs, raw rows integrated exactly into 15-minute rollups (:mod:`nodes.renderer.ledger`): the days still
  open are kept raw and refreshed incrementally; final days come from the store when they are there (their
  totals, and the buckets of the days a window cuts: :mod:`nodes.renderer.kpi_days`), else their raw rows are
  read once in the background (at most ``BESS_RENDERER_KPI_MAX_ROWS`` rows per window; beyond that the page says
  so instead of showing a guess) and each day computed is published (``battery/{battery}/kpi/day``) for the
  recorder to store.

Diagnostics (:mod:`nodes.renderer.diagnoser`): raw readings and stored Commands of a viewer's window, diagnosed in a
worker thread when a page asks, kept ``BESS_RENDERER_DIAGNOSTICS_REFRESH_S``. CSV exports
(:mod:`nodes.renderer.exports`) are drawn from the same scene as the figures of that window.

If the recorder does not answer, the figures are drawn from live data alone and the node reports ``degraded``.

Longer than 600 lines: it is the one place where the renderer's inputs (twelve subscriptions) meet its outputs
(figures, revenue, the dashboard's providers); the drawing, KPIs, diagnostics, exports and control each live in
a module of their own. The history reading (``_history`` .. ``_fill``) is the next part to move out.
Lifecycle: the common node lifecycle (nodes.runtime.node); the web server starts in ``run`` and stops (closing
event streams) on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from nodes.contract.messages import (
    Alarm,
    BatterySpec,
    BatteryState,
    Command,
    ControlMode,
    HistoryKind,
    HistoryQuery,
    HistoryResult,
    KpiDay,
    NodeStatus,
    PriceForecast,
    RequestResult,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import (
    ALARM,
    COMMAND,
    CONTROL,
    FIGURE,
    HISTORY,
    KPI_DAY,
    PRICES,
    REQUEST_RESULT,
    REVENUE,
    SCHEDULE,
    SPEC,
    STATE,
    STATUS,
    TELEMETRY,
    Topic,
)
from nodes.renderer import control_web, kpi_days, revenue
from nodes.renderer import history as hist
from nodes.renderer import pages as history_pages
from nodes.renderer.attention import Attention, render_order
from nodes.renderer.command_history import CommandHistory
from nodes.renderer.config import RendererConfig
from nodes.renderer.control import ControlDesk
from nodes.renderer.csvout import Table
from nodes.renderer.currency import mixed_currencies
from nodes.renderer.dashboard import DashboardState, WindowFigures
from nodes.renderer.diagnoser import Diagnoser
from nodes.renderer.draw import Drawing, Scene, draw
from nodes.renderer.exports import scene_table
from nodes.renderer.figures import FIGURE_IDS, alarms_from_history
from nodes.renderer.guard import ControlGuard
from nodes.renderer.history import DisplayHistory, bucket_seconds
from nodes.renderer.insights import Insights, insights_from_totals, pending
from nodes.renderer.kpis import DayFiller, KpiBook, compute_day, runs, window_currencies
from nodes.renderer.retained import clear_figures
from nodes.renderer.series import PriceSeries, TelemetrySeries, downsample, to_datetime
from nodes.renderer.slots import LIVE, NEW, PrioritySlots
from nodes.renderer.web import build_app
from nodes.renderer.windows import DEFAULT_WINDOW, TimeWindow
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.http_serve import HttpLimits, Listener
from nodes.runtime.node import Service

log = logging.getLogger("bess.renderer")
_BACKGROUND: ContextVar[bool] = ContextVar("renderer_background_read", default=False)

FILL_RUN_DAYS = 7
ALARM_ROWS = 1000
"""At most this many stored alarm transitions are read for one window's history table."""
"""Background KPI reads go newest first in runs of this many days, so recent windows are ready first."""


@dataclass
class BatteryView:
    """Everything drawn for one battery."""

    spec: BatterySpec | None = None
    schedule: Schedule | None = None
    live: deque[Telemetry] = field(default_factory=deque)
    book: KpiBook = field(default_factory=KpiBook)
    display: dict[str, DisplayHistory] = field(default_factory=dict)
    open_read_at: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    fill_task: asyncio.Task[None] | None = None
    fill_note: str = ""
    fill_error: str = ""
    fill_blocked_until: float = 0.0
    alarm_history: list[Alarm] = field(default_factory=list)
    """The stored alarm transitions of the last window read, and when (``alarm_read``: monotonic, and its key)."""
    alarm_read: tuple[str, float] | None = None
    live_alarms: deque[Alarm] = field(default_factory=lambda: deque(maxlen=200))
    """Transitions received since: the table shows them before the recorder has stored them."""
    revenue_due_at: float = 0.0
    """Monotonic time of the next realised-revenue message (battery/{battery}/revenue)."""

    def cool(self) -> None:
        """Nobody views the battery any more: drop what was read and buffered for drawing it."""
        if self.fill_task is not None:
            self.fill_task.cancel()
        self.live.clear()
        self.book, self.display, self.open_read_at, self.fill_task = KpiBook(), {}, None, None
        self.alarm_history, self.alarm_read = [], None


class _TooManyRows(Exception):
    pass


class Renderer(Service[RendererConfig]):
    """Draws every battery it hears about and serves the dashboard."""

    name = "renderer"

    def __init__(self, config: RendererConfig, bus: MessageBus) -> None:
        super().__init__(config, bus)
        self.views: dict[str, BatteryView] = {}
        self.forecast: PriceForecast | None = None
        self.price_history = PriceSeries.empty()
        self.price_ranges: list[tuple[float, float, float]] = []
        """(begin_s, end_s, monotonic read time) of the raw price reads merged into ``price_history``."""
        self.prices_version = 0
        self.dirty: set[str] = set()
        self.stale: set[str] = set()
        """Batteries due only for the periodic refresh (their window slid); drawn after the live ones."""
        self.wake = asyncio.Event()
        self.dashboard = DashboardState(figure_provider=self.figures_for, auth=config.auth())
        self.guard = ControlGuard.create(config.auth(), config.dashboard_host, config.dashboard_control)
        self.desk = ControlDesk(self.dashboard, self._send_request, timeout_s=config.dashboard_control_timeout_s)
        self.command_history = CommandHistory(self._ask_history, cache_s=config.figure_cache_s)
        self.window_cache: OrderedDict[tuple[str, str], tuple[float, WindowFigures]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[WindowFigures]] = {}
        self._listener: Listener | None = None
        self.day_tz, self.day_tz_name = revenue.day_clock(config.renderer_day_tz, config.renderer_zone)
        self.dashboard.display_tz = config.display_tz
        self.diagnoser = Diagnoser(
            self._raw_pages, self._history, lambda b: self.views[b].spec if b in self.views else None,
            refresh_s=config.diagnostics_refresh_s, max_rows=config.diagnostics_max_rows,
        )
        self.dashboard.diagnostics_provider = self.diagnoser.panel
        self.dashboard.export_provider = self.export
        # thousands of ids: draw only the batteries somebody views (nodes/renderer/attention.py), and bound the
        # history requests in flight over all of them, so a burst of ids cannot starve battery-1
        self.attention = Attention(publish_max=config.renderer_publish_max, warm_max=config.renderer_warm_batteries,
                                   warm_s=config.renderer_warm_s, streams=self.dashboard.figure_viewers)
        self.dashboard.on_view = self._mark
        self._history_slots = PrioritySlots(config.renderer_history_max_inflight)
        self._drawn: set[str] = set()
        self._rendered: set[str] = set()
        """Warm batteries drawn at least once since they became warm."""
        self._published: frozenset[str] = frozenset()

    # -- inputs -----------------------------------------------------------------------------------------------

    async def setup(self) -> None:
        bus = self.bus
        bus.enable_requests(HISTORY)
        bus.subscribe(TELEMETRY, self.on_telemetry)
        bus.subscribe(SPEC, self.on_spec)
        bus.subscribe(STATE, self.on_state)
        bus.subscribe(CONTROL, self.on_control)
        bus.subscribe(SCHEDULE, self.on_schedule)
        bus.subscribe(PRICES, self.on_prices, zone=self.config.renderer_zone)
        bus.subscribe(STATUS, self.on_status, on_cleared=self.on_status_cleared)
        bus.subscribe(ALARM, self.on_alarm)
        bus.subscribe(COMMAND, self.on_command)
        bus.subscribe(REQUEST_RESULT, self.on_request_result)
        bus.set_counters_source(lambda: {**self.desk.counters, **self.attention.counts(time.monotonic())})

    def _view(self, battery: str) -> BatteryView:
        if battery not in self.views:
            self.views[battery] = BatteryView(live=deque(maxlen=self.config.live_buffer))
            self.dashboard.add_battery(battery)
            self.attention.seen(battery)
        return self.views[battery]

    def _mark(self, *batteries: str) -> None:
        self.dirty.update(batteries)
        self.wake.set()

    def _forget_windows(self, battery: str) -> None:
        for key in [k for k in self.window_cache if k[0] == battery]:
            del self.window_cache[key]

    async def on_telemetry(self, params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        """Live telemetry: append, show the latest reading, redraw soon."""
        battery = params["battery"]
        view = self._view(battery)
        if not self.attention.is_warm(battery, time.monotonic()):
            self.dashboard.set_telemetry(battery, message)  # the index row only: nothing is drawn for it
            return
        now_s = time.time()
        latest = view.live[-1].ts if view.live else None
        view.live.append(message)
        view.book.add_live(message, now_s)
        if latest is not None and message.ts < latest - timedelta(seconds=120):
            # a back-dated write: the history drawn for any window may change
            for history in view.display.values():
                history.read_at = -math.inf
            self._forget_windows(battery)
        self.dashboard.set_telemetry(battery, message)
        self._mark(battery)

    async def on_spec(self, params: dict[str, str], message: BatterySpec, delivery: Delivery) -> None:
        """SOC limits for the SOC figure, capacity for the fleet table, the power limits for the control panel's
        hints; the diagnostics compare with it."""
        self._view(params["battery"]).spec = message
        self.attention.spec(params["battery"])
        self.dashboard.set_spec(params["battery"], message)
        self.diagnoser.forget(params["battery"])
        self.desk.on_spec(params["battery"], message)
        self._mark(params["battery"])

    async def on_state(self, params: dict[str, str], message: BatteryState, delivery: Delivery) -> None:
        """Mode and lease for the status strip; what the battery did with its command (the command history)."""
        self._view(params["battery"])
        self.dashboard.set_state(params["battery"], message)
        self.desk.on_state(params["battery"], message)

    async def on_control(self, params: dict[str, str], message: ControlMode, delivery: Delivery) -> None:
        """Who commands the battery (autopilot, manual, idle) for the status strip and the index."""
        self._view(params["battery"])
        self.dashboard.set_control(params["battery"], message)

    async def on_schedule(self, params: dict[str, str], message: Schedule, delivery: Delivery) -> None:
        """A new plan: planned SOC and power, the schedule table, expected revenue, the fleet's revenue today (and
        a re-plan's answer)."""
        self._view(params["battery"]).schedule = message
        self.dashboard.set_schedule(params["battery"], message)
        self.desk.on_schedule(params["battery"], message)
        self._mark(params["battery"])

    async def on_prices(self, params: dict[str, str], message: PriceForecast, delivery: Delivery) -> None:
        """A new forecast: every battery's price figures change."""
        self.forecast = message
        self.prices_version += 1
        if message.slots:
            begin_s, end_s = message.slots[0].start.timestamp(), message.slots[-1].end.timestamp()
            for view in self.views.values():
                view.book.prices_arrived(begin_s, end_s, time.time())  # a final day priced late: redone
        self._mark(*self.views)

    async def on_alarm(self, params: dict[str, str], message: Alarm, delivery: Delivery) -> None:
        """An alarm raised or cleared: the banners at once, the history table at the next render."""
        battery = params["battery"]
        view = self._view(battery)
        self.dashboard.set_alarm(battery, message, params["rule"])
        if not delivery.retain:
            view.live_alarms.append(message)
        self._forget_windows(battery)
        self._mark(battery)

    async def on_command(self, params: dict[str, str], message: Command, delivery: Delivery) -> None:
        """A Command on a battery's set topic (any source): the panel's running command, the history's tail."""
        self._view(params["battery"])
        self.desk.on_command(params["battery"], message)

    async def on_request_result(self, params: dict[str, str], message: RequestResult, delivery: Delivery) -> None:
        """The gateway's verdict on an operator request (the panel waits for its own ``request_id``)."""
        self.desk.on_result(params["battery"], message)

    async def _send_request(self, topic: Topic[Any], message: msgspec.Struct, battery: str) -> None:
        """The desk's publisher: QoS 1, PUBACK awaited (BusUnavailable when the broker does not take it)."""
        await self.bus.publish(topic, message, wait_ack=True, timeout=self.config.dashboard_control_timeout_s,
                               battery=battery)

    async def _ask_history(self, query: HistoryQuery) -> HistoryResult:
        # live redraws first: a burst of first draws and background KPI reads must not queue battery-1's refresh
        live = not _BACKGROUND.get() and (query.battery is None or query.battery in self._rendered
                                          or query.battery in self.attention.viewed(time.monotonic()))
        async with self._history_slots.slot(LIVE if live else NEW):
            return await self.bus.request(HISTORY, query, timeout=self.config.history_timeout_s)

    async def on_status(self, params: dict[str, str], message: NodeStatus, delivery: Delivery) -> None:
        """Node health for the status strip, keyed by the topic it came on (never the payload's own name)."""
        before = self.dashboard.statuses.get(params["node"])
        self.dashboard.set_status(params["node"], message)
        old = before.details if before is not None else {}
        # a changed note (e.g. the planner's "not planned: ...") is drawn in the plan panel: redraw that battery
        changed = {b for b in set(old) | set(message.details) if old.get(b) != message.details.get(b)}
        self._mark(*(b for b in changed if b in self.views))

    async def on_status_cleared(self, params: dict[str, str]) -> None:
        """A node removed for good (its retained status cleared): it leaves the status strip."""
        self.dashboard.forget_status(params["node"])

    # -- history ----------------------------------------------------------------------------------------------

    async def _history(
        self, kind: HistoryKind, begin: datetime, end: datetime, *, every_s: int | None, limit: int, **ids: str
    ) -> HistoryResult:
        return await self._ask_ok(HistoryQuery(kind=kind, begin=begin, end=end, every_s=every_s, limit=limit, **ids))

    async def _ask_ok(self, query: HistoryQuery) -> HistoryResult:
        result = await self._ask_history(query)
        if not result.ok:
            raise RuntimeError(result.error or "history request failed")
        return result

    async def _raw_pages(
        self, kind: HistoryKind, begin_s: float, end_s: float, **ids: str
    ) -> AsyncIterator[tuple[HistoryResult, float]]:
        """Raw rows of ``[begin_s, end_s)`` page by page, each with the time up to which rows are complete."""
        async for page in history_pages.pages(self._ask_ok, kind, begin_s, end_s, self.config.history_page_rows,
                                              **ids):
            yield page

    async def _raw_series(self, begin_s: float, end_s: float, battery: str) -> TelemetrySeries:
        parts = [TelemetrySeries.from_history(r) async for r, _ in self._raw_pages("telemetry", begin_s, end_s,
                                                                                   battery=battery)]
        return parts[0].concat(*parts[1:]) if len(parts) > 1 else parts[0] if parts else TelemetrySeries.empty()

    def _degraded(self, exc: BaseException) -> None:
        self.bus.set_state("degraded", f"history unavailable ({exc or 'recorder did not answer'}); live data only")
        self.bus.counters["history_failures"] += 1

    async def _ensure_prices(self, begin_s: float, end_s: float) -> None:
        """Raw price history over ``[begin_s, end_s)`` merged into :attr:`price_history` (re-read when recent)."""
        begin_s, end_s = hist.price_days(begin_s, end_s)
        now = time.monotonic()
        recent = end_s > time.time() - 2 * hist.DAY_S
        if hist.covered(self.price_ranges, begin_s, end_s, recent=recent, now=now,
                         refresh_s=self.config.history_refresh_s):
            return
        parts = [
            PriceSeries.from_history(r)
            async for r, _ in self._raw_pages("prices", begin_s, end_s, zone=self.config.renderer_zone)
        ]
        self.price_history = self.price_history.merge(*parts)
        self.price_ranges = [r for r in self.price_ranges if not (begin_s <= r[0] and r[1] <= end_s)]
        self.price_ranges.append((begin_s, end_s, now))
        self.prices_version += 1

    def _prices(self) -> PriceSeries:
        series = self.price_history
        if self.forecast is not None:
            series = series.merge(PriceSeries.from_forecast(self.forecast))
        return series

    async def _refresh_open(self, battery: str, view: BatteryView, now_s: float) -> None:
        """Keep the raw rows of the battery's open days current (incremental, every history_refresh_s)."""
        stale = view.open_read_at is None or time.monotonic() - view.open_read_at > self.config.history_refresh_s
        if not (stale or view.book.needs_full_refetch):
            return
        begin_s = view.book.fetch_begin_s(now_s)
        until_s = now_s + 1.0
        rows = await self._raw_series(begin_s, until_s, battery)
        await self._ensure_prices(begin_s, now_s + 2 * 86400)
        view.book.merge_open(rows, begin_s, until_s, now_s)
        view.open_read_at = time.monotonic()

    async def _display_history(
        self, battery: str, view: BatteryView, window: TimeWindow, begin: datetime, end: datetime
    ) -> DisplayHistory:
        cached = view.display.get(window.key)
        if cached is not None and time.monotonic() - cached.read_at <= self.config.history_refresh_s:
            return cached
        every = bucket_seconds(begin, end, self.config.max_points)
        span_s = (end - begin).total_seconds()
        series: TelemetrySeries | None = None
        if hist.raw_may_fit(every, hist.density(view.book.open_raw), span_s, self.config.max_points):
            raw = await self._history(
                "telemetry", begin, end, every_s=None, limit=self.config.max_points, battery=battery
            )
            if not raw.truncated:
                series = TelemetrySeries.from_history(raw)
        if series is None:
            means = await self._history(
                "telemetry", begin, end, every_s=every or 3, limit=self.config.max_points * 2, battery=battery
            )
            # a bucket mean stands for its bucket, but never for time before the first or after the last sample
            first = await self._history("telemetry", begin, end, every_s=None, limit=1, battery=battery)
            lo = TelemetrySeries.from_history(first).time_s[:1]
            begin_s, end_s = hist.means_range(begin.timestamp(), end.timestamp(),
                                               float(lo[0]) if lo.size else None, view.book.latest_s())
            series = TelemetrySeries.from_history(means, bucket_s=every or 3, begin_s=begin_s, end_s=end_s)
        history = DisplayHistory(series, begin.timestamp(), end.timestamp(), time.monotonic())
        view.display[window.key] = history
        while len(view.display) > 16:
            del view.display[next(iter(view.display))]
        return history

    async def _alarm_history(self, battery: str, view: BatteryView, window: TimeWindow, begin: datetime,
                             end: datetime) -> tuple[list[Alarm], str | None]:
        """The window's stored alarm transitions (re-read every history_refresh_s) with the live ones since."""
        fresh = view.alarm_read is not None and view.alarm_read[0] == window.key and (
            time.monotonic() - view.alarm_read[1] <= self.config.history_refresh_s)
        note = None
        if not fresh:
            try:
                result = await self._history("alarms", begin, end, every_s=None, limit=ALARM_ROWS, battery=battery)
            except (TimeoutError, BusUnavailable, RuntimeError) as exc:
                note = f"alarm history unavailable ({exc or 'the recorder did not answer'})"
            else:
                view.alarm_history = alarms_from_history(result)
                view.alarm_read = (window.key, time.monotonic())
        seen = {(a.rule, a.state, a.since) for a in view.alarm_history}
        live = [a for a in view.live_alarms if begin <= a.since < end and (a.rule, a.state, a.since) not in seen]
        return [*view.alarm_history, *live], note

    # -- KPIs -------------------------------------------------------------------------------------------------

    def _insights(self, battery: str, view: BatteryView, begin_s: float, end_s: float, now_s: float) -> Insights:
        if view.book.open_start_s is None:
            return pending("unavailable", "history unavailable: the recorder did not answer", view.schedule)
        prices = self._prices()
        # the currencies of the prices in view, and of the stored days whose prices were never read
        currencies = set(prices.window(to_datetime(begin_s), to_datetime(end_s)).currencies)
        currencies |= window_currencies(view.book, begin_s, end_s)
        problem = mixed_currencies(currencies, view.schedule)
        if problem is not None:
            return pending("unavailable", problem, view.schedule)
        result = view.book.window(begin_s, end_s, now_s, prices, self.prices_version)
        if not isinstance(result, list) and time.monotonic() >= view.fill_blocked_until and (
                stale := view.book.stale_days(now_s)):
            self._start_fill(battery, view, stale)  # a back-dated sample changed a final day: redo and republish
        if isinstance(result, list):
            if view.fill_error and time.monotonic() < view.fill_blocked_until:
                return pending("unavailable", view.fill_error, view.schedule)
            self._start_fill(battery, view, result)
            note = view.fill_note or f"reading the raw history of {len(result)} day(s)"
            return pending("computing", note, view.schedule)
        return insights_from_totals(result, view.spec, view.schedule,
                                    next(iter(sorted(currencies or prices.currencies)), None))

    def _start_fill(self, battery: str, view: BatteryView, days: list[int]) -> None:
        if view.fill_task is not None and not view.fill_task.done():
            return
        view.fill_error = ""
        view.fill_task = asyncio.create_task(self._fill(battery, view, days), name=f"kpi-fill-{battery}")

    async def _publish_kpi(self, battery: str, message: KpiDay) -> None:
        await self.bus.publish(KPI_DAY, message, battery=battery)

    async def _publish_days(self, battery: str, view: BatteryView) -> None:
        """Newly final days to the recorder (battery/{battery}/kpi/day); kept for later while the broker is away."""
        try:
            self.bus.counters["kpi_days_published"] += await kpi_days.publish_new(self._publish_kpi, battery, view.book)
        except BusUnavailable as exc:
            log.debug("KPI days of %s not published yet: %s", battery, exc)

    async def _fill(self, battery: str, view: BatteryView, days: list[int]) -> None:
        """Missing final days (newest first): the stored ones (``kind="kpi"``) first, the raw rows of the rest
        integrated into the ledger and published (:mod:`nodes.renderer.kpi_days`)."""
        _BACKGROUND.set(True)  # this task's own context: its history requests wait behind the live ones
        read = 0
        done = 0
        try:
            wanted = sorted(d for d in days if d not in view.book.stale)
            # totals for whole days; buckets for the first and last (a window cuts no other day)
            ends = frozenset(wanted[:1] + wanted[-1:])
            stored = await kpi_days.read_stored(self._ask_ok, battery, wanted, self.config.history_page_rows,
                                                fine=ends)
            taken = view.book.accept_stored(stored, time.time())
            done += len(taken)
            self.bus.counters["kpi_days_read"] += len(taken)
            # the rest from raw rows, and an end day whose buckets were not stored (its totals cannot serve a cut)
            days = [d for d in days if d not in taken or (d in ends and view.book.ledger.valid(d, fine=True) is None)]
            chunks = [run[i : i + FILL_RUN_DAYS] for run in runs(days) for i in range(0, len(run), FILL_RUN_DAYS)]
            for run in reversed(chunks):
                filler = DayFiller(list(run))
                await self._ensure_prices(filler.begin_s, filler.end_s)
                prices = self._prices()
                async for result, complete_until in self._raw_pages(
                    "telemetry", filler.begin_s, filler.end_s, battery=battery
                ):
                    page = TelemetrySeries.from_history(result)
                    read += len(page)
                    for day, rows in filler.feed(page, complete_until):
                        compute_day(day, rows, prices, time.time(), view.book)
                        done += 1
                    view.fill_note = f"reading the raw history: {done} of {len(days)} days, {read:,} samples"
                    if read > self.config.kpi_max_rows:
                        raise _TooManyRows
                    await asyncio.sleep(0)  # let renders and page requests through between pages
                await self._publish_days(battery, view)
        except _TooManyRows:
            view.fill_error = (
                f"not computed: this window has more than {self.config.kpi_max_rows:,} raw samples "
                f"(BESS_RENDERER_KPI_MAX_ROWS); {done} of {len(days)} days are read, choose a shorter window"
            )
            view.fill_blocked_until = time.monotonic() + 600
        except (TimeoutError, BusUnavailable, RuntimeError) as exc:
            view.fill_error = f"not computed: history unavailable ({exc or 'recorder did not answer'})"
            view.fill_blocked_until = time.monotonic() + 30
            self._degraded(exc)
        except Exception:
            log.exception("reading the KPI history of %s failed", battery)
            view.fill_error = "not computed: reading the history failed (logged)"
            view.fill_blocked_until = time.monotonic() + 60
        finally:
            view.fill_note = ""
            self._forget_windows(battery)
            self._mark(battery)

    # -- drawing ----------------------------------------------------------------------------------------------

    async def build(self, battery: str, window: TimeWindow) -> Drawing:
        """Every figure of ``battery`` over ``window`` (contract Figures, drawn in a worker thread)."""
        scene = await self.scene(battery, window)
        drawing = await asyncio.to_thread(draw, scene, self.config.figure_cache_s)
        self.bus.counters["renders"] += 1
        return drawing

    async def export(self, battery: str, window: TimeWindow, series: str) -> Table:
        """The CSV export ``series`` of ``battery`` over ``window``: the data its panel draws."""
        return scene_table(series, await self.scene(battery, window))

    async def scene(self, battery: str, window: TimeWindow) -> Scene:
        """Everything the figures of ``battery`` over ``window`` are drawn from (history read as needed)."""
        view = self._view(battery)
        now = datetime.now(UTC)
        now_s = now.timestamp()
        begin, end = window.resolve(now)
        live = window.is_live(now)
        history: DisplayHistory | None = None
        alarms_note: str | None
        async with view.lock:
            try:
                await self._refresh_open(battery, view, now_s)
                history = await self._display_history(battery, view, window, begin, end)
            except (TimeoutError, BusUnavailable, RuntimeError) as exc:
                self._degraded(exc)
                # the recorder did not answer: do not wait for it a second time for the alarms
                alarms, alarms_note = list(view.live_alarms), f"alarm history unavailable ({exc or 'no answer'})"
            else:
                self.bus.set_state("online")
                alarms, alarms_note = await self._alarm_history(battery, view, window, begin, end)
        telemetry = hist.with_live(view.live, history, begin.timestamp(), end.timestamp() + (1.0 if live else 0.0))
        x_end = end + (end - begin) / 2 if live else end
        insights = self._insights(battery, view, begin.timestamp(), end.timestamp(), now_s)
        await self._publish_days(battery, view)  # days the open range made final just now
        return Scene(
            battery=battery,
            telemetry=telemetry,
            prices=downsample(self._prices().window(begin, x_end), self.config.max_points),
            schedule=view.schedule,
            spec=view.spec,
            insights=insights,
            now=now,
            x_range=(begin, x_end),
            live=live,
            plan_note=self.dashboard.notes_for(battery).get("planner"),
            alarms=alarms,
            alarms_note=alarms_note,
        )

    async def figures_for(self, battery: str, window: TimeWindow) -> WindowFigures:
        """The dashboard's provider: figures for a viewer's window, cached briefly, one build per key at a time."""
        if battery not in self.attention.recent(time.monotonic()):
            self._mark(battery)  # a cold battery: its default window is drawn from now on too
        self.attention.requested(battery, time.monotonic())
        drawn = self.dashboard.figures.get(battery, {})
        if window == DEFAULT_WINDOW and all(f in drawn for f in FIGURE_IDS):
            return WindowFigures(drawn, None)
        key = (battery, window.key)
        cached = self.window_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[WindowFigures] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            drawing = await self.build(battery, window)
            answer = WindowFigures.of(drawing.figures, drawing.refresh_s)
            future.set_result(answer)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[key]
        self.window_cache[key] = (time.monotonic() + self.config.figure_cache_s, answer)
        while len(self.window_cache) > 64:
            self.window_cache.popitem(last=False)
        return answer

    async def render(self, battery: str) -> None:
        """Draw the default window of ``battery`` and fan the figures out: the dashboard, then the bus (typed)."""
        drawing = await self.build(battery, DEFAULT_WINDOW)
        self.dashboard.set_figures(battery, drawing.figures)  # all at once: a page never sees half a set
        if battery not in self.attention.published():
            return  # drawn for its viewers only: the retained topics are for the published batteries
        for figure in drawing.figures:
            await self.bus.publish(FIGURE, figure, battery=battery, figure=figure.figure)
        await self.publish_revenue(battery)

    async def publish_revenue(self, battery: str) -> None:
        """Today's realised revenue of ``battery`` (the dashboard's KPI since midnight), at most every
        ``BESS_RENDERER_REVENUE_INTERVAL_S``; nothing while the KPI is not known (:mod:`nodes.renderer.revenue`)."""
        view = self._view(battery)
        if time.monotonic() < view.revenue_due_at:
            return
        now = datetime.now(UTC)
        start = revenue.day_start(now, self.day_tz)
        insights = self._insights(battery, view, start.timestamp(), now.timestamp(), now.timestamp())
        known = bool(self._prices().currencies) or view.schedule is not None
        message = revenue.day_revenue(insights, start, self.day_tz_name, now, currency_known=known)
        if message is None:
            return
        await self.bus.publish(REVENUE, message, battery=battery)
        view.revenue_due_at = time.monotonic() + self.config.renderer_revenue_interval_s
        self.bus.counters["revenue_published"] += 1

    async def _settle_attention(self) -> None:
        """Who is drawn this pass: a battery nobody views any more is cooled down, one that left the published
        set has its retained figure topics cleared (they would show a stale drawing forever)."""
        warm = self.attention.warm(time.monotonic())
        published = self.attention.published()
        for battery in self._drawn - warm:
            if battery in self.views:
                self.views[battery].cool()
            self.dashboard.figures.pop(battery, None)
            self._forget_windows(battery)
        for battery in self._published - published:
            await clear_figures(self.bus, battery)
        self.dirty.update(warm - self._drawn)
        self.dirty.intersection_update(warm)
        self.stale.intersection_update(warm)
        self._drawn, self._published = warm, published
        self._rendered &= warm

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        # the gateway's listener: idle/header timeout, a connection limit, JSON for aiohttp's own errors
        install = [control_web.installer(self.desk, self.guard, self.command_history)]
        self._listener = Listener(build_app(self.dashboard, install=install), HttpLimits(), name="dashboard")
        await self._listener.start(self.config.dashboard_host, [self.config.dashboard_port])
        log.info(
            "dashboard on http://%s:%d/ (%s; control %s)", self.config.dashboard_host, self.config.dashboard_port,
            "token required" if self.dashboard.auth else "no token",
            self.guard.disabled_reason() or "on",
        )
        last_full = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.config.history_refresh_s)
            self.wake.clear()
            if time.monotonic() - last_full >= self.config.history_refresh_s:
                # the window slides and history refreshes even when nothing new arrives
                self.stale.update(self.views)
                last_full = time.monotonic()
            await self._settle_attention()
            started, deferrable_done = time.monotonic(), 0
            for battery, deferrable in render_order(self.dirty & self._drawn, self.stale & self._drawn,
                                                    self._rendered, self.attention.viewed(started)):
                if deferrable and deferrable_done and time.monotonic() - started > self.config.render_interval_s:
                    self.wake.set()  # the next pass goes on with them: they never delay the live batteries
                    continue
                self.dirty.discard(battery)
                self.stale.discard(battery)
                try:
                    await self.render(battery)
                    self._rendered.add(battery)
                    deferrable_done += deferrable
                except Exception:
                    self.bus.counters["render_errors"] += 1
                    log.exception("rendering %s failed", battery)
            # redraw at most every render_interval_s: telemetry every second must not mean 5 figures a second
            await asyncio.sleep(self.config.render_interval_s)

    async def shutdown(self) -> None:
        self.diagnoser.close()
        for view in self.views.values():
            if view.fill_task is not None:
                view.fill_task.cancel()
        self.dashboard.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.stop()


__all__ = ["Renderer", "RendererConfig"]
