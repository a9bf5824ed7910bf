"""The renderer: Plotly figures on MQTT and the live dashboard.

Consumes: ``battery/+/telemetry``, ``battery/+/spec``, ``battery/+/state``, ``battery/+/schedule``,
``market/{zone}/prices``, ``node/+/status``; history from the recorder over ``history/request`` (never the
database directly), downsampled to the window shown.
Produces: ``battery/{battery}/figure/{soc|power|prices|schedule|insights}`` (retained Plotly JSON) whenever a
battery's inputs change (at most every ``BESS_RENDER_INTERVAL_S``), and the dashboard on
``BESS_DASHBOARD_PORT`` (server-sent events push the same figures to the browser without reloads).
History is re-fetched when the window changes and every ``BESS_HISTORY_REFRESH_S``; telemetry that arrives in
between is appended live. If the recorder does not answer, the figures are drawn from live data alone and the
node reports ``degraded``.
Lifecycle: the common node lifecycle (nodes.runtime.node); the web server starts in ``run`` and stops (closing
event streams) on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import (
    BatterySpec,
    BatteryState,
    HistoryKind,
    HistoryQuery,
    HistoryResult,
    NodeStatus,
    PriceForecast,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import FIGURE, HISTORY_REQUEST, PRICES, SCHEDULE, SPEC, STATE, STATUS, TELEMETRY, id_problems
from nodes.renderer.figures import render_all, to_message
from nodes.renderer.insights import compute_insights
from nodes.renderer.series import PriceSeries, TelemetrySeries
from nodes.renderer.web import DashboardState, build_app
from nodes.runtime.bus import Bus, BusUnavailable, Delivery, MqttSettings
from nodes.runtime.http_serve import HttpLimits, Listener
from nodes.runtime.node import Service

log = logging.getLogger("bess.renderer")


class RendererConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_*`` settings of the renderer."""

    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    renderer_zone: str = "de-lu"
    render_interval_s: float = 1.0
    history_refresh_s: float = 60.0
    history_timeout_s: float = 10.0
    max_points: int = 2000
    live_buffer: int = 20_000

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.renderer_zone, "BESS_RENDERER_ZONE")
        if not 0 < self.dashboard_port < 65536:
            found.append("BESS_DASHBOARD_PORT must be a port number")
        if self.max_points < 10 or self.render_interval_s <= 0:
            found.append("BESS_MAX_POINTS must be >= 10 and BESS_RENDER_INTERVAL_S > 0")
        return found


def bucket_seconds(begin: datetime, end: datetime, max_points: int) -> int | None:
    """Downsampling bucket for a window: None (raw) when raw data fits, else whole seconds per point."""
    span_s = (end - begin).total_seconds()
    every = math.ceil(span_s / max_points)
    return None if every <= 2 else every


@dataclass
class BatteryView:
    """Everything drawn for one battery."""

    spec: BatterySpec | None = None
    schedule: Schedule | None = None
    live: deque[Telemetry] = field(default_factory=deque)
    history: TelemetrySeries | None = None
    history_until: datetime | None = None
    history_window: tuple[datetime, datetime] | None = None
    fetched_at: datetime | None = None


