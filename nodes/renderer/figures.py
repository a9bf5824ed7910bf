"""Plotly figures of a battery (pure: series, plan and spec in, a ``plotly.graph_objects.Figure`` out).

No I/O and no clock: ``now`` is passed in. Every figure shares :data:`TEMPLATE` (small on purpose: the stock
templates add ~10 kB to every MQTT message), puts units in axis titles and hover texts, sets ``uirevision``
so ``Plotly.react`` keeps the user's zoom across live updates, carries ``layout.meta`` (figure id, point
count, latest telemetry time) for the dashboard, and draws an explicit "waiting for ..." annotation instead
of failing when there is nothing to show. Times are plotted as naive UTC (Plotly.js has no time zones), so
time axes say "UTC". :func:`to_message` turns a figure into the contract's ``Figure`` Struct.

Sign convention everywhere: power is + when discharging (selling to the grid), - when charging.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nodes.contract.messages import BatterySpec, Figure, Schedule
from nodes.renderer.insights import Insights
from nodes.renderer.series import FloatArray, PriceSeries, TelemetrySeries, TimeArray, to_datetime64

FIGURE_IDS = ("soc", "power", "prices", "schedule", "insights")
"""The figures the renderer publishes, in dashboard order."""

WAITING_TELEMETRY = "waiting for telemetry"
WAITING_PRICES = "waiting for prices"
WAITING_SCHEDULE = "waiting for a schedule"
EMPTY_STATE_NAME = "empty-state"
"""``name`` of the empty-state annotation, so tests and the dashboard can find it."""

COLORS = {
    "soc": "#0f766e",
    "plan": "#6d28d9",
    "charge": "#2563eb",
    "discharge": "#ea580c",
    "price": "#7c3aed",
    "net": "#0f766e",
    "setpoint": "#475569",
    "limit": "#dc2626",
    "limit_fill": "rgba(220, 38, 38, 0.07)",
    "now": "#64748b",
    "muted": "#6b7280",
    "grid": "#eef0f3",
    "axis": "#cbd5e1",
    "text": "#1f2937",
}
ACTION_FILL = {"charge": "#e8f0fe", "discharge": "#fff1e6", "idle": "#ffffff"}

FONT = "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
TIME_TITLE = "time (UTC)"
HOVER_TIME = "%Y-%m-%d %H:%M:%S UTC"

_AXIS = {
    "gridcolor": COLORS["grid"],
    "linecolor": COLORS["axis"],
    "zerolinecolor": COLORS["axis"],
    "showline": True,
    "ticks": "outside",
    "tickcolor": COLORS["axis"],
    "automargin": True,
    "title": {"standoff": 8},
}

TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": FONT, "size": 12, "color": COLORS["text"]},
        "title": {"font": {"size": 15}, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "colorway": [COLORS["soc"], COLORS["discharge"], COLORS["charge"], COLORS["price"], COLORS["plan"]],
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "bottom",
            "bgcolor": "rgba(0,0,0,0)",
        },
        "hoverlabel": {"bgcolor": "#ffffff", "bordercolor": COLORS["axis"], "font": {"family": FONT, "size": 12}},
        "hovermode": "x unified",
        "margin": {"l": 64, "r": 24, "t": 72, "b": 48},
    }
)
"""One compact look for every figure (dark text on white, muted grid)."""

_EPS_KW = 1e-6
DECIMALS = 4
"""Float arrays in :func:`to_message` output are rounded to this many decimals."""


# -- small helpers ---------------------------------------------------------------------------------------
#
# Figures are assembled as plain dicts and validated by plotly once, in ``go.Figure(data, layout)``:
# ``add_shape``/``add_annotation``/``make_subplots`` re-validate on every call and cost 5-10x more.

Trace = dict[str, Any]
Layout = dict[str, Any]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _layout(figure_id: str, title: str, y_title: str, uirevision: str | None, height: int) -> Layout:
    return {
        "template": TEMPLATE,
        "title": {"text": title},
        "height": height,
        "uirevision": uirevision or figure_id,
        "xaxis": {"title": {"text": TIME_TITLE}, "type": "date", "hoverformat": HOVER_TIME},
        "yaxis": {"title": {"text": y_title}},
        "meta": {"figure": figure_id},
        "shapes": [],
        "annotations": [],
    }


def _empty_annotation(message: str) -> dict[str, Any]:
    return {
        "name": EMPTY_STATE_NAME,
        "text": message,
        "xref": "paper",
        "yref": "paper",
        "x": 0.5,
        "y": 0.5,
        "showarrow": False,
        "font": {"size": 16, "color": COLORS["muted"]},
    }


def _now_shapes(now: datetime | None, axes: Sequence[tuple[str, str]] = (("x", "paper"),)) -> list[dict[str, Any]]:
    """A dotted vertical line at ``now`` on each (xref, yref) pair."""
    if now is None:
        return []
    x = _iso(now)
    line = {"color": COLORS["now"], "width": 1, "dash": "dot"}
    return [
        {"type": "line", "name": "now", "xref": xref, "yref": yref, "x0": x, "x1": x, "y0": 0, "y1": 1, "line": line}
        for xref, yref in axes
    ]


def trace_points(trace: dict[str, Any]) -> int:
    """Points of one trace as the dashboard counts them: x values, table rows, 1 per indicator."""
    if trace.get("type") == "table":
        values = trace.get("cells", {}).get("values") or [[]]
        return len(values[0])
    if trace.get("type") == "indicator":
        return 1
    xs = trace.get("x")
    return 0 if xs is None else len(xs)


def _figure(data: list[Trace], layout: Layout, messages: Sequence[str], last_ts: float | None) -> go.Figure:
    """Validate once and return the figure, with the empty-state annotation and ``layout.meta`` filled in
    (``points``: the sum of :func:`trace_points`, what the dashboard's ``data-points`` shows)."""
    if messages:
        layout.setdefault("annotations", []).append(_empty_annotation(" · ".join(messages)))
    if not data:
        # Nothing drawn: keep the axis titles (the units) but not Plotly's placeholder range (-1..4, year 2000).
        blank = {"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""}
        for key in [k for k in layout if k.startswith(("xaxis", "yaxis"))]:
            layout[key] = layout[key] | blank
    layout["meta"] = {
        "figure": layout["meta"]["figure"],
        "points": sum(trace_points(t) for t in data),
        "last_ts": None if last_ts is None else _iso(datetime.fromtimestamp(last_ts, tz=UTC)),
    }
    return go.Figure(data=data, layout=layout)


def _steps(start_s: FloatArray, end_s: FloatArray, values: FloatArray) -> tuple[TimeArray, FloatArray]:
    """Points for a ``line_shape="hv"`` step line over slots: one per start, one closing the last slot.

    A gap between slots gets a closing point and a NaN, so the line breaks instead of bridging the gap.
    """
    if start_s.size == 0:
        return to_datetime64(start_s), values
    gap_after = np.append(end_s[:-1] < start_s[1:], True)
    n_extra = int(gap_after.sum())
    xs = np.empty(start_s.size + 2 * n_extra - 1, dtype=np.float64)
    ys = np.empty_like(xs)
    out = 0
    # Slots are few (<= a few thousand); a plain loop keeps the ordering obvious.
    for i in range(start_s.size):
        xs[out], ys[out] = start_s[i], values[i]
        out += 1
        if gap_after[i]:
            xs[out], ys[out] = end_s[i], values[i]
            out += 1
            if i < start_s.size - 1:
                xs[out], ys[out] = end_s[i], np.nan
                out += 1
    return to_datetime64(xs[:out]), ys[:out]


def _plan_arrays(schedule: Schedule) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """start_s, end_s, price, net planned power (kW, + discharge), SOC at slot end (kWh)."""
    slots = schedule.slots
    n = len(slots)
    start = np.fromiter((s.start.timestamp() for s in slots), dtype=np.float64, count=n)
    end = np.fromiter((s.end.timestamp() for s in slots), dtype=np.float64, count=n)
    price = np.fromiter((s.price_eur_per_mwh for s in slots), dtype=np.float64, count=n)
    net = np.fromiter((s.discharge_kw - s.charge_kw for s in slots), dtype=np.float64, count=n)
    soc = np.fromiter((s.soc_kwh for s in slots), dtype=np.float64, count=n)
    return start, end, price, net, soc


def _action(net_kw: float) -> str:
    if net_kw > _EPS_KW:
        return "discharge"
    if net_kw < -_EPS_KW:
        return "charge"
    return "idle"


def _median_step_ms(time_s: FloatArray, default_s: float = 60.0) -> float:
    return float(np.median(np.diff(time_s))) * 1000.0 if time_s.size > 1 else default_s * 1000.0


def _last_ts(telemetry: TelemetrySeries) -> float | None:
    return float(telemetry.time_s[-1]) if len(telemetry) else None


def _line_type(n: int) -> str:
    # SVG lines get sluggish past ~20k points; WebGL keeps panning smooth (figures are normally downsampled).
    return "scattergl" if n > 20_000 else "scatter"


def _price_trace(start_s: FloatArray, end_s: FloatArray, price: FloatArray, **extra: Any) -> Trace:
    x, y = _steps(start_s, end_s, price)
    return {
        "type": "scatter",
        "x": x,
        "y": y,
        "mode": "lines",
        "line": {"color": COLORS["price"], "width": 2, "shape": "hv"},
        "name": "price",
        "hovertemplate": "price %{y:.2f} EUR/MWh<extra></extra>",
    } | extra


def _plan_net_trace(schedule: Schedule, name: str, **extra: Any) -> Trace:
    start, end, _price, net, _soc = _plan_arrays(schedule)
    x, y = _steps(start, end, net)
    return {
        "type": "scatter",
        "x": x,
        "y": y,
        "mode": "lines",
        "name": name,
        "line": {"color": COLORS["plan"], "width": 2, "dash": "dash", "shape": "hv"},
        "hovertemplate": "plan %{y:.1f} kW<extra></extra>",
    } | extra


def _planned_soc_trace(schedule: Schedule, **extra: Any) -> Trace:
    start, end, _price, _net, soc = _plan_arrays(schedule)
    return {
        "type": "scatter",
        "x": to_datetime64(np.concatenate([start[:1], end])),
        "y": np.concatenate([[schedule.soc_initial_kwh], soc]),
        "mode": "lines",
        "name": "planned SOC",
        "line": {"color": COLORS["plan"], "width": 2, "dash": "dash"},
        "hovertemplate": "planned %{y:.1f} kWh<extra></extra>",
    } | extra


def _signed_bars(x: TimeArray, net: FloatArray, width: float | FloatArray, suffix: str, **extra: Any) -> list[Trace]:
    """Two bar traces: discharge (> 0, orange) and charge (< 0, blue); each bar starts at its x.

    Each trace keeps only its own bars (not NaN placeholders): half the bytes on the wire.
    """
    traces = []
    for name, mask in (("discharge", net > _EPS_KW), ("charge", net < -_EPS_KW)):
        traces.append(
            {
                "type": "bar",
                "x": x[mask],
                "y": net[mask],
                "width": width[mask] if isinstance(width, np.ndarray) else width,
                "offset": 0,
                "name": f"{name} ({suffix})",
                "marker": {"color": COLORS[name], "line": {"width": 0}},
                "hovertemplate": f"{name} %{{y:.1f}} kW<extra></extra>",
            }
            | extra
        )
    return traces


# -- figures ---------------------------------------------------------------------------------------------


def soc_figure(
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    spec: BatterySpec | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """State of charge in kWh: actual (line) vs planned (dashed, slot ends), SOC limits shaded."""
    layout = _layout("soc", "State of charge", "SOC (kWh)", uirevision, 420)
    layout["shapes"] = _now_shapes(now)
    data: list[Trace] = []
    if len(telemetry):
        trace: Trace = {
            "type": _line_type(len(telemetry)),
            "x": telemetry.x,
            "y": telemetry.soc_kwh,
            "mode": "lines",
            "name": "actual SOC",
            "line": {"color": COLORS["soc"], "width": 2},
            "hovertemplate": "actual %{y:.1f} kWh<extra></extra>",
        }
        if spec is not None:
            trace["customdata"] = telemetry.soc_kwh / spec.capacity_kwh * 100.0
            trace["hovertemplate"] = "actual %{y:.1f} kWh (%{customdata:.0f} %)<extra></extra>"
        data.append(trace)
    if schedule is not None and schedule.slots:
        data.append(_planned_soc_trace(schedule))
    if spec is not None:
        band = {"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "layer": "below"}
        band |= {"fillcolor": COLORS["limit_fill"], "line": {"width": 0}, "legendgroup": "limits"}
        layout["shapes"] += [
            band | {"y0": 0, "y1": spec.soc_min_kwh, "name": "SOC limits", "showlegend": True},
            band | {"y0": spec.soc_max_kwh, "y1": spec.capacity_kwh},
        ]
        for name, y in (("min", spec.soc_min_kwh), ("max", spec.soc_max_kwh)):
            layout["shapes"].append(
                {"type": "line", "name": f"SOC {name}", "xref": "paper", "yref": "y"}
                | {"x0": 0, "x1": 1, "y0": y, "y1": y, "line": {"color": COLORS["limit"], "width": 1, "dash": "dot"}}
            )
            layout["annotations"].append(
                {
                    "name": f"SOC {name}",
                    "text": f"{name} {y:,.0f} kWh",
                    "xref": "paper",
                    "yref": "y",
                    "x": 1,
                    "y": y,
                    "xanchor": "right",
                    "yanchor": "bottom" if name == "min" else "top",
                    "showarrow": False,
                    "font": {"size": 11, "color": COLORS["limit"]},
                }
            )
        layout["yaxis"]["range"] = [0, spec.capacity_kwh * 1.03]
        layout["title"]["text"] = f"State of charge · capacity {spec.capacity_kwh:,.0f} kWh"
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return _figure(data, layout, messages, _last_ts(telemetry))


def power_figure(
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """Charge (negative, blue) and discharge (positive, orange) in kW as bars, with the plan as a step line.

    A bar starts at its sample and lasts one median sample spacing: the power holds until the next sample.
    The telemetry's setpoint (target discharge - target charge) is a dotted line, hidden until picked in
    the legend.
    """
    layout = _layout("power", "Charge / discharge", "power (kW): + discharge, − charge", uirevision, 420)
    layout |= {"barmode": "relative", "bargap": 0, "shapes": _now_shapes(now)}
    layout["yaxis"]["zeroline"] = True
    data: list[Trace] = []
    if len(telemetry):
        x = telemetry.x
        data += _signed_bars(x, telemetry.power_kw, _median_step_ms(telemetry.time_s), "actual")
        charge_t, discharge_t = telemetry.target_charge_kw, telemetry.target_discharge_kw
        has_target = np.isfinite(charge_t) | np.isfinite(discharge_t)
        if has_target.any():
            data.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": np.where(has_target, np.nan_to_num(discharge_t) - np.nan_to_num(charge_t), np.nan),
                    "mode": "lines",
                    "name": "setpoint (net)",
                    "line": {"color": COLORS["setpoint"], "width": 1, "dash": "dot", "shape": "hv"},
                    "visible": "legendonly",
                    "hovertemplate": "setpoint %{y:.1f} kW<extra></extra>",
                }
            )
    if schedule is not None and schedule.slots:
        trace = _plan_net_trace(schedule, "plan (net)")
        data.append(trace)
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return _figure(data, layout, messages, _last_ts(telemetry))


def _slot_pairs(prices: PriceSeries, telemetry: TelemetrySeries) -> tuple[FloatArray, FloatArray]:
    """Per price slot with telemetry in it: (price, mean net power). Samples outside every slot are ignored."""
    ok = np.isfinite(telemetry.power_kw)
    t, p = telemetry.time_s[ok], telemetry.power_kw[ok]
    idx = prices.slot_index(t)
    inside = idx >= 0
    if not inside.any():
        return np.empty(0), np.empty(0)
    n = len(prices)
    counts = np.bincount(idx[inside], minlength=n)
    sums = np.bincount(idx[inside], weights=p[inside], minlength=n)
    used = counts > 0
    return prices.price_eur_per_mwh[used], sums[used] / counts[used]


def _pearson(x: FloatArray, y: FloatArray) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((dx * dx).sum() * (dy * dy).sum()))
    # Relative threshold: a constant series with float noise must read as "no variance", not as r = ±1.
    scale = max(float(np.abs(x).max()), 1.0) * max(float(np.abs(y).max()), 1.0) * x.size
    if denominator <= 1e-12 * scale:
        return None
    return float(np.clip((dx * dy).sum() / denominator, -1.0, 1.0))


def price_power_correlation(prices: PriceSeries, telemetry: TelemetrySeries) -> float | None:
    """Pearson r between slot price and the battery's mean net power (+ discharge) in that slot.

    Series are aligned on the price slots (mean of the power samples inside each slot); slots without
    telemetry are left out. ``None`` when fewer than 3 slots remain or either side has no variance.
    A positive r means the battery sells when prices are high, which is what an arbitrage plan should do.
    """
    price, power = _slot_pairs(prices, telemetry)
    return _pearson(price, power)


def plan_price_correlation(schedule: Schedule) -> float | None:
    """Pearson r between slot price and planned net power (+ discharge); None as for the actual one."""
    if not schedule.slots:
        return None
    _start, _end, price, net, _soc = _plan_arrays(schedule)
    return _pearson(price, net)


def _r_text(r: float | None) -> str:
    return "n/a" if r is None else f"{r:+.2f}"


def prices_figure(
    prices: PriceSeries,
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """Price (EUR/MWh, left axis) and net battery power (kW, right axis) over time, with their correlation
    (:func:`price_power_correlation`) in the title and the plan's own correlation in the subtitle."""
    r = price_power_correlation(prices, telemetry)
    title = f"Price vs net power · r = {_r_text(r)}"
    if r is not None:
        title += f" over {_slot_pairs(prices, telemetry)[0].size} slots"
    layout = _layout("prices", title, "price (EUR/MWh)", uirevision, 420)
    layout["shapes"] = _now_shapes(now)
    layout["yaxis2"] = {
        "title": {"text": "net power (kW): + discharge"},
        "overlaying": "y",
        "side": "right",
        "showgrid": False,
        "zeroline": True,
        "zerolinecolor": COLORS["axis"],
        # Plotly.js 3 syncs an overlaying axis's ticks to the main grid by default: odd values like -91 kW.
        "tickmode": "auto",
    }
    layout["margin"] = {"r": 64, "t": 96}
    data: list[Trace] = []
    if len(prices):
        data.append(_price_trace(prices.start_s, prices.end_s, prices.price_eur_per_mwh))
    if len(telemetry):
        data.append(
            {
                "type": _line_type(len(telemetry)),
                "x": telemetry.x,
                "y": telemetry.power_kw,
                "mode": "lines",
                "name": "net power (actual)",
                "yaxis": "y2",
                "line": {"color": COLORS["net"], "width": 1.5, "shape": "hv"},
                "fill": "tozeroy",
                "fillcolor": "rgba(15, 118, 110, 0.12)",
                "hovertemplate": "net power %{y:.1f} kW<extra></extra>",
            }
        )
    note = "r > 0: the battery sells when prices are high (actual power averaged per price slot)"
    if schedule is not None and schedule.slots:
        data.append(_plan_net_trace(schedule, "net power (plan)", yaxis="y2"))
        note += f" · plan r = {_r_text(plan_price_correlation(schedule))}"
    layout["title"]["subtitle"] = {"text": note, "font": {"size": 11, "color": COLORS["muted"]}}
    messages = ([] if len(prices) else [WAITING_PRICES]) + ([] if len(telemetry) else [WAITING_TELEMETRY])
    return _figure(data, layout, messages, _last_ts(telemetry))


def _slot_label(start: datetime, end: datetime) -> str:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return f"{start:%m-%d %H:%M}–{end:%H:%M}"


def schedule_table(schedule: Schedule) -> dict[str, list[str]]:
    """The plan as table columns of display strings (what :func:`schedule_figure` shows).

    ``power (kW)`` is the net planned power with the dashboard's sign: + discharge, - charge.
    """
    columns: dict[str, list[str]] = {
        "slot (UTC)": [],
        "price (EUR/MWh)": [],
        "action": [],
        "power (kW)": [],
        "SOC at end (kWh)": [],
    }
    for slot in schedule.slots:
        net = slot.discharge_kw - slot.charge_kw
        columns["slot (UTC)"].append(_slot_label(slot.start, slot.end))
        columns["price (EUR/MWh)"].append(f"{slot.price_eur_per_mwh:.2f}")
        columns["action"].append(_action(net))
        columns["power (kW)"].append(f"{net:.1f}" if abs(net) > _EPS_KW else "0.0")
        columns["SOC at end (kWh)"].append(f"{slot.soc_kwh:.1f}")
    return columns


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"€{value:,.2f}" if value >= 0 else f"−€{-value:,.2f}"


def _table(columns: dict[str, list[str]], align: list[str], widths: list[float], **cells: Any) -> Trace:
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


def schedule_figure(
    schedule: Schedule | None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
) -> go.Figure:
    """The current plan: price (top), planned charge/discharge bars with SOC (middle), and a slot table."""
    if schedule is None or not schedule.slots:
        layout = _layout("schedule", "Plan", "power (kW): + discharge, − charge", uirevision, 420)
        return _figure([], layout, [WAITING_SCHEDULE], None)

    start, end, price, net, _soc = _plan_arrays(schedule)
    title = f"Plan {schedule.plan_id} · expected {_money(schedule.expected_revenue_eur)}"
    if schedule.baseline_revenue_eur is not None:
        title += f" (baseline {_money(schedule.baseline_revenue_eur)})"
    if schedule.solver:
        title += f" · {schedule.solver} {schedule.solve_ms:.0f} ms"
    time_axis = {"type": "date", "hoverformat": HOVER_TIME, "anchor": "y2"}
    layout = {
        "template": TEMPLATE,
        "title": {"text": title},
        "height": 900,
        "uirevision": uirevision or "schedule",
        "barmode": "relative",
        "bargap": 0,
        "meta": {"figure": "schedule"},
        # Rows by hand (cheaper than make_subplots): price on top, power + SOC in the middle, table below.
        "xaxis": time_axis | {"anchor": "y", "matches": "x2", "showticklabels": False},
        "yaxis": {"domain": [0.80, 1.0], "title": {"text": "price (EUR/MWh)"}},
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
        "shapes": _now_shapes(now, (("x", "y domain"), ("x2", "y2 domain"))),
        "annotations": [],
    }
    table = schedule_table(schedule)
    fills = [ACTION_FILL[a] for a in table["action"]]
    data = [
        _price_trace(start, end, price),
        *_signed_bars(to_datetime64(start), net, (end - start) * 1000.0, "plan", xaxis="x2", yaxis="y2"),
        _planned_soc_trace(schedule, xaxis="x2", yaxis="y3"),
        _table(
            table,
            ["left", "right", "left", "right", "right"],
            [1.6, 1, 1, 1, 1.2],
            fill={"color": [fills] * len(table)},
        )
        | {"domain": {"x": [0, 1], "y": [0, 0.34]}},
    ]
    return _figure(data, layout, [], None)


def _number(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:{fmt}}{(' ' + unit) if unit else ''}"


def _period(begin: datetime | None, end: datetime | None) -> str:
    if begin is None or end is None:
        return "—"
    return f"{begin.astimezone(UTC):%Y-%m-%d %H:%M} → {end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def insights_rows(insights: Insights) -> list[tuple[str, str]]:
    """(metric, value with unit) rows of the market-performance table, the period first."""
    loss = insights.efficiency_loss_kwh
    loss_text = _number(loss, ",.1f", "kWh")
    if loss is not None and insights.energy_charged_kwh > 0:
        loss_text += f" ({loss / insights.energy_charged_kwh * 100:.1f} %)"
    return [
        ("period", _period(insights.begin, insights.end)),
        ("realised revenue", _money(insights.realised_revenue_eur)),
        ("plan, same period", _money(insights.plan_revenue_to_date_eur)),
        ("plan expected (horizon)", _money(insights.expected_revenue_eur)),
        ("baseline (horizon)", _money(insights.baseline_revenue_eur)),
        ("energy charged", _number(insights.energy_charged_kwh, ",.1f", "kWh")),
        ("energy discharged", _number(insights.energy_discharged_kwh, ",.1f", "kWh")),
        ("full cycles", _number(insights.full_cycles, ".2f")),
        ("average buy price", _number(insights.avg_buy_price_eur_per_mwh, ",.2f", "EUR/MWh")),
        ("average sell price", _number(insights.avg_sell_price_eur_per_mwh, ",.2f", "EUR/MWh")),
        ("spread (sell − buy)", _number(insights.spread_eur_per_mwh, ",.2f", "EUR/MWh")),
        ("lost to efficiency", loss_text),
        ("cycle wear cost", _money(insights.cycle_cost_eur)),
        ("energy without price", _number(insights.unpriced_energy_kwh, ",.1f", "kWh")),
        ("data gaps", _number(insights.gap_s / 3600.0, ",.1f", "h")),
        ("samples", f"{insights.samples:,}"),
    ]


def _indicator(
    column: int,
    title: str,
    value: float | None,
    fmt: str,
    *,
    prefix: str = "",
    reference: float | None = None,
) -> Trace:
    trace: Trace = {
        "type": "indicator",
        "mode": "number",
        # Plotly.js shows NaN as a blank number: the honest "unknown".
        "value": value if value is not None else np.nan,
        "title": {"text": title, "font": {"size": 12, "color": COLORS["muted"]}},
        "number": {"valueformat": fmt, "prefix": prefix, "font": {"size": 26}},
        "domain": {"x": [column / 4 + 0.01, (column + 1) / 4 - 0.01], "y": [0.68, 1.0]},
    }
    if value is not None and reference is not None:
        trace["mode"] = "number+delta"
        trace["delta"] = {"reference": reference, "valueformat": fmt, "prefix": prefix, "position": "bottom"}
    return trace


def _small(text: str) -> str:
    return f"<br><span style='font-size:11px'>{text}</span>"


def insights_figure(insights: Insights | None, *, uirevision: str | None = None) -> go.Figure:
    """Market performance: headline indicators (revenue vs plan, plan vs baseline, cycles, spread) and a
    table of every metric with its unit (:func:`insights_rows`)."""
    if insights is None:
        layout = _layout("insights", "Market performance", "revenue (EUR)", uirevision, 420)
        return _figure([], layout, [WAITING_TELEMETRY], None)

    realised_title = "realised revenue" + (
        _small("Δ vs plan, same period") if insights.plan_revenue_to_date_eur is not None else ""
    )
    expected_title = "plan expected revenue" + (
        _small("Δ vs baseline") if insights.baseline_revenue_eur is not None else ""
    )
    data = [
        _indicator(
            0,
            realised_title,
            insights.realised_revenue_eur,
            ",.2f",
            prefix="€",
            reference=insights.plan_revenue_to_date_eur,
        ),
        _indicator(
            1,
            expected_title,
            insights.expected_revenue_eur,
            ",.2f",
            prefix="€",
            reference=insights.baseline_revenue_eur,
        ),
        _indicator(2, "full cycles", insights.full_cycles, ".2f"),
        _indicator(3, "spread sell − buy" + _small("EUR/MWh"), insights.spread_eur_per_mwh, ",.1f"),
    ]
    # The period goes in the subtitle; the other metrics fill two metric/value column pairs.
    rows = insights_rows(insights)
    metrics = rows[1:]
    half = (len(metrics) + 1) // 2
    left, right = metrics[:half], metrics[half:] + [("", "")] * (2 * half - len(metrics))
    columns = {
        "metric": [m for m, _ in left],
        "value": [v for _, v in left],
        "metric ": [m for m, _ in right],
        "value ": [v for _, v in right],
    }
    table = _table(columns, ["left", "right", "left", "right"], [1.2, 1, 1.2, 1.1])
    data.append(table | {"domain": {"x": [0, 1], "y": [0, 0.64]}})
    plan = f" · plan {insights.plan_id}" if insights.plan_id else ""
    layout = {
        "template": TEMPLATE,
        "title": {
            "text": "Market performance" + plan,
            "subtitle": {"text": rows[0][1], "font": {"size": 11, "color": COLORS["muted"]}},
        },
        "height": 420,
        "margin": {"t": 64, "b": 8, "l": 16, "r": 16},
        "uirevision": uirevision or "insights",
        "meta": {"figure": "insights"},
        "annotations": [],
    }
    messages = [WAITING_TELEMETRY] if insights.samples < 2 else []
    last = insights.end.timestamp() if insights.end is not None else None
    return _figure(data, layout, messages, last)


def render_all(
    telemetry: TelemetrySeries,
    prices: PriceSeries,
    schedule: Schedule | None,
    spec: BatterySpec | None,
    insights: Insights | None,
    *,
    now: datetime | None = None,
) -> dict[str, go.Figure]:
    """Every dashboard figure by id (:data:`FIGURE_IDS` order), from one set of inputs."""
    return {
        "soc": soc_figure(telemetry, schedule, spec, now=now),
        "power": power_figure(telemetry, schedule, now=now),
        "prices": prices_figure(prices, telemetry, schedule, now=now),
        "schedule": schedule_figure(schedule, now=now),
        "insights": insights_figure(insights),
    }


# -- wire conversion -------------------------------------------------------------------------------------


def _array_json(value: np.ndarray[Any, Any]) -> list[Any]:
    if value.ndim > 1:
        return [_array_json(row) for row in value]
    kind = value.dtype.kind
    if kind == "M":
        ms = value.astype("datetime64[ms]")
        nat = np.isnat(ms)
        whole_seconds = bool((ms[~nat].astype(np.int64) % 1000 == 0).all())
        strings: list[Any] = np.datetime_as_string(ms, unit="s" if whole_seconds else "ms").tolist()
        if nat.any():
            strings = [None if missing else s for s, missing in zip(strings, nat.tolist(), strict=True)]
        return strings
    if kind == "f":
        # A figure is for display: 4 decimals (0.1 Wh, 0.0001 EUR/MWh) cut the JSON by ~40 % for measured data.
        value = np.round(value, DECIMALS)
        finite = np.isfinite(value)
        if finite.all():
            return list(value.tolist())
        # JSON has no NaN: a missing value is null (Plotly draws a gap there).
        obj = value.astype(object)
        obj[~finite] = None
        return list(obj.tolist())
    if kind in "iub":
        return list(value.tolist())
    return [json_safe(v) for v in value.tolist()]


def _typed_array_json(spec: dict[str, Any]) -> list[Any]:
    """Plotly >= 6 exports numeric arrays as base64 typed-array specs; subscribers get plain lists."""
    array = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    shape = spec.get("shape")
    if shape:
        array = array.reshape(tuple(int(n) for n in str(shape).split(",")))
    return _array_json(array)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that any JSON encoder accepts: arrays (numpy or Plotly's base64 typed-array specs)
    become lists (NaN -> null), datetimes
    become ISO 8601 strings (aware ones in UTC with ``Z``; naive ones are taken as UTC), numpy scalars
    become Python numbers."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            return _typed_array_json(value)
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _array_json(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, datetime):
        return _iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def to_message(fig: go.Figure, figure_id: str, battery: str, generated_at: datetime) -> Figure:
    """The contract ``Figure`` for a plotly figure: ``data`` and ``layout`` as plain JSON values.

    Arrays are sent as plain lists (not Plotly's base64 typed arrays), so any subscriber can read them.
    """
    raw = fig.to_plotly_json()
    return Figure(
        figure=figure_id,
        battery=battery,
        generated_at=generated_at,
        data=[json_safe(trace) for trace in raw["data"]],
        layout=json_safe(raw["layout"]),
    )
