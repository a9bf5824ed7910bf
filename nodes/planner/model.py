"""The optimiser: prices + BatterySpec + starting SOC -> MILP (PuLP for CBC, arrays for HiGHS) -> Schedule.

Pure: no I/O and no clock of its own; the caller passes ``created_at``. The side effects are the solver's:
CBC runs as a subprocess on temporary files, and HiGHS prints a banner to file descriptor 1 once per process
(a caller that owns stdout, like the CLI, must point fd 1 elsewhere while solving). ``solve_ms`` is measured
with ``time.perf_counter``, a duration, not the wall clock. CBC gets the model through PuLP; HiGHS gets the same
model built as arrays in process (:mod:`nodes.planner.highs_direct`: PuLP's objects cost more than HiGHS' solve
of a day), single-threaded (a fleet's plans run in parallel processes instead).

The model, per slot t of length h_t hours (taken from each slot, so hourly and 15-min prices both work):

    c_t in [0, Pc], d_t in [0, Pd]     grid-side charge / discharge power (kW)
    y_t in {0, 1}                      direction: c_t <= Pc*y_t and d_t <= Pd*(1 - y_t), so never both
    s_t = s_{t-1} + r*c_t*h_t - d_t*h_t/r     r = sqrt(roundtrip_efficiency), s_{-1} = soc_initial
                                       (the rule of :mod:`nodes.contract.energy`, the device's too)
    soc_min <= s_t <= soc_max,  s_{T-1} >= terminal target (default: the starting SOC)
    maximise  sum_t price_t*(d_t - c_t)*h_t/1000 - cycle_cost*sum_t d_t*h_t/1000  (in the prices' currency)
              - switch_penalty * (number of direction changes)

Without the binary, negative prices would make charging and discharging in the same slot "profitable" (the
round-trip loss burns energy one is paid to take); the binary forbids it. The MILP is solved to proven
optimality (relative gap 0); anything else is a :class:`PlanError`. ``expected_revenue`` is the objective
without the switch penalty, recomputed from the published powers.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec
import pulp

from nodes.contract import energy
from nodes.contract.energy import slot_hours, soc_after
from nodes.contract.messages import DEFAULT_CURRENCY, BatterySpec, PriceSlot, Schedule, ScheduleSlot
from nodes.planner import baseline, highs_direct

SolverName = Literal["cbc", "highs"]

SNAP = 1e-6
"""Relative to the power limit: solver values this close to 0 or the limit are published as 0 or the limit.
CBC reports values to 8 significant digits and accepts binaries within 1e-6 of an integer."""
REPAIR_LIMIT_KWH = 1e-3
"""Solver noise larger than this is not noise: refuse to publish instead of quietly repairing it."""


class PlanError(ValueError):
    """The inputs cannot be planned (invalid or infeasible) or the solver did not prove optimality."""


class PlanOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Knobs of the optimisation; the defaults give the plain revenue-maximising model."""

    terminal_soc_kwh: float | None = None
    """SOC the horizon must end at or above; None means the starting SOC. Above soc_max is a PlanError."""
    switch_penalty: float = 0.0
    """Money (in the prices' currency) charged per change of direction between consecutive slots, so the
    battery does not flap.

    A direction is charging-side or discharging-side (the binary y_t). An idle slot takes whatever direction
    is cheaper, so charge-idle-charge costs nothing and charge-idle-discharge costs one switch: the penalty
    counts reversals, which is what wears relays and annoys operators. The first slot is free (the direction
    before the horizon is not an input)."""
    min_dwell_slots: int = 1
    """After a change of direction, keep that direction for at least this many slots (idle slots count)."""
    full_charge_every_slots: int | None = None
    """Cell balancing every N slots. Exactly: a "full" slot is one that ends with SOC = soc_max, and
    (1) the first full slot is at most ``N - slots_since_full_charge`` slots into the horizon, or, when
    that is sooner than full-power charging from the initial SOC can get there, at that earliest slot;
    (2) every window of N consecutive slots inside the horizon (ending no earlier than the first deadline)
    holds a full slot. So full charges are at most N slots apart, and the last one is at most N slots before
    the horizon ends. A horizon shorter than the first deadline carries no obligation; a deadline inside the
    horizon that charging cannot reach at all is a PlanError."""
    slots_since_full_charge: int = 0
    """Slots since the SOC last was soc_max when the horizon starts (0: full right now, or unknown)."""
    solver: SolverName = "cbc"
    time_limit_s: float | None = None
    """Give up (PlanError) when optimality is not proven within this time."""


