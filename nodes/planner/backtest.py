"""Backtests: what the optimiser and the baselines would have earned on a price file (pure: no I/O, no clock).

Two kinds of foresight (``python -m nodes.planner backtest --foresight ...``):

* ``day-ahead`` (the default), :func:`run_day_ahead_backtest`: only what was known at the time, as the live
  planner knows it. The day-ahead result for local delivery day D is published the day before at
  ``published_at`` (12:45 in ``tz``, Europe/Berlin: SDAC, EPEX and Nord Pool publish around then). At each
  publication the optimiser re-plans over everything known then (the rest of today and all of tomorrow) from the
  SOC the executed plan has reached, and that plan is executed until the next publication: from the first slot
  that starts at or after the publication (the slot in progress was committed before it), to the first slot at
  or after the next one. The first plan starts with the file and knows every day published by then (at least
  the first day, published the day before). Next to it the same table shows **perfect foresight**, the per-day
  optimiser and the baselines.
* ``day``, :func:`run_backtest`: each local day planned alone with its own prices (it knows the whole day from
  midnight and nothing after it), with the optimiser's and each baseline's SOC carried to the next day.

**Perfect foresight** is one plan over the whole file: the optimum with hindsight. Every day-ahead plan and the
perfect plan must end at or above the backtest's initial SOC, so the executed day-ahead dispatch is a feasible
point of the perfect plan's model and can never earn more (without a switch penalty, which the revenue leaves
out; a test checks realistic <= perfect). With ``perfect_window_days`` it is instead a rolling plan that knows
everything: each local day is planned with full knowledge of that many days (from that day on) and executed for
the day (for files too long to solve as one plan; it is then a bound only up to its window).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import msgspec

from nodes.contract import energy
from nodes.contract.energy import slot_hours
from nodes.contract.messages import DEFAULT_CURRENCY, BatterySpec, PriceSlot
from nodes.planner import baseline, report
from nodes.planner.baseline import DEFAULT_TZ
from nodes.planner.model import PlanOptions, plan

DEFAULT_PUBLISHED_AT = clock_time(12, 45)
"""When a day-ahead auction's result is out, the day before delivery (local time of the delivery days)."""
WHOLE_FILE_MAX_SLOTS = 10_000
"""Perfect foresight is one plan over the whole file up to this many slots (a leap year of hourly prices is
8,784: one plan of it takes CBC about 5 s); beyond, by default, a rolling plan knowing :data:`ROLLING_DAYS` days
(one plan over a year of quarter-hours did not finish in 5 minutes)."""
ROLLING_DAYS = 7
DAY_AHEAD = "day-ahead"
PERFECT = "perfect foresight"
PER_DAY = "per day"

Days = Sequence[tuple[date, list[PriceSlot]]]


def perfect_window(slot_count: int, requested: int | str | None = "auto") -> int | None:
    """Days the perfect-foresight plan knows at once (None: the whole file) for ``requested``: a number of
    days, ``"all"``, or ``"auto"`` (the whole file up to :data:`WHOLE_FILE_MAX_SLOTS` slots, else a week)."""
    if requested == "all":
        return None
    if requested == "auto":
        return None if slot_count <= WHOLE_FILE_MAX_SLOTS else ROLLING_DAYS
    if not isinstance(requested, int) or requested < 1:
        raise ValueError(f"perfect foresight needs a window of at least 1 day, got {requested!r}")
    return requested


def run_backtest(
    days: Days,
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    options: PlanOptions = PlanOptions(),  # noqa: B008 - frozen, never mutated
    source: str = "",
    progress: Callable[[int], None] | None = None,
    tz: str = DEFAULT_TZ,
    currency: str = DEFAULT_CURRENCY,
) -> report.Backtest:
    """Plan each local day (of ``tz``, as ``days`` were split) with that day's prices only, carrying each
    strategy's SOC to the next day.

    Every day the optimiser must end at or above the SOC it started the day with, and so must the baselines
    (:func:`baseline.top_n_daily`, :func:`baseline.threshold`, which pick their slots per day of the same zone).
    """
    options = msgspec.structs.replace(options, terminal_soc_kwh=None)
    strategies: dict[str, Callable[[list[PriceSlot], float], baseline.Dispatch]] = {
        "top-N daily": lambda day, soc: baseline.top_n_daily(day, spec, soc, tz=tz),
        "threshold": lambda day, soc: baseline.threshold(day, spec, soc, tz=tz),
    }
    names = ["optimiser", *strategies]
    socs = dict.fromkeys(names, soc_initial_kwh)
    powers: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    daily: dict[str, list[float]] = {name: [] for name in names}
    solve_ms: list[float] = []
    plan_ms: list[float] = []
    all_slots: list[PriceSlot] = []
    for n, (day, slots) in enumerate(days, start=1):
        started = time.perf_counter()
        schedule = plan(
            slots, spec, socs["optimiser"], created_at=slots[0].start, options=options, plan_id=f"backtest-{day}",
            currency=currency,
        )
        plan_ms.append((time.perf_counter() - started) * 1000.0)
        solve_ms.append(schedule.solve_ms)
        dispatches = {"optimiser": baseline.dispatch_of(schedule)}
        dispatches.update({name: run(slots, socs[name]) for name, run in strategies.items()})
        for name, dispatch in dispatches.items():
            scored = baseline.evaluate_dispatch(dispatch, spec)
            daily[name].append(scored.revenue)
            powers[name].extend(dispatch.powers)
            socs[name] = scored.soc_final_kwh
        all_slots.extend(slots)
        if progress is not None:
            progress(n)
    runs = [
        _run(name, baseline.Dispatch(slots=all_slots, powers=powers[name], soc_initial_kwh=soc_initial_kwh), spec,
             daily[name])
        for name in names
    ]
    return report.Backtest(
        source=source, spec=spec, days=[day for day, _ in days], runs=runs, solve_ms=solve_ms, plan_ms=plan_ms,
        tz=tz, day_hours=[sum(slot_hours(slot) for slot in slots) for _, slots in days], currency=currency,
    )


