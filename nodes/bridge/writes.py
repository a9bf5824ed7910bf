"""From this project's Commands to a device's own write messages, with the lease rules (pure: the clock passed in).

A Command is a lease (:mod:`nodes.contract.leases`): the bridge carries it out until its ``valid_until`` (capped
from the moment it arrived: ``BESS_MAX_LEASE_S`` for the autopilot, ``BESS_MAX_OPERATOR_LEASE_S`` for everyone
else) and then sends the device's ``idle`` write, its own safe mode (self-consumption on Victron ESS and on the
Growatt inverters of SolarAssistant). The same write goes out when the bridge starts (it does not know what the
device was last told) and when it stops. Most devices do not lease a setpoint themselves: a bridge that dies
without stopping leaves the last write in force (the README says so per profile).

A setpoint beyond the spec is refused, not clamped: a charge above ``max_charge_kw`` or a discharge above
``max_discharge_kw`` sends nothing, is counted (``refused``) and shows in the battery's state (``limits_hit``,
``reason``); the device keeps carrying out the command it had.

Writes are sent when they change, not on every lease renewal: settings such as SolarAssistant's are stored in
the inverter's flash memory, and the autopilot renews its lease every few minutes. A profile whose device wants
its setpoint repeated says ``writes.refresh_s``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from nodes.bridge.profile import Action, BoundProfile, WriteStep
from nodes.contract.leases import LeaseCaps
from nodes.contract.messages import BatterySpec, BatteryState, Command, Mode

#: Below this a setpoint counts as zero, and a power equal to the maximum plus this is still within it.
EPS_KW = 1e-9


@dataclass(frozen=True)
class DeviceWrite:
    """One message to the device: its topic and payload (never retained: a stale write must not be replayed)."""

    topic: str
    payload: bytes


def command_action(command: Command | None) -> Action:
    """What a command asks the device to do (none, or a zero power: idle)."""
    if command is None or command.action == "idle" or command.power_kw <= EPS_KW:
        return "idle"
    return command.action


def refusal(command: Command, spec: BatterySpec) -> str | None:
    """Why a command is beyond the spec (None: within it)."""
    if command.action == "charge" and command.power_kw > spec.max_charge_kw + EPS_KW:
        return f"charge {command.power_kw:g} kW is above max_charge_kw {spec.max_charge_kw:g}"
    if command.action == "discharge" and command.power_kw > spec.max_discharge_kw + EPS_KW:
        return f"discharge {command.power_kw:g} kW is above max_discharge_kw {spec.max_discharge_kw:g}"
    return None


def setpoint_value(step: WriteStep, action: Action, power_kw: float, spec: BatterySpec) -> int | float:
    """The number a setpoint step sends for ``action`` at ``power_kw`` (within the spec, checked before)."""
    if step.setpoint == "percent":
        maximum = spec.max_charge_kw if action == "charge" else spec.max_discharge_kw
        return round(min(max(power_kw / maximum * 100.0, 0.0), 100.0)) if maximum > 0 else 0
    sign = 1 if step.positive is None or step.positive == action else -1
    if step.setpoint == "W":
        return sign * round(power_kw * 1000.0)
    return sign * round(power_kw, 3)


def _nest(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            node = target[part] = {}
        target = node
    target[parts[-1]] = value


def _scalar(value: Any) -> bytes:
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def device_writes(bound: BoundProfile, action: Action, power_kw: float, spec: BatterySpec) -> list[DeviceWrite]:
    """The messages that make the device do ``action`` at ``power_kw``, in the profile's order."""
    profile = bound.profile
    values: list[tuple[WriteStep, Any]] = []
    for step in profile.writes.steps(action):
        value = step.value if step.setpoint is None else setpoint_value(step, action, power_kw, spec)
        values.append((step, value))
    if profile.encoding == "json":
        objects: dict[str, dict[str, Any]] = {}
        for step, value in values:
            _nest(objects.setdefault(bound.topic(step.topic), {}), step.path, value)
        return [DeviceWrite(topic, json.dumps(obj, separators=(",", ":")).encode()) for topic, obj in objects.items()]
    if profile.encoding == "value_json":
        return [DeviceWrite(bound.topic(step.topic), json.dumps({"value": value}).encode()) for step, value in values]
    return [DeviceWrite(bound.topic(step.topic), _scalar(value)) for step, value in values]


