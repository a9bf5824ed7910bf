"""The battery panel: what the BMS reports over the window (pure: series in, figure out).

Cell temperature (coldest and hottest cell, °C, left axis, the band between them shaded) and cell voltage
(lowest and highest cell, V, right axis), with the latest state of health, pack voltage and BMS codes in the
subtitle, each said to be as the BMS reports it. A battery that reports none of these fields gets a figure that
says so, marked ``layout.meta.absent`` (the dashboard then hides the panel rather than show an empty one).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import plotly.graph_objects as go

from nodes.renderer.figures.look import (
    COLORS,
    Trace,
    base_layout,
    finish,
    info,
    last_ts,
    line_type,
    now_shapes,
    view_axis,
)
from nodes.renderer.series import TelemetrySeries, to_datetime64

CELLS_HELP = (
    "As the battery management system (BMS) reports them with each reading: the coldest and the hottest cell "
    "(°C, shaded between) and the lowest and the highest cell voltage (V, right axis). Where history is long, "
    "each point is the mean of its time bucket, so a short peak is flattened; the alarms judge every reading."
)
NO_BMS = "this battery reports no BMS values (cell temperatures and voltages, state of health)"
TEMP_COLOR = "#dc2626"
COLD_COLOR = "#2563eb"
VOLT_COLOR = "#475569"


def _latest(telemetry: TelemetrySeries, name: str) -> float | None:
    column = telemetry.column(name)
    finite = np.flatnonzero(np.isfinite(column))
    return float(column[finite[-1]]) if finite.size else None


def health_note(telemetry: TelemetrySeries) -> str:
    """The subtitle: the latest SOH and pack voltage, each with its source (the BMS); ``""`` when none."""
    parts = []
    soh = _latest(telemetry, "soh_pct")
    if soh is not None:
        parts.append(f"state of health {soh:.1f} % (reported by the BMS)")
    pack = _latest(telemetry, "pack_voltage_v")
    if pack is not None:
        current = _latest(telemetry, "pack_current_a")
        parts.append(f"pack {pack:,.0f} V" + ("" if current is None else f", {current:+,.0f} A"))
    return " · ".join(parts)


def _line(telemetry: TelemetrySeries, name: str, label: str, color: str, unit: str, **extra: object) -> Trace:
    digits = 3 if unit == "V" else 1
    return {
        "type": line_type(len(telemetry)),
        "x": to_datetime64(telemetry.centre_s),
        "y": telemetry.column(name),
        "mode": "lines",
        "name": label,
        "line": {"color": color, "width": 1.5},
        "connectgaps": False,
        "hovertemplate": f"{label} %{{y:.{digits}f}} {unit}<extra></extra>",
    } | extra


def cells_figure(
    telemetry: TelemetrySeries,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
    x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Cell temperatures and voltages over the window, with the BMS's health in the subtitle."""
    layout = base_layout("cells", "Battery (BMS)", "cell temperature (°C)", uirevision, 420)
    layout["shapes"] = now_shapes(now)
    view_axis(layout, x_range)
    layout["yaxis2"] = {"title": {"text": "cell voltage (V)"}, "overlaying": "y", "side": "right",
                        "showgrid": False, "tickmode": "auto"}
    layout["margin"] = {"r": 64, "t": 96}
    reported = set(telemetry.bms)
    data: list[Trace] = []
    if "cell_temp_min_c" in reported:
        data.append(_line(telemetry, "cell_temp_min_c", "coldest cell", COLD_COLOR, "°C"))
    if "cell_temp_max_c" in reported:
        shade = {"fill": "tonexty", "fillcolor": "rgba(220, 38, 38, 0.08)"} if "cell_temp_min_c" in reported else {}
        data.append(_line(telemetry, "cell_temp_max_c", "hottest cell", TEMP_COLOR, "°C", **shade))
    for name, label, dash in (("cell_voltage_min_v", "lowest cell voltage", "dot"),
                              ("cell_voltage_max_v", "highest cell voltage", "dash")):
        if name in reported:
            data.append(_line(telemetry, name, label, VOLT_COLOR, "V", yaxis="y2",
                              line={"color": VOLT_COLOR, "width": 1.2, "dash": dash}))
    note = health_note(telemetry)
    if note:
        layout["title"]["subtitle"] = {"text": note, "font": {"size": 11, "color": COLORS["muted"]}}
    layout["annotations"].append(info("how?", CELLS_HELP))
    absent = not reported
    layout["meta"] = layout["meta"] | {"absent": absent}
    return finish(data, layout, [NO_BMS] if absent else [], last_ts(telemetry))


__all__ = ["CELLS_HELP", "NO_BMS", "cells_figure", "health_note"]
