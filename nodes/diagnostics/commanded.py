"""What a command asks of a battery, and when a battery may refuse it: one rule for tracking and alarms (pure).

Why one module: command tracking (:mod:`nodes.diagnostics.tracking`) and the ``command_not_followed`` alarm
(:mod:`nodes.alarms.rules`) must judge a battery by the same rule, or the panel says it follows while the banner
says it does not. The rule is the device's own (:mod:`nodes.simulator.battery`): the power is clamped to the
spec's limits, and a battery at the SOC limit a command drives towards (a charge at ``soc_max``) refuses it.
Signs are telemetry's: + discharging, - charging.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from nodes.contract import energy
from nodes.contract.messages import BatterySpec

SOC_LIMIT_MARGIN_PCT = 0.5
"""Within this percentage of the usable range of a limit, a battery counts as at the limit."""
TOLERANCE_PCT = 5.0
"""Default tolerance of "follows the command": this percentage of the spec's larger power limit."""

A = TypeVar("A", float, "npt.NDArray[np.float64]")


class CommandLike(Protocol):
    """What judging a command needs of it; :class:`~nodes.contract.messages.Command` is one."""

    @property
    def action(self) -> str: ...

    @property
    def power_kw(self) -> float: ...

    @property
    def issued_at(self) -> datetime: ...

    @property
    def valid_until(self) -> datetime: ...


def signed_power_kw(command: CommandLike) -> float:
    """The power a command asks for, signed like telemetry: + discharging, - charging, 0 idle."""
    if command.action == "charge":
        return -command.power_kw
    if command.action == "discharge":
        return command.power_kw
    return 0.0


def expected_power_kw(commanded_kw: A, spec: BatterySpec) -> A:
    """The commanded (signed) power clamped to the spec's power limits, as the device clamps it."""
    if isinstance(commanded_kw, float):
        return min(max(commanded_kw, -spec.max_charge_kw), spec.max_discharge_kw)
    clipped: npt.NDArray[np.float64] = np.clip(commanded_kw, -spec.max_charge_kw, spec.max_discharge_kw)
    return clipped


def at_soc_limit(expected_kw: A, soc_kwh: A, spec: BatterySpec,
                 margin_pct: float = SOC_LIMIT_MARGIN_PCT) -> npt.NDArray[np.bool_]:
    """Is the battery at the SOC limit the expected power drives towards (so it may refuse)?"""
    margin = margin_pct / 100.0 * energy.usable_kwh(spec)
    expected, soc = np.asarray(expected_kw), np.asarray(soc_kwh)
    limited: npt.NDArray[np.bool_] = ((expected < 0) & (soc >= spec.soc_max_kwh - margin)) | (
        (expected > 0) & (soc <= spec.soc_min_kwh + margin))
    return limited


def tolerance_kw(spec: BatterySpec, tolerance_pct: float = TOLERANCE_PCT) -> float:
    """Power within this of the expected one follows the command."""
    return tolerance_pct / 100.0 * max(spec.max_charge_kw, spec.max_discharge_kw)


__all__ = [
    "SOC_LIMIT_MARGIN_PCT",
    "TOLERANCE_PCT",
    "CommandLike",
    "at_soc_limit",
    "expected_power_kw",
    "signed_power_kw",
    "tolerance_kw",
]