def run_day_ahead_backtest(
    days: Days,
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    options: PlanOptions = PlanOptions(),  # noqa: B008 - frozen, never mutated
    source: str = "",
    progress: Callable[[int], None] | None = None,
    tz: str = DEFAULT_TZ,
    currency: str = DEFAULT_CURRENCY,
    published_at: clock_time = DEFAULT_PUBLISHED_AT,
    perfect_window_days: int | None = None,
) -> report.Backtest:
    """The day-ahead (realistic) run, perfect foresight, then the per-day optimiser and the baselines of
    :func:`run_backtest`; ``progress`` counts the days of the per-day run, then the day-ahead plans."""
    per_day = run_backtest(days, spec, soc_initial_kwh, options=options, source=source, progress=progress, tz=tz,
                           currency=currency)
    slots = [slot for _, day_slots in days for slot in day_slots]
    options = msgspec.structs.replace(options, terminal_soc_kwh=soc_initial_kwh)
    offset = len(days)

    def planned(k: int) -> None:
        if progress is not None:
            progress(offset + k)

    realistic = day_ahead_dispatch(slots, spec, soc_initial_kwh, options=options, tz=tz, published_at=published_at,
                                   currency=currency, progress=planned)
    perfect = perfect_dispatch(days, spec, soc_initial_kwh, options=options, window_days=perfect_window_days,
                               currency=currency)
    first, *others = per_day.runs
    runs = [
        _run(DAY_AHEAD, realistic.dispatch, spec, daily_revenue(realistic.dispatch, spec, tz)),
        _run(PERFECT, perfect.dispatch, spec, daily_revenue(perfect.dispatch, spec, tz)),
        msgspec.structs.replace(first, name=PER_DAY),
        *others,
    ]
    return msgspec.structs.replace(
        per_day, runs=runs, solve_ms=realistic.solve_ms, plan_ms=realistic.plan_ms,
        foresight=report.Foresight(published_at=published_at.strftime("%H:%M"), plans=len(realistic.solve_ms),
                                   perfect_window_days=perfect_window_days, perfect_solve_ms=sum(perfect.solve_ms),
                                   perfect_plans=len(perfect.solve_ms), per_day_solve_ms=sum(per_day.solve_ms)),
    )


class Executed(msgspec.Struct, frozen=True):
    """A dispatch pieced together from the executed parts of several plans, and what planning them took."""

    dispatch: baseline.Dispatch
    solve_ms: list[float]
    plan_ms: list[float]


def publication(day: date, published_at: clock_time, tz: str) -> datetime:
    """When the day-ahead prices of local delivery day ``day`` are out: the day before at ``published_at``, UTC."""
    return datetime.combine(day - timedelta(days=1), published_at, tzinfo=ZoneInfo(tz)).astimezone(UTC)


def decision_instants(slots: Sequence[PriceSlot], published_at: clock_time, tz: str) -> list[datetime]:
    """The file's start, then every publication after it and before the file ends (when the day-ahead run
    re-plans)."""
    zone = ZoneInfo(tz)
    first, end = slots[0].start, slots[-1].end
    days = sorted({slot.start.astimezone(zone).date() for slot in slots})
    return [first] + [moment for day in days if first < (moment := publication(day, published_at, tz)) < end]


