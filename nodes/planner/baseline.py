"""Reference strategies to compare the optimiser with, and the one scorer every strategy is judged by.

Pure: no I/O, no clock. The physics is the optimiser's and the device's (:mod:`nodes.contract.energy`): charge
and discharge powers are grid-side kW, the round-trip efficiency is split evenly between the two directions
(``sqrt(eta)`` each way), and a slot's SOC is the state of charge at the slot's end.

Both strategies keep the same promise as the optimiser: by the end of the horizon the SOC is back at (at
least) the terminal target, which defaults to the starting SOC. That makes every baseline dispatch a
feasible point of the optimiser's model, so the optimiser's revenue can never be lower; a test relies on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Literal
from zoneinfo import ZoneInfo

import msgspec

from nodes.contract import energy
from nodes.contract.energy import slot_hours as hours
from nodes.contract.energy import soc_after
from nodes.contract.messages import BatterySpec, PriceSlot, Schedule

DEFAULT_TZ = "Europe/Berlin"
TOLERANCE = 1e-6
"""Slack (kW and kWh) when checking limits: solvers work to about 1e-7 relative."""

Intent = Literal["charge", "discharge", "idle"]
Powers = Sequence[tuple[float, float]]
"""Per slot ``(charge_kw, discharge_kw)``, both >= 0 and grid side."""


class Dispatch(msgspec.Struct, kw_only=True, frozen=True):
    """What one strategy does over a horizon: per slot ``(charge_kw, discharge_kw)``."""

    slots: list[PriceSlot]
    powers: list[tuple[float, float]]
    soc_initial_kwh: float


class Evaluation(msgspec.Struct, kw_only=True, frozen=True):
    """The figures a dispatch earns and costs; ``violations`` is empty when it respects every limit."""

    revenue: float
    """Market revenue minus cycle cost: the optimiser's objective without switch penalties."""
    market_revenue: float
    cycle_cost: float
    charged_kwh: float
    """Energy bought from the grid (grid side)."""
    discharged_kwh: float
    """Energy sold to the grid (grid side)."""
    full_cycles: float
    """Energy drawn from the cells (discharged / sqrt(eta)) divided by the usable range soc_max - soc_min."""
    avg_buy_price_per_mwh: float | None
    avg_sell_price_per_mwh: float | None
    efficiency_loss_kwh: float
    """charged - discharged - (final SOC - initial SOC): what the round trip burnt."""
    soc_kwh: list[float]
    violations: list[str]

    @property
    def soc_final_kwh(self) -> float:
        """SOC at the end of the horizon."""
        return self.soc_kwh[-1] if self.soc_kwh else math.nan


def evaluate(
    slots: Sequence[PriceSlot],
    powers: Powers,
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    tolerance: float = TOLERANCE,
) -> Evaluation:
    """Score a dispatch and check it against the battery's limits (power, never both, SOC range)."""
    if len(slots) != len(powers):
        raise ValueError(f"{len(slots)} slots but {len(powers)} powers")
    soc = soc_initial_kwh
    socs: list[float] = []
    violations: list[str] = []
    charged = discharged = buy_money = sell_money = 0.0
    for i, (slot, (charge, discharge)) in enumerate(zip(slots, powers, strict=True)):
        h = hours(slot)
        where = f"slot {i} ({slot.start:%Y-%m-%dT%H:%MZ})"
        if not -tolerance <= charge <= spec.max_charge_kw + tolerance:
            violations.append(f"{where}: charge {charge} kW outside [0, {spec.max_charge_kw}]")
        if not -tolerance <= discharge <= spec.max_discharge_kw + tolerance:
            violations.append(f"{where}: discharge {discharge} kW outside [0, {spec.max_discharge_kw}]")
        if charge > tolerance and discharge > tolerance:
            violations.append(f"{where}: charges {charge} kW and discharges {discharge} kW at once")
        soc = soc_after(soc, charge, discharge, h, spec.roundtrip_efficiency)
        if not spec.soc_min_kwh - tolerance <= soc <= spec.soc_max_kwh + tolerance:
            violations.append(f"{where}: SOC {soc} kWh outside [{spec.soc_min_kwh}, {spec.soc_max_kwh}]")
        socs.append(soc)
        charged += charge * h
        discharged += discharge * h
        buy_money += energy.value_at(charge * h, slot.price_per_mwh)
        sell_money += energy.value_at(discharge * h, slot.price_per_mwh)
    market = sell_money - buy_money
    cycle_cost = energy.value_at(discharged, spec.cycle_cost_per_mwh)
    cycles = energy.full_cycles(energy.drawn_kwh(discharged, spec.roundtrip_efficiency), spec)
    return Evaluation(
        revenue=market - cycle_cost,
        market_revenue=market,
        cycle_cost=cycle_cost,
        charged_kwh=charged,
        discharged_kwh=discharged,
        full_cycles=0.0 if cycles is None else cycles,
        avg_buy_price_per_mwh=buy_money * energy.KWH_PER_MWH / charged if charged > 0 else None,
        avg_sell_price_per_mwh=sell_money * energy.KWH_PER_MWH / discharged if discharged > 0 else None,
        efficiency_loss_kwh=charged - discharged - (soc - soc_initial_kwh),
        soc_kwh=socs,
        violations=violations,
    )