DEFAULT_OPTIONS = PlanOptions()


def plan(
    prices: Sequence[PriceSlot],
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    created_at: datetime,
    options: PlanOptions = DEFAULT_OPTIONS,
    plan_id: str | None = None,
    zone: str | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> Schedule:
    """Optimal charge/discharge Schedule over ``prices`` (contiguous slots, sorted, any length each).

    ``plan_id`` defaults to a hash of the inputs (prices, spec, SOC, options), so the same inputs give the
    same id. Every price and amount is in ``currency``, the forecast's (the Schedule names it); the spec's
    ``cycle_cost_per_mwh`` and ``options.switch_penalty`` are read in that currency too. ``baseline_revenue``
    is the :func:`baseline.top_n_daily` revenue on the same horizon, and
    ``solve_ms`` the solver call alone (model build and publishing excluded).
    Raises :class:`PlanError` with the reason for invalid or infeasible inputs and for a solver that did
    not prove optimality.
    """
    problem = _validate(prices, spec, soc_initial_kwh, options)
    # Lazy binaries (exact): without switching options the direction variables start continuous. If the
    # relaxation's optimum never charges and discharges in one slot, it is feasible for the MILP and, being the
    # optimum of a relaxation, optimal for it; otherwise exactly the offending slots become binary and the
    # model is solved again. Positive prices almost never tempt the relaxation, so a week of 15-minute slots
    # usually solves as one LP.
    if options.solver == "highs":
        solved, solve_ms = _solve_highs(problem, spec, options)
    else:
        solved, solve_ms = _solve_pulp(problem, spec, options)
    powers, socs = _publishable(solved, problem, spec)
    score = baseline.evaluate(prices, powers, spec, soc_initial_kwh)
    reference = baseline.top_n_daily(prices, spec, soc_initial_kwh, terminal_soc_kwh=problem.target)
    return Schedule(
        plan_id=plan_id or derive_plan_id(prices, spec, soc_initial_kwh, options),
        created_at=created_at,
        soc_initial_kwh=soc_initial_kwh,
        slots=[
            ScheduleSlot(
                start=slot.start,
                end=slot.end,
                price_per_mwh=slot.price_per_mwh,
                charge_kw=charge,
                discharge_kw=discharge,
                soc_kwh=soc,
            )
            for slot, (charge, discharge), soc in zip(prices, powers, socs, strict=True)
        ],
        expected_revenue=score.revenue,
        baseline_revenue=baseline.evaluate_dispatch(reference, spec).revenue,
        zone=zone,
        currency=currency,
        solver=options.solver,
        solve_ms=solve_ms,
    )


def _solve_pulp(problem: _Problem, spec: BatterySpec, options: PlanOptions) -> tuple[highs_direct.Solved, float]:
    """The model in PuLP, solved by CBC (or PuLP's HiGHS adapter), with lazy binaries."""
    lazy = options.switch_penalty <= 0 and options.min_dwell_slots <= 1
    lp = _build(problem, spec, options, binary=not lazy)
    if lazy:
        # where the price is not positive, burning energy pays and the relaxation would nearly always do it:
        # make those slots binary from the start instead of solving twice
        for t, price in enumerate(problem.prices):
            if price <= 0.0:
                lp.direction[t].cat = pulp.LpInteger
    started = time.perf_counter()
    _solve(lp, options)
    while lazy:
        # only slots still continuous: a binary slot cannot be simultaneous (at most solver noise, snapped later),
        # so each round adds binaries and the loop ends after at most n rounds (in practice one or two)
        both = [t for t in _simultaneous(lp, spec) if lp.direction[t].cat != pulp.LpInteger]
        if not both:
            break
        for t in both:
            lp.direction[t].cat = pulp.LpInteger  # bounds are [0, 1]: binary (PuLP stores binaries so)
        _solve(lp, options)
    solve_ms = (time.perf_counter() - started) * 1000.0
    solved = highs_direct.Solved(
        charge=[_value(v) for v in lp.charge], discharge=[_value(v) for v in lp.discharge],
        direction=[_value(v) for v in lp.direction], binary=[v.cat == pulp.LpInteger for v in lp.direction],
        full={t: _value(f) for t, f in lp.full.items()},
    )
    return solved, solve_ms


def _solve_highs(problem: _Problem, spec: BatterySpec, options: PlanOptions) -> tuple[highs_direct.Solved, float]:
    """The same model built straight into HiGHS (:mod:`highs_direct`): no PuLP objects, the same lazy binaries."""
    eta = spec.roundtrip_efficiency
    solved = highs_direct.solve(
        prices=problem.prices, hours=problem.hours,
        stored_per_kw=[energy.stored_kwh(h, eta) for h in problem.hours],
        drawn_per_kw=[energy.drawn_kwh(h, eta) for h in problem.hours],
        charge_value=[-energy.value_at(h, price) for h, price in zip(problem.hours, problem.prices, strict=True)],
        discharge_value=[energy.value_at(h, price - spec.cycle_cost_per_mwh)
                         for h, price in zip(problem.hours, problem.prices, strict=True)],
        soc_initial=problem.soc_initial, target=problem.target, full_windows=problem.full_windows,
        max_charge_kw=spec.max_charge_kw, max_discharge_kw=spec.max_discharge_kw,
        soc_min_kwh=spec.soc_min_kwh, soc_max_kwh=spec.soc_max_kwh,
        switch_penalty=options.switch_penalty, min_dwell_slots=options.min_dwell_slots,
        time_limit_s=options.time_limit_s,
        tolerance=(SNAP * max(spec.max_charge_kw, 1.0), SNAP * max(spec.max_discharge_kw, 1.0)),
    )
    if solved.error is not None:
        raise PlanError(solved.error)
    return solved, solved.solve_ms


def derive_plan_id(
    prices: Sequence[PriceSlot], spec: BatterySpec, soc_initial_kwh: float, options: PlanOptions
) -> str:
    """A deterministic id from the inputs: ``plan-`` and 16 hex digits of their SHA-256."""
    payload = msgspec.json.encode([list(prices), spec, soc_initial_kwh, options])
    return "plan-" + hashlib.sha256(payload).hexdigest()[:16]


# -- validation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Problem:
    prices: list[float]
    hours: list[float]
    soc_initial: float
    target: float
    full_windows: list[tuple[int, int]]  # [first, last] slot indices, each must hold a full slot end


def _validate(
    prices: Sequence[PriceSlot], spec: BatterySpec, soc_initial_kwh: float, options: PlanOptions
) -> _Problem:
    if not prices:
        raise PlanError("no price slots to plan over")
    problems = spec.problems()
    for name in ("capacity_kwh", "soc_min_kwh", "soc_max_kwh", "max_charge_kw", "max_discharge_kw"):
        value = getattr(spec, name)
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"{name} must be a finite number >= 0, got {value}")
    if not 0 < spec.roundtrip_efficiency <= 1:
        problems.append(f"roundtrip_efficiency must be in (0, 1], got {spec.roundtrip_efficiency}")
    if not (math.isfinite(spec.cycle_cost_per_mwh) and spec.cycle_cost_per_mwh >= 0):
        problems.append(f"cycle_cost_per_mwh must be >= 0, got {spec.cycle_cost_per_mwh}")
    if problems:
        raise PlanError("invalid battery spec: " + "; ".join(problems))
    _check_options(options)
    for i, slot in enumerate(prices):
        if slot.end <= slot.start:
            raise PlanError(f"slot {i} ({slot.start.isoformat()}) ends at or before its start")
        if i and slot.start != prices[i - 1].end:
            raise PlanError(
                f"slots must be sorted and contiguous: slot {i} starts at {slot.start.isoformat()} "
                f"but slot {i - 1} ends at {prices[i - 1].end.isoformat()}"
            )
        if not math.isfinite(slot.price_per_mwh):
            raise PlanError(f"slot {i} ({slot.start.isoformat()}) has a non-finite price")
    lo, hi = spec.soc_min_kwh, spec.soc_max_kwh
    if not (math.isfinite(soc_initial_kwh) and lo - 1e-9 <= soc_initial_kwh <= hi + 1e-9):
        raise PlanError(f"initial SOC {soc_initial_kwh} kWh is outside [soc_min {lo}, soc_max {hi}] kWh")
    soc0 = min(max(soc_initial_kwh, lo), hi)
    lengths = [slot_hours(slot) for slot in prices]
    target = soc0 if options.terminal_soc_kwh is None else max(options.terminal_soc_kwh, lo)
    reachable = min(hi, soc0 + energy.stored_kwh(spec.max_charge_kw * sum(lengths), spec.roundtrip_efficiency))
    if target > reachable + 1e-9:
        raise PlanError(
            f"terminal target {target} kWh is unreachable: at most {reachable:.6g} kWh "
            f"(soc_max {hi}, full-power charging from {soc0} kWh over {sum(lengths):.6g} h)"
        )
    return _Problem(
        prices=[slot.price_per_mwh for slot in prices],
        hours=lengths,
        soc_initial=soc0,
        target=min(target, hi),
        full_windows=_full_windows(lengths, spec, soc0, options),
    )


