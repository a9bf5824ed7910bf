"""A simulated battery (nodes/simulator/battery.py) cycled between its SOC limits by an operator, on a fast clock:
the known-answer history the diagnostics tests (unit and integration) measure."""

from __future__ import annotations

from datetime import datetime, timedelta

from nodes.contract.messages import Command, Telemetry
from nodes.simulator.battery import SimBattery


def cycle(battery: SimBattery, begin: datetime, until: datetime, step_s: float, *, id_prefix: str = "op-"
          ) -> tuple[list[Telemetry], list[Command]]:
    """Readings every ``step_s`` from ``begin`` up to ``until``: charge at 45 kW, discharge at 40 kW, each
    switched at the SOC limit the battery reports reaching; and the Commands (6-hour leases) that did it."""
    now = begin
    readings: list[Telemetry] = []
    commands: list[Command] = []

    def send(action: str, power_kw: float) -> None:
        command = Command(command_id=f"{id_prefix}{len(commands)}", action=action,  # type: ignore[arg-type]
                          power_kw=power_kw, issued_at=now, valid_until=now + timedelta(hours=6), source="operator")
        commands.append(command)
        battery.apply(command, now)

    send("charge", 45)
    while now < until:
        now += timedelta(seconds=step_s)
        battery.step(step_s, now)
        readings.append(battery.telemetry(now))
        if "soc_max reached" in battery.limits_hit:
            send("discharge", 40)
        elif "soc_min reached" in battery.limits_hit:
            send("charge", 45)
    return readings, commands
