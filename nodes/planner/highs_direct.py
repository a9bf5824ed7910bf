"""The planner's MILP built straight into HiGHS (highspy), without PuLP: the model of :mod:`nodes.planner.model`.

Why: for a 96-slot plan PuLP's model objects and its HiGHS adapter (one Python call per column and row) cost more
than HiGHS' solve. Here the columns and rows are handed over as arrays in a few calls. The model is the same as
the PuLP one (same variables, rows, bounds, lazy binaries) and the CBC path still builds it with PuLP; the
tests compare both solvers' optimum on random batteries and prices, so the two builds check each other.

Columns: c_t, d_t, y_t, s_t (t < n), then up_t, down_t (1 <= t < n, switching options only), then f_t (balancing).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np

INF = highspy.kHighsInf
OPTIONS: tuple[tuple[str, bool | float | int | str], ...] = (
    ("output_flag", False),
    ("mip_rel_gap", 0.0),  # the true optimum, not "within 0.01 %" (HiGHS' default)
    ("threads", 1),  # a fleet's plans run in parallel processes; HiGHS' own threads would compete with them
    # Measured on 96-slot fleet plans (bench/fleet.py): on a model this small and sparse, presolve and the primal
    # heuristics (feasibility jump, the sub-MIPs RINS/RENS, ...) cost more than they save; the slowest plans,
    # one B&B node with a sub-MIP, went from ~28 ms to ~15 ms. None of them changes what is proven: the gap is 0.
    ("presolve", "off"),
    ("mip_heuristic_run_feasibility_jump", False),
    ("mip_heuristic_run_rins", False),
    ("mip_heuristic_run_rens", False),
    ("mip_heuristic_run_root_reduced_cost", False),
    ("mip_heuristic_run_zi_round", False),
    ("mip_heuristic_run_shifting", False),
)


@dataclass(frozen=True, slots=True)
class Solved:
    """Column values of an optimal solution (or ``error``: why there is none)."""

    charge: list[float] = field(default_factory=list)
    discharge: list[float] = field(default_factory=list)
    direction: list[float] = field(default_factory=list)
    binary: list[bool] = field(default_factory=list)
    full: dict[int, float] = field(default_factory=dict)
    solve_ms: float = 0.0
    error: str | None = None


class _Rows:
    """Rows collected as (lower, upper, [(column, coefficient)]) and added in one call."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.starts: list[int] = []
        self.index: list[int] = []
        self.value: list[float] = []

    def add(self, terms: Sequence[tuple[int, float]], lower: float, upper: float) -> None:
        self.starts.append(len(self.index))
        self.lower.append(lower)
        self.upper.append(upper)
        for column, coefficient in terms:
            self.index.append(column)
            self.value.append(coefficient)

    def into(self, h: highspy.Highs) -> None:
        h.addRows(len(self.lower), np.array(self.lower), np.array(self.upper), len(self.index),
                  np.array(self.starts, dtype=np.int32), np.array(self.index, dtype=np.int32), np.array(self.value))


