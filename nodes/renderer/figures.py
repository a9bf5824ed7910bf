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

import msgspec
import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from nodes.contract.energy import SECONDS_PER_HOUR, hours_between
from nodes.contract.messages import BatterySpec, Figure, Schedule
from nodes.renderer.insights import Insights
from nodes.renderer.ledger import MAX_HOLD_S, interval_power
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
    layout["meta"] = layout["meta"] | {
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


def _signed_bars(
    x: TimeArray,
    net: FloatArray,
    width: float | FloatArray,
    suffix: str,
    *,
    derived: bool = False,
    skip_empty: bool = False,
    **extra: Any,
) -> list[Trace]:
    """Two bar traces: discharge (> 0, orange) and charge (< 0, blue); each bar starts at its x.

    Each trace keeps only its own bars (not NaN placeholders): half the bytes on the wire. ``derived`` bars
    (power computed from SOC changes) are hatched and say so in their name and hover text.
    """
    traces = []
    for name, mask in (("discharge", net > _EPS_KW), ("charge", net < -_EPS_KW)):
        if skip_empty and not mask.any():
            continue
        marker: dict[str, Any] = {"color": COLORS[name], "line": {"width": 0}}
        how = " (derived from SOC)" if derived else ""
        if derived:
            # hatched: the marker colour underneath, white stripes on top ("overlay"), so it reads as "not measured"
            marker |= {
                "opacity": 0.75,
                "pattern": {"shape": "/", "fillmode": "overlay", "fgcolor": "#ffffff", "size": 6, "solidity": 0.3},
            }
        traces.append(
            {
                "type": "bar",
                "x": x[mask],
                "y": net[mask],
                "width": width[mask] if isinstance(width, np.ndarray) else width,
                "offset": 0,
                "name": f"{name} ({suffix})" if not derived else f"{name} (derived from SOC)",
                "marker": marker,
                "hovertemplate": f"{name} %{{y:.1f}} kW{how}<extra></extra>",
            }
            | extra
        )
    return traces


# -- what the figures show of a series -------------------------------------------------------------------


def power_intervals(
    telemetry: TelemetrySeries, *, now: datetime | None = None
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """The battery's power as drawn: ``(start_s, end_s, power_kw, derived)`` per interval.

    The same model as the KPIs (:mod:`nodes.renderer.ledger`): a measured power holds until the next reading
    (at most 15 min); otherwise the power is derived from the SOC change between the readings (at most 6 h
    apart). A bucket mean from the recorder covers its own bucket. The newest measured reading is drawn up to
    one typical spacing ahead (at most 15 min, never past ``now``): it is the power the battery reports now.
    """
    n = len(telemetry)
    empty = np.empty(0)
    if n == 0:
        return empty, empty, empty, np.empty(0, dtype=bool)
    t = telemetry.centre_s
    spans = telemetry.spans
    power = telemetry.power_kw
    order = np.argsort(t, kind="stable")
    t, spans, power, soc = t[order], spans[order], power[order], telemetry.soc_kwh[order]
    dt = np.diff(t)
    aggregated = np.isfinite(spans)
    starts, ends, values, derived = [], [], [], []
    # bucket means with a power: the mean over the bucket
    means = aggregated & np.isfinite(power)
    if means.any():
        lo = t[means] - spans[means] / 2.0
        starts.append(lo)
        ends.append(lo + spans[means])
        values.append(power[means])
        derived.append(np.zeros(int(means.sum()), dtype=bool))
    if n > 1:
        # between raw readings: the ledger's model (an interval that starts at a bucket mean is the mean's)
        first = ~means[:-1]
        rate, measured, from_soc = interval_power(t, soc, power)
        measured, from_soc = first & measured, first & from_soc
        use = measured | from_soc
        starts.append(t[:-1][use])
        ends.append(t[1:][use])
        values.append(rate[use])
        derived.append(from_soc[use])
    if not aggregated[-1] and np.isfinite(power[-1]):
        raw_steps = dt[~aggregated[:-1] & ~aggregated[1:]] if n > 1 else empty
        step = float(np.median(raw_steps)) if raw_steps.size else 60.0
        end = t[-1] + min(step, MAX_HOLD_S)
        if now is not None:
            end = min(end, now.timestamp())
        if end > t[-1]:
            starts.append(t[-1:])
            ends.append(np.array([end]))
            values.append(power[-1:])
            derived.append(np.zeros(1, dtype=bool))
    if not starts:
        return empty, empty, empty, np.empty(0, dtype=bool)
    start_s = np.concatenate(starts)
    order = np.argsort(start_s, kind="stable")
    return (
        start_s[order],
        np.concatenate(ends)[order],
        np.concatenate(values)[order],
        np.concatenate(derived)[order],
    )


def clip_schedule(schedule: Schedule | None, begin: datetime | None, end: datetime | None) -> Schedule | None:
    """Only the plan's slots that overlap the view ``[begin, end)``; None when none does (nothing drawn)."""
    if schedule is None or begin is None or end is None:
        return schedule
    slots = [s for s in schedule.slots if s.end > begin and s.start < end]
    if not slots:
        return None
    if len(slots) == len(schedule.slots):
        return schedule
    return msgspec.structs.replace(schedule, slots=slots)


def _view_axis(layout: Layout, x_range: tuple[datetime, datetime] | None, *keys: str) -> None:
    """The view's time range is the window (never a data- or plan-dominated autorange)."""
    if x_range is None:
        return
    begin, end = x_range
    for key in keys or ("xaxis",):
        layout[key] = layout.get(key, {}) | {"range": [_naive(begin), _naive(end)], "autorange": False}


def _naive(value: datetime) -> str:
    # Plotly.js has no time zones: the axis is naive UTC, labelled so
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _info(text: str, help_text: str, x: float = 1.0, y: float = 1.0, **extra: Any) -> dict[str, Any]:
    """A small annotation with a hover tooltip that says how a number on the figure is computed."""
    return {
        "name": "info",
        "text": text,
        "hovertext": help_text,
        "xref": "paper",
        "yref": "paper",
        "x": x,
        "y": y,
        "xanchor": "right",
        "yanchor": "bottom",
        "showarrow": False,
        "font": {"size": 11, "color": COLORS["muted"]},
        "hoverlabel": {"bgcolor": "#ffffff", "font": {"size": 12}},
    } | extra


# -- figures ---------------------------------------------------------------------------------------------

SOC_HELP = (
    "SOC as the battery reports it. Where history is long, each point is the mean of the readings in its "
    "time bucket, drawn at the bucket's middle."
)
POWER_HELP = (
    "Bars: the battery's power, + discharging to the grid, − charging. A reported power holds until the next "
    "reading (at most 15 min); without one, the power is derived from the SOC change between readings (hatched)."
    " Dotted lines: the targets the battery was given."
)


def soc_figure(
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    spec: BatterySpec | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
    x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """State of charge in kWh: actual (line) vs planned (dashed, slot ends), SOC limits shaded."""
    layout = _layout("soc", "State of charge", "SOC (kWh)", uirevision, 420)
    layout["shapes"] = _now_shapes(now)
    _view_axis(layout, x_range)
    schedule = clip_schedule(schedule, *(x_range or (None, None)))
    data: list[Trace] = []
    if len(telemetry):
        trace: Trace = {
            "type": _line_type(len(telemetry)),
            "x": to_datetime64(telemetry.centre_s),
            "y": telemetry.soc_kwh,
            "mode": "lines+markers" if len(telemetry) < 60 else "lines",
            "marker": {"size": 5},
            "name": "actual SOC",
            "line": {"color": COLORS["soc"], "width": 2},
            "hovertemplate": "actual %{y:.1f} kWh<extra></extra>",
        }
        if spec is not None:
            trace["customdata"] = telemetry.soc_kwh / spec.capacity_kwh * 100.0
            trace["hovertemplate"] = "actual %{y:.1f} kWh (%{customdata:.0f} % of capacity)<extra></extra>"
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
                    "hovertext": f"the battery's configured SOC {name}imum (its spec); the planner stays inside",
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
    layout["annotations"].append(_info("how?", SOC_HELP))
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return _figure(data, layout, messages, _last_ts(telemetry))


def power_figure(
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
    x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Charge (negative, blue) and discharge (positive, orange) in kW as bars over the intervals they hold
    (:func:`power_intervals`), the targets as dotted step lines and the plan as a dashed step line."""
    layout = _layout("power", "Charge / discharge", "power (kW): + discharge, − charge", uirevision, 420)
    layout |= {"barmode": "relative", "bargap": 0, "shapes": _now_shapes(now)}
    layout["yaxis"]["zeroline"] = True
    _view_axis(layout, x_range)
    schedule = clip_schedule(schedule, *(x_range or (None, None)))
    data: list[Trace] = []
    start, end, power, derived = power_intervals(telemetry, now=now)
    if start.size:
        width = (end - start) * 1000.0
        x = to_datetime64(start)
        data += _signed_bars(x[~derived], power[~derived], width[~derived], "actual", skip_empty=bool(derived.any()))
        if derived.any():
            data += _signed_bars(x[derived], power[derived], width[derived], "actual", derived=True, skip_empty=True)
            layout["title"]["text"] = "Charge / discharge · derived from SOC (no power reported)"
    if len(telemetry):
        t = to_datetime64(telemetry.centre_s)
        for name, column, sign in (
            ("target discharge", telemetry.target_discharge_kw, 1.0),
            ("target charge", telemetry.target_charge_kw, -1.0),
        ):
            if np.isfinite(column).any():
                data.append(
                    {
                        "type": "scatter",
                        "x": t,
                        "y": sign * column,
                        "mode": "lines+markers" if len(telemetry) < 60 else "lines",
                        "marker": {"size": 4},
                        "name": f"{name} (kW)",
                        "line": {"color": COLORS["discharge" if sign > 0 else "charge"], "width": 1.5,
                                 "dash": "dot", "shape": "hv"},
                        "connectgaps": False,
                        "hovertemplate": f"{name} {{y}} kW (given to the battery)<extra></extra>".replace(
                            "{y}", "%{y:.1f}"
                        ),
                    }
                )
    if schedule is not None and schedule.slots:
        data.append(_plan_net_trace(schedule, "plan (net)"))
    layout["annotations"].append(_info("how?", POWER_HELP))
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return _figure(data, layout, messages, _last_ts(telemetry))


def _slot_pairs(prices: PriceSeries, telemetry: TelemetrySeries) -> tuple[FloatArray, FloatArray]:
    """Per price slot with power in it: (price, mean net power). Power outside every slot is ignored.

    Reported power: the mean of the samples inside each slot. A battery that reports no power at all: the
    time-weighted mean of the power derived from its SOC changes (:func:`power_intervals`).
    """
    ok = np.isfinite(telemetry.power_kw)
    if ok.any():
        t, p, weight = telemetry.centre_s[ok], telemetry.power_kw[ok], np.ones(int(ok.sum()))
    else:
        start, end, p, _derived = power_intervals(telemetry)
        t, weight = (start + end) / 2.0, end - start
    idx = prices.slot_index(t) if t.size else np.empty(0, dtype=np.int64)
    inside = idx >= 0
    if not inside.any():
        return np.empty(0), np.empty(0)
    n = len(prices)
    weights = np.bincount(idx[inside], weights=weight[inside], minlength=n)
    sums = np.bincount(idx[inside], weights=p[inside] * weight[inside], minlength=n)
    used = weights > 0
    return prices.price_eur_per_mwh[used], sums[used] / weights[used]


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

    Series are aligned on the price slots (time-weighted mean of the power inside each slot); slots without
    power are left out. ``None`` when fewer than 3 slots remain or either side has no variance.
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


CORRELATION_HELP = (
    "Correlation (Pearson r) between each price slot's price and the battery's average power in that slot "
    "(+ discharging). +1: it always sells when prices are high and buys when low; 0: no relation; "
    "−1: the opposite. Needs power in at least 3 price slots."
)


def _correlation_text(r: float | None, slots: int) -> str:
    if r is None:
        return "not enough data yet to say (needs power in 3 price slots)"
    verdict = "yes" if r >= 0.5 else "partly" if r > 0.1 else "no"
    return f"{verdict}: correlation {r:+.2f} over {slots} price slots"


def prices_figure(
    prices: PriceSeries,
    telemetry: TelemetrySeries,
    schedule: Schedule | None = None,
    *,
    now: datetime | None = None,
    uirevision: str | None = None,
    x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Price (EUR/MWh, left axis) and net battery power (kW, right axis) over time, with a plain-words answer
    to "does it sell when prices are high?" (:func:`price_power_correlation`) and the plan's own answer."""
    r = price_power_correlation(prices, telemetry)
    slots = _slot_pairs(prices, telemetry)[0].size
    layout = _layout("prices", "Price vs battery power", "price (EUR/MWh)", uirevision, 420)
    layout["shapes"] = _now_shapes(now)
    _view_axis(layout, x_range)
    schedule = clip_schedule(schedule, *(x_range or (None, None)))
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
    start, end, power, derived = power_intervals(telemetry, now=now)
    if start.size:
        x, y = _steps(start, end, power)
        how = " (partly derived from SOC)" if derived.any() else ""
        data.append(
            {
                "type": _line_type(int(start.size)),
                "x": x,
                "y": y,
                "mode": "lines",
                "name": "net power (derived from SOC)" if derived.all() else "net power (actual)",
                "yaxis": "y2",
                "line": {"color": COLORS["net"], "width": 1.5, "shape": "hv"},
                "fill": "tozeroy",
                "fillcolor": "rgba(15, 118, 110, 0.12)",
                "hovertemplate": f"net power %{{y:.1f}} kW{how}<extra></extra>",
            }
        )
    note = "Sells when prices are high? " + _correlation_text(r, slots)
    if schedule is not None and schedule.slots:
        data.append(_plan_net_trace(schedule, "net power (plan)", yaxis="y2"))
        plan_r = plan_price_correlation(schedule)
        note += " · the plan: " + ("—" if plan_r is None else f"{plan_r:+.2f}")
    layout["title"]["subtitle"] = {"text": note, "font": {"size": 11, "color": COLORS["muted"]}}
    layout["annotations"].append(_info("how?", CORRELATION_HELP))
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


EXPECTED_HELP = (
    "What the planner expects this plan to earn over its whole horizon: Σ (discharge − charge) × slot length "
    "× the slot's price forecast."
)
BASELINE_HELP = (
    "The planner's yardstick on the same prices: a simple rule that charges at full power in each day's "
    "cheapest slots and discharges in the dearest ones."
)
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
        layout = _layout("schedule", "Current plan", "power (kW): + discharge, − charge", uirevision, 420)
        return _figure([], layout, [f"no plan: {note}" if note else WAITING_SCHEDULE], None)

    start, end, price, net, _soc = _plan_arrays(schedule)
    title = (
        f"Current plan · next {_hours(schedule):.0f} h · expected revenue {_money(schedule.expected_revenue_eur)}"
    )
    if schedule.baseline_revenue_eur is not None:
        title += f" (simple rule: {_money(schedule.baseline_revenue_eur)})"
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
        "annotations": [
            _info("expected revenue?", EXPECTED_HELP, x=1.0, y=1.0, yanchor="bottom"),
            _info("simple rule?", BASELINE_HELP, x=0.86, y=1.0, yanchor="bottom"),
            _info("table?", TABLE_HELP, x=1.0, y=0.345, yanchor="bottom"),
            # the internals (plan id, solver, solve time) go into one small line under everything
            {"name": "details", "text": "details: " + plan_details(schedule), "xref": "paper", "yref": "paper",
             "x": 0, "y": 0, "xanchor": "left", "yanchor": "top", "yshift": -6, "showarrow": False,
             "font": {"size": 10, "color": COLORS["muted"]}},
        ],
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


# -- market performance -----------------------------------------------------------------------------------


def _number(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:{fmt}}{(' ' + unit) if unit else ''}"
    return text.replace("-", "−", 1) if text.startswith("-") else text


def _period(begin: datetime | None, end: datetime | None) -> str:
    if begin is None or end is None:
        return "—"
    return f"{begin.astimezone(UTC):%Y-%m-%d %H:%M} → {end.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


HOLD_RULE = (
    "measured power held until the next reading (at most 15 min); otherwise the SOC change between readings"
)


def insights_rows(insights: Insights) -> list[tuple[str, str, str]]:
    """(label, value with unit, how it is computed) rows of the market-performance panel, the period first."""
    ins = insights
    loss = ins.efficiency_loss_kwh
    loss_text = _number(loss, ",.1f", "kWh")
    if loss is not None and ins.energy_charged_kwh > 0:
        loss_text += f" ({loss / ins.energy_charged_kwh * 100:.1f} % of charged)"
    loss_help = (
        "Energy charged − energy discharged − SOC gained, over intervals with measured power (never negative: "
        "if the readings disagree it is not shown)."
    )
    if loss is None and ins.loss_note:
        loss_text = "— (readings disagree)" if "disagree" in ins.loss_note else "— (not measurable)"
        loss_help = f"{ins.loss_note[:1].upper()}{ins.loss_note[1:]}. " + loss_help
    return [
        ("period", _period(ins.begin, ins.end),
         "The time these numbers cover: the window, starting on the 15-minute grid, up to the latest reading."),
        ("realised revenue", _money(ins.realised_revenue_eur),
         "Money from selling minus money spent buying: Σ power × time × the price of the slot it fell in; "
         + HOLD_RULE + "."),
        ("plan, same period", _money(ins.plan_revenue_to_date_eur),
         "What the current plan's slots earn over the same period (only where the plan covers it)."),
        ("plan expected (whole plan)", _money(ins.expected_revenue_eur), EXPECTED_HELP),
        ("simple rule (whole plan)", _money(ins.baseline_revenue_eur), BASELINE_HELP),
        ("energy charged", _number(ins.energy_charged_kwh, ",.1f", "kWh"),
         "Energy into the battery in the period: Σ charging power × time; " + HOLD_RULE + "."),
        ("energy discharged", _number(ins.energy_discharged_kwh, ",.1f", "kWh"),
         "Energy out of the battery in the period: Σ discharging power × time; " + HOLD_RULE + "."),
        ("derived from SOC", _number(ins.derived_energy_kwh, ",.1f", "kWh"),
         "Part of the energy above computed from SOC changes (no power reported, or readings more than 15 min "
         "apart): the net change between two readings, so conversion losses are not visible in it."),
        ("full cycles", _number(ins.full_cycles, ".2f"),
         "Energy discharged ÷ usable capacity (SOC max − SOC min from the battery's spec)."),
        ("average buy price", _number(ins.avg_buy_price_eur_per_mwh, ",.2f", "EUR/MWh"),
         "Price paid per MWh charged, weighted by the energy charged in each price slot."),
        ("average sell price", _number(ins.avg_sell_price_eur_per_mwh, ",.2f", "EUR/MWh"),
         "Price earned per MWh discharged, weighted by the energy discharged in each price slot."),
        ("spread (sell − buy)", _number(ins.spread_eur_per_mwh, ",.2f", "EUR/MWh"),
         "Average sell price − average buy price: what each MWh cycled earns before losses."),
        ("lost to efficiency", loss_text, loss_help),
        ("cycle wear cost", _money(ins.cycle_cost_eur),
         "Energy discharged × the battery's cycle cost (EUR/MWh, from its spec)."),
        ("energy without price", _number(ins.unpriced_energy_kwh, ",.1f", "kWh"),
         "Energy moved while no price slot was known: counted in the energy totals, not in the revenue."),
        ("not covered", _number(ins.gap_s / SECONDS_PER_HOUR, ",.1f", "h"),
         "Time in the period without usable readings (more than 6 h apart, or no SOC): nothing is counted."),
        ("readings", f"{ins.samples:,}", "Telemetry samples in the period."),
    ]


def _text_trace(
    *,
    x: Sequence[float],
    y: Sequence[float],
    text: Sequence[str],
    hover: Sequence[str],
    position: str,
    size: int,
    color: str,
    name: str,
) -> Trace:
    return {
        "type": "scatter",
        "mode": "text",
        "x": list(x),
        "y": list(y),
        "text": list(text),
        "hovertext": list(hover),
        "hovertemplate": "%{hovertext}<extra></extra>",
        "textposition": position,
        "textfont": {"size": size, "color": color, "family": FONT},
        "name": name,
        "showlegend": False,
        "cliponaxis": False,
    }


def insights_figure(insights: Insights | None, *, uirevision: str | None = None) -> go.Figure:
    """Market performance over the window: four headline numbers and every metric with its unit
    (:func:`insights_rows`), each with a tooltip saying how it is computed. Drawn as text traces (not a
    table) so every number has its own hover text."""
    layout: Layout = {
        "template": TEMPLATE,
        "title": {"text": "Market performance over the window"},
        "height": 460,
        "margin": {"t": 64, "b": 8, "l": 16, "r": 16},
        "uirevision": uirevision or "insights",
        "meta": {"figure": "insights"},
        "hovermode": "closest",
        "xaxis": {"visible": False, "range": [0, 1], "fixedrange": True},
        "yaxis": {"visible": False, "range": [0, 1], "fixedrange": True},
        "annotations": [],
        "shapes": [],
    }
    if insights is not None:
        # the numbers as data, for subscribers and tests (the texts below are for people)
        layout["meta"]["insights"] = msgspec.to_builtins(insights) | {"spread_eur_per_mwh": insights.spread_eur_per_mwh}
    if insights is None or insights.status != "ok":
        note = WAITING_TELEMETRY if insights is None else insights.note
        prefix = "computing: " if insights is not None and insights.status == "computing" else ""
        layout["title"]["subtitle"] = {"text": prefix + note, "font": {"size": 11, "color": COLORS["muted"]}}
        return _figure([], layout, [prefix + note], None)

    rows = insights_rows(insights)
    by_label = {label: (value, how) for label, value, how in rows}
    headline = [
        ("realised revenue", "realised revenue"),
        ("plan, same period", "plan, same period"),
        ("full cycles", "full cycles"),
        ("spread (sell − buy)", "spread sell − buy (EUR/MWh)"),
    ]
    xs = [0.125, 0.375, 0.625, 0.875]
    big = [by_label[k][0].removesuffix(" EUR/MWh") for k, _ in headline]
    data = [
        _text_trace(
            x=xs, y=[0.93] * 4, text=[f"<b>{v}</b>" for v in big],
            hover=[by_label[k][1] for k, _ in headline], position="middle center", size=22, color=COLORS["text"],
            name="headline",
        ),
        _text_trace(
            x=xs, y=[0.84] * 4, text=[label for _, label in headline], hover=[by_label[k][1] for k, _ in headline],
            position="middle center", size=12, color=COLORS["muted"], name="headline labels",
        ),
    ]
    metrics = rows[1:]
    half = (len(metrics) + 1) // 2
    for column, part in enumerate((metrics[:half], metrics[half:])):
        y = [0.72 - i * (0.70 / max(half, 1)) for i in range(len(part))]
        left, right = 0.02 + column * 0.5, 0.48 + column * 0.5
        hover = [how for _, _, how in part]
        data.append(_text_trace(
            x=[left] * len(part), y=y, text=[label for label, _, _ in part], hover=hover,
            position="middle right", size=12, color=COLORS["muted"], name="metric",
        ))
        data.append(_text_trace(
            x=[right] * len(part), y=y, text=[value for _, value, _ in part], hover=hover,
            position="middle left", size=12, color=COLORS["text"], name="value",
        ))
    subtitle = rows[0][1]
    if insights.power_source not in ("measured", "none"):
        subtitle += f" · power {insights.power_source}"
    layout["title"]["subtitle"] = {"text": subtitle, "font": {"size": 11, "color": COLORS["muted"]}}
    if insights.plan_id:
        layout["annotations"].append(
            _info(f"details: plan {insights.plan_id}", "the plan the comparison uses (its id)", x=0.0, y=0.0,
                  xanchor="left", yanchor="bottom")
        )
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
    x_range: tuple[datetime, datetime] | None = None,
    live: bool = True,
    plan_note: str | None = None,
) -> dict[str, go.Figure]:
    """Every dashboard figure by id (:data:`FIGURE_IDS` order), from one set of inputs.

    ``x_range`` is the view (the window, plus the plan ahead for a live window): every time axis shows
    exactly it, and plan slots outside it are not drawn. ``now`` is drawn only when it is inside the view.
    """
    shown_now = now
    if now is not None and x_range is not None and not (x_range[0] <= now <= x_range[1]):
        shown_now = None
    if not live and x_range is not None:
        shown_now = None
    return {
        "soc": soc_figure(telemetry, schedule, spec, now=shown_now, x_range=x_range),
        "power": power_figure(telemetry, schedule, now=shown_now, x_range=x_range),
        "prices": prices_figure(prices, telemetry, schedule, now=shown_now, x_range=x_range),
        "schedule": schedule_figure(schedule, now=now, note=plan_note),
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
