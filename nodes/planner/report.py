"""Presenting plans and backtests: the plan summary and the backtest table (text), the backtest report (HTML
with a table of its numbers and a Plotly figure).

Pure: takes a :class:`Schedule` or a :class:`Backtest` and returns a string or a Figure; the CLI prints and
writes them.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate, groupby
from zoneinfo import ZoneInfo

import msgspec
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nodes.contract.energy import hours_between, slot_hours
from nodes.contract.messages import DEFAULT_CURRENCY, BatterySpec, Schedule, ScheduleSlot
from nodes.planner.baseline import DEFAULT_TZ, Dispatch, Evaluation

COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")
"""One colour per strategy (Plotly's first ones), shared by its revenue line, SOC band and day-end SOC."""
BAND_AFTER_DAYS = 14
"""Longer backtests draw each strategy's SOC as a daily min-max band: thousands of points squashed into one
panel's width show nothing but a solid block."""


class StrategyRun(msgspec.Struct, kw_only=True, frozen=True):
    """One strategy over the whole backtest, day after day with its SOC carried over."""

    name: str
    dispatch: Dispatch
    evaluation: Evaluation
    daily_revenue: list[float]


class Foresight(msgspec.Struct, kw_only=True, frozen=True):
    """How a day-ahead backtest planned (:func:`nodes.planner.backtest.run_day_ahead_backtest`)."""

    published_at: str
    """When each day's prices were taken as published, the day before delivery (HH:MM in the backtest's tz)."""
    plans: int
    """Day-ahead plans made (one at the start, then one per publication)."""
    perfect_window_days: int | None
    """None: perfect foresight is one plan over the whole file; N: a rolling plan knowing N days, daily."""
    perfect_solve_ms: float
    perfect_plans: int
    per_day_solve_ms: float


class Backtest(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a backtest produced; ``runs[0]`` is the optimiser, the others are baselines. With
    ``foresight``, ``runs[0]`` is the day-ahead (realistic) optimiser and ``runs[1]`` perfect foresight."""

    source: str
    spec: BatterySpec
    days: list[date]
    runs: list[StrategyRun]
    solve_ms: list[float]
    """Solver time per day (optimiser)."""
    plan_ms: list[float]
    """Build + solve + publish time per day (optimiser)."""
    tz: str = DEFAULT_TZ
    """Time zone of the delivery days."""
    day_hours: list[float] = msgspec.field(default_factory=list)
    """Hours of prices in each day (a day at either end of the file may be partial)."""
    currency: str = DEFAULT_CURRENCY
    """ISO 4217 code of the prices, so of every amount of the report."""
    foresight: Foresight | None = None
    """Set for a day-ahead backtest; None: each day planned alone (``solve_ms`` per day)."""


def local_day_hours(day: date, tz: str) -> float:
    """Length of the local day in hours (23 or 25 around DST changes)."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return hours_between(start, end)


def days_line(backtest: Backtest) -> str:
    """Which days the backtest covers, in which time zone, and which of them are partial."""
    days = backtest.days
    if not days:
        return "no days"
    partial = [
        f"{day} ({covered:g} of {full:g} h)"
        for day, covered in zip(days, backtest.day_hours, strict=False)
        if covered < (full := local_day_hours(day, backtest.tz)) - 1e-9
    ]
    text = (f"{len(days)} delivery days {days[0]} .. {days[-1]} in {backtest.tz} "
            f"(each day from local midnight to midnight; --tz UTC counts UTC days)")
    if partial:
        text += f"; {len(partial)} partial: " + ", ".join(partial)
    return text


def foresight_line(backtest: Backtest) -> str:
    """What the optimiser knew when it planned."""
    how = backtest.foresight
    if how is None:
        return "foresight per day: each local day planned alone with its own prices, the SOC carried over"
    slots = len(backtest.runs[0].dispatch.slots)
    perfect = (f"one plan over all {slots:,} slots" if how.perfect_window_days is None else
               f"a rolling plan re-made each day knowing the next {how.perfect_window_days} days")
    return (f"foresight day-ahead: re-planned at each publication ({how.published_at} {backtest.tz} the day before "
            f"delivery) on the rest of today and all of tomorrow, {how.plans:,} plans; perfect foresight: {perfect}")


def ratio_line(backtest: Backtest) -> str | None:
    """``day-ahead / perfect foresight: 0.912 (EUR 1.00 of EUR 1.10)`` for a day-ahead backtest, else None."""
    if backtest.foresight is None:
        return None
    real, perfect = (run.evaluation.revenue for run in backtest.runs[:2])
    code = backtest.currency
    return (f"{backtest.runs[0].name} / {backtest.runs[1].name}: {_share(real, perfect)} "
            f"({code} {real:,.2f} of {code} {perfect:,.2f})")


def summary_table(backtest: Backtest) -> str:
    """The backtest's figures as an aligned text table, one column per strategy."""
    spec = backtest.spec
    head = (
        f"backtest {backtest.source}: {days_line(backtest)}\n"
        f"battery {spec.soc_min_kwh:g}-{spec.soc_max_kwh:g} kWh, charge {spec.max_charge_kw:g} kW, "
        f"discharge {spec.max_discharge_kw:g} kW, eta {spec.roundtrip_efficiency:g}, "
        f"cycle cost {spec.cycle_cost_per_mwh:g} {backtest.currency}/MWh\n"
        f"{foresight_line(backtest)}"
    )
    rows = _rows(backtest)
    width = max(len(label) for label, _ in rows)
    columns = [max(12, len(run.name)) for run in backtest.runs]
    pairs = list(zip(backtest.runs, columns, strict=True))
    lines = [head, "", " " * width + "".join(f"  {run.name:>{w}}" for run, w in pairs)]
    lines.extend(f"{label:<{width}}" + "".join(f"  {cell(run):>{w}}" for run, w in pairs) for label, cell in rows)
    lines.append("")
    if (ratio := ratio_line(backtest)) is not None:
        lines.append(ratio)
    lines.append(_timing(backtest))
    return "\n".join(lines)


def _rows(backtest: Backtest) -> list[tuple[str, Callable[[StrategyRun], str]]]:
    first = backtest.runs[0]
    optimiser = first.evaluation.revenue
    code = backtest.currency
    perfect: list[tuple[str, Callable[[StrategyRun], str]]] = []
    if backtest.foresight is not None:
        best = backtest.runs[1].evaluation.revenue
        perfect = [(f"share of {backtest.runs[1].name}", lambda r: _share(r.evaluation.revenue, best))]
    return [
        (f"revenue {code}", lambda r: f"{r.evaluation.revenue:,.2f}"),
        ("full cycles", lambda r: f"{r.evaluation.full_cycles:,.1f}"),
        (f"avg buy price {code}/MWh", lambda r: _price(r.evaluation.avg_buy_price_per_mwh)),
        (f"avg sell price {code}/MWh", lambda r: _price(r.evaluation.avg_sell_price_per_mwh)),
        ("energy bought kWh", lambda r: f"{r.evaluation.charged_kwh:,.0f}"),
        ("energy sold kWh", lambda r: f"{r.evaluation.discharged_kwh:,.0f}"),
        ("lost to efficiency kWh", lambda r: f"{r.evaluation.efficiency_loss_kwh:,.0f}"),
        ("limit violations", lambda r: str(len(r.evaluation.violations))),
        (f"{first.name} / this", lambda r: _ratio(optimiser, r.evaluation.revenue)),
        *perfect,
    ]


def _timing(backtest: Backtest) -> str:
    total = sum(backtest.solve_ms) / 1000.0
    mean = sum(backtest.solve_ms) / len(backtest.solve_ms) if backtest.solve_ms else 0.0
    planning = sum(backtest.plan_ms) / 1000.0
    how = backtest.foresight
    if how is None:
        return (f"optimiser solve time: total {total:.2f} s, mean {mean:.1f} ms per day "
                f"(with model build and publishing: {planning:.2f} s)")
    return (f"day-ahead solve time: total {total:.2f} s, mean {mean:.1f} ms per plan (with model build and "
            f"publishing: {planning:.2f} s); perfect foresight {how.perfect_solve_ms / 1000.0:.2f} s "
            f"({how.perfect_plans:,} plan{'s' if how.perfect_plans != 1 else ''}); "
            f"per-day optimiser {how.per_day_solve_ms / 1000.0:.2f} s")


def figure(backtest: Backtest) -> go.Figure:
    """Cumulative revenue per strategy by day, the SOC of each strategy, and the prices.

    Up to :data:`BAND_AFTER_DAYS` days the SOC is drawn slot by slot; beyond, as a band from each day's
    lowest to its highest SOC, so a year stays readable.
    """
    banded = len(backtest.days) > BAND_AFTER_DAYS
    soc_title = ("state of charge (kWh): daily range (band) and at each day's end (line)" if banded
                 else "state of charge (kWh, end of slot)")
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=(f"cumulative revenue ({backtest.currency})", soc_title, f"price ({backtest.currency}/MWh)"),
    )
    for i, run in enumerate(backtest.runs):
        visible = True if i == 0 else "legendonly"
        colour = COLOURS[i % len(COLOURS)]
        fig.add_trace(
            go.Scatter(
                x=[str(day) for day in backtest.days],
                y=list(accumulate(run.daily_revenue)),
                name=f"{run.name} revenue",
                mode="lines",
                line={"color": colour},
            ),
            row=1,
            col=1,
        )
        if banded:
            for trace in soc_band(run, backtest.tz, visible, colour):
                fig.add_trace(trace, row=2, col=1)
            continue
        fig.add_trace(
            go.Scatter(
                x=[slot.end.isoformat() for slot in run.dispatch.slots],
                y=run.evaluation.soc_kwh,
                name=f"{run.name} SOC",
                mode="lines",
                line={"shape": "linear", "width": 1, "color": colour},
                visible=visible,
            ),
            row=2,
            col=1,
        )
    slots = backtest.runs[0].dispatch.slots if backtest.runs else []
    fig.add_trace(
        go.Scatter(
            x=[slot.start.isoformat() for slot in slots],
            y=[slot.price_per_mwh for slot in slots],
            name="price",
            mode="lines",
            line={"shape": "hv", "width": 1, "color": "grey"},
        ),
        row=3,
        col=1,
    )
    fig.update_layout(
        title=f"Backtest {backtest.source}: {len(backtest.days)} days",
        height=900,
        hovermode="x unified",
        legend={"orientation": "h"},
    )
    return fig


class DaySoc(msgspec.Struct, frozen=True):
    """One local day of a strategy's SOC (at the slot ends)."""

    day: date
    low_kwh: float
    high_kwh: float
    end_kwh: float


def daily_soc(run: StrategyRun, tz: str) -> list[DaySoc]:
    """Per local day (of each slot's start): the lowest, the highest and the last SOC at the slot ends."""
    zone = ZoneInfo(tz)
    pairs = zip(run.dispatch.slots, run.evaluation.soc_kwh, strict=True)
    return [
        DaySoc(day, min(values), max(values), values[-1])
        for day, group in groupby(pairs, key=lambda pair: pair[0].start.astimezone(zone).date())
        if (values := [soc for _, soc in group])
    ]


def soc_band(run: StrategyRun, tz: str, visible: bool | str, colour: str) -> list[go.Scatter]:
    """The daily range as a band (the highest, then the lowest filled up to it) and the SOC at each day's end,
    the value carried into the next day."""
    days = daily_soc(run, tz)
    x = [str(d.day) for d in days]
    group = f"{run.name} SOC"
    edge = {"width": 0.5, "color": colour}
    return [
        go.Scatter(x=x, y=[d.high_kwh for d in days], name=f"{run.name} SOC daily max", mode="lines", line=edge,
                   legendgroup=group, visible=visible, showlegend=False),
        go.Scatter(x=x, y=[d.low_kwh for d in days], name=f"{run.name} SOC daily range", mode="lines", line=edge,
                   fill="tonexty", fillcolor=_translucent(colour), legendgroup=group, visible=visible),
        go.Scatter(x=x, y=[d.end_kwh for d in days], name=f"{run.name} SOC at day end", mode="lines",
                   line={"width": 2, "color": colour}, legendgroup=group, visible=visible),
    ]


def _translucent(colour: str, alpha: float = 0.2) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def html_page(backtest: Backtest) -> str:
    """The self-contained report: what was run, the table of numbers, and the figure (plotly.js inlined)."""
    spec = backtest.spec
    rows = _rows(backtest)
    head = "".join(f"<th>{html.escape(run.name)}</th>" for run in backtest.runs)
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>" + "".join(f"<td>{html.escape(cell(run))}</td>" for run in backtest.runs)
        + "</tr>"
        for label, cell in rows
    )
    plot = figure(backtest).to_html(full_html=False, include_plotlyjs=True)
    title = f"Backtest {backtest.source}"
    battery = (f"battery {spec.soc_min_kwh:g}-{spec.soc_max_kwh:g} kWh, charge {spec.max_charge_kw:g} kW, "
               f"discharge {spec.max_discharge_kw:g} kW, round-trip efficiency {spec.roundtrip_efficiency:g}, "
               f"cycle cost {spec.cycle_cost_per_mwh:g} {backtest.currency}/MWh")
    per_day = ("Each day is planned with that day's prices only, the SOC carried over to the next day; every "
               "strategy must end each day at or above the SOC it started with.")
    if backtest.foresight is not None:
        per_day = (f"{foresight_line(backtest)}. The day-ahead optimiser knows only what was published: at each "
                   "publication it re-plans from the SOC its executed plan reached and executes from the first slot "
                   "starting at or after the publication until the next one; its plans and the perfect plan end at "
                   "or above the initial SOC. The per-day column plans each day with that day's prices only, "
                   "the SOC carried over; it and the baselines end each day at or above the SOC it started with.")
    notes = (f"{per_day} top-N daily: charge in the cheapest "
             "and discharge in the dearest slots of each day; threshold: charge at or below the day's 25 % price "
             "quantile, discharge at or above its 75 % quantile. Revenue is market revenue minus cycle cost.")
    ratio = ratio_line(backtest)
    summary = f"<p><strong>{html.escape(ratio)}</strong></p>\n" if ratio else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:.3em .7em}td{text-align:right;font-variant-numeric:tabular-nums}"
        "thead th{background:#f3f3f3}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>{html.escape(days_line(backtest))}<br>{html.escape(battery)}<br>"
        f"{html.escape(foresight_line(backtest))}</p>\n"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>\n{summary}"
        f"<p>{html.escape(notes)}<br>{html.escape(_timing(backtest))}</p>\n"
        f"{plot}\n</body></html>\n"
    )


