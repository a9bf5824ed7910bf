"""The battery's own figures: state of charge, power, and price against power (pure: series in, figures out).

No I/O and no clock: ``now`` is passed in. :func:`render_all` draws every dashboard figure of one battery
(these three, the battery's BMS panel :mod:`~nodes.renderer.figures.cells`, the plan
:mod:`~nodes.renderer.figures.plan`, the market performance :mod:`~nodes.renderer.figures.performance` and the
alarm history :mod:`~nodes.renderer.figures.alarms`) from one set of inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from nodes.contract.messages import DEFAULT_CURRENCY, Alarm, BatterySpec, Schedule
from nodes.renderer.currency import mixed_currencies, per_mwh
from nodes.renderer.figures.alarms import alarm_history_figure
from nodes.renderer.figures.cells import cells_figure
from nodes.renderer.figures.look import (
    COLORS,
    WAITING_PRICES,
    WAITING_TELEMETRY,
    Trace,
    base_layout,
    clip_schedule,
    finish,
    info,
    last_ts,
    line_type,
    now_shapes,
    plan_arrays,
    plan_net_trace,
    planned_soc_trace,
    price_trace,
    signed_bars,
    steps,
    view_axis,
)
from nodes.renderer.figures.performance import insights_figure
from nodes.renderer.figures.plan import schedule_figure
from nodes.renderer.insights import Insights
from nodes.renderer.ledger import MAX_HOLD_S, interval_power
from nodes.renderer.series import FloatArray, PriceSeries, TelemetrySeries, to_datetime64

FIGURE_IDS = ("soc", "power", "prices", "cells", "schedule", "insights", "alarms")
"""The figures the renderer publishes, in dashboard order."""


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
    layout = base_layout("soc", "State of charge", "SOC (kWh)", uirevision, 420)
    layout["shapes"] = now_shapes(now)
    view_axis(layout, x_range)
    schedule = clip_schedule(schedule, *(x_range or (None, None)))
    data: list[Trace] = []
    if len(telemetry):
        trace: Trace = {
            "type": line_type(len(telemetry)),
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
        data.append(planned_soc_trace(schedule))
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
    layout["annotations"].append(info("how?", SOC_HELP))
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return finish(data, layout, messages, last_ts(telemetry))


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
    layout = base_layout("power", "Charge / discharge", "power (kW): + discharge, − charge", uirevision, 420)
    layout |= {"barmode": "relative", "bargap": 0, "shapes": now_shapes(now)}
    layout["yaxis"]["zeroline"] = True
    view_axis(layout, x_range)
    schedule = clip_schedule(schedule, *(x_range or (None, None)))
    data: list[Trace] = []
    start, end, power, derived = power_intervals(telemetry, now=now)
    if start.size:
        width = (end - start) * 1000.0
        x = to_datetime64(start)
        data += signed_bars(x[~derived], power[~derived], width[~derived], "actual", skip_empty=bool(derived.any()))
        if derived.any():
            data += signed_bars(x[derived], power[derived], width[derived], "actual", derived=True, skip_empty=True)
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
        data.append(plan_net_trace(schedule, "plan (net)"))
    layout["annotations"].append(info("how?", POWER_HELP))
    messages = [] if len(telemetry) else [WAITING_TELEMETRY]
    return finish(data, layout, messages, last_ts(telemetry))


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
    return prices.price_per_mwh[used], sums[used] / weights[used]


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
    _start, _end, price, net, _soc = plan_arrays(schedule)
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
    """Price (per MWh in the prices' currency, left axis) and net battery power (kW, right axis) over time,
    with a plain-words answer to "does it sell when prices are high?" (:func:`price_power_correlation`) and
    the plan's own answer."""
    r = price_power_correlation(prices, telemetry)
    slots = _slot_pairs(prices, telemetry)[0].size
    problem = mixed_currencies(prices.currencies, schedule)
    code = next(iter(prices.currencies), None) or (DEFAULT_CURRENCY if schedule is None else schedule.currency)
    unit = "price" if problem else f"price ({per_mwh(code)})"
    layout = base_layout("prices", "Price vs battery power", unit, uirevision, 420)
    layout["shapes"] = now_shapes(now)
    view_axis(layout, x_range)
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
    if len(prices) and problem is None:
        data.append(price_trace(prices.start_s, prices.end_s, prices.price_per_mwh, code))
    start, end, power, derived = power_intervals(telemetry, now=now)
    if start.size:
        x, y = steps(start, end, power)
        how = " (partly derived from SOC)" if derived.any() else ""
        data.append(
            {
                "type": line_type(int(start.size)),
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
        data.append(plan_net_trace(schedule, "net power (plan)", yaxis="y2"))
        plan_r = plan_price_correlation(schedule)
        note += " · the plan: " + ("—" if plan_r is None else f"{plan_r:+.2f}")
    layout["title"]["subtitle"] = {"text": note, "font": {"size": 11, "color": COLORS["muted"]}}
    layout["annotations"].append(info("how?", CORRELATION_HELP))
    messages = ([] if len(prices) else [WAITING_PRICES]) + ([] if len(telemetry) else [WAITING_TELEMETRY])
    if problem is not None:
        messages.insert(0, f"prices not drawn: {problem}")
    return finish(data, layout, messages, last_ts(telemetry))


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
    alarms: Sequence[Alarm] = (),
    alarms_note: str | None = None,
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
        "cells": cells_figure(telemetry, now=shown_now, x_range=x_range),
        "schedule": schedule_figure(schedule, now=now, note=plan_note),
        "insights": insights_figure(insights),
        "alarms": alarm_history_figure(alarms, now or datetime.now(UTC), note=alarms_note),
    }
