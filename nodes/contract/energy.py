"""The battery's energy rules: one module for everyone who moves energy or counts it (pure, no I/O, no clock).

Why here, next to the wire: a :class:`~nodes.contract.messages.BatterySpec` says ``roundtrip_efficiency: 0.9``,
and that number means nothing without the rule that applies it. The simulated device (:mod:`nodes.simulator.
battery`), the planner (:mod:`nodes.planner.model`, :mod:`nodes.planner.baseline`) and the dashboard's KPIs
(:mod:`nodes.renderer.ledger`, :mod:`nodes.renderer.insights`) must apply the same rule, or a plan the planner
proves feasible runs into a limit on the device, and the dashboard counts energy the planner never planned.

Units are in the names: power in kW (grid side, what a meter at the inverter reads), energy in kWh, time in
seconds or hours as the name says, prices per MWh and money in the currency their message names. A signed
power is + discharging (to the grid), - charging.

The efficiency rule: the round-trip efficiency ``eta`` is split evenly between the two directions, so one kWh
bought and sold again returns ``eta`` kWh::

    charging    soc += sqrt(eta) * c * h        c = grid-side charge power (kW), h = hours
    discharging soc -= d * h / sqrt(eta)        d = grid-side discharge power (kW)

The functions work on floats and, where the arithmetic allows, on numpy arrays alike (the renderer integrates
whole series at once); each keeps one order of operations, so every caller gets bit-identical results.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SECONDS_PER_HOUR = 3600.0
KWH_PER_MWH = 1000.0

#: a float or a float array: the arithmetic below is the same for both
N = TypeVar("N", float, "npt.NDArray[np.float64]")


class Span(Protocol):
    """Anything with a start and an end (a price slot, a schedule slot)."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


class Usable(Protocol):
    """The part of a :class:`~nodes.contract.messages.BatterySpec` that bounds the usable energy."""

    @property
    def soc_min_kwh(self) -> float: ...

    @property
    def soc_max_kwh(self) -> float: ...


# -- time --------------------------------------------------------------------------------------------------


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from ``start`` to ``end``."""
    return (end - start).total_seconds() / SECONDS_PER_HOUR


def slot_hours(slot: Span) -> float:
    """Length of a slot in hours."""
    return hours_between(slot.start, slot.end)


# -- power, energy, money ----------------------------------------------------------------------------------


def energy_kwh(power_kw: N, seconds: N | float) -> N:
    """Energy of a power held for ``seconds`` (signed like the power)."""
    return power_kw * seconds / SECONDS_PER_HOUR


def power_from_soc_kw(soc_change_kwh: N, seconds: N | float) -> N:
    """The power an SOC change over ``seconds`` stands for, + discharging (the SOC fell).

    It is the net energy the cells gained or lost: the conversion loss is not visible in it.
    """
    return -soc_change_kwh / (seconds / SECONDS_PER_HOUR)


def value_at(energy: N, price_per_mwh: N | float) -> N:
    """What ``energy`` kWh is worth at ``price_per_mwh`` (kWh x price/MWh / 1000, in the price's currency)."""
    return energy * price_per_mwh / KWH_PER_MWH


# -- the efficiency rule -----------------------------------------------------------------------------------


def one_way(efficiency: float) -> float:
    """The efficiency of one direction: ``sqrt(roundtrip_efficiency)``."""
    return math.sqrt(efficiency)


def stored_kwh(grid_kwh: float, efficiency: float) -> float:
    """Energy that reaches the cells when ``grid_kwh`` is charged from the grid."""
    return one_way(efficiency) * grid_kwh


def drawn_kwh(grid_kwh: float, efficiency: float) -> float:
    """Energy that leaves the cells when ``grid_kwh`` is discharged to the grid."""
    return grid_kwh / one_way(efficiency)


def soc_after(soc_kwh: float, charge_kw: float, discharge_kw: float, hours: float, efficiency: float) -> float:
    """SOC at the end of ``hours`` at the given grid-side powers: ``soc + sqrt(eta)*c*h - d*h/sqrt(eta)``."""
    root = one_way(efficiency)
    return soc_kwh + root * charge_kw * hours - discharge_kw * hours / root


def soc_after_power(soc_kwh: float, power_kw: float, hours: float, efficiency: float) -> float:
    """:func:`soc_after` for one signed power (+ discharging, - charging), as a device reports it."""
    if power_kw < 0:
        return soc_after(soc_kwh, -power_kw, 0.0, hours, efficiency)
    return soc_after(soc_kwh, 0.0, power_kw, hours, efficiency)


def charge_kw_for(soc_gain_kwh: float, hours: float, efficiency: float) -> float:
    """The grid-side charge power that raises the SOC by ``soc_gain_kwh`` in ``hours`` (the rule inverted)."""
    return soc_gain_kwh / (one_way(efficiency) * hours)


def discharge_kw_for(soc_drop_kwh: float, hours: float, efficiency: float) -> float:
    """The grid-side discharge power that lowers the SOC by ``soc_drop_kwh`` in ``hours`` (the rule inverted)."""
    return soc_drop_kwh * one_way(efficiency) / hours


def usable_kwh(spec: Usable) -> float:
    """The usable energy range of a battery: ``soc_max - soc_min``."""
    return spec.soc_max_kwh - spec.soc_min_kwh


def full_cycles(energy_out_kwh: float, spec: Usable) -> float | None:
    """Full cycles that ``energy_out_kwh`` makes of the usable range; None when the range is empty.

    Which energy is the caller's to say: the planner counts what leaves the cells (:func:`drawn_kwh`), the
    dashboard what a meter saw leave the battery.
    """
    usable = usable_kwh(spec)
    return energy_out_kwh / usable if usable > 0 else None


__all__ = [
    "KWH_PER_MWH",
    "SECONDS_PER_HOUR",
    "Span",
    "charge_kw_for",
    "discharge_kw_for",
    "drawn_kwh",
    "energy_kwh",
    "full_cycles",
    "hours_between",
    "one_way",
    "power_from_soc_kw",
    "slot_hours",
    "soc_after",
    "soc_after_power",
    "stored_kwh",
    "usable_kwh",
    "value_at",
]