def _check_options(options: PlanOptions) -> None:
    if not (math.isfinite(options.switch_penalty) and options.switch_penalty >= 0):
        raise PlanError(f"switch_penalty must be >= 0, got {options.switch_penalty}")
    if options.min_dwell_slots < 1:
        raise PlanError(f"min_dwell_slots must be >= 1, got {options.min_dwell_slots}")
    if options.full_charge_every_slots is not None and options.full_charge_every_slots < 1:
        raise PlanError(f"full_charge_every_slots must be >= 1, got {options.full_charge_every_slots}")
    if options.slots_since_full_charge < 0:
        raise PlanError(f"slots_since_full_charge must be >= 0, got {options.slots_since_full_charge}")
    if options.solver not in ("cbc", "highs"):
        raise PlanError(f"unknown solver {options.solver!r}: use 'cbc' or 'highs'")
    if options.time_limit_s is not None and not options.time_limit_s > 0:
        raise PlanError(f"time_limit_s must be > 0, got {options.time_limit_s}")


def _full_windows(
    lengths: Sequence[float], spec: BatterySpec, soc0: float, options: PlanOptions
) -> list[tuple[int, int]]:
    """The slot windows that must each hold a slot ending at soc_max (see PlanOptions.full_charge_every_slots).

    The first window ends after ``N - slots_since_full_charge`` slots, or after the earliest slot full-power
    charging can reach soc_max if that is later (overdue). Then every window of N slots inside the horizon
    that ends after the first one. A horizon that ends before the first deadline carries no obligation.
    """
    every = options.full_charge_every_slots
    if every is None:
        return []
    earliest: int | None = None
    soc = soc0
    for i, h in enumerate(lengths):
        soc += energy.stored_kwh(spec.max_charge_kw * h, spec.roundtrip_efficiency)
        if soc >= spec.soc_max_kwh - 1e-9:
            earliest = i
            break
    due = every - options.slots_since_full_charge  # slots until the next full charge is due
    if due > len(lengths):
        first = None
    elif earliest is None:
        raise PlanError(
            f"a full charge (soc_max {spec.soc_max_kwh} kWh) is due within {max(due, 0)} slots but "
            f"full-power charging from {soc0} kWh cannot reach it within the horizon"
        )
    else:
        first = max(due, earliest + 1) - 1
    windows: list[tuple[int, int]] = []
    if first is not None:
        windows.append((0, first))
    start = max(1, (first if first is not None else 0) - every + 1)
    windows.extend((k, k + every - 1) for k in range(start, len(lengths) - every + 1))
    return windows