def evaluate_dispatch(dispatch: Dispatch, spec: BatterySpec) -> Evaluation:
    """:func:`evaluate` for a :class:`Dispatch`."""
    return evaluate(dispatch.slots, dispatch.powers, spec, dispatch.soc_initial_kwh)


def dispatch_of(schedule: Schedule) -> Dispatch:
    """The optimiser's Schedule as a Dispatch, to score it like any other strategy."""
    return Dispatch(
        slots=[PriceSlot(start=s.start, end=s.end, price_per_mwh=s.price_per_mwh) for s in schedule.slots],
        powers=[(s.charge_kw, s.discharge_kw) for s in schedule.slots],
        soc_initial_kwh=schedule.soc_initial_kwh,
    )


def audit(
    schedule: Schedule, spec: BatterySpec, *, terminal_soc_kwh: float | None = None, tolerance: float = TOLERANCE
) -> list[str]:
    """Everything wrong with a Schedule for this battery; empty when it is sound.

    Checks the limits (:func:`evaluate`), that each published ``soc_kwh`` is what the powers imply, that the
    horizon ends at or above the terminal target (default: the initial SOC) and that
    ``expected_revenue`` is the revenue of the published powers.
    """
    dispatch = dispatch_of(schedule)
    scored = evaluate_dispatch(dispatch, spec)
    found = list(scored.violations)
    for i, (slot, soc) in enumerate(zip(schedule.slots, scored.soc_kwh, strict=True)):
        if abs(slot.soc_kwh - soc) > tolerance:
            found.append(f"slot {i}: published SOC {slot.soc_kwh} kWh but the powers give {soc} kWh")
    target = _target(spec, schedule.soc_initial_kwh, terminal_soc_kwh)
    if scored.soc_kwh and scored.soc_final_kwh < target - tolerance:
        found.append(f"final SOC {scored.soc_final_kwh} kWh is below the terminal target {target} kWh")
    if abs(scored.revenue - schedule.expected_revenue) > tolerance * max(1.0, abs(scored.revenue)):
        found.append(
            f"expected revenue {schedule.expected_revenue} {schedule.currency} but the powers earn {scored.revenue}"
        )
    return found


# -- strategies ---------------------------------------------------------------------------------------------


def top_n_daily(
    slots: Sequence[PriceSlot],
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    terminal_soc_kwh: float | None = None,
    tz: str = DEFAULT_TZ,
) -> Dispatch:
    """(a) Per local day, charge at full power in the cheapest slots and discharge in the dearest ones.

    N is chosen from capacity and power: as many cheapest slots as it takes to fill the usable range at full
    charge power, as many of the remaining dearest slots as it takes to empty it at full discharge power.
    A day is skipped when the average spread does not pay for the round-trip loss and the cycle cost
    (``eta * (sell - cycle_cost) <= buy``). SOC limits clip the powers, and discharging stops early when the
    charge slots still to come could not bring the SOC back to the terminal target.
    """
    intents: list[Intent] = ["idle"] * len(slots)
    eta = spec.roundtrip_efficiency
    usable = energy.usable_kwh(spec)
    if usable > 0 and spec.max_charge_kw > 0 and spec.max_discharge_kw > 0:
        for day in _local_days(slots, tz):
            ascending = sorted(day, key=lambda i: (slots[i].price_per_mwh, i))
            charge = _take(ascending, lambda i: energy.stored_kwh(spec.max_charge_kw * hours(slots[i]), eta), usable)
            taken = set(charge)
            rest = [i for i in reversed(ascending) if i not in taken]
            discharge = _take(rest, lambda i: energy.drawn_kwh(spec.max_discharge_kw * hours(slots[i]), eta), usable)
            if charge and discharge and _pays(
                [slots[i].price_per_mwh for i in charge],
                [slots[i].price_per_mwh for i in discharge],
                spec,
            ):
                for i in charge:
                    intents[i] = "charge"
                for i in discharge:
                    intents[i] = "discharge"
    return _simulate(slots, intents, spec, soc_initial_kwh, _target(spec, soc_initial_kwh, terminal_soc_kwh))