# -- the plan summary -----------------------------------------------------------------------------------------


def plan_summary(schedule: Schedule) -> str:
    """A plan for people: consecutive slots doing the same thing merged into one row, then the totals."""
    slots = schedule.slots
    if not slots:
        return "empty plan"
    rows = [("start (UTC)", "end", "action", "power kW", f"price {schedule.currency}/MWh", "SOC at end kWh")]
    for run in _runs(slots):
        first, last = run[0], run[-1]
        action, power = _action(first)
        prices = [s.price_per_mwh for s in run]
        price = f"{prices[0]:.2f}" if min(prices) == max(prices) else f"{min(prices):.2f} .. {max(prices):.2f}"
        end_format = "%H:%M" if last.end.date() == first.start.date() else "%Y-%m-%d %H:%M"
        rows.append((f"{first.start:%Y-%m-%d %H:%M}", f"{last.end:{end_format}}", action, f"{power:,.1f}", price,
                     f"{last.soc_kwh:,.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(_align(cell, width, left=i < 3) for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
        .rstrip()
        for row in rows
    ]
    charged = sum(s.charge_kw * slot_hours(s) for s in slots)
    discharged = sum(s.discharge_kw * slot_hours(s) for s in slots)
    baseline = ("" if schedule.baseline_revenue is None else
                f" (top-N daily baseline on the same prices: {schedule.currency} {schedule.baseline_revenue:,.2f})")
    lines += [
        "",
        f"{len(slots)} slots {slots[0].start:%Y-%m-%d %H:%M} .. {slots[-1].end:%Y-%m-%d %H:%M} UTC in "
        f"{len(rows) - 1} runs; SOC {schedule.soc_initial_kwh:,.1f} -> {slots[-1].soc_kwh:,.1f} kWh",
        f"energy bought {charged:,.1f} kWh, sold {discharged:,.1f} kWh (grid side)",
        f"expected revenue {schedule.currency} {schedule.expected_revenue:,.2f}{baseline}",
        f"solver {schedule.solver}, {schedule.solve_ms:.0f} ms; the Schedule JSON is on stdout",
    ]
    return "\n".join(lines)


def _align(cell: str, width: int, *, left: bool) -> str:
    return cell.ljust(width) if left else cell.rjust(width)


def _action(slot: ScheduleSlot) -> tuple[str, float]:
    if slot.discharge_kw > 1e-6:
        return "discharge", slot.discharge_kw
    if slot.charge_kw > 1e-6:
        return "charge", slot.charge_kw
    return "idle", 0.0


def _runs(slots: Sequence[ScheduleSlot]) -> list[list[ScheduleSlot]]:
    """Consecutive slots with the same action and power (to 0.1 kW), in order."""
    def key(slot: ScheduleSlot) -> tuple[str, float]:
        action, power = _action(slot)
        return action, round(power, 1)

    return [list(group) for _, group in groupby(slots, key=key)]


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _ratio(optimiser: float, other: float) -> str:
    return f"{optimiser / other:.3f}" if other > 0 else "-"


def _share(revenue: float, perfect: float) -> str:
    """``revenue / perfect`` (perfect foresight earns the most; nothing to compare with when it earns nothing)."""
    return f"{revenue / perfect:.3f}" if perfect > 0 else "-"