# -- model --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lp:
    problem: pulp.LpProblem
    charge: list[pulp.LpVariable]
    discharge: list[pulp.LpVariable]
    direction: list[pulp.LpVariable]
    soc: list[pulp.LpVariable]
    full: dict[int, pulp.LpVariable]


def _simultaneous(lp: _Lp, spec: BatterySpec) -> list[int]:
    """Slots where the solution charges and discharges at once (beyond solver noise)."""
    charge_tol = SNAP * max(spec.max_charge_kw, 1.0)
    discharge_tol = SNAP * max(spec.max_discharge_kw, 1.0)
    return [
        t
        for t, (c, d) in enumerate(zip(lp.charge, lp.discharge, strict=True))
        if _value(c) > charge_tol and _value(d) > discharge_tol
    ]


def _build(p: _Problem, spec: BatterySpec, options: PlanOptions, *, binary: bool = True) -> _Lp:
    """The MILP of the module docstring. Rows are built from (variable, coefficient) lists rather than with
    ``+`` and ``*``, which would build a new expression object per operator (build time matters in a
    365-day backtest)."""
    n = len(p.prices)
    eta = spec.roundtrip_efficiency
    pc, pd = spec.max_charge_kw, spec.max_discharge_kw
    lo, hi = spec.soc_min_kwh, spec.soc_max_kwh
    prob = pulp.LpProblem("battery_dispatch", pulp.LpMaximize)
    charge = [_variable(prob, f"c_{t}", 0, pc) for t in range(n)]
    discharge = [_variable(prob, f"d_{t}", 0, pd) for t in range(n)]
    kind = pulp.LpBinary if binary else pulp.LpContinuous
    direction = [_variable(prob, f"y_{t}", 0, 1, kind) for t in range(n)]
    soc = [_variable(prob, f"s_{t}", lo, hi) for t in range(n)]
    soc[-1].lowBound = max(lo, p.target)  # the terminal target is a bound, not a row
    objective: list[tuple[pulp.LpVariable, float]] = []
    for t in range(n):
        h = p.hours[t]
        objective.append((charge[t], -energy.value_at(h, p.prices[t])))
        objective.append((discharge[t], energy.value_at(h, p.prices[t] - spec.cycle_cost_per_mwh)))
        _row(prob, f"cy_{t}", [(charge[t], 1.0), (direction[t], -pc)], pulp.LpConstraintLE, 0.0)
        _row(prob, f"dy_{t}", [(discharge[t], 1.0), (direction[t], pd)], pulp.LpConstraintLE, pd)
        # kWh of SOC per kW of the slot's power, each way
        balance = [(soc[t], 1.0), (charge[t], -energy.stored_kwh(h, eta)), (discharge[t], energy.drawn_kwh(h, eta))]
        if t:
            balance.append((soc[t - 1], -1.0))
        _row(prob, f"soc_{t}", balance, pulp.LpConstraintEQ, 0.0 if t else p.soc_initial)
    objective.extend(_switching(prob, direction, options))
    full = _full_charge(prob, soc, p.full_windows, lo, hi)
    prob.setObjective(pulp.LpAffineExpression(objective))
    return _Lp(prob, charge, discharge, direction, soc, full)


