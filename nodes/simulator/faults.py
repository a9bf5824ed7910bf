"""Fault injection for the simulated batteries (``BESS_SIM_FAULT``, JSON; pure: the elapsed time passed in).

For tests and demos of the alarms: a battery of the simulator misbehaves the way a real one can, for a while::

    BESS_SIM_FAULT='{"battery-2": {"kind": "hot_cell", "at_s": 10, "for_s": 60}}'
    BESS_SIM_FAULT='{"b": [{"kind": "stuck_power", "at_s": 5, "for_s": 120, "power_kw": 0},
                           {"kind": "telemetry_gap", "at_s": 300, "for_s": 90}]}'

Kinds:

* ``hot_cell``: the hottest cell reads ``temp_c`` (default 58 °C: above the cell temperature alarm's 55 °C,
  below the simulated BMS's own 60 °C trip);
* ``stuck_power``: the battery ignores its commands and keeps ``power_kw`` (+ discharging; default: the power
  it had when the fault began), still stopping at its SOC limits; its state says why;
* ``telemetry_gap``: the battery goes on working but publishes no telemetry and no state.

``at_s`` counts seconds of real time from when the simulator starts (not scaled by ``BESS_SIM_SPEED``);
``for_s`` omitted means until the simulator stops. Strict like every setting: an unknown kind, field or battery
is an error naming it (``BESS_SIM_FAULT: battery-2[0].kind: ...``), exit 2 at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nodes.contract.messages import Celsius, SignedPowerKw

VARIABLE = "BESS_SIM_FAULT"
FaultKind = Literal["stuck_power", "hot_cell", "telemetry_gap"]
KINDS: tuple[FaultKind, ...] = ("stuck_power", "hot_cell", "telemetry_gap")
DEFAULT_HOT_CELL_C = 58.0
MAX_FAULTS = 100


class Fault(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One fault of one battery."""

    kind: FaultKind
    at_s: Annotated[float, Meta(ge=0.0, le=365 * 86_400.0)] = 0.0
    for_s: Annotated[float, Meta(gt=0.0, le=365 * 86_400.0)] | None = None
    temp_c: Celsius | None = None
    """``hot_cell``: what the hottest cell reads (default :data:`DEFAULT_HOT_CELL_C`)."""
    power_kw: SignedPowerKw | None = None
    """``stuck_power``: the power it is stuck at (default: its power when the fault began)."""

    def problems(self) -> list[str]:
        """Settings that do not belong to this kind (a typo would otherwise be silently ignored)."""
        found = []
        if self.temp_c is not None and self.kind != "hot_cell":
            found.append("temp_c: only for kind hot_cell")
        if self.power_kw is not None and self.kind != "stuck_power":
            found.append("power_kw: only for kind stuck_power")
        return found

    def active(self, elapsed_s: float) -> bool:
        """Is the fault in force ``elapsed_s`` seconds after the simulator started?"""
        return elapsed_s >= self.at_s and (self.for_s is None or elapsed_s < self.at_s + self.for_s)

    @property
    def hot_cell_c(self) -> float:
        """The hottest cell's temperature during a ``hot_cell`` fault."""
        return DEFAULT_HOT_CELL_C if self.temp_c is None else self.temp_c


class FaultError(ValueError):
    """``BESS_SIM_FAULT`` cannot be used; the message names the variable and the field."""


_AT = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$")


def _fault(value: Any, where: str) -> Fault:
    try:
        fault = msgspec.convert(value, Fault)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        reason, path = (match["reason"], match["path"]) if match else (str(exc), "")
        if path == ".kind":
            reason += " (one of " + ", ".join(KINDS) + ")"
        raise FaultError(f"{VARIABLE}: {where}{path}: {reason}") from exc
    for problem in fault.problems():
        raise FaultError(f"{VARIABLE}: {where}.{problem}")
    return fault


class FaultPlan(msgspec.Struct, frozen=True):
    """The faults of every battery, by battery id."""

    faults: dict[str, tuple[Fault, ...]] = msgspec.field(default_factory=dict)

    def active(self, battery: str, elapsed_s: float, kind: FaultKind) -> Fault | None:
        """The fault of ``kind`` in force for ``battery`` now (the first listed, if several overlap)."""
        for fault in self.faults.get(battery, ()):
            if fault.kind == kind and fault.active(elapsed_s):
                return fault
        return None


def parse_faults(text: str | None, batteries: Iterable[str]) -> FaultPlan:
    """``BESS_SIM_FAULT`` into a :class:`FaultPlan` (unset or empty: none); raises :class:`FaultError`."""
    if text is None or not text.strip():
        return FaultPlan()
    try:
        document = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise FaultError(f"{VARIABLE}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise FaultError(f"{VARIABLE}: expected an object of battery id -> fault (or list of faults)")
    known = set(batteries)
    plan: dict[str, tuple[Fault, ...]] = {}
    for battery, value in document.items():
        if battery not in known:
            raise FaultError(f"{VARIABLE}: {battery}: not a simulated battery (BESS_BATTERIES: "
                             f"{', '.join(sorted(known))})")
        items = value if isinstance(value, list) else [value]
        if len(items) > MAX_FAULTS:
            raise FaultError(f"{VARIABLE}: {battery}: at most {MAX_FAULTS} faults")
        listed = isinstance(value, list)
        plan[battery] = tuple(_fault(item, f"{battery}[{i}]" if listed else battery) for i, item in enumerate(items))
    return FaultPlan(plan)


__all__ = ["DEFAULT_HOT_CELL_C", "KINDS", "VARIABLE", "Fault", "FaultError", "FaultKind", "FaultPlan",
           "parse_faults"]
