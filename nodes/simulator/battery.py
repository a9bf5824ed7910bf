"""A simulated battery (pure: no I/O, no clock; time is passed in).

It behaves like a device: it obeys Commands within its limits (clamps power to the spec, stops at the SOC
limits), treats every command as a lease (after ``valid_until`` it goes idle, so a dead controller cannot leave
it discharging), caps every lease at a maximum counted from when it arrived (:class:`LeaseCaps`: a few minutes
for the autopilot, 24 h for operators; a far-future ``valid_until`` is not obeyed for ever) and integrates SOC
with the same efficiency rule the planner uses (:func:`nodes.contract.energy.soc_after_power`: ``sqrt(eta)`` of
the round-trip efficiency each way). With a :class:`~nodes.simulator.cells.PackModel` it reports what a BMS
does (cell voltages and temperatures, health, lifetime counters); fault injection (:mod:`nodes.simulator.faults`)
can leave its power stuck or a cell hot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from nodes.contract import energy
from nodes.contract.leases import AUTOMATIC_SOURCES as AUTOMATIC_SOURCES  # noqa: PLC0414 (re-exported)
from nodes.contract.leases import LeaseCaps as LeaseCaps  # noqa: PLC0414 (re-exported)
from nodes.contract.messages import BatterySpec, BatteryState, Command, Mode, Telemetry
from nodes.simulator.cells import PackModel

_EPS_KWH = 1e-9

@dataclass
class SimBattery:
    """State of one simulated battery."""

    spec: BatterySpec
    soc_kwh: float
    command: Command | None = None
    mode: Mode = "idle"
    power_kw: float = 0.0  # + discharging, - charging (grid side)
    limits_hit: list[str] = field(default_factory=list)
    reason: str = "no command yet"
    caps: LeaseCaps = field(default_factory=LeaseCaps)
    #: what the cap did to the current command's lease (None: it was within the cap)
    lease_note: str | None = None
    #: the BMS of the pack (cell voltages and temperatures, health, counters); None: the device reports none
    pack: PackModel | None = None
    #: fault injection: the power it is stuck at, whatever it is commanded (None: it obeys)
    stuck_kw: float | None = None
    #: fault injection: what the hottest cell reads (None: what the pack model says)
    hot_cell_c: float | None = None

    def __post_init__(self) -> None:
        self.soc_kwh = min(max(self.soc_kwh, self.spec.soc_min_kwh), self.spec.soc_max_kwh)

    # -- commands ---------------------------------------------------------------------------------------------

    def apply(self, command: Command, now: datetime) -> None:
        """Take a new command (the latest one wins); an already expired one is ignored."""
        if command.valid_until <= now:
            self.reason = f"ignored expired command {command.command_id}"
            return
        cap_s, setting = self.caps.cap_s(command.source)
        latest = now + timedelta(seconds=cap_s)
        self.lease_note = None
        if command.valid_until > latest:
            # the device's own clock decides: a lease in 9999 from a dead controller must not hold for ever
            self.lease_note = (f"lease of {command.command_id} capped to {cap_s:g} s ({setting}); asked until "
                               f"{command.valid_until.isoformat()}")
            command = msgspec.structs.replace(command, valid_until=latest)
        self.command = command
        self._settle(now)

    def _settle(self, now: datetime) -> None:
        """Derive mode and power from the current command, the lease and the limits."""
        limits: list[str] = []
        command = self.command
        if command is not None and command.valid_until <= now:
            self.reason = f"lease of {command.command_id} expired at {command.valid_until.isoformat()}"
            self.command = command = None
            self.lease_note = None
        if self.lease_note is not None:
            limits.append(f"lease capped to {self.caps.cap_s(command.source if command else '')[0]:g} s")
        if command is None or command.action == "idle" or command.power_kw <= 0:
            mode: Mode = "idle"
            power = 0.0
            if command is not None:
                self.reason = f"idle by {command.source} command {command.command_id}"
        elif command.action == "charge":
            power = command.power_kw
            if power > self.spec.max_charge_kw:
                limits.append(f"charge power clamped to {self.spec.max_charge_kw:g} kW")
                power = self.spec.max_charge_kw
            if self.soc_kwh >= self.spec.soc_max_kwh - _EPS_KWH:
                limits.append("soc_max reached")
                mode, power = "idle", 0.0
            else:
                mode, power = "charging", -power
            self.reason = f"{command.action} by {command.source} command {command.command_id}"
        else:
            power = command.power_kw
            if power > self.spec.max_discharge_kw:
                limits.append(f"discharge power clamped to {self.spec.max_discharge_kw:g} kW")
                power = self.spec.max_discharge_kw
            if self.soc_kwh <= self.spec.soc_min_kwh + _EPS_KWH:
                limits.append("soc_min reached")
                mode, power = "idle", 0.0
            else:
                mode = "discharging"
            self.reason = f"{command.action} by {command.source} command {command.command_id}"
        if self.lease_note is not None and command is not None:
            self.reason = f"{self.reason}; {self.lease_note}"
        if self.stuck_kw is not None:
            mode, power = self._stuck(limits, command)
        self.mode, self.power_kw, self.limits_hit = mode, power, limits

    def _stuck(self, limits: list[str], command: Command | None) -> tuple[Mode, float]:
        """A stuck inverter: :attr:`stuck_kw` whatever the command, but still stopped by the SOC limits."""
        power = float(self.stuck_kw or 0.0)
        ignoring = f", ignoring {command.action} by {command.source} command {command.command_id}" if command else ""
        self.reason = f"fault: power stuck at {power:g} kW{ignoring}"
        if power > 0 and self.soc_kwh <= self.spec.soc_min_kwh + _EPS_KWH:
            limits.append("soc_min reached")
            return "idle", 0.0
        if power < 0 and self.soc_kwh >= self.spec.soc_max_kwh - _EPS_KWH:
            limits.append("soc_max reached")
            return "idle", 0.0
        return ("discharging" if power > 0 else "charging" if power < 0 else "idle"), power

    # -- physics ----------------------------------------------------------------------------------------------

    def step(self, dt_s: float, now: datetime) -> None:
        """Advance ``dt_s`` seconds at the current power, stopping exactly at an SOC limit, then re-settle."""
        self._settle(now)
        if self.pack is not None:
            self.pack.step(self.power_kw, dt_s)
        if self.power_kw == 0.0 or dt_s <= 0:
            return
        soc = energy.soc_after_power(self.soc_kwh, self.power_kw, dt_s / energy.SECONDS_PER_HOUR,
                                     self.spec.roundtrip_efficiency)
        self.soc_kwh = min(max(soc, self.spec.soc_min_kwh), self.spec.soc_max_kwh)
        self._settle(now)

    # -- reports ----------------------------------------------------------------------------------------------

    def telemetry(self, now: datetime) -> Telemetry:
        """A measurement as the device would publish it."""
        command = self.command
        reading = Telemetry(
            ts=now,
            soc_kwh=round(self.soc_kwh, 6),
            power_kw=round(self.power_kw, 6),
            target_charge_kw=command.power_kw if command and command.action == "charge" else 0.0,
            target_discharge_kw=command.power_kw if command and command.action == "discharge" else 0.0,
            source="device",
        )
        if self.pack is None:
            return reading
        return msgspec.structs.replace(reading, **self.pack.report(self.soc_kwh, self.power_kw, self.hot_cell_c))

    def state(self, now: datetime) -> BatteryState:
        """What the device does now and why."""
        command = self.command
        return BatteryState(
            ts=now,
            mode=self.mode,
            power_kw=round(self.power_kw, 6),
            command_id=command.command_id if command else None,
            command_source=command.source if command else None,
            valid_until=command.valid_until if command else None,
            limits_hit=list(self.limits_hit),
            reason=self.reason,
        )

    def state_key(self) -> tuple[object, ...]:
        """What makes a state change worth publishing (not the SOC, which changes every step)."""
        command_id = self.command.command_id if self.command else None
        return (self.mode, round(self.power_kw, 6), command_id, tuple(self.limits_hit), self.stuck_kw is not None)
