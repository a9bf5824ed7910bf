"""The planner's loop on a fake clock: a simulated day in a second, for the command-rate tests and the benchmark.

:func:`simulate` runs :meth:`nodes.planner.node.Planner.step` the way :meth:`~nodes.planner.node.Planner.run`
does, but jumps the clock to the instant each pass asks for (plus a seeded random delay, as a busy machine
would add), feeds the planner a device reading at the planned SOC before every pass, and records every Command
it sends (on a :class:`nodes.runtime.memory.MemoryBus`). :class:`SimResult` answers what the tests ask: commands
per hour, per slot, and every moment the battery held no valid lease.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import BatterySpec, Command, PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import COMMAND
from nodes.planner.config import PlannerConfig
from nodes.planner.inputs import planned_soc_at
from nodes.planner.node import Planner
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBus

SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)
DELIVERY = Delivery(topic="t", retain=False, dup=False)
BATTERY = "battery-1"


class FakeClock:
    """A clock the simulation moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def daily_prices(start: datetime, hours: int, slot_minutes: int) -> PriceForecast:
    """A day-shaped price curve (cheap at night, dear in the evening) in slots of ``slot_minutes``."""
    step = timedelta(minutes=slot_minutes)
    count = hours * 60 // slot_minutes
    return PriceForecast(
        zone="de-lu",
        issued_at=start,
        slots=[
            PriceSlot(
                start=start + i * step,
                end=start + (i + 1) * step,
                price_per_mwh=round(80 + 60 * math.sin(2 * math.pi * (i * slot_minutes / 60) / 24 - 1.0)
                                        + 15 * math.sin(i * 1.7), 2),
            )
            for i in range(count)
        ],
    )


@dataclass
class SimResult:
    """What the planner sent between ``start`` and ``end``."""

    commands: list[Command]
    start: datetime
    end: datetime
    passes: int
    slots: list[PriceSlot]

    def per_hour(self) -> float:
        """Commands per hour for the battery."""
        return len(self.commands) / ((self.end - self.start).total_seconds() / 3600)

    def gaps(self) -> list[tuple[datetime, datetime]]:
        """Every span in ``[first command, end)`` in which the battery held no valid lease."""
        found: list[tuple[datetime, datetime]] = []
        for held, following in zip(self.commands, self.commands[1:], strict=False):
            if held.valid_until < following.issued_at:
                found.append((held.valid_until, following.issued_at))
        if self.commands and self.commands[-1].valid_until < self.end:
            found.append((self.commands[-1].valid_until, self.end))
        return found

    def per_slot(self) -> dict[datetime, int]:
        """Commands issued within each price slot (by slot start)."""
        counts = {slot.start: 0 for slot in self.slots if slot.start < self.end and slot.end > self.start}
        for command in self.commands:
            for slot in self.slots:
                if slot.start <= command.issued_at < slot.end:
                    counts[slot.start] += 1
                    break
        return counts


async def simulate(
    forecast: PriceForecast,
    start: datetime,
    end: datetime,
    *,
    max_delay_s: float = 1.0,
    seed: int = 16,
    max_passes: int = 100_000,
    **config: Any,
) -> SimResult:
    """Run the planner's loop from ``start`` to ``end`` on a fake clock with the autopilot on."""
    clock = FakeClock(start)
    bus = MemoryBus("planner")
    planner = Planner(PlannerConfig(planner_autopilot=True, **config), bus, clock=clock)
    await planner.on_prices({"zone": "de-lu"}, forecast, DELIVERY)
    await planner.on_spec({"battery": BATTERY}, SPEC, DELIVERY)
    soc = 500.0
    delays = random.Random(seed)
    passes = 0
    while clock.now < end:
        passes += 1
        if passes > max_passes:
            raise AssertionError(f"more than {max_passes} loop passes before {end.isoformat()}: the loop spins")
        schedule = planner.batteries[BATTERY].schedule if BATTERY in planner.batteries else None
        planned = planned_soc_at(schedule, clock.now) if schedule is not None else None
        soc = planned if planned is not None else soc
        await planner.on_telemetry({"battery": BATTERY}, Telemetry(ts=clock.now, soc_kwh=soc), DELIVERY)
        wake_at = await planner.step()
        planner.wake.clear()
        clock.now = max(wake_at, clock.now) + timedelta(seconds=delays.uniform(0.0, max_delay_s))
    commands = [c for c in bus.sent(COMMAND) if c.issued_at < end]
    return SimResult(commands=commands, start=start, end=end, passes=passes, slots=forecast.slots)


T_DAY = datetime(2025, 1, 16, 0, 0, tzinfo=UTC)

__all__ = ["T_DAY", "FakeClock", "SimResult", "daily_prices", "simulate"]
