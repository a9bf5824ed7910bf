"""The market-performance panel: realised revenue, energy, cycles and prices over the window (pure).

Every number comes with a tooltip saying how it is computed (:func:`insights_rows`); the numbers themselves are
the renderer's :class:`~nodes.renderer.insights.Insights`, also carried as data in ``layout.meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import plotly.graph_objects as go

from nodes.contract.energy import SECONDS_PER_HOUR
from nodes.renderer.currency import per_mwh
from nodes.renderer.figures.look import (
    BASELINE_HELP,
    COLORS,
    EXPECTED_HELP,
    FONT,
    TEMPLATE,
    WAITING_TELEMETRY,
    Layout,
    Trace,
    finish,
    info,
    money,
    number,
)
from nodes.renderer.insights import Insights


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
    code, unit = ins.currency, per_mwh(ins.currency)
    loss = ins.efficiency_loss_kwh
    loss_text = number(loss, ",.1f", "kWh")
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
        ("realised revenue", money(ins.realised_revenue, code),
         "Money from selling minus money spent buying: Σ power × time × the price of the slot it fell in; "
         + HOLD_RULE + "."),
        ("plan, same period", money(ins.plan_revenue_to_date, code),
         "What the current plan's slots earn over the same period (only where the plan covers it)."),
        ("plan expected (whole plan)", money(ins.expected_revenue, code), EXPECTED_HELP),
        ("simple rule (whole plan)", money(ins.baseline_revenue, code), BASELINE_HELP),
        ("energy charged", number(ins.energy_charged_kwh, ",.1f", "kWh"),
         "Energy into the battery in the period: Σ charging power × time; " + HOLD_RULE + "."),
        ("energy discharged", number(ins.energy_discharged_kwh, ",.1f", "kWh"),
         "Energy out of the battery in the period: Σ discharging power × time; " + HOLD_RULE + "."),
        ("derived from SOC", number(ins.derived_energy_kwh, ",.1f", "kWh"),
         "Part of the energy above computed from SOC changes (no power reported, or readings more than 15 min "
         "apart): the net change between two readings, so conversion losses are not visible in it."),
        ("full cycles", number(ins.full_cycles, ".2f"),
         "Energy discharged ÷ usable capacity (SOC max − SOC min from the battery's spec)."),
        ("average buy price", number(ins.avg_buy_price_per_mwh, ",.2f", unit),
         "Price paid per MWh charged, weighted by the energy charged in each price slot."),
        ("average sell price", number(ins.avg_sell_price_per_mwh, ",.2f", unit),
         "Price earned per MWh discharged, weighted by the energy discharged in each price slot."),
        ("spread (sell − buy)", number(ins.spread_per_mwh, ",.2f", unit),
         "Average sell price − average buy price: what each MWh cycled earns before losses."),
        ("lost to efficiency", loss_text, loss_help),
        ("cycle wear cost", money(ins.cycle_cost, code),
         f"Energy discharged × the battery's cycle cost ({unit}, from its spec)."),
        ("energy without price", number(ins.unpriced_energy_kwh, ",.1f", "kWh"),
         "Energy moved while no price slot was known: counted in the energy totals, not in the revenue."),
        ("not covered", number(ins.gap_s / SECONDS_PER_HOUR, ",.1f", "h"),
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
        layout["meta"]["insights"] = msgspec.to_builtins(insights) | {"spread_per_mwh": insights.spread_per_mwh}
    if insights is None or insights.status != "ok":
        note = WAITING_TELEMETRY if insights is None else insights.note
        prefix = "computing: " if insights is not None and insights.status == "computing" else ""
        layout["title"]["subtitle"] = {"text": prefix + note, "font": {"size": 11, "color": COLORS["muted"]}}
        return finish([], layout, [prefix + note], None)

    rows = insights_rows(insights)
    unit = per_mwh(insights.currency)
    by_label = {label: (value, how) for label, value, how in rows}
    headline = [
        ("realised revenue", "realised revenue"),
        ("plan, same period", "plan, same period"),
        ("full cycles", "full cycles"),
        ("spread (sell − buy)", f"spread sell − buy ({unit})"),
    ]
    xs = [0.125, 0.375, 0.625, 0.875]
    big = [by_label[k][0].removesuffix(f" {unit}") for k, _ in headline]
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
            info(f"details: plan {insights.plan_id}", "the plan the comparison uses (its id)", x=0.0, y=0.0,
                  xanchor="left", yanchor="bottom")
        )
    messages = [WAITING_TELEMETRY] if insights.samples < 2 else []
    last = insights.end.timestamp() if insights.end is not None else None
    return finish(data, layout, messages, last)
