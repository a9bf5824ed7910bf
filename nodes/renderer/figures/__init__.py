"""Plotly figures of a battery (pure: series, plan and spec in, a ``plotly.graph_objects.Figure`` out).

One module per job:

* :mod:`~nodes.renderer.figures.look`: the shared template, colours and trace pieces (steps, bars, plan lines);
* :mod:`~nodes.renderer.figures.battery`: state of charge, power, price against power, and :func:`render_all`;
* :mod:`~nodes.renderer.figures.plan`: the plan with its slot table;
* :mod:`~nodes.renderer.figures.performance`: the market-performance panel;
* :mod:`~nodes.renderer.figures.cells`: the battery (BMS) panel: cell temperatures and voltages, SOH;
* :mod:`~nodes.renderer.figures.alarms`: the alarm history table;
* :mod:`~nodes.renderer.figures.wire`: a figure as the contract's ``Figure`` message (:func:`to_message`).

This package namespace is the figures' public face: everything a caller needs is importable from here.
"""

from nodes.renderer.figures import alarms, battery, cells, look, performance, plan, wire
from nodes.renderer.figures.alarms import alarm_history_figure, alarms_from_history
from nodes.renderer.figures.battery import (
    FIGURE_IDS,
    plan_price_correlation,
    power_figure,
    power_intervals,
    price_power_correlation,
    prices_figure,
    render_all,
    soc_figure,
)
from nodes.renderer.figures.cells import cells_figure
from nodes.renderer.figures.look import (
    COLORS,
    EMPTY_STATE_NAME,
    FONT,
    TEMPLATE,
    WAITING_PRICES,
    WAITING_SCHEDULE,
    WAITING_TELEMETRY,
    clip_schedule,
    trace_points,
)
from nodes.renderer.figures.performance import insights_figure, insights_rows
from nodes.renderer.figures.plan import plan_details, schedule_figure, schedule_table
from nodes.renderer.figures.wire import json_safe, to_message

__all__ = [
    "COLORS",
    "EMPTY_STATE_NAME",
    "FIGURE_IDS",
    "FONT",
    "TEMPLATE",
    "WAITING_PRICES",
    "WAITING_SCHEDULE",
    "WAITING_TELEMETRY",
    "alarm_history_figure",
    "alarms",
    "alarms_from_history",
    "battery",
    "cells",
    "cells_figure",
    "clip_schedule",
    "insights_figure",
    "insights_rows",
    "json_safe",
    "look",
    "performance",
    "plan",
    "plan_details",
    "plan_price_correlation",
    "power_figure",
    "power_intervals",
    "price_power_correlation",
    "prices_figure",
    "render_all",
    "schedule_figure",
    "schedule_table",
    "soc_figure",
    "to_message",
    "trace_points",
    "wire",
]