def _variable(
    prob: pulp.LpProblem, name: str, low: float, up: float, cat: str = pulp.LpContinuous
) -> pulp.LpVariable:
    # PuLP >= 3.3 wants variables owned by the problem (the bare constructor is deprecated for 4.0)
    add = getattr(prob, "add_variable", None)
    return add(name, low, up, cat) if add is not None else pulp.LpVariable(name, low, up, cat)


def _row(
    prob: pulp.LpProblem, name: str, terms: list[tuple[pulp.LpVariable, float]], sense: int, rhs: float
) -> None:
    prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, name, rhs))


def _switching(
    prob: pulp.LpProblem, direction: list[pulp.LpVariable], options: PlanOptions
) -> list[tuple[pulp.LpVariable, float]]:
    """Switch indicators and min-dwell rows; returns the penalty terms of the objective.

    up_t - down_t = y_t - y_{t-1} with up, down in [0, 1]: a real switch forces one of them to 1; without a
    switch both may be 0, and the penalty (or the dwell rows, which they only tighten) keeps them there. So
    they need not be binary. Min dwell D: a switch to charging in any of the last D slots keeps y_t = 1,
    a switch to discharging keeps y_t = 0 (the classic min up/down time rows). Slot 0 has nothing to switch
    from, so the indicators start at slot 1.
    """
    dwell = options.min_dwell_slots
    if options.switch_penalty <= 0 and dwell <= 1:
        return []
    n = len(direction)
    up = {t: _variable(prob, f"up_{t}", 0, 1) for t in range(1, n)}
    down = {t: _variable(prob, f"down_{t}", 0, 1) for t in range(1, n)}
    for t in range(1, n):
        _row(
            prob,
            f"sw_{t}",
            [(up[t], 1.0), (down[t], -1.0), (direction[t], -1.0), (direction[t - 1], 1.0)],
            pulp.LpConstraintEQ,
            0.0,
        )
        if dwell > 1:
            recent = range(max(1, t - dwell + 1), t + 1)
            _row(prob, f"dwu_{t}", [(up[k], 1.0) for k in recent] + [(direction[t], -1.0)], pulp.LpConstraintLE, 0)
            _row(prob, f"dwd_{t}", [(down[k], 1.0) for k in recent] + [(direction[t], 1.0)], pulp.LpConstraintLE, 1)
    penalty = options.switch_penalty
    return [(v, -penalty) for t in range(1, n) for v in (up[t], down[t])] if penalty > 0 else []