def day_ahead_dispatch(
    slots: Sequence[PriceSlot],
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    options: PlanOptions,
    tz: str,
    published_at: clock_time,
    currency: str = DEFAULT_CURRENCY,
    progress: Callable[[int], None] | None = None,
) -> Executed:
    """Re-plan at every :func:`decision_instants` on the days published by then, execute until the next one."""
    zone = ZoneInfo(tz)
    starts = [slot.start for slot in slots]
    day_end: dict[date, int] = {}  # local day -> index after its last slot
    for i, slot in enumerate(slots):
        day_end[slot.start.astimezone(zone).date()] = i + 1
    published = {day: publication(day, published_at, tz) for day in day_end}
    instants = decision_instants(slots, published_at, tz)
    firsts = [bisect.bisect_left(starts, moment) for moment in instants]  # first slot at or after each instant
    powers: list[tuple[float, float]] = []
    solve_ms: list[float] = []
    plan_ms: list[float] = []
    soc = soc_initial_kwh
    for k, (moment, first) in enumerate(zip(instants, firsts, strict=True)):
        until = firsts[k + 1] if k + 1 < len(firsts) else len(slots)
        if until <= first:
            continue  # two instants within one slot: the later one decides
        known = max(end for day, end in day_end.items() if published[day] <= moment)
        if known < until:  # cannot happen for a publication time within the day; never execute unknown prices
            raise ValueError(f"at {moment.isoformat()} the prices are known only to slot {known}, not {until}")
        started = time.perf_counter()
        schedule = plan(slots[first:known], spec, soc, options=options, created_at=moment, currency=currency,
                        plan_id=f"day-ahead-{moment:%Y%m%dT%H%M}")
        plan_ms.append((time.perf_counter() - started) * 1000.0)
        solve_ms.append(schedule.solve_ms)
        executed = schedule.slots[: until - first]
        powers.extend((s.charge_kw, s.discharge_kw) for s in executed)
        soc = executed[-1].soc_kwh
        if progress is not None:
            progress(k + 1)
    dispatch = baseline.Dispatch(slots=list(slots), powers=powers, soc_initial_kwh=soc_initial_kwh)
    return Executed(dispatch=dispatch, solve_ms=solve_ms, plan_ms=plan_ms)


def perfect_dispatch(
    days: Days,
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    options: PlanOptions,
    window_days: int | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> Executed:
    """Perfect foresight: one plan over every slot (``window_days`` None), or each day planned knowing the next
    ``window_days`` days from it and executed for that day."""
    slots = [slot for _, day_slots in days for slot in day_slots]
    if window_days is None:
        started = time.perf_counter()
        schedule = plan(slots, spec, soc_initial_kwh, options=options, created_at=slots[0].start,
                        plan_id="perfect-foresight", currency=currency)
        elapsed = (time.perf_counter() - started) * 1000.0
        return Executed(dispatch=baseline.dispatch_of(schedule), solve_ms=[schedule.solve_ms], plan_ms=[elapsed])
    powers: list[tuple[float, float]] = []
    solve_ms: list[float] = []
    plan_ms: list[float] = []
    soc = soc_initial_kwh
    for k, (day, day_slots) in enumerate(days):
        window = [slot for _, later in days[k : k + window_days] for slot in later]
        started = time.perf_counter()
        schedule = plan(window, spec, soc, options=options, created_at=window[0].start, currency=currency,
                        plan_id=f"perfect-{day}")
        plan_ms.append((time.perf_counter() - started) * 1000.0)
        solve_ms.append(schedule.solve_ms)
        executed = schedule.slots[: len(day_slots)]
        powers.extend((s.charge_kw, s.discharge_kw) for s in executed)
        soc = executed[-1].soc_kwh
    dispatch = baseline.Dispatch(slots=slots, powers=powers, soc_initial_kwh=soc_initial_kwh)
    return Executed(dispatch=dispatch, solve_ms=solve_ms, plan_ms=plan_ms)


def daily_revenue(dispatch: baseline.Dispatch, spec: BatterySpec, tz: str) -> list[float]:
    """Revenue (market revenue minus cycle cost) per local day of ``tz``, in the order of the slots."""
    zone = ZoneInfo(tz)
    days: dict[date, float] = {}
    for slot, (charge, discharge) in zip(dispatch.slots, dispatch.powers, strict=True):
        h = slot_hours(slot)
        money = (energy.value_at(discharge * h, slot.price_per_mwh) - energy.value_at(charge * h, slot.price_per_mwh)
                 - energy.value_at(discharge * h, spec.cycle_cost_per_mwh))
        day = slot.start.astimezone(zone).date()
        days[day] = days.get(day, 0.0) + money
    return list(days.values())


def _run(name: str, dispatch: baseline.Dispatch, spec: BatterySpec, daily: list[float]) -> report.StrategyRun:
    return report.StrategyRun(name=name, dispatch=dispatch, evaluation=baseline.evaluate_dispatch(dispatch, spec),
                              daily_revenue=daily)


__all__ = [
    "DAY_AHEAD",
    "DEFAULT_PUBLISHED_AT",
    "PERFECT",
    "PER_DAY",
    "ROLLING_DAYS",
    "WHOLE_FILE_MAX_SLOTS",
    "Executed",
    "daily_revenue",
    "day_ahead_dispatch",
    "decision_instants",
    "perfect_dispatch",
    "perfect_window",
    "publication",
    "run_backtest",
    "run_day_ahead_backtest",
]