@dataclass
class Controller:
    """The command one device carries out, its lease, and what to write to it."""

    bound: BoundProfile
    spec: BatterySpec
    caps: LeaseCaps = field(default_factory=LeaseCaps)
    command: Command | None = None
    reason: str = "no command yet"
    limits: list[str] = field(default_factory=list)
    refused: int = 0
    leases_ended: int = 0
    #: the last payload written per topic (what the device was told; only changes are written)
    _sent: dict[str, bytes] = field(default_factory=dict)
    _last_write_at: datetime | None = None
    _resend: bool = False

    @property
    def action(self) -> Action:
        """What the device is being told to do."""
        return command_action(self.command)

    def target(self) -> tuple[float, float]:
        """``(charge_kw, discharge_kw)`` of the command carried out (for Telemetry's targets)."""
        action, power = self.action, self.command.power_kw if self.command else 0.0
        return (power if action == "charge" else 0.0, power if action == "discharge" else 0.0)

    def desired(self) -> list[DeviceWrite]:
        """Every write that puts the device into the current command's state."""
        return device_writes(self.bound, self.action, self.command.power_kw if self.command else 0.0, self.spec)

    def _changes(self, writes: list[DeviceWrite], now: datetime, *, whole: bool = False) -> list[DeviceWrite]:
        out = [w for w in writes if whole or self._resend or self._sent.get(w.topic) != w.payload]
        for write in out:
            self._sent[write.topic] = write.payload
        if out:
            self._last_write_at = now
        self._resend = False
        return out

    def not_sent(self) -> None:
        """The last writes did not reach the broker: forget what the device was told; the next tick re-sends."""
        self._sent.clear()
        self._resend = True

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, now: datetime) -> list[DeviceWrite]:
        """At start: the idle write, whole (the bridge does not know what the device was last told)."""
        self.command, self.reason = None, "bridge started: idle (the device's own mode) until a command"
        return self._changes(self.desired(), now, whole=True)

    def stop(self, now: datetime) -> list[DeviceWrite]:
        """At stop: the idle write, whole, so no setpoint outlives the bridge."""
        self.command, self.reason = None, "bridge stopped: idle (the device's own mode)"
        return self._changes(self.desired(), now, whole=True)

    # -- commands -------------------------------------------------------------------------------------------

    def apply(self, command: Command, now: datetime) -> list[DeviceWrite]:
        """Take a new command (the latest wins): the writes it needs, or none when refused or expired."""
        if command.valid_until <= now:
            self.reason = f"ignored expired command {command.command_id} from {command.source}"
            return []
        problem = refusal(command, self.spec)
        if problem is not None:
            self.refused += 1
            self.limits = [f"refused {command.action} beyond the spec"[:64]]
            still = f"; still following {self.command.command_id}" if self.command else ""
            self.reason = f"refused {command.command_id} from {command.source}: {problem}{still}"
            return []
        self.limits = []
        cap_s, setting = self.caps.cap_s(command.source)
        latest = now + timedelta(seconds=cap_s)
        note = ""
        if command.valid_until > latest:
            note = f"; lease capped to {cap_s:g} s ({setting})"
            self.limits = [f"lease capped to {cap_s:g} s"]
            command = msgspec.structs.replace(command, valid_until=latest)
        self.command = command
        self.reason = f"{command.action} {command.power_kw:g} kW by {command.source} command {command.command_id}{note}"
        return self._changes(self.desired(), now)

    def tick(self, now: datetime) -> list[DeviceWrite]:
        """Time passes: the idle write when the lease ended, re-sends when due (refresh, or after a failure)."""
        command = self.command
        if command is not None and command.valid_until <= now:
            self.leases_ended += 1
            self.command, self.limits = None, []
            self.reason = (f"lease of {command.command_id} ({command.source}) ended at "
                           f"{command.valid_until.isoformat()} without a renewal: idle (the device's own mode)")
            return self._changes(self.desired(), now)
        refresh = self.bound.profile.writes.refresh_s
        due = refresh is not None and self._last_write_at is not None and (
            now - self._last_write_at >= timedelta(seconds=refresh))
        if self._resend or due:
            return self._changes(self.desired(), now, whole=True)
        return []

    # -- reports --------------------------------------------------------------------------------------------

    def state(self, now: datetime, *, live: bool, measured_kw: float | None, offline_reason: str = "") -> BatteryState:
        """What the device does now and why (``offline`` while it is silent)."""
        modes: dict[Action, Mode] = {"charge": "charging", "discharge": "discharging", "idle": "idle"}
        command = self.command
        return BatteryState(
            ts=now,
            mode=modes[self.action] if live else "offline",
            power_kw=round(measured_kw, 6) if live and measured_kw is not None else 0.0,
            command_id=command.command_id if command else None,
            command_source=command.source if command else None,
            valid_until=command.valid_until if command else None,
            limits_hit=list(self.limits),
            reason=(self.reason if live else f"{offline_reason}; {self.reason}")[:500],
        )


__all__ = ["EPS_KW", "Controller", "DeviceWrite", "command_action", "device_writes", "refusal", "setpoint_value"]
