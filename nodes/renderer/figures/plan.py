"""The plan figure: price, planned charge/discharge with the planned SOC, and the slot table (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import plotly.graph_objects as go

from nodes.contract.energy import hours_between
from nodes.contract.messages import Schedule
from nodes.renderer.currency import per_mwh
from nodes.renderer.figures.look import (
    ACTION_FILL,
    BASELINE_HELP,
    COLORS,
    EPS_KW,
    EXPECTED_HELP,
    HOVER_TIME,
    TEMPLATE,
    TIME_TITLE,
    WAITING_SCHEDULE,
    Trace,
    action_of,
    base_layout,
    finish,
    info,
    money,
    now_shapes,
    plan_arrays,
    planned_soc_trace,
    price_trace,
    signed_bars,
)
from nodes.renderer.series import to_datetime64


def _slot_label(start: datetime, end: datetime) -> str:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return f"{start:%m-%d %H:%M}–{end:%H:%M}"


def schedule_table(schedule: Schedule) -> dict[str, list[str]]:
    """The plan as table columns of display strings (what :func:`schedule_figure` shows).

    ``power (kW)`` is the net planned power with the dashboard's sign: + discharge, - charge.
    """
    price_column = f"price ({per_mwh(schedule.currency)})"
    columns: dict[str, list[str]] = {
        "slot (UTC)": [],
        price_column: [],
        "action": [],
        "power (kW)": [],
        "SOC at end (kWh)": [],
    }
    for slot in schedule.slots:
        net = slot.discharge_kw - slot.charge_kw
        columns["slot (UTC)"].append(_slot_label(slot.start, slot.end))
        columns[price_column].append(f"{slot.price_per_mwh:.2f}")
        columns["action"].append(action_of(net))
        columns["power (kW)"].append(f"{net:.1f}" if abs(net) > EPS_KW else "0.0")
        columns["SOC at end (kWh)"].append(f"{slot.soc_kwh:.1f}")
    return columns


def table_trace(columns: dict[str, list[str]], align: list[str], widths: list[float], **cells: Any) -> Trace:
    """A Plotly table of display strings in the figures' look (bold header, light rules)."""
    return {
        "type": "table",
        "header": {
            "values": [f"<b>{h}</b>" if h else "" for h in columns],
            "fill": {"color": "#f1f5f9"},
            "align": align,
            "line": {"color": COLORS["axis"]},
            "font": {"size": 12, "color": COLORS["text"]},
            "height": 24,
        },
        "cells": {
            "values": list(columns.values()),
            "fill": {"color": "#ffffff"},
            "align": align,
            "line": {"color": COLORS["grid"]},
            "font": {"size": 12, "color": COLORS["text"]},
            "height": 22,
        }
        | cells,
        "columnwidth": widths,
    }


TABLE_HELP = (
    "One row per plan slot: its price forecast, what the plan does (charge, discharge, idle), the planned "
    "net power (+ discharge, − charge) and the SOC the plan expects at the slot's end."
)


def _hours(schedule: Schedule) -> float:
    if not schedule.slots:
        return 0.0
    return hours_between(schedule.slots[0].start, schedule.slots[-1].end)


def plan_details(schedule: Schedule) -> str:
    """The plan's internals for the small details line: id, solver, solve time, when it was made."""
    parts = [f"plan {schedule.plan_id}", f"made {schedule.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"]
    if schedule.solver:
        parts.append(f"solver {schedule.solver}, {schedule.solve_ms:.0f} ms")
    if schedule.reason:
        parts.append(schedule.reason)
    return " · ".join(parts)


def schedule_figure(
    schedule: Schedule | None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
    note: str | None = None,
) -> go.Figure:
    """The current plan: price (top), planned charge/discharge bars with SOC (middle), and a slot table.

    ``note``: what the planner says about this battery (its status details), shown when there is no plan, so
    a battery that is monitored but not planned says so instead of waiting forever.
    """
    if schedule is None or not schedule.slots:
        layout = base_layout("schedule", "Current plan", "power (kW): + discharge, − charge", uirevision, 420)
        return finish([], layout, [f"no plan: {note}" if note else WAITING_SCHEDULE], None)

    start, end, price, net, _soc = plan_arrays(schedule)
    title = (
        f"Current plan · next {_hours(schedule):.0f} h · "
        f"expected revenue {money(schedule.expected_revenue, schedule.currency)}"
    )
    if schedule.baseline_revenue is not None:
        title += f" (simple rule: {money(schedule.baseline_revenue, schedule.currency)})"
    time_axis = {"type": "date", "hoverformat": HOVER_TIME, "anchor": "y2"}
    layout = {
        "template": TEMPLATE,
        "title": {"text": title},
        "height": 900,
        "margin": {"l": 64, "r": 24, "t": 72, "b": 40},
        "uirevision": uirevision or "schedule",
        "barmode": "relative",
        "bargap": 0,
        "meta": {"figure": "schedule"},
        # Rows by hand (cheaper than make_subplots): price on top, power + SOC in the middle, table below.
        "xaxis": time_axis | {"anchor": "y", "matches": "x2", "showticklabels": False},
        "yaxis": {"domain": [0.80, 1.0], "title": {"text": f"price ({per_mwh(schedule.currency)})"}},
        "xaxis2": time_axis | {"title": {"text": TIME_TITLE}},
        "yaxis2": {"domain": [0.44, 0.74], "title": {"text": "power (kW): + discharge"}, "zeroline": True},
        "yaxis3": {
            "overlaying": "y2",
            "side": "right",
            "title": {"text": "SOC (kWh)"},
            "showgrid": False,
            "rangemode": "tozero",
            "tickmode": "auto",
        },
        "shapes": now_shapes(now, (("x", "y domain"), ("x2", "y2 domain"))),
        "annotations": [
            info("expected revenue?", EXPECTED_HELP, x=1.0, y=1.0, yanchor="bottom"),
            info("simple rule?", BASELINE_HELP, x=0.86, y=1.0, yanchor="bottom"),
            info("table?", TABLE_HELP, x=1.0, y=0.345, yanchor="bottom"),
            # the internals (plan id, solver, solve time) go into one small line under everything
            {"name": "details", "text": "details: " + plan_details(schedule), "xref": "paper", "yref": "paper",
             "x": 0, "y": 0, "xanchor": "left", "yanchor": "top", "yshift": -6, "showarrow": False,
             "font": {"size": 10, "color": COLORS["muted"]}},
        ],
    }
    table = schedule_table(schedule)
    fills = [ACTION_FILL[a] for a in table["action"]]
    data = [
        price_trace(start, end, price, schedule.currency),
        *signed_bars(to_datetime64(start), net, (end - start) * 1000.0, "plan", xaxis="x2", yaxis="y2"),
        planned_soc_trace(schedule, xaxis="x2", yaxis="y3"),
        table_trace(
            table,
            ["left", "right", "left", "right", "right"],
            [1.6, 1, 1, 1, 1.2],
            fill={"color": [fills] * len(table)},
        )
        | {"domain": {"x": [0, 1], "y": [0, 0.34]}},
    ]
    return finish(data, layout, [], None)