def _full_charge(
    prob: pulp.LpProblem, soc: list[pulp.LpVariable], windows: list[tuple[int, int]], lo: float, hi: float
) -> dict[int, pulp.LpVariable]:
    """f_t = 1 forces s_t = soc_max (s_t >= lo + (hi - lo)*f_t); each window needs sum f >= 1."""
    if not windows:
        return {}
    covered = sorted({t for first, last in windows for t in range(first, last + 1)})
    full = {t: _variable(prob, f"f_{t}", 0, 1, pulp.LpBinary) for t in covered}
    for t, f in full.items():
        _row(prob, f"full_{t}", [(soc[t], 1.0), (f, -(hi - lo))], pulp.LpConstraintGE, lo)
    for k, (first, last) in enumerate(windows):
        _row(prob, f"win_{k}", [(full[t], 1.0) for t in range(first, last + 1)], pulp.LpConstraintGE, 1.0)
    return full


def _solve(lp: _Lp, options: PlanOptions) -> None:
    # gapRel=0: the true optimum, not "within 0.01 %" (HiGHS' default mip_rel_gap is 1e-4)
    solver: pulp.LpSolver
    if options.solver == "highs":
        # one thread: a plan is small, and a fleet's plans run in parallel processes (nodes.planner.solvers);
        # HiGHS' own threads would only compete with them for the cores
        solver = pulp.HiGHS(msg=False, timeLimit=options.time_limit_s, gapRel=0.0, threads=1)
    else:
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=options.time_limit_s, gapRel=0.0)
    try:
        lp.problem.solve(solver)
    except pulp.PulpError as exc:
        raise PlanError(f"solver {options.solver} failed: {exc}") from exc
    status, solution = lp.problem.status, lp.problem.sol_status
    if status == pulp.LpStatusOptimal and solution == pulp.LpSolutionOptimal:
        return
    if status == pulp.LpStatusInfeasible:
        raise PlanError(f"the model is infeasible ({options.solver}); check the SOC limits and options")
    hint = f" within the time limit of {options.time_limit_s} s" if options.time_limit_s else ""
    raise PlanError(
        f"solver {options.solver} did not prove optimality{hint}: status {pulp.LpStatus.get(status, status)}, "
        f"solution {pulp.LpSolution.get(solution, solution)}"
    )


# -- publishing ---------------------------------------------------------------------------------------------


