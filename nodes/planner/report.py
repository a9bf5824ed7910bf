"""Presenting a backtest: the summary table (text) and the year at a glance (a Plotly figure).

Pure: takes a :class:`Backtest` and returns a string or a Figure; the CLI prints and writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from itertools import accumulate

import msgspec
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nodes.contract.messages import BatterySpec
from nodes.planner.baseline import Dispatch, Evaluation


class StrategyRun(msgspec.Struct, kw_only=True, frozen=True):
    """One strategy over the whole backtest, day after day with its SOC carried over."""

    name: str
    dispatch: Dispatch
    evaluation: Evaluation
    daily_revenue_eur: list[float]


class Backtest(msgspec.Struct, kw_only=True, frozen=True):
    """Everything a backtest produced; ``runs[0]`` is the optimiser, the others are baselines."""

    source: str
    spec: BatterySpec
    days: list[date]
    runs: list[StrategyRun]
    solve_ms: list[float]
    """Solver time per day (optimiser)."""
    plan_ms: list[float]
    """Build + solve + publish time per day (optimiser)."""


def summary_table(backtest: Backtest) -> str:
    """The backtest's figures as an aligned text table, one column per strategy."""
    spec = backtest.spec
    days = backtest.days
    head = (
        f"backtest {backtest.source}: {len(days)} days"
        + (f" {days[0]} .. {days[-1]}" if days else "")
        + f", battery {spec.soc_min_kwh:g}-{spec.soc_max_kwh:g} kWh, charge {spec.max_charge_kw:g} kW, "
        f"discharge {spec.max_discharge_kw:g} kW, eta {spec.roundtrip_efficiency:g}, "
        f"cycle cost {spec.cycle_cost_eur_per_mwh:g} EUR/MWh"
    )
    optimiser = backtest.runs[0].evaluation.revenue_eur
    rows: list[tuple[str, Callable[[StrategyRun], str]]] = [
        ("revenue EUR", lambda r: f"{r.evaluation.revenue_eur:,.2f}"),
        ("full cycles", lambda r: f"{r.evaluation.full_cycles:,.1f}"),
        ("avg buy price EUR/MWh", lambda r: _price(r.evaluation.avg_buy_price_eur_per_mwh)),
        ("avg sell price EUR/MWh", lambda r: _price(r.evaluation.avg_sell_price_eur_per_mwh)),
        ("energy bought kWh", lambda r: f"{r.evaluation.charged_kwh:,.0f}"),
        ("energy sold kWh", lambda r: f"{r.evaluation.discharged_kwh:,.0f}"),
        ("lost to efficiency kWh", lambda r: f"{r.evaluation.efficiency_loss_kwh:,.0f}"),
        ("limit violations", lambda r: str(len(r.evaluation.violations))),
        ("optimiser / this", lambda r: _ratio(optimiser, r.evaluation.revenue_eur)),
    ]
    width = max(len(label) for label, _ in rows)
    columns = [max(12, len(run.name)) for run in backtest.runs]
    pairs = list(zip(backtest.runs, columns, strict=True))
    lines = [head, "", " " * width + "".join(f"  {run.name:>{w}}" for run, w in pairs)]
    lines.extend(f"{label:<{width}}" + "".join(f"  {cell(run):>{w}}" for run, w in pairs) for label, cell in rows)
    total = sum(backtest.solve_ms) / 1000.0
    mean = sum(backtest.solve_ms) / len(backtest.solve_ms) if backtest.solve_ms else 0.0
    planning = sum(backtest.plan_ms) / 1000.0
    lines.append("")
    lines.append(
        f"optimiser solve time: total {total:.2f} s, mean {mean:.1f} ms per day "
        f"(with model build and publishing: {planning:.2f} s)"
    )
    return "\n".join(lines)


def figure(backtest: Backtest) -> go.Figure:
    """Cumulative revenue per strategy by day, the SOC of each strategy, and the prices."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=("cumulative revenue (EUR)", "state of charge (kWh, end of slot)", "price (EUR/MWh)"),
    )
    for i, run in enumerate(backtest.runs):
        visible = True if i == 0 else "legendonly"
        fig.add_trace(
            go.Scatter(
                x=[str(day) for day in backtest.days],
                y=list(accumulate(run.daily_revenue_eur)),
                name=f"{run.name} revenue",
                mode="lines",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[slot.end.isoformat() for slot in run.dispatch.slots],
                y=run.evaluation.soc_kwh,
                name=f"{run.name} SOC",
                mode="lines",
                line={"shape": "linear", "width": 1},
                visible=visible,
            ),
            row=2,
            col=1,
        )
    slots = backtest.runs[0].dispatch.slots if backtest.runs else []
    fig.add_trace(
        go.Scatter(
            x=[slot.start.isoformat() for slot in slots],
            y=[slot.price_eur_per_mwh for slot in slots],
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


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _ratio(optimiser: float, other: float) -> str:
    return f"{optimiser / other:.3f}" if other > 0 else "-"
