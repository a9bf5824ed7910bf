"""The battery's energy rules (nodes/contract/energy.py), and that device, planner and dashboard share them."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nodes.contract import energy
from nodes.contract.messages import BatterySpec, Command, PriceSlot, Schedule, ScheduleSlot
from nodes.planner import baseline
from nodes.planner.model import plan
from nodes.renderer.figures import power_intervals
from nodes.renderer.insights import plan_revenue
from nodes.renderer.ledger import interval_power
from nodes.renderer.series import TelemetrySeries
from nodes.simulator.battery import SimBattery

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2025, 1, 16, tzinfo=UTC)
SPEC = BatterySpec(
    capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=250, max_discharge_kw=250,
    roundtrip_efficiency=0.81,
)
NODES = Path(__file__).resolve().parents[2] / "nodes"


def test_slot_hours_and_energy_units() -> None:
    slot = PriceSlot(start=T0, end=T0 + timedelta(minutes=15), price_per_mwh=80.0)
    assert energy.slot_hours(slot) == 0.25
    assert energy.hours_between(T0, T0 + timedelta(hours=25)) == 25.0
    assert energy.energy_kwh(100.0, 1800.0) == 50.0  # 100 kW for half an hour
    assert energy.value_at(50.0, 80.0) == 4.0  # 50 kWh at 80 EUR/MWh
    assert energy.power_from_soc_kw(-25.0, 900.0) == 100.0  # the SOC fell 25 kWh in 15 min: 100 kW out


def test_the_efficiency_is_split_evenly_between_the_directions() -> None:
    # charging 100 kWh from the grid stores sqrt(0.81) * 100 = 90 kWh; selling those 90 kWh back gives 81
    stored = energy.soc_after(500.0, 100.0, 0.0, 1.0, 0.81) - 500.0
    assert stored == pytest.approx(90.0)
    assert energy.stored_kwh(100.0, 0.81) == pytest.approx(stored)
    grid_out = 90.0 * energy.one_way(0.81)
    assert energy.drawn_kwh(grid_out, 0.81) == pytest.approx(90.0)
    assert grid_out == pytest.approx(0.81 * 100.0)  # the round trip returns eta of what was bought
    assert energy.soc_after(500.0, 0.0, 81.0, 1.0, 0.81) == pytest.approx(410.0)


def test_the_signed_form_is_the_same_rule() -> None:
    assert energy.soc_after_power(500.0, -100.0, 0.5, 0.81) == energy.soc_after(500.0, 100.0, 0.0, 0.5, 0.81)
    assert energy.soc_after_power(500.0, 100.0, 0.5, 0.81) == energy.soc_after(500.0, 0.0, 100.0, 0.5, 0.81)


def test_the_inverse_powers_undo_the_rule() -> None:
    charge = energy.charge_kw_for(45.0, 0.5, 0.81)
    assert energy.soc_after(100.0, charge, 0.0, 0.5, 0.81) == pytest.approx(145.0)
    discharge = energy.discharge_kw_for(45.0, 0.5, 0.81)
    assert energy.soc_after(145.0, 0.0, discharge, 0.5, 0.81) == pytest.approx(100.0)


def test_cycles_over_the_usable_range() -> None:
    assert energy.usable_kwh(SPEC) == 800.0
    assert energy.full_cycles(400.0, SPEC) == 0.5
    empty = BatterySpec(capacity_kwh=10, soc_min_kwh=5, soc_max_kwh=5, max_charge_kw=1, max_discharge_kw=1)
    assert energy.full_cycles(1.0, empty) is None


def test_arrays_and_floats_alike() -> None:
    power = np.array([100.0, -50.0])
    seconds = np.array([1800.0, 3600.0])
    assert energy.energy_kwh(power, seconds).tolist() == [50.0, -50.0]
    assert energy.value_at(np.array([50.0, -50.0]), 80.0).tolist() == [4.0, -4.0]


def test_the_device_follows_the_plan_the_planner_made() -> None:
    """The simulated device, driven by a plan's powers slot by slot, ends each slot at the SOC the plan published:
    the planner's model and the device integrate with one rule."""
    prices = [30.0, 10.0, 90.0, 120.0, 20.0, 150.0]
    slots = [PriceSlot(start=T0 + timedelta(minutes=30 * i), end=T0 + timedelta(minutes=30 * (i + 1)),
                       price_per_mwh=p) for i, p in enumerate(prices)]
    schedule = plan(slots, SPEC, 500.0, created_at=T0, plan_id="p-energy")
    device = SimBattery(SPEC, 500.0)
    moved = False
    for slot in schedule.slots:
        action, power = ("charge", slot.charge_kw) if slot.charge_kw > 0 else ("discharge", slot.discharge_kw)
        moved = moved or power > 0
        device.apply(Command(command_id=f"c-{slot.start:%H%M}", action=action, power_kw=power, issued_at=slot.start,
                             valid_until=slot.end + timedelta(seconds=1)), slot.start)
        device.step((slot.end - slot.start).total_seconds(), slot.end)
        assert device.soc_kwh == pytest.approx(slot.soc_kwh, abs=1e-6)
    assert moved  # the plan did something, so the comparison means something


