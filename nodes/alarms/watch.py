"""What the alarms node knows of one battery, and how bus messages become the rules' inputs (pure, no I/O).

The node keeps one :class:`Watch` per battery: the latest reading (by its own timestamp: a back-dated HTTP write
does not replace a newer reading), spec and command, the book of the rules (:mod:`nodes.alarms.state`) and when
it must judge again. The site-wide inputs (node statuses, the price horizon) are shared by every battery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from nodes.alarms.rules import AlarmInputs, AlarmReading, reading_from
from nodes.alarms.state import RuleState
from nodes.contract.messages import BatterySpec, Command, NodeStatus, PriceForecast, Telemetry

NOT_PLANNED = "not planned:"
"""How the planner's status details begin a battery's note when it could not plan it."""


@dataclass
class Watch:
    """One battery as the alarms node last heard of it."""

    reading: AlarmReading | None = None
    spec: BatterySpec | None = None
    command: Command | None = None
    book: dict[str, RuleState] = field(default_factory=dict)
    next_due: datetime | None = None
    since: datetime | None = None
    """When the node began judging this battery (a battery never heard from is stale only a while after)."""

    def take(self, telemetry: Telemetry) -> bool:
        """Keep ``telemetry`` if it is the newest reading; True when it was kept."""
        if self.reading is not None and telemetry.ts < self.reading.ts:
            return False
        self.reading = reading_from(telemetry)
        return True

    def inputs(self, battery: str, nodes: Mapping[str, NodeStatus], prices_until: datetime | None) -> AlarmInputs:
        """The rules' inputs for this battery now."""
        return AlarmInputs(reading=self.reading, spec=self.spec, command=self.command, nodes=dict(nodes),
                           prices_until=prices_until, plan_problem=plan_problem(battery, nodes),
                           watched_since=self.since)


def plan_problem(battery: str, nodes: Mapping[str, NodeStatus]) -> str | None:
    """Why the planner could not plan ``battery``, from the nodes' status details (None: planned, or not said).

    A note about telemetry is left out: no plan for want of fresh telemetry is what the stale telemetry alarm
    says already (one cause, one alarm).
    """
    found = [
        f"{node}: {part.strip()}"
        for node, status in sorted(nodes.items())
        for part in status.details.get(battery, "").split("; ")
        if part.strip().startswith(NOT_PLANNED) and "telemetry" not in part
    ]
    return "; ".join(found) or None


def prices_end(forecast: PriceForecast) -> datetime | None:
    """The end of the forecast's last slot (None: no slots)."""
    return max((slot.end for slot in forecast.slots), default=None)


__all__ = ["NOT_PLANNED", "Watch", "plan_problem", "prices_end"]
