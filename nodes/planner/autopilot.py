"""When the autopilot sends a command, pure (no I/O, the clock passed in).

A real inverter or BMS writes every setpoint it receives (often to flash), so the autopilot sends a Command
only when something changes, and the number of commands per battery is bounded by construction:

* **A setpoint is a run of slots.** :func:`setpoint_at` takes the slot containing ``now`` and the contiguous
  slots after it with the same action and power: one command covers them all (a re-plan that keeps the action
  sends nothing).
* **A lease is the shorter of** ``lease_s`` from now and the run's end plus ``handover_s``
  (:func:`lease_end`). The grace after the run's end is what makes the handover seamless: the next run's
  command is sent at the boundary itself, and the old lease still holds while it travels (a planner that dies at
  the boundary leaves the battery on the old setpoint for at most ``handover_s``).
* **Renewal only when it really extends the lease** (:func:`decide`): when less than the renewal margin is
  left and the lease does not already reach the handover. A lease that reaches the run's end plus the grace is
  never re-sent: the next run's command replaces it at the boundary.

So a run of length ``L`` costs at most ``1 + ceil(L / (lease_s - margin))`` commands, whatever the loop does in
between; :func:`decide` also says when it must be asked again (``wake_at``), which is never sooner than the
next renewal or boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from nodes.contract.messages import Action, Command, Schedule

_POWER_EPS_KW = 1e-6


@dataclass(frozen=True)
class Setpoint:
    """What the battery should do from ``start`` until ``end`` (the end of the run of equal slots)."""

    action: Action
    power_kw: float
    start: datetime
    end: datetime
    plan_id: str


@dataclass(frozen=True)
class Decision:
    """Whether to send now (and why), the lease the command would carry, and when to ask again otherwise."""

    send: bool
    why: str
    valid_until: datetime
    wake_at: datetime


def _slot_setting(charge_kw: float, discharge_kw: float) -> tuple[Action, float]:
    if discharge_kw > _POWER_EPS_KW:
        return "discharge", round(discharge_kw, 3)
    if charge_kw > _POWER_EPS_KW:
        return "charge", round(charge_kw, 3)
    return "idle", 0.0


def setpoint_at(schedule: Schedule, now: datetime) -> Setpoint | None:
    """The run of contiguous slots with the same action and power that contains ``now``, or None."""
    slots = schedule.slots
    for i, slot in enumerate(slots):
        if slot.start <= now < slot.end:
            action, power = _slot_setting(slot.charge_kw, slot.discharge_kw)
            end = slot.end
            for later in slots[i + 1:]:
                if later.start != end or _slot_setting(later.charge_kw, later.discharge_kw) != (action, power):
                    break
                end = later.end
            return Setpoint(action=action, power_kw=power, start=slot.start, end=end, plan_id=schedule.plan_id)
    return None


def renew_margin(lease_s: float) -> timedelta:
    """How long before a lease ends it is renewed: a fifth of the lease, at most 60 s (broker and loop delays)."""
    return timedelta(seconds=min(lease_s / 5, 60.0))


def lease_end(setpoint: Setpoint, now: datetime, lease_s: float, handover_s: float) -> datetime:
    """The lease a command sent at ``now`` carries: ``lease_s`` from now, or the run's end plus the grace."""
    return min(setpoint.end + timedelta(seconds=handover_s), now + timedelta(seconds=lease_s))


def decide(held: Command | None, setpoint: Setpoint, now: datetime, lease_s: float, handover_s: float) -> Decision:
    """Send a command now? ``held`` is the last command this autopilot sent for the battery (None: none yet)."""
    valid_until = lease_end(setpoint, now, lease_s, handover_s)
    if held is None:
        return Decision(True, "no command sent yet", valid_until, now)
    if held.valid_until <= now:
        return Decision(True, "the previous lease ended", valid_until, now)
    if (held.action, held.power_kw) != (setpoint.action, setpoint.power_kw):
        return Decision(True, f"setpoint changed from {held.action} {held.power_kw:g} kW", valid_until, now)
    cover = setpoint.end + timedelta(seconds=handover_s)
    boundary = setpoint.end
    if held.valid_until >= cover:
        # the lease reaches the handover: the next run's command replaces it at the boundary
        return Decision(False, "lease reaches the boundary", held.valid_until, boundary)
    renew_at = held.valid_until - renew_margin(lease_s)
    if now < renew_at:
        return Decision(False, "lease still valid", held.valid_until, min(renew_at, boundary))
    if valid_until > held.valid_until:
        return Decision(True, "lease renewal", valid_until, now)
    # cannot happen with a lease no longer than lease_s, but never ask again at once (that is how storms start)
    return Decision(False, "lease cannot be extended", held.valid_until, min(held.valid_until, boundary))


def command_for(setpoint: Setpoint, decision: Decision, now: datetime, command_id: str) -> Command:
    """The Command for a decision to send."""
    return Command(
        command_id=command_id,
        action=setpoint.action,
        power_kw=setpoint.power_kw,
        issued_at=now,
        valid_until=decision.valid_until,
        source="planner",
        plan_id=setpoint.plan_id,
    )


__all__ = ["Decision", "Setpoint", "command_for", "decide", "lease_end", "renew_margin", "setpoint_at"]