def _publishable(
    lp: highs_direct.Solved, p: _Problem, spec: BatterySpec
) -> tuple[list[tuple[float, float]], list[float]]:
    """Solver values -> clean powers and the SOC they imply, recomputed so both are exactly consistent.

    Values within SNAP of 0 or a limit become 0 or the limit, and the power against the direction is 0.
    Solver noise (CBC prints 8 significant digits) can then leave the recomputed SOC a hair outside its
    range, below the terminal target or below soc_max at a balancing slot; the repair moves the power of that
    slot (or of the latest earlier active slot with room) by that hair, and refuses anything larger.
    """
    eta = spec.roundtrip_efficiency
    pc, pd, lo, hi = spec.max_charge_kw, spec.max_discharge_kw, spec.soc_min_kwh, spec.soc_max_kwh
    powers: list[tuple[float, float]] = []
    socs: list[float] = []
    soc = p.soc_initial
    moved = 0.0
    for t, h in enumerate(p.hours):
        # a binary direction says it; a continuous one (lazy binaries, no simultaneous slot left) may be
        # fractional, so the larger power decides
        charging = lp.direction[t] > 0.5 if lp.binary[t] else lp.charge[t] > lp.discharge[t]
        c = _snap(lp.charge[t], pc) if charging else 0.0
        d = 0.0 if charging else _snap(lp.discharge[t], pd)
        nxt = soc_after(soc, c, d, h, eta)
        if nxt > hi and c > 0:
            c, moved = _shift(c, -energy.charge_kw_for(nxt - hi, h, eta), pc, moved, energy.stored_kwh(h, eta))
        elif nxt < lo and d > 0:
            d, moved = _shift(d, -energy.discharge_kw_for(lo - nxt, h, eta), pd, moved, energy.drawn_kwh(h, eta))
        soc = min(max(soc_after(soc, c, d, h, eta), lo), hi)
        powers.append((c, d))
        socs.append(soc)
    floors = {t: hi for t, f in lp.full.items() if f > 0.5}
    floors[len(socs) - 1] = max(floors.get(len(socs) - 1, lo), p.target)
    for t in sorted(floors):  # raising an SOC only raises the later ones: earlier floors stay met
        moved += _raise(powers, socs, t, floors[t], p=p, spec=spec)
    if moved > REPAIR_LIMIT_KWH:
        raise PlanError(f"solver solution is off by {moved:.3g} kWh, beyond noise; refusing to publish it")
    return powers, socs


def _raise(
    powers: list[tuple[float, float]], socs: list[float], t: int, level: float, *, p: _Problem, spec: BatterySpec
) -> float:
    """Lift socs[t] to ``level`` by the latest slots <= t that are active and have room, without any later
    SOC passing soc_max; returns the energy moved (kWh)."""
    deficit = level - socs[t]
    if deficit <= 0:
        return 0.0
    eta, hi = spec.roundtrip_efficiency, spec.soc_max_kwh
    headroom = min(hi - s for s in socs[t:])
    moved = 0.0
    for j in range(t, -1, -1):
        headroom = min(headroom, hi - socs[j])
        if deficit <= 0 or headroom <= 0:
            break
        c, d = powers[j]
        h = p.hours[j]
        room = energy.stored_kwh(spec.max_charge_kw - c, eta) * h if c > 0 else energy.drawn_kwh(d * h, eta)
        delta = min(deficit, headroom, room)
        if delta <= 0:
            continue
        powers[j] = ((c + energy.charge_kw_for(delta, h, eta), d) if c > 0
                     else (c, d - energy.discharge_kw_for(delta, h, eta)))
        soc = p.soc_initial if j == 0 else socs[j - 1]
        for k in range(j, len(powers)):
            soc = min(max(soc_after(soc, *powers[k], p.hours[k], eta), spec.soc_min_kwh), hi)
            socs[k] = soc
        deficit -= delta
        headroom -= delta
        moved += delta
    return moved


def _shift(value: float, delta: float, limit: float, moved: float, kwh_per_kw: float) -> tuple[float, float]:
    new = min(max(value + delta, 0.0), limit)
    return new, moved + abs(new - value) * kwh_per_kw


def _snap(value: float, limit: float) -> float:
    tolerance = SNAP * max(limit, 1.0)
    if value <= tolerance:
        return 0.0
    if value >= limit - tolerance:
        return float(limit)
    return value


def _value(var: pulp.LpVariable) -> float:
    value = var.varValue
    return 0.0 if value is None else float(value)
