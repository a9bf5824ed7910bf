"""The optimiser against hand-solved cases and brute force, and the baselines and scorer it is compared with."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import highspy
import msgspec
import numpy as np
import pulp
import pytest

from nodes.contract.messages import BatterySpec, PriceSlot, Schedule
from nodes.planner import baseline, highs_direct
from nodes.planner.model import PlanError, PlanOptions, derive_plan_id, plan

# PuLP 3.3 announces that PULP_CBC_CMD (the bundled CBC the brief asks for) goes away in PuLP 4.0
pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NOW = datetime(2024, 2, 29, 12, tzinfo=UTC)


def slots(prices: Sequence[float], minutes: int = 60, start: datetime = T0) -> list[PriceSlot]:
    step = timedelta(minutes=minutes)
    return [
        PriceSlot(start=start + i * step, end=start + (i + 1) * step, price_per_mwh=float(p))
        for i, p in enumerate(prices)
    ]


def battery(**overrides: float) -> BatterySpec:
    fields: dict[str, float] = {
        "capacity_kwh": 100.0,
        "soc_min_kwh": 0.0,
        "soc_max_kwh": 100.0,
        "max_charge_kw": 50.0,
        "max_discharge_kw": 50.0,
        "roundtrip_efficiency": 1.0,
    }
    fields.update(overrides)
    return BatterySpec(**fields)


def solve(
    prices: Sequence[float], spec: BatterySpec, soc0: float, minutes: int = 60, **options: object
) -> Schedule:
    schedule = plan(
        slots(prices, minutes), spec, soc0, created_at=NOW, options=msgspec.convert(options, PlanOptions)
    )
    target = options.get("terminal_soc_kwh")
    assert baseline.audit(schedule, spec, terminal_soc_kwh=target if isinstance(target, float) else None) == []
    return schedule


def powers(schedule: Schedule) -> list[tuple[float, float]]:
    return [(s.charge_kw, s.discharge_kw) for s in schedule.slots]


def directions(schedule: Schedule) -> list[int]:
    """+1 charging, -1 discharging, 0 idle, per slot."""
    return [1 if s.charge_kw > 0 else -1 if s.discharge_kw > 0 else 0 for s in schedule.slots]


def reversals(schedule: Schedule) -> list[tuple[int, int]]:
    """(last active slot before, first active slot after) for every change of direction, idle slots skipped."""
    active = [(i, d) for i, d in enumerate(directions(schedule)) if d]
    return [(a, b) for (a, da), (b, db) in itertools.pairwise(active) if da != db]


# -- hand-solved cases ---------------------------------------------------------------------------------------


def test_buys_in_the_cheap_slots_and_sells_in_the_dear_ones() -> None:
    schedule = solve([10, 50, 20, 80], battery(), 0.0)

    # 50 kWh bought at 10 and 20, sold at 50 and 80: (50*50 + 50*80 - 50*10 - 50*20) / 1000
    assert schedule.expected_revenue == pytest.approx(5.0)
    assert powers(schedule) == [(50.0, 0.0), (0.0, 50.0), (50.0, 0.0), (0.0, 50.0)]
    assert [s.soc_kwh for s in schedule.slots] == pytest.approx([50, 0, 50, 0])
    assert schedule.solver == "cbc"
    assert schedule.solve_ms > 0


def test_negative_prices_never_charge_and_discharge_in_the_same_slot() -> None:
    # Full battery, eta 0.81: charging 50 kW while discharging 40.5 kW keeps the SOC and burns 9.5 kW at
    # -100 EUR/MWh, 0.95 EUR per slot, 1.9 EUR in all. The binary forbids it; the best left is to discharge
    # 40.5 kW in slot 0 and recharge 50 kW in slot 1: 0.1 * (50 - 40.5) = 0.95 EUR.
    spec = battery(roundtrip_efficiency=0.81)
    schedule = solve([-100, -100], spec, 100.0)

    assert all(c == 0 or d == 0 for c, d in powers(schedule))
    assert schedule.expected_revenue == pytest.approx(0.95, abs=1e-6)
    assert powers(schedule) == [pytest.approx((0.0, 40.5)), pytest.approx((50.0, 0.0))]


def test_soc_max_binds() -> None:
    spec = battery(soc_max_kwh=60.0, max_charge_kw=100.0, max_discharge_kw=100.0)
    schedule = solve([0, 0, 0, 100], spec, 0.0)

    assert max(s.soc_kwh for s in schedule.slots) == pytest.approx(60.0)
    assert schedule.expected_revenue == pytest.approx(6.0)


@pytest.mark.parametrize(("target", "revenue", "final"), [(None, 5.0, 50.0), (75.0, 2.5, 75.0), (100.0, 0.0, 100.0)])
def test_terminal_target_binds(target: float | None, revenue: float, final: float) -> None:
    schedule = solve([100, 0], battery(), 50.0, terminal_soc_kwh=target)

    assert schedule.expected_revenue == pytest.approx(revenue)
    assert schedule.slots[-1].soc_kwh == pytest.approx(final)


def test_terminal_target_below_soc_min_is_just_soc_min() -> None:
    schedule = solve([100, 100], battery(soc_min_kwh=10.0), 50.0, terminal_soc_kwh=0.0)

    assert schedule.slots[-1].soc_kwh == pytest.approx(10.0)
    assert schedule.expected_revenue == pytest.approx(4.0)


def test_efficiency_makes_a_small_spread_unprofitable() -> None:
    spec = battery(roundtrip_efficiency=0.9)

    flat = solve([100, 110], spec, 0.0)  # 0.9 * 110 = 99 < 100
    wide = solve([100, 120], spec, 0.0)  # 0.9 * 120 = 108 > 100

    assert powers(flat) == [(0.0, 0.0), (0.0, 0.0)]
    assert flat.expected_revenue == 0.0
    # buy 50 kWh, store 50*sqrt(.9), sell 50*0.9 kWh: 45*120 - 50*100
    assert wide.expected_revenue == pytest.approx((45 * 120 - 50 * 100) / 1000)
    assert wide.slots[-1].soc_kwh == pytest.approx(0.0, abs=1e-9)


def test_cycle_cost_is_paid_on_discharged_energy() -> None:
    assert solve([50, 100], battery(cycle_cost_per_mwh=60.0), 0.0).expected_revenue == 0.0
    # 50 kWh: 50 * (100 - 50) / 1000 - 40 * 50 / 1000
    assert solve([50, 100], battery(cycle_cost_per_mwh=40.0), 0.0).expected_revenue == pytest.approx(0.5)


def test_quarter_hour_slots_scale_energy_by_their_length() -> None:
    quarter = solve([0, 0, 0, 0, 100, 100, 100, 100], battery(max_charge_kw=100.0, max_discharge_kw=100.0), 0.0, 15)
    hourly = solve([0, 100], battery(max_charge_kw=100.0, max_discharge_kw=100.0), 0.0)

    assert quarter.slots[0].soc_kwh == pytest.approx(25.0)  # 100 kW for 15 min
    assert [s.soc_kwh for s in quarter.slots] == pytest.approx([25, 50, 75, 100, 75, 50, 25, 0])
    assert quarter.expected_revenue == pytest.approx(hourly.expected_revenue) == pytest.approx(10.0)


def test_slots_of_mixed_length_use_their_own_length() -> None:
    prices = slots([0, 0]) + slots([100] * 4, minutes=15, start=T0 + timedelta(hours=2))
    spec = battery(max_discharge_kw=100.0)
    schedule = plan(prices, spec, 0.0, created_at=NOW)

    assert schedule.slots[1].soc_kwh == pytest.approx(100.0)  # 50 kW for 2 h
    assert [s.discharge_kw for s in schedule.slots[2:]] == pytest.approx([100] * 4)  # 100 kWh in 4 x 15 min
    assert schedule.expected_revenue == pytest.approx(10.0)


def test_switch_penalty_reduces_direction_changes() -> None:
    prices = [0, 100, 0, 100, 0, 100]
    free = solve(prices, battery(soc_max_kwh=50.0), 0.0)
    # each cycle earns 5 EUR and k cycles need 2k - 1 reversals: 4 EUR each makes one cycle best (5 - 4)
    damped = solve(prices, battery(soc_max_kwh=50.0), 0.0, switch_penalty=4.0)

    assert len(reversals(free)) == 5
    assert free.expected_revenue == pytest.approx(15.0)
    assert len(reversals(damped)) == 1
    assert damped.expected_revenue == pytest.approx(5.0)  # published revenue excludes the penalty


def test_switch_penalty_ignores_idle_gaps() -> None:
    # charge, idle, charge is one direction: no penalty, so the plan is the unpenalised one
    prices = [0, 90, 0, 100, 100]
    spec = battery(max_charge_kw=25.0, max_discharge_kw=25.0)
    free = solve(prices, spec, 0.0)
    damped = solve(prices, spec, 0.0, switch_penalty=1.0)

    assert damped.expected_revenue == pytest.approx(free.expected_revenue) == pytest.approx(5.0)
    assert len(reversals(damped)) == 1


@pytest.mark.parametrize("dwell", [2, 3])
def test_min_dwell_keeps_a_direction(dwell: int) -> None:
    prices = [0, 100, 0, 100, 0, 100, 0, 100]
    free = solve(prices, battery(soc_max_kwh=50.0), 0.0)
    held = solve(prices, battery(soc_max_kwh=50.0), 0.0, min_dwell_slots=dwell)

    # y switches after the last active slot of the old run and at or before the first of the new one,
    # and must then stay for `dwell` slots: two reversals (a1, b1), (a2, b2) need b2 - a1 - 1 >= dwell
    for (a1, _), (_, b2) in itertools.pairwise(reversals(held)):
        assert b2 - a1 - 1 >= dwell
    assert held.expected_revenue < free.expected_revenue
    assert held.expected_revenue == pytest.approx(brute_force_dwell(prices, dwell))


def brute_force_dwell(prices: Sequence[float], dwell: int) -> float:
    """Best revenue over full-power actions whose direction sequence (idle takes any side) obeys the dwell."""
    best = -math.inf
    for sides in itertools.product((1, -1), repeat=len(prices)):
        switches = [t for t in range(1, len(sides)) if sides[t] != sides[t - 1]]
        if any(b - a < dwell for a, b in itertools.pairwise(switches)):
            continue
        for active in itertools.product((0, 1), repeat=len(prices)):
            moves = [50 * side * on for side, on in zip(sides, active, strict=True)]
            if all(0 <= soc <= 50 for soc in itertools.accumulate(moves)):
                best = max(best, -sum(price * move for price, move in zip(prices, moves, strict=True)) / 1000)
    return best


def test_periodic_full_charge_reaches_soc_max_in_every_window() -> None:
    spec = battery(roundtrip_efficiency=0.9)
    flat = [50.0] * 48  # no spread: nothing but the balancing rule makes it charge
    schedule = solve(flat, spec, 0.0, full_charge_every_slots=12)

    socs = [s.soc_kwh for s in schedule.slots]
    for k in range(len(socs) - 12 + 1):
        assert max(socs[k : k + 12]) == pytest.approx(100.0, abs=1e-9), f"window starting at slot {k}"
    assert schedule.expected_revenue < 0  # balancing costs the round-trip loss


def test_full_charge_carried_in_and_overdue() -> None:
    spec = battery()
    due_soon = solve([50.0] * 6, spec, 0.0, full_charge_every_slots=12, slots_since_full_charge=10)
    overdue = solve([50.0] * 6, spec, 0.0, full_charge_every_slots=12, slots_since_full_charge=30)
    not_due = solve([50.0] * 6, spec, 0.0, full_charge_every_slots=12, slots_since_full_charge=3)

    assert due_soon.slots[1].soc_kwh == pytest.approx(100.0)  # due after 2 slots, 50 kW x 2 h reaches it
    assert overdue.slots[1].soc_kwh == pytest.approx(100.0)  # as soon as physics allows
    assert max(s.soc_kwh for s in not_due.slots) == 0.0  # due after 9 slots, beyond this 6-slot horizon


def test_full_charge_due_but_unreachable_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"full charge .* due within 2 slots"):
        plan(
            slots([50.0] * 6),
            battery(max_charge_kw=10.0),
            0.0,
            created_at=NOW,
            options=PlanOptions(full_charge_every_slots=12, slots_since_full_charge=10),
        )


# -- invalid and infeasible inputs ---------------------------------------------------------------------------


def _gap() -> list[PriceSlot]:
    first, second = slots([1, 2])
    later = timedelta(hours=1)
    return [first, PriceSlot(start=second.start + later, end=second.end + later, price_per_mwh=2)]


@pytest.mark.parametrize(
    ("prices", "spec", "soc0", "options", "message"),
    [
        (slots([1]), battery(), 120.0, PlanOptions(), r"initial SOC 120.0 kWh is outside \[soc_min 0.0, soc_max 100"),
        (slots([1]), battery(), -1.0, PlanOptions(), "initial SOC -1.0 kWh is outside"),
        (slots([1]), battery(soc_min_kwh=80.0, soc_max_kwh=20.0), 50.0, PlanOptions(), "soc_min_kwh is above soc_max"),
        (slots([1]), battery(soc_max_kwh=200.0), 50.0, PlanOptions(), "soc_max_kwh is above capacity_kwh"),
        ([], battery(), 0.0, PlanOptions(), "no price slots"),
        (_gap(), battery(), 0.0, PlanOptions(), "sorted and contiguous: slot 1 starts at"),
        (list(reversed(slots([1, 2]))), battery(), 0.0, PlanOptions(), "sorted and contiguous"),
        (slots([1, 2]), battery(), 0.0, PlanOptions(terminal_soc_kwh=150.0), "target 150.0 kWh is unreachable"),
        (slots([1]), battery(), 0.0, PlanOptions(terminal_soc_kwh=60.0), "unreachable: at most 50 kWh"),
        (slots([1]), battery(), 0.0, PlanOptions(switch_penalty=-1.0), "switch_penalty must be >= 0"),
        (slots([1]), battery(), 0.0, PlanOptions(min_dwell_slots=0), "min_dwell_slots must be >= 1"),
        (slots([1]), battery(), 0.0, PlanOptions(solver="glpk"), "unknown solver 'glpk'"),  # type: ignore[arg-type]
        (slots([math.nan]), battery(), 0.0, PlanOptions(), "non-finite price"),
    ],
)
def test_invalid_inputs_raise_plan_error_with_the_reason(
    prices: list[PriceSlot], spec: BatterySpec, soc0: float, options: PlanOptions, message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        plan(prices, spec, soc0, created_at=NOW, options=options)


@pytest.mark.parametrize(
    ("status", "solution", "message"),
    [
        # CBC stopped on time with a solution, HiGHS' kTimeLimit: a feasible plan is not the optimum
        (pulp.LpStatusNotSolved, pulp.LpSolutionIntegerFeasible, "did not prove optimality within the time limit"),
        (pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible, "did not prove optimality"),
        (pulp.LpStatusInfeasible, pulp.LpSolutionInfeasible, "the model is infeasible"),
    ],
)
def test_a_solver_without_a_proven_optimum_is_an_error(
    monkeypatch: pytest.MonkeyPatch, status: int, solution: int, message: str
) -> None:
    def stopped(problem: pulp.LpProblem, solver: object = None) -> int:
        problem.status, problem.sol_status = status, solution
        return status

    monkeypatch.setattr(pulp.LpProblem, "solve", stopped)
    with pytest.raises(PlanError, match=message):
        plan(slots([1, 2]), battery(), 0.0, created_at=NOW, options=PlanOptions(time_limit_s=0.5))


def test_reachable_terminal_target_at_the_limit_is_feasible() -> None:
    schedule = solve([1, 2], battery(), 0.0, terminal_soc_kwh=100.0)  # 2 h x 50 kW: exactly 100 kWh
    assert schedule.slots[-1].soc_kwh == pytest.approx(100.0)


# -- solvers, ids, wire --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_cbc_and_highs_reach_the_same_objective(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prices = rng.uniform(-60, 200, size=48).round(2).tolist()
    spec = battery(capacity_kwh=1000.0, soc_min_kwh=50.0, soc_max_kwh=950.0, max_charge_kw=250.0,
                   max_discharge_kw=300.0, roundtrip_efficiency=0.88, cycle_cost_per_mwh=5.0)
    penalty = 2.0 if seed % 2 else 0.0
    results = [
        solve(prices, spec, 400.0, solver=name, switch_penalty=penalty) for name in ("cbc", "highs")
    ]
    objectives = [s.expected_revenue - penalty * len(reversals(s)) for s in results]
    assert objectives[0] == pytest.approx(objectives[1], abs=1e-4)
    assert [s.solver for s in results] == ["cbc", "highs"]


@pytest.mark.parametrize("seed", range(8))
def test_cbc_and_highs_agree_on_random_specs_and_quarter_hours(seed: int) -> None:
    """The fleet's case: 96 quarter-hour slots (some negative: real binaries), a random battery and SOC. Both
    solvers prove optimality, so the objectives agree to solver precision (1e-6 relative, 1e-4 absolute)."""
    rng = np.random.default_rng(100 + seed)
    prices = (80 - 60 * np.cos(np.arange(96) * 2 * np.pi / 96) + rng.normal(0, 40, 96)).round(2).tolist()
    capacity = float(rng.choice([50.0, 215.0, 1000.0, 2000.0]))
    spec = battery(capacity_kwh=capacity, soc_min_kwh=capacity * 0.05, soc_max_kwh=capacity * 0.95,
                   max_charge_kw=capacity * float(rng.choice([0.25, 0.5, 1.0])),
                   max_discharge_kw=capacity * float(rng.choice([0.25, 0.5, 1.0])),
                   roundtrip_efficiency=float(rng.uniform(0.8, 0.95)), cycle_cost_per_mwh=float(rng.choice([0, 20])))
    soc = spec.soc_min_kwh + float(rng.random()) * (spec.soc_max_kwh - spec.soc_min_kwh)
    quarter = slots(prices, minutes=15)
    assert any(p.price_per_mwh < 0 for p in quarter)  # the binaries matter in this case
    results = [plan(quarter, spec, soc, created_at=NOW, options=PlanOptions(solver=name)) for name in ("cbc", "highs")]
    assert results[0].expected_revenue == pytest.approx(results[1].expected_revenue, rel=1e-6, abs=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        PlanOptions(switch_penalty=3.0),
        PlanOptions(min_dwell_slots=3),
        PlanOptions(switch_penalty=1.0, min_dwell_slots=2),
        PlanOptions(full_charge_every_slots=12, slots_since_full_charge=4),
        PlanOptions(terminal_soc_kwh=700.0, full_charge_every_slots=20),
    ],
    ids=["penalty", "dwell", "penalty+dwell", "balancing", "terminal+balancing"],
)
@pytest.mark.parametrize("seed", range(3))
def test_highs_direct_model_equals_the_pulp_model_with_every_option(options: PlanOptions, seed: int) -> None:
    """HiGHS gets the model as arrays (nodes.planner.highs_direct), CBC through PuLP: two builds of one model, so
    the same optimum (with the switch penalty counted) and SOCs within the limits, for every option."""
    rng = np.random.default_rng(200 + seed)
    quarter = slots(rng.uniform(-40, 160, size=48).round(2).tolist(), minutes=15)
    spec = battery(capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0, max_charge_kw=400.0,
                   max_discharge_kw=300.0, roundtrip_efficiency=0.9, cycle_cost_per_mwh=3.0)
    results = [plan(quarter, spec, 300.0, created_at=NOW, options=msgspec.structs.replace(options, solver=name))
               for name in ("cbc", "highs")]
    objectives = [s.expected_revenue - options.switch_penalty * len(reversals(s)) for s in results]
    assert objectives[0] == pytest.approx(objectives[1], rel=1e-6, abs=1e-4)
    for schedule in results:
        assert all(100.0 - 1e-6 <= slot.soc_kwh <= 900.0 + 1e-6 for slot in schedule.slots)
        assert all(slot.charge_kw == 0 or slot.discharge_kw == 0 for slot in schedule.slots)


def test_highs_direct_stopped_by_the_time_limit_is_an_error() -> None:
    with pytest.raises(PlanError, match="solver highs did not prove optimality within the time limit"):
        plan(slots(np.random.default_rng(1).uniform(-50, 50, 672).round(2).tolist(), minutes=15),
             battery(capacity_kwh=1000.0, soc_min_kwh=0.0, soc_max_kwh=1000.0, max_charge_kw=500.0,
                     max_discharge_kw=500.0, roundtrip_efficiency=0.8),
             500.0, created_at=NOW, options=PlanOptions(solver="highs", switch_penalty=0.01, min_dwell_slots=4,
                                                        time_limit_s=1e-4))


def test_highs_direct_names_an_infeasible_model() -> None:
    # plan() refuses every infeasible input it can see before solving, so the solver's verdict is checked alone
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.addVars(1, np.array([0.0]), np.array([1.0]))
    h.addRows(1, np.array([2.0]), np.array([highspy.kHighsInf]), 1, np.array([0], dtype=np.int32),
              np.array([0], dtype=np.int32), np.array([1.0]))
    assert highs_direct._run(h, None) == "the model is infeasible (highs); check the SOC limits and options"


def test_plan_id_is_derived_from_the_inputs() -> None:
    prices, spec = slots([1, 2, 3]), battery()
    first = plan(prices, spec, 10.0, created_at=NOW)
    again = plan(prices, spec, 10.0, created_at=NOW + timedelta(hours=1))
    other = plan(prices, spec, 20.0, created_at=NOW)
    named = plan(prices, spec, 10.0, created_at=NOW, plan_id="p-1", zone="de_lu")

    assert first.plan_id == again.plan_id == derive_plan_id(prices, spec, 10.0, PlanOptions())
    assert first.plan_id.startswith("plan-")
    assert other.plan_id != first.plan_id
    assert (named.plan_id, named.zone, named.created_at) == ("p-1", "de_lu", NOW)


def test_schedule_survives_the_wire_with_its_bounds() -> None:
    schedule = solve([-30, 80, 10, 120], battery(roundtrip_efficiency=0.9), 0.0)
    decoded = msgspec.json.decode(msgspec.json.encode(schedule), type=Schedule)

    assert decoded == schedule
    assert decoded.baseline_revenue is not None
    assert decoded.expected_revenue >= decoded.baseline_revenue - 1e-9


def test_published_powers_carry_no_solver_noise() -> None:
    rng = np.random.default_rng(7)
    spec = battery(capacity_kwh=1000.0, soc_max_kwh=1000.0, max_charge_kw=250.0, max_discharge_kw=250.0,
                   roundtrip_efficiency=0.9)
    schedule = solve(rng.uniform(-20, 150, size=96).tolist(), spec, 0.0, 15)

    for c, d in powers(schedule):
        assert c == 0.0 or c > 1e-3
        assert d == 0.0 or d > 1e-3


# -- brute force ---------------------------------------------------------------------------------------------


def brute_force(prices: Sequence[float], spec: BatterySpec, soc0: float) -> float:
    """Best revenue over every sequence of idle / full charge / full discharge (eta = 1, hourly)."""
    best = -math.inf
    for actions in itertools.product((0, 1, -1), repeat=len(prices)):
        soc, revenue, ok = soc0, 0.0, True
        for price, action in zip(prices, actions, strict=True):
            power = spec.max_charge_kw if action == 1 else spec.max_discharge_kw if action == -1 else 0.0
            soc += action * power
            revenue -= action * power * price / 1000
            ok = ok and spec.soc_min_kwh - 1e-9 <= soc <= spec.soc_max_kwh + 1e-9
        if ok and soc >= soc0 - 1e-9:
            best = max(best, revenue - spec.cycle_cost_per_mwh * power_out(actions, spec) / 1000)
    return best


def power_out(actions: tuple[int, ...], spec: BatterySpec) -> float:
    return sum(spec.max_discharge_kw for a in actions if a == -1)


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force_on_tiny_instances(seed: int) -> None:
    # With eta = 1 and SOC bounds and start on the power grid, the LP for fixed directions is totally
    # unimodular, so full-power actions are optimal: brute force over them is the true optimum.
    rng = np.random.default_rng(seed)
    power = 50.0
    levels = int(rng.integers(1, 4))
    spec = battery(capacity_kwh=power * levels, soc_max_kwh=power * levels, max_charge_kw=power,
                   max_discharge_kw=power, cycle_cost_per_mwh=float(rng.choice([0.0, 10.0])))
    soc0 = power * int(rng.integers(0, levels + 1))
    prices = rng.integers(-80, 150, size=4).astype(float).tolist()

    schedule = solve(prices, spec, soc0)

    assert schedule.expected_revenue == pytest.approx(brute_force(prices, spec, soc0), abs=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_never_worse_than_brute_force_off_the_grid(seed: int) -> None:
    # SOC off the power grid: full-power actions are merely feasible, the optimum can only be better
    rng = np.random.default_rng(1000 + seed)
    spec = battery(capacity_kwh=120.0, soc_max_kwh=120.0, max_charge_kw=50.0, max_discharge_kw=40.0)
    soc0 = float(rng.uniform(0, 120))
    prices = rng.uniform(-50, 150, size=4).tolist()

    schedule = solve(prices, spec, soc0)

    assert schedule.expected_revenue >= brute_force(prices, spec, soc0) - 1e-6


# -- baselines and the scorer ------------------------------------------------------------------------------


def test_evaluate_figures_by_hand() -> None:
    spec = battery(roundtrip_efficiency=0.81, cycle_cost_per_mwh=10.0)
    scored = baseline.evaluate(slots([20, 100]), [(50.0, 0.0), (0.0, 40.5)], spec, 0.0)

    assert scored.soc_kwh == pytest.approx([45.0, 0.0])
    assert scored.market_revenue == pytest.approx((40.5 * 100 - 50 * 20) / 1000)
    assert scored.cycle_cost == pytest.approx(40.5 * 10 / 1000)
    assert scored.revenue == pytest.approx(scored.market_revenue - scored.cycle_cost)
    assert scored.full_cycles == pytest.approx(0.45)  # 45 kWh out of the cells / 100 kWh usable
    assert (scored.avg_buy_price_per_mwh, scored.avg_sell_price_per_mwh) == (20.0, 100.0)
    assert scored.efficiency_loss_kwh == pytest.approx(9.5)
    assert scored.violations == []


def test_evaluate_reports_every_broken_limit() -> None:
    powers = [(60.0, 0.0), (10.0, 10.0), (0.0, 50.0), (0.0, 50.0)]
    scored = baseline.evaluate(slots([1, 1, 1, 1]), powers, battery(), 0.0)

    assert len(scored.violations) == 3
    assert "charge 60.0 kW outside [0, 50.0]" in scored.violations[0]
    assert "at once" in scored.violations[1]
    assert "SOC -40.0 kWh outside" in scored.violations[2]


def test_top_n_daily_charges_cheapest_and_discharges_dearest() -> None:
    spec = battery(soc_max_kwh=100.0)  # 2 slots to fill, 2 to empty
    prices = slots([30, 10, 20, 90, 80, 40])
    dispatch = baseline.top_n_daily(prices, spec, 0.0)

    assert dispatch.powers == [(0, 0), (50, 0), (50, 0), (0, 50), (0, 50), (0, 0)]
    assert baseline.evaluate_dispatch(dispatch, spec).revenue == pytest.approx((50 * 170 - 50 * 30) / 1000)


def test_baselines_skip_days_whose_spread_does_not_pay() -> None:
    spec = battery(roundtrip_efficiency=0.8)
    prices = slots([100, 100, 110, 110])
    for dispatch in (baseline.top_n_daily(prices, spec, 0.0), baseline.threshold(prices, spec, 0.0)):
        assert all(p == (0.0, 0.0) for p in dispatch.powers)


def test_baselines_keep_the_terminal_target() -> None:
    # dear hours first: starting full it may sell, but must buy it back in the cheap hours after
    spec = battery()
    prices = slots([100, 100, 10, 10, 10])
    for dispatch in (baseline.top_n_daily(prices, spec, 100.0), baseline.threshold(prices, spec, 100.0)):
        scored = baseline.evaluate_dispatch(dispatch, spec)
        assert scored.violations == []
        assert scored.soc_final_kwh >= 100.0 - 1e-9
        assert scored.revenue > 0


def test_threshold_uses_fixed_thresholds_when_given() -> None:
    spec = battery(soc_max_kwh=50.0)
    dispatch = baseline.threshold(slots([10, 60, 30, 90]), spec, 0.0, buy_below=30.0, sell_above=80.0)

    assert dispatch.powers == [(50, 0), (0, 0), (0, 0), (0, 50)]


@pytest.mark.parametrize("seed", range(10))
def test_optimiser_never_earns_less_than_the_baselines(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    spec = battery(capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0, max_charge_kw=200.0,
                   max_discharge_kw=300.0, roundtrip_efficiency=0.85, cycle_cost_per_mwh=3.0)
    prices = rng.normal(90, 60, size=24).round(2).tolist()
    soc0 = float(rng.uniform(100, 900))
    schedule = solve(prices, spec, soc0)

    for dispatch in (baseline.top_n_daily(slots(prices), spec, soc0), baseline.threshold(slots(prices), spec, soc0)):
        scored = baseline.evaluate_dispatch(dispatch, spec)
        assert scored.violations == []
        assert scored.soc_final_kwh >= soc0 - 1e-9
        assert schedule.expected_revenue >= scored.revenue - 1e-6