def test_the_planners_scorer_counts_energy_as_the_dashboard_does() -> None:
    """Revenue of a dispatch: the planner's scorer and the plan-revenue of the dashboard's insights agree."""
    slots = [PriceSlot(start=T0 + timedelta(hours=i), end=T0 + timedelta(hours=i + 1), price_per_mwh=p)
             for i, p in enumerate([40.0, 100.0])]
    powers = [(200.0, 0.0), (0.0, 150.0)]
    scored = baseline.evaluate(slots, powers, SPEC, 500.0)
    schedule = Schedule(plan_id="p", created_at=T0, soc_initial_kwh=500.0, expected_revenue=0.0,
                        slots=[ScheduleSlot(start=s.start, end=s.end, price_per_mwh=s.price_per_mwh,
                                            charge_kw=c, discharge_kw=d, soc_kwh=0.0)
                               for s, (c, d) in zip(slots, powers, strict=True)])
    assert plan_revenue(schedule) == pytest.approx(scored.market_revenue)
    assert scored.market_revenue == pytest.approx(150 * 0.1 - 200 * 0.04)


def test_the_power_figure_draws_the_intervals_the_kpis_integrate() -> None:
    t = np.array([0.0, 60.0, 120.0, 1200.0, 1260.0]) + T0.timestamp()
    soc = np.array([500.0, 499.0, 498.0, 490.0, 489.0])
    power = np.array([60.0, 60.0, np.nan, 60.0, 60.0])
    series = TelemetrySeries(time_s=t, soc_kwh=soc, power_kw=power, target_charge_kw=np.full(5, np.nan),
                             target_discharge_kw=np.full(5, np.nan))
    rate, measured, derived = interval_power(t, soc, power)
    start, end, drawn, drawn_derived = power_intervals(series)
    covered = measured | derived
    assert start[:-1].tolist() == t[:-1][covered].tolist()
    assert end[:-1].tolist() == t[1:][covered].tolist()
    assert drawn[:-1].tolist() == rate[covered].tolist()
    assert drawn_derived[:-1].tolist() == derived[covered].tolist()
    assert derived.tolist() == [False, False, True, False]  # no power at 120 s: the SOC change over 18 min


ENERGY_MODULES = (
    "simulator/battery.py", "planner/baseline.py", "planner/model.py", "planner/report.py", "planner/cli.py",
    "renderer/insights.py", "renderer/ledger.py", "renderer/kpis.py", "renderer/figures/battery.py",
    "renderer/figures/look.py", "renderer/figures/plan.py", "renderer/figures/performance.py",
)


def _energy_arithmetic(tree: ast.AST) -> list[str]:
    """Code (not docstrings) that applies the efficiency, turns seconds into hours or kWh x EUR/MWh into EUR."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("sqrt"):
            if "efficiency" in ast.unparse(node):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.Mult):
            for number, other in ((node.right, node.left), (node.left, node.right)):
                if not isinstance(number, ast.Constant) or number.value not in (1000, 3600):
                    continue
                hours = number.value == 3600 and isinstance(node.op, ast.Div)
                money = number.value == 1000 and re.search(r"price|eur|kwh|_kw\b|energy", ast.unparse(other), re.I)
                if hours or money:
                    found.append(ast.unparse(node))
    return found


def test_the_energy_rules_are_written_once() -> None:
    """The SOC step, slot hours and energy/money conversions live in nodes/contract/energy.py only."""
    found = {name: _energy_arithmetic(ast.parse((NODES / name).read_text())) for name in ENERGY_MODULES}
    assert {name: lines for name, lines in found.items() if lines} == {}
    rule = _energy_arithmetic(ast.parse((NODES / "contract" / "energy.py").read_text()))
    assert rule  # the check does see the rule where it lives