class Renderer(Service[RendererConfig]):
    """Draws every battery it hears about and serves the dashboard."""

    name = "renderer"

    def __init__(self, config: RendererConfig) -> None:
        super().__init__(config)
        self.views: dict[str, BatteryView] = {}
        self.forecast: PriceForecast | None = None
        self.price_history: PriceSeries | None = None
        self.dirty: set[str] = set()
        self.refetch: set[str] = set()
        self.wake = asyncio.Event()
        self.dashboard = DashboardState(on_window_change=self.on_window_change)
        self.bus: Bus | None = None
        self._listener: Listener | None = None

    # -- inputs -----------------------------------------------------------------------------------------------

    async def setup(self, bus: Bus) -> None:
        self.bus = bus
        bus.enable_requests()
        bus.subscribe(TELEMETRY, self.on_telemetry)
        bus.subscribe(SPEC, self.on_spec)
        bus.subscribe(STATE, self.on_state)
        bus.subscribe(SCHEDULE, self.on_schedule)
        bus.subscribe(PRICES, self.on_prices, zone=self.config.renderer_zone)
        bus.subscribe(STATUS, self.on_status)

    def _view(self, battery: str) -> BatteryView:
        if battery not in self.views:
            self.views[battery] = BatteryView(live=deque(maxlen=self.config.live_buffer))
            self.dashboard.add_battery(battery)
            self.refetch.add(battery)
        return self.views[battery]

    def _mark(self, *batteries: str) -> None:
        self.dirty.update(batteries)
        self.wake.set()

    async def on_telemetry(self, params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        """Live telemetry: append, show the latest reading, redraw soon."""
        view = self._view(params["battery"])
        view.live.append(message)
        self.dashboard.set_telemetry(params["battery"], message)
        self._mark(params["battery"])

    async def on_spec(self, params: dict[str, str], message: BatterySpec, delivery: Delivery) -> None:
        """SOC limits for the SOC figure."""
        self._view(params["battery"]).spec = message
        self._mark(params["battery"])

    async def on_state(self, params: dict[str, str], message: BatteryState, delivery: Delivery) -> None:
        """Mode and lease for the status strip."""
        self._view(params["battery"])
        self.dashboard.set_state(params["battery"], message)

    async def on_schedule(self, params: dict[str, str], message: Schedule, delivery: Delivery) -> None:
        """A new plan: planned SOC and power, the schedule table, expected revenue."""
        self._view(params["battery"]).schedule = message
        self._mark(params["battery"])

    async def on_prices(self, params: dict[str, str], message: PriceForecast, delivery: Delivery) -> None:
        """A new forecast: every battery's price figures change."""
        self.forecast = message
        self._mark(*self.views)

    async def on_status(self, params: dict[str, str], message: NodeStatus, delivery: Delivery) -> None:
        """Node health for the status strip."""
        self.dashboard.set_status(message)

    async def on_window_change(self, battery: str, begin: datetime | None, end: datetime | None) -> None:
        """A browser picked another time window: fetch its history and redraw at once."""
        self._view(battery)
        self.refetch.add(battery)
        self._mark(battery)

    # -- history ----------------------------------------------------------------------------------------------

    async def _history(self, kind: HistoryKind, begin: datetime, end: datetime, **ids: str) -> HistoryResult:
        assert self.bus is not None
        query = HistoryQuery(
            kind=kind,
            begin=begin,
            end=end,
            every_s=bucket_seconds(begin, end, self.config.max_points),
            limit=self.config.max_points * 2,
            **ids,
        )
        result: HistoryResult = await self.bus.request(
            HISTORY_REQUEST, query, timeout=self.config.history_timeout_s
        )
        if not result.ok:
            raise RuntimeError(result.error or "history request failed")
        return result

    async def _refresh_history(self, battery: str, view: BatteryView, begin: datetime, end: datetime) -> None:
        assert self.bus is not None
        try:
            telemetry = await self._history("telemetry", begin, end, battery=battery)
            prices = await self._history("prices", begin, end, zone=self.config.renderer_zone)
        except (TimeoutError, BusUnavailable, RuntimeError) as exc:
            self.bus.set_state("degraded", f"history unavailable ({exc or 'recorder did not answer'}); live data only")
            self.bus.counters["history_failures"] += 1
            return
        view.history = TelemetrySeries.from_history(telemetry)
        view.history_until = end
        view.history_window = (begin, end)
        view.fetched_at = datetime.now(UTC)
        self.price_history = PriceSeries.from_history(prices)
        self.bus.set_state("online")

    # -- drawing ----------------------------------------------------------------------------------------------

    def _telemetry_series(self, view: BatteryView, begin: datetime, end: datetime) -> TelemetrySeries:
        since = view.history_until
        live = [t for t in view.live if (since is None or t.ts >= since) and begin <= t.ts <= end]
        live_series = TelemetrySeries.from_telemetry(live)
        if view.history is None:
            return live_series
        return view.history.window(begin, end).concat(live_series)

    def _price_series(self) -> PriceSeries:
        series = self.price_history or PriceSeries.empty()
        if self.forecast is not None:
            series = series.merge(PriceSeries.from_forecast(self.forecast))
        return series

    async def render(self, battery: str) -> None:
        """Fetch what is missing, build every figure for ``battery`` and publish them."""
        assert self.bus is not None
        view = self._view(battery)
        now = datetime.now(UTC)
        begin, end = self.dashboard.window_for(battery).resolve(now)
        stale = view.fetched_at is None or (now - view.fetched_at).total_seconds() > self.config.history_refresh_s
        if battery in self.refetch or stale:
            self.refetch.discard(battery)
            await self._refresh_history(battery, view, begin, end)
        telemetry = self._telemetry_series(view, begin, end)
        prices = self._price_series()
        insights = compute_insights(telemetry, prices.window(begin, end), view.spec, view.schedule)
        figures = await asyncio.to_thread(
            render_all, telemetry, prices.window(begin, end + timedelta(days=2)), view.schedule, view.spec, insights,
            now=now,
        )
        for figure_id, figure in figures.items():
            message = to_message(figure, figure_id, battery, now)
            payload = FIGURE.encode(message)
            self.dashboard.set_figure_json(battery, figure_id, payload)
            await self.bus.publish_bytes(
                self.bus.name(FIGURE, battery=battery, figure=figure_id), payload, qos=FIGURE.qos, retain=FIGURE.retain
            )
        self.bus.counters["renders"] += 1

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        # the gateway's listener: idle/header timeout, a connection limit, JSON for aiohttp's own errors
        self._listener = Listener(build_app(self.dashboard), HttpLimits(), name="dashboard")
        await self._listener.start(self.config.dashboard_host, [self.config.dashboard_port])
        log.info("dashboard on http://%s:%d/", self.config.dashboard_host, self.config.dashboard_port)
        while True:
            await self.wake.wait()
            self.wake.clear()
            for battery in sorted(self.dirty):
                self.dirty.discard(battery)
                try:
                    await self.render(battery)
                except Exception:
                    assert self.bus is not None
                    self.bus.counters["render_errors"] += 1
                    log.exception("rendering %s failed", battery)
            # redraw at most every render_interval_s: telemetry every second must not mean 5 figures a second
            await asyncio.sleep(self.config.render_interval_s)

    async def shutdown(self) -> None:
        self.dashboard.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.stop()
