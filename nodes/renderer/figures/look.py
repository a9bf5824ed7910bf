"""The look every figure shares and the pieces they are built from (pure: values in, plain dicts out).

Every figure uses :data:`TEMPLATE` (small on purpose: the stock templates add ~10 kB to every MQTT message), puts
units in axis titles and hover texts, sets ``uirevision`` so ``Plotly.react`` keeps the user's zoom across live
updates, carries ``layout.meta`` (figure id, point count, latest telemetry time) for the dashboard, and draws an
explicit "waiting for ..." annotation instead of failing when there is nothing to show (:func:`finish`). Times are
plotted as naive UTC (Plotly.js has no time zones), so time axes say "UTC".

Figures are assembled as plain dicts and validated by plotly once, in ``go.Figure(data, layout)``:
``add_shape``/``add_annotation``/``make_subplots`` re-validate on every call and cost 5-10x more.

Sign convention everywhere: power is + when discharging (selling to the grid), - when charging.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import plotly.graph_objects as go

from nodes.contract.messages import DEFAULT_CURRENCY, Schedule
from nodes.renderer import currency
from nodes.renderer.series import FloatArray, TelemetrySeries, TimeArray, to_datetime64

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


EPS_KW = 1e-6


EXPECTED_HELP = (
    "What the planner expects this plan to earn over its whole horizon: Σ (discharge − charge) × slot length "
    "× the slot's price forecast."
)


BASELINE_HELP = (
    "The planner's yardstick on the same prices: a simple rule that charges at full power in each day's "
    "cheapest slots and discharges in the dearest ones."
)


# -- pieces -----------------------------------------------------------------------------------------------------


Trace = dict[str, Any]
Layout = dict[str, Any]


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def naive(value: datetime) -> str:
    # Plotly.js has no time zones: the axis is naive UTC, labelled so
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def base_layout(figure_id: str, title: str, y_title: str, uirevision: str | None, height: int) -> Layout:
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


def empty_annotation(message: str) -> dict[str, Any]:
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


def now_shapes(now: datetime | None, axes: Sequence[tuple[str, str]] = (("x", "paper"),)) -> list[dict[str, Any]]:
    """A dotted vertical line at ``now`` on each (xref, yref) pair."""
    if now is None:
        return []
    x = iso(now)
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


def finish(data: list[Trace], layout: Layout, messages: Sequence[str], last_ts: float | None) -> go.Figure:
    """Validate once and return the figure, with the empty-state annotation and ``layout.meta`` filled in
    (``points``: the sum of :func:`trace_points`, what the dashboard's ``data-points`` shows)."""
    if messages:
        layout.setdefault("annotations", []).append(empty_annotation(" · ".join(messages)))
    if not data:
        # Nothing drawn: keep the axis titles (the units) but not Plotly's placeholder range (-1..4, year 2000).
        blank = {"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""}
        for key in [k for k in layout if k.startswith(("xaxis", "yaxis"))]:
            layout[key] = layout[key] | blank
    layout["meta"] = layout["meta"] | {
        "points": sum(trace_points(t) for t in data),
        "last_ts": None if last_ts is None else iso(datetime.fromtimestamp(last_ts, tz=UTC)),
    }
    return go.Figure(data=data, layout=layout)


def steps(start_s: FloatArray, end_s: FloatArray, values: FloatArray) -> tuple[TimeArray, FloatArray]:
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


def plan_arrays(schedule: Schedule) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """start_s, end_s, price, net planned power (kW, + discharge), SOC at slot end (kWh)."""
    slots = schedule.slots
    n = len(slots)
    start = np.fromiter((s.start.timestamp() for s in slots), dtype=np.float64, count=n)
    end = np.fromiter((s.end.timestamp() for s in slots), dtype=np.float64, count=n)
    price = np.fromiter((s.price_per_mwh for s in slots), dtype=np.float64, count=n)
    net = np.fromiter((s.discharge_kw - s.charge_kw for s in slots), dtype=np.float64, count=n)
    soc = np.fromiter((s.soc_kwh for s in slots), dtype=np.float64, count=n)
    return start, end, price, net, soc


def action_of(net_kw: float) -> str:
    if net_kw > EPS_KW:
        return "discharge"
    if net_kw < -EPS_KW:
        return "charge"
    return "idle"


def last_ts(telemetry: TelemetrySeries) -> float | None:
    return float(telemetry.time_s[-1]) if len(telemetry) else None


def line_type(n: int) -> str:
    # SVG lines get sluggish past ~20k points; WebGL keeps panning smooth (figures are normally downsampled).
    return "scattergl" if n > 20_000 else "scatter"


def price_trace(
    start_s: FloatArray, end_s: FloatArray, price: FloatArray, code: str = DEFAULT_CURRENCY, **extra: Any
) -> Trace:
    x, y = steps(start_s, end_s, price)
    return {
        "type": "scatter",
        "x": x,
        "y": y,
        "mode": "lines",
        "line": {"color": COLORS["price"], "width": 2, "shape": "hv"},
        "name": "price",
        "hovertemplate": f"price %{{y:.2f}} {currency.per_mwh(code)}<extra></extra>",
    } | extra


def plan_net_trace(schedule: Schedule, name: str, **extra: Any) -> Trace:
    start, end, _price, net, _soc = plan_arrays(schedule)
    x, y = steps(start, end, net)
    return {
        "type": "scatter",
        "x": x,
        "y": y,
        "mode": "lines",
        "name": name,
        "line": {"color": COLORS["plan"], "width": 2, "dash": "dash", "shape": "hv"},
        "hovertemplate": "plan %{y:.1f} kW<extra></extra>",
    } | extra


def planned_soc_trace(schedule: Schedule, **extra: Any) -> Trace:
    start, end, _price, _net, soc = plan_arrays(schedule)
    return {
        "type": "scatter",
        "x": to_datetime64(np.concatenate([start[:1], end])),
        "y": np.concatenate([[schedule.soc_initial_kwh], soc]),
        "mode": "lines",
        "name": "planned SOC",
        "line": {"color": COLORS["plan"], "width": 2, "dash": "dash"},
        "hovertemplate": "planned %{y:.1f} kWh<extra></extra>",
    } | extra


def signed_bars(
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
    for name, mask in (("discharge", net > EPS_KW), ("charge", net < -EPS_KW)):
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


def view_axis(layout: Layout, x_range: tuple[datetime, datetime] | None, *keys: str) -> None:
    """The view's time range is the window (never a data- or plan-dominated autorange)."""
    if x_range is None:
        return
    begin, end = x_range
    for key in keys or ("xaxis",):
        layout[key] = layout.get(key, {}) | {"range": [naive(begin), naive(end)], "autorange": False}


def info(text: str, help_text: str, x: float = 1.0, y: float = 1.0, **extra: Any) -> dict[str, Any]:
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


def money(value: float | None, code: str = DEFAULT_CURRENCY) -> str:
    """An amount in ``code`` with its symbol (:func:`nodes.renderer.currency.money`)."""
    return currency.money(value, code)


def number(value: float | None, fmt: str, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:{fmt}}{(' ' + unit) if unit else ''}"
    return text.replace("-", "−", 1) if text.startswith("-") else text
