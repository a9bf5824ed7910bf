"""One battery's figures for one window, as contract Figures (pure: inputs in, messages out, the clock passed in).

The node shell gathers a :class:`Scene` (history with live telemetry, prices, plan, spec, KPIs) and calls
:func:`draw` in a worker thread; what comes back is ready for every consumer: the shell publishes each
:class:`~nodes.contract.messages.Figure` on ``battery/{battery}/figure/{figure}`` (typed) and hands the same
list to the dashboard. :func:`refresh_s` says when a page showing the window should ask again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nodes.contract.messages import Alarm, BatterySpec, Figure, Schedule
from nodes.renderer.figures.battery import render_all
from nodes.renderer.figures.wire import to_message
from nodes.renderer.insights import Insights
from nodes.renderer.series import PriceSeries, TelemetrySeries

COMPUTING_REFRESH_S = 2.0
"""A page whose KPIs are still being computed asks again this soon."""
LIVE_REFRESH_MIN_S = 10.0
"""A live window's page asks again at most this often (or every figure-cache period, if longer)."""


@dataclass(frozen=True)
class Scene:
    """Everything one battery's figures over one window are drawn from."""

    battery: str
    telemetry: TelemetrySeries
    prices: PriceSeries
    schedule: Schedule | None
    spec: BatterySpec | None
    insights: Insights
    now: datetime
    x_range: tuple[datetime, datetime]
    """The view: the window, plus the plan ahead for a live window."""
    live: bool
    plan_note: str | None = None
    """What the planner says about this battery (its status details), shown when there is no plan."""
    alarms: Sequence[Alarm] = ()
    """The stored alarm transitions of the window (the alarm history table)."""
    alarms_note: str | None = None
    """Why the alarm history could not be read (shown instead of the table)."""


@dataclass(frozen=True)
class Drawing:
    """The figures of a scene (in dashboard order) and when a page showing them should ask again."""

    figures: list[Figure]
    refresh_s: float | None


def draw(scene: Scene, figure_cache_s: float) -> Drawing:
    """Every figure of ``scene`` as a contract Figure (plain JSON values, see :func:`to_message`)."""
    figures = render_all(
        scene.telemetry, scene.prices, scene.schedule, scene.spec, scene.insights,
        now=scene.now, x_range=scene.x_range, live=scene.live, plan_note=scene.plan_note,
        alarms=scene.alarms, alarms_note=scene.alarms_note,
    )
    messages = [to_message(figure, figure_id, scene.battery, scene.now) for figure_id, figure in figures.items()]
    return Drawing(messages, refresh_s(scene.insights, scene.live, figure_cache_s))


def refresh_s(insights: Insights, live: bool, figure_cache_s: float) -> float | None:
    """When a page showing these figures should ask again: soon while KPIs compute, periodically for a live
    window, never for a window in the past (None)."""
    if insights.status == "computing":
        return COMPUTING_REFRESH_S
    if live:
        return max(figure_cache_s, LIVE_REFRESH_MIN_S)
    return None


__all__ = ["Drawing", "Scene", "draw", "refresh_s"]