def solve(
    *,
    prices: Sequence[float],
    hours: Sequence[float],
    stored_per_kw: Sequence[float],
    drawn_per_kw: Sequence[float],
    charge_value: Sequence[float],
    discharge_value: Sequence[float],
    soc_initial: float,
    target: float,
    full_windows: Sequence[tuple[int, int]],
    max_charge_kw: float,
    max_discharge_kw: float,
    soc_min_kwh: float,
    soc_max_kwh: float,
    switch_penalty: float,
    min_dwell_slots: int,
    time_limit_s: float | None,
    tolerance: tuple[float, float],
) -> Solved:
    """Solve to proven optimality; ``charge_value``/``discharge_value`` are each slot's objective coefficients,
    ``tolerance`` the (charge, discharge) kW above which a slot both charges and discharges (lazy binaries)."""
    n = len(prices)
    pc, pd, lo, hi = max_charge_kw, max_discharge_kw, soc_min_kwh, soc_max_kwh
    switching = switch_penalty > 0 or min_dwell_slots > 1
    lazy = not switching
    covered = sorted({t for first, last in full_windows for t in range(first, last + 1)})
    sw0 = 4 * n
    up = {t: sw0 + (t - 1) for t in range(1, n)} if switching else {}
    down = {t: sw0 + (n - 1) + (t - 1) for t in range(1, n)} if switching else {}
    f0 = sw0 + (2 * (n - 1) if switching else 0)
    full = {t: f0 + k for k, t in enumerate(covered)}
    columns = f0 + len(covered)

    cost = np.zeros(columns)
    lower = np.zeros(columns)
    upper = np.ones(columns)
    cost[0:n] = charge_value
    cost[n : 2 * n] = discharge_value
    upper[0:n] = pc
    upper[n : 2 * n] = pd
    lower[3 * n : 4 * n] = lo
    upper[3 * n : 4 * n] = hi
    lower[4 * n - 1] = max(lo, target)  # the terminal target is a bound, not a row
    if switch_penalty > 0:
        cost[sw0:f0] = -switch_penalty

    rows = _Rows()
    for t in range(n):
        c, d, y, s = t, n + t, 2 * n + t, 3 * n + t
        rows.add([(c, 1.0), (y, -pc)], -INF, 0.0)
        rows.add([(d, 1.0), (y, pd)], -INF, pd)
        balance = [(s, 1.0), (c, -stored_per_kw[t]), (d, drawn_per_kw[t])]
        if t:
            balance.append((s - 1, -1.0))
        rhs = 0.0 if t else soc_initial
        rows.add(balance, rhs, rhs)
        if switching and t:
            rows.add([(up[t], 1.0), (down[t], -1.0), (y, -1.0), (y - 1, 1.0)], 0.0, 0.0)
            if min_dwell_slots > 1:
                recent = range(max(1, t - min_dwell_slots + 1), t + 1)
                rows.add([(up[k], 1.0) for k in recent] + [(y, -1.0)], -INF, 0.0)
                rows.add([(down[k], 1.0) for k in recent] + [(y, 1.0)], -INF, 1.0)
    for t, column in full.items():
        rows.add([(3 * n + t, 1.0), (column, -(hi - lo))], lo, INF)
    for first, last in full_windows:
        rows.add([(full[t], 1.0) for t in range(first, last + 1)], 1.0, INF)

    h = highspy.Highs()  # type: ignore[no-untyped-call]
    for option, value in OPTIONS:
        h.setOptionValue(option, value)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    h.addVars(columns, lower, upper)
    h.changeColsCost(columns, np.arange(columns, dtype=np.int32), cost)
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    rows.into(h)
    # where the price is not positive, burning energy pays and the relaxation would nearly always do it: those
    # slots are binary from the start (nodes.planner.model.plan explains the lazy binaries)
    binary = [not lazy or prices[t] <= 0.0 for t in range(n)]
    integer = [2 * n + t for t in range(n) if binary[t]] + list(full.values())
    _integral(h, integer)
    started = time.perf_counter()
    while True:
        error = _run(h, time_limit_s)
        if error is not None:
            return Solved(error=error, solve_ms=(time.perf_counter() - started) * 1000.0)
        values = h.getSolution().col_value
        both = [t for t in range(n) if not binary[t] and values[t] > tolerance[0] and values[n + t] > tolerance[1]]
        if not both:
            break
        for t in both:
            binary[t] = True
        _integral(h, [2 * n + t for t in both])
    return Solved(
        charge=list(values[0:n]), discharge=list(values[n : 2 * n]), direction=list(values[2 * n : 3 * n]),
        binary=binary, full={t: values[column] for t, column in full.items()},
        solve_ms=(time.perf_counter() - started) * 1000.0,
    )


def _integral(h: highspy.Highs, columns: list[int]) -> None:
    if columns:
        h.changeColsIntegrality(len(columns), np.array(columns, dtype=np.int32),
                                np.full(len(columns), highspy.HighsVarType.kInteger, dtype=np.uint8))


def _run(h: highspy.Highs, time_limit_s: float | None) -> str | None:
    """None when HiGHS proved optimality, else why not (the text of :class:`nodes.planner.model.PlanError`)."""
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kOptimal:
        return None
    if status == highspy.HighsModelStatus.kInfeasible:
        return "the model is infeasible (highs); check the SOC limits and options"
    hint = f" within the time limit of {time_limit_s} s" if time_limit_s else ""
    return f"solver highs did not prove optimality{hint}: status {h.modelStatusToString(status)}"


__all__ = ["Solved", "solve"]
