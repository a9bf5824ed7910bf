"""What the planner knows about a battery and whether it can plan on it (pure: no I/O, the clock passed in).

* :class:`BatteryInputs`: the latest spec, telemetry (per source), plan, command and autopilot bookkeeping of one
  battery, as the node shell collects them from the bus.
* :func:`horizon`: the unbroken run of the forecast's slots from now on (the current slot trimmed to start now;
  a gap ends it).
* :func:`planned_soc_at` and :func:`drifted`: how far the measured SOC is from the plan (a re-plan when too far).
* :func:`telemetry_problem`: why one battery cannot be planned now (prices: :mod:`nodes.planner.coverage`).
* :func:`next_boundary`: the next slot edge of any plan (the loop re-plans there, receding horizon).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nodes.contract.messages import BatterySpec, Command, ControlModeName, PriceForecast, PriceSlot, Schedule, Telemetry

MIN_SLOT = timedelta(seconds=1)
"""A trimmed current slot shorter than this is left out of the horizon."""
DEFAULT_DRIFT_SHARE = 0.05
"""Without ``BESS_PLANNER_DRIFT_KWH``: a drift of this share of the capacity re-plans (10 kWh without a spec)."""


@dataclass
class BatteryInputs:
    """What the planner knows about one battery."""

    spec: BatterySpec | None = None
    #: why the last spec received was refused (None when the spec is valid or none came)
    spec_problem: str | None = None
    #: the newest reading of the battery's own feed (``source == "device"``)
    device_telemetry: Telemetry | None = None
    #: the newest reading from anywhere else (the gateway's HTTP writes)
    other_telemetry: Telemetry | None = None
    schedule: Schedule | None = None
    last_command: Command | None = None
    #: the control mode the autopilot last acted under (to log pauses and resumptions once)
    mode: ControlModeName | None = None
    #: when the autopilot must look at this battery again (a renewal, the boundary); None: nothing pending
    wake_at: datetime | None = None
    #: when the trusted telemetry turns stale (the autopilot stops then); None: it is stale or absent
    stale_after: datetime | None = None
    #: the autopilot stopped this battery on stale telemetry and waits for a fresh reading
    stale_stopped: bool = False
    #: ... and sent it IDLE to stop the lease it was running
    stale_idle_sent: bool = False
    #: the autopilot's note once the plan ran out (prices ended): set with the one IDLE, cleared by a new setpoint
    plan_end_note: str | None = None


def horizon(forecast: PriceForecast, now: datetime) -> list[PriceSlot]:
    """The unbroken run of the forecast's slots from ``now`` on; the current slot is trimmed to start at ``now``.

    Empty when no slot covers ``now``. A gap ends the run: the planner plans up to it and never across it (the
    optimiser needs contiguous slots, and bridging a hole would mean inventing its prices).
    """
    slots: list[PriceSlot] = []
    cursor: datetime | None = None
    for slot in sorted(forecast.slots, key=lambda s: s.start):
        if slot.end <= now:
            continue
        if (cursor is None and slot.start > now) or (cursor is not None and slot.start != cursor):
            break  # nothing covers now, or a gap (an overlap too: a malformed forecast is not guessed at)
        slots.append(PriceSlot(start=max(slot.start, now), end=slot.end, price_per_mwh=slot.price_per_mwh))
        cursor = slot.end
    # The current slot stays however little of it is left (a second at least): the autopilot follows the slot
    # containing now, and a plan that starts at the next boundary would leave it nothing to follow until then
    # (with 1-minute slots and a re-plan a second after the boundary, that was every slot).
    return [s for s in slots if s.end - s.start >= MIN_SLOT]


def planned_soc_at(schedule: Schedule, now: datetime) -> float | None:
    """The plan's SOC at ``now`` (linear within a slot), or None outside the plan."""
    previous = schedule.soc_initial_kwh
    for slot in schedule.slots:
        if slot.start <= now < slot.end:
            share = (now - slot.start) / (slot.end - slot.start)
            return previous + (slot.soc_kwh - previous) * share
        previous = slot.soc_kwh
    return None


def drifted(schedule: Schedule, telemetry: Telemetry, spec: BatterySpec | None, tolerance_kwh: float | None
            ) -> float | None:
    """The plan's SOC at the reading's time when the reading is further from it than the tolerance, else None.

    ``tolerance_kwh`` None: :data:`DEFAULT_DRIFT_SHARE` of the capacity (10 kWh without a spec).
    """
    planned = planned_soc_at(schedule, telemetry.ts)
    if tolerance_kwh is None:
        tolerance_kwh = DEFAULT_DRIFT_SHARE * spec.capacity_kwh if spec else 10.0
    if planned is not None and abs(planned - telemetry.soc_kwh) > tolerance_kwh:
        return planned
    return None


def telemetry_problem(telemetry: Telemetry | None, now: datetime, max_age_s: float) -> str | None:
    """Why a battery with a spec cannot be planned on its trusted telemetry (None: it can)."""
    if telemetry is None:
        return "not planned: no telemetry received"
    age = (now - telemetry.ts).total_seconds()
    if age > max_age_s:
        return (f"not planned: latest {telemetry.source} telemetry is {age:.0f} s old "
                f"(limit BESS_PLANNER_MAX_TELEMETRY_AGE_S={max_age_s:g})")
    return None


def next_boundary(schedules: Iterable[Schedule | None], now: datetime) -> datetime:
    """The next slot edge after ``now`` of any plan, at the latest the next full hour.

    Slot starts count too: a plan may begin at a later boundary than now (a gap in the prices).
    """
    boundaries = [
        edge
        for schedule in schedules
        if schedule is not None
        for slot in schedule.slots
        for edge in (slot.start, slot.end)
        if edge > now
    ]
    hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return min([*boundaries, hour])


__all__ = [
    "MIN_SLOT",
    "BatteryInputs",
    "drifted",
    "horizon",
    "next_boundary",
    "planned_soc_at",
    "telemetry_problem",
]