def threshold(
    slots: Sequence[PriceSlot],
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    buy_below: float | None = None,
    sell_above: float | None = None,
    quantile: float = 0.25,
    terminal_soc_kwh: float | None = None,
    tz: str = DEFAULT_TZ,
) -> Dispatch:
    """(b) Charge at full power when the price is at or below a threshold, discharge at or above another.

    Without fixed thresholds each local day uses its own ``quantile`` and ``1 - quantile`` price quantiles
    (nearest rank). A day whose thresholds do not pay for the round trip
    (``eta * (sell_above - cycle_cost) <= buy_below``) stays idle. Limits as in :func:`top_n_daily`.
    """
    if not 0.0 <= quantile <= 0.5:
        raise ValueError(f"quantile must be in [0, 0.5], got {quantile}")
    intents: list[Intent] = ["idle"] * len(slots)
    for day in _local_days(slots, tz):
        prices = sorted(slots[i].price_per_mwh for i in day)
        low = buy_below if buy_below is not None else prices[math.floor(quantile * (len(prices) - 1))]
        high = sell_above if sell_above is not None else prices[math.ceil((1 - quantile) * (len(prices) - 1))]
        if not _pays([low], [high], spec):
            continue
        for i in day:
            price = slots[i].price_per_mwh
            intents[i] = "charge" if price <= low else "discharge" if price >= high else "idle"
    return _simulate(slots, intents, spec, soc_initial_kwh, _target(spec, soc_initial_kwh, terminal_soc_kwh))


def _target(spec: BatterySpec, soc_initial_kwh: float, terminal_soc_kwh: float | None) -> float:
    target = soc_initial_kwh if terminal_soc_kwh is None else terminal_soc_kwh
    return min(max(target, spec.soc_min_kwh), spec.soc_max_kwh)


def _pays(buy: Sequence[float], sell: Sequence[float], spec: BatterySpec) -> bool:
    # 1 MWh bought becomes eta MWh sold, and wear is paid on what is sold
    mean_buy = sum(buy) / len(buy)
    mean_sell = sum(sell) / len(sell)
    return spec.roundtrip_efficiency * (mean_sell - spec.cycle_cost_per_mwh) > mean_buy


def _take(order: Sequence[int], energy: Callable[[int], float], needed: float) -> list[int]:
    taken: list[int] = []
    total = 0.0
    for i in order:
        if total >= needed - TOLERANCE:
            break
        taken.append(i)
        total += energy(i)
    return taken


def _local_days(slots: Sequence[PriceSlot], tz: str) -> list[list[int]]:
    zone = ZoneInfo(tz)
    indexed = ((slot.start.astimezone(zone).date(), i) for i, slot in enumerate(slots))
    return [[i for _, i in group] for _, group in groupby(indexed, key=lambda pair: pair[0])]


def _simulate(
    slots: Sequence[PriceSlot], intents: Sequence[Intent], spec: BatterySpec, soc_initial_kwh: float, target: float
) -> Dispatch:
    """Full power in the intended direction, clipped by the SOC range and by the terminal target.

    A discharge may go no lower than ``target - (energy the remaining charge slots can add)``: by induction
    the SOC then ends at or above the target whenever it starts there. A charge goes no higher than
    ``target + (energy the remaining discharge slots can take out)``: energy above that could only be sold
    after the horizon, and locking it in would raise every later day's target.
    """
    eta = spec.roundtrip_efficiency
    can_add = [0.0] * len(slots)  # battery-side energy the later charge slots can add
    can_take = [0.0] * len(slots)  # battery-side energy the later discharge slots can take out
    add = take = 0.0
    for i in reversed(range(len(slots))):
        can_add[i], can_take[i] = add, take
        if intents[i] == "charge":
            add += energy.stored_kwh(spec.max_charge_kw * hours(slots[i]), eta)
        elif intents[i] == "discharge":
            take += energy.drawn_kwh(spec.max_discharge_kw * hours(slots[i]), eta)
    soc = soc_initial_kwh
    powers: list[tuple[float, float]] = []
    for i, (slot, intent) in enumerate(zip(slots, intents, strict=True)):
        h = hours(slot)
        charge = discharge = 0.0
        if intent == "charge":
            ceiling = min(spec.soc_max_kwh, target + can_take[i])
            charge = min(spec.max_charge_kw, max(0.0, energy.charge_kw_for(ceiling - soc, h, eta)))
        elif intent == "discharge":
            floor = max(spec.soc_min_kwh, target - can_add[i])
            discharge = min(spec.max_discharge_kw, max(0.0, energy.discharge_kw_for(soc - floor, h, eta)))
        soc = soc_after(soc, charge, discharge, h, eta)
        powers.append((charge, discharge))
    return Dispatch(slots=list(slots), powers=powers, soc_initial_kwh=soc_initial_kwh)
