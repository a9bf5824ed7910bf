"""The renderer's settings: the dashboard (``BESS_DASHBOARD_*``), drawing and history (``BESS_RENDERER_*``).

See :mod:`nodes.runtime.config` for how variables become fields; the dashboard token falls back to the gateway's
(``BESS_GATEWAY_TOKEN``, ``BESS_GATEWAY_READ_TOKEN``: one token for both). Renamed in this release (the old
names work until the next one, with a warning; the attributes keep them until then): ``BESS_RENDER_INTERVAL_S``,
``BESS_HISTORY_REFRESH_S``, ``BESS_HISTORY_TIMEOUT_S``, ``BESS_MAX_POINTS``, ``BESS_LIVE_BUFFER``,
``BESS_HISTORY_PAGE_ROWS``, ``BESS_KPI_MAX_ROWS``, ``BESS_FIGURE_CACHE_S`` (now ``BESS_RENDERER_*``).
"""

from __future__ import annotations

import msgspec

from nodes.contract.topics import id_problems
from nodes.renderer.auth import DashboardAuth
from nodes.renderer.revenue import day_clock
from nodes.renderer.timezone import zone_problem
from nodes.runtime.config import MqttSettings


class RendererConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_*`` settings of the renderer."""

    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    renderer_zone: str = "de-lu"
    render_interval_s: float = msgspec.field(default=1.0, name="renderer_interval_s")
    history_refresh_s: float = msgspec.field(default=60.0, name="renderer_history_refresh_s")
    history_timeout_s: float = msgspec.field(default=10.0, name="renderer_history_timeout_s")
    max_points: int = msgspec.field(default=2000, name="renderer_max_points")
    live_buffer: int = msgspec.field(default=20_000, name="renderer_live_buffer")
    history_page_rows: int = msgspec.field(default=20_000, name="renderer_history_page_rows")
    kpi_max_rows: int = msgspec.field(default=5_000_000, name="renderer_kpi_max_rows")
    figure_cache_s: float = msgspec.field(default=10.0, name="renderer_figure_cache_s")
    dashboard_token: str | None = None
    gateway_token: str | None = None
    """``BESS_GATEWAY_TOKEN``: the dashboard's token when ``BESS_DASHBOARD_TOKEN`` is not set."""
    gateway_read_token: str | None = None
    """``BESS_GATEWAY_READ_TOKEN``: may view (never write) when the dashboard uses the gateway's token."""
    dashboard_view_token_required: bool = True
    #: the control panel (BESS_DASHBOARD_CONTROL): off makes the dashboard view-only
    dashboard_control: bool = True
    #: how long a control action waits for the gateway's answer (its RequestResult) or a re-plan for its schedule
    dashboard_control_timeout_s: float = 5.0
    #: the clock of "today" for the realised revenue on battery/{battery}/revenue ("": the price zone's clock)
    renderer_day_tz: str = ""
    #: at most this often per battery (the KPI is an integral over raw samples; Home Assistant records each value)
    renderer_revenue_interval_s: float = 10.0
    display_tz: str = "UTC"
    """``BESS_DISPLAY_TZ``: the IANA zone the dashboard shows times in by default (a toggle switches to UTC)."""
    renderer_publish_max: int = 50
    """Batteries drawn always, with retained figure topics: the first this many, those with a spec first."""
    renderer_warm_batteries: int = 16
    """Recently viewed batteries (a figure request) kept drawn, each for ``BESS_RENDERER_WARM_S`` after it."""
    renderer_warm_s: float = 600.0
    renderer_history_max_inflight: int = 4
    """History requests in flight at most, over every battery (the rest wait in line)."""
    diagnostics_refresh_s: float = msgspec.field(default=300.0, name="renderer_diagnostics_refresh_s")
    """How long a live window's diagnostics panel is kept before it is computed again."""
    diagnostics_max_rows: int = msgspec.field(default=1_000_000, name="renderer_diagnostics_max_rows")
    """Raw readings the diagnostics read at most for one window (beyond: refused with the reason)."""

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.renderer_zone, "BESS_RENDERER_ZONE")
        if not 0 < self.dashboard_port < 65536:
            found.append("BESS_DASHBOARD_PORT must be a port number")
        if self.max_points < 10 or self.render_interval_s <= 0:
            found.append("BESS_RENDERER_MAX_POINTS must be >= 10 and BESS_RENDERER_INTERVAL_S > 0")
        if not 100 <= self.history_page_rows <= 100_000:
            found.append(
                "BESS_RENDERER_HISTORY_PAGE_ROWS must be 100 to 100000 (the recorder answers at most 100000 rows)"
            )
        if self.kpi_max_rows < 1 or self.figure_cache_s < 0:
            found.append("BESS_RENDERER_KPI_MAX_ROWS must be >= 1 and BESS_RENDERER_FIGURE_CACHE_S >= 0")
        problem = zone_problem(self.display_tz)
        if problem is not None:
            found.append(problem)
        if self.diagnostics_refresh_s < 1 or not 1_000 <= self.diagnostics_max_rows <= 50_000_000:
            found.append("BESS_RENDERER_DIAGNOSTICS_REFRESH_S must be >= 1 and BESS_RENDERER_DIAGNOSTICS_MAX_ROWS "
                         "1000 to 50000000")
        if self.dashboard_token is not None and not self.dashboard_token.strip():
            found.append("BESS_DASHBOARD_TOKEN is empty: unset it or give a token")
        try:
            day_clock(self.renderer_day_tz, self.renderer_zone)
        except ValueError as exc:
            found.append(str(exc))
        if not 0.5 <= self.dashboard_control_timeout_s <= 60:
            found.append("BESS_DASHBOARD_CONTROL_TIMEOUT_S must be 0.5 to 60")
        if not (0 <= self.renderer_publish_max <= 100_000 and 0 <= self.renderer_warm_batteries <= 10_000
                and self.renderer_warm_s >= 0):
            found.append("BESS_RENDERER_PUBLISH_MAX must be 0 to 100000, BESS_RENDERER_WARM_BATTERIES 0 to 10000 "
                         "and BESS_RENDERER_WARM_S >= 0")
        if not 1 <= self.renderer_history_max_inflight <= 64:
            found.append("BESS_RENDERER_HISTORY_MAX_INFLIGHT must be 1 to 64")
        if not self.renderer_revenue_interval_s > 0:
            found.append("BESS_RENDERER_REVENUE_INTERVAL_S must be > 0")
        return found

    def auth(self) -> DashboardAuth | None:
        """The dashboard's token check: its own token, else the gateway's ("one token for both")."""
        own = (self.dashboard_token or "").strip() or None
        token = own or (self.gateway_token or "").strip() or None
        if token is None:
            return None
        view = None if own else (self.gateway_read_token or "").strip() or None
        return DashboardAuth(token, self.dashboard_view_token_required, view)


__all__ = ["RendererConfig"]
