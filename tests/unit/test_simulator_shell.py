"""The simulator's wiring on the in-memory bus: it obeys a Command at once, reports what it does, publishes its
spec and telemetry, and resumes from its own retained reading of a previous run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatteryState, Command, Telemetry
from nodes.contract.topics import COMMAND, SPEC, STATE, TELEMETRY
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.node import Simulator
from tests.support.waiting import wait_for_async


class Rig:
    def __init__(self, **config: object) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus("simulator", self.broker)
        settings = SimulatorConfig(**{"batteries": ["b1"], "sim_telemetry_interval_s": 0.01, "sim_speed": 3600.0,
                                      "sim_keep_unconfirmed": 0, **config})  # type: ignore[arg-type]
        self.simulator = Simulator(settings, self.bus)
        self.planner = MemoryBus("planner", self.broker)
        self.states: list[BatteryState] = []
        self.readings: list[Telemetry] = []
        self.planner.subscribe(STATE, self._on_state, battery="b1")
        self.planner.subscribe(TELEMETRY, self._on_reading, battery="b1")

    async def _on_state(self, params: dict[str, str], state: BatteryState, delivery: Delivery) -> None:
        self.states.append(state)

    async def _on_reading(self, params: dict[str, str], reading: Telemetry, delivery: Delivery) -> None:
        if not delivery.retain:
            self.readings.append(reading)


def command(action: str, power_kw: float) -> Command:
    now = datetime.now(UTC)
    return Command(command_id="c-1", action=action, power_kw=power_kw, issued_at=now,  # type: ignore[arg-type]
                   valid_until=now + timedelta(minutes=5), source="gateway")


async def test_the_simulator_obeys_a_command_at_once_and_its_soc_follows() -> None:
    rig = Rig()
    await rig.simulator.setup()
    runner = asyncio.create_task(rig.simulator.run())
    try:
        await wait_for_async(lambda: rig.readings, timeout=5, what="the first reading")
        assert rig.broker.retained_message(SPEC, battery="b1") == rig.simulator.config.spec()
        start = rig.readings[-1].soc_kwh
        await rig.planner.publish(COMMAND, command("discharge", 100.0), battery="b1")
        await rig.broker.idle()
        assert (rig.states[-1].mode, rig.states[-1].command_id) == ("discharging", "c-1")  # said at once
        await wait_for_async(lambda: rig.readings[-1].soc_kwh < start - 1, timeout=5,
                             what="the SOC to fall while discharging")
        assert rig.readings[-1].power_kw > 0  # + is discharging
    finally:
        runner.cancel()


async def test_the_simulator_resumes_from_its_own_retained_reading() -> None:
    rig = Rig()
    device_before = MemoryBus("simulator-before", rig.broker)
    await device_before.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=321.0), battery="b1")
    await rig.simulator.setup()
    await rig.broker.idle()
    assert rig.simulator.batteries["b1"].soc_kwh == 321.0
    # a live reading (not a retained replay) does not move the simulated battery
    await device_before.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=900.0), battery="b1")
    await rig.broker.idle()
    assert rig.simulator.batteries["b1"].soc_kwh == 321.0


async def test_a_new_command_takes_over_from_its_arrival_not_from_the_last_tick() -> None:
    """The time since the last tick ran at the old power: the SOC at a change is the integral of what the battery
    reported, so diagnostics and KPIs computed from its telemetry agree with it."""
    rig = Rig(sim_speed=1.0)
    clock = [1000.0]
    rig.simulator.monotonic = lambda: clock[0]
    battery = rig.simulator.batteries["b1"]
    eta = battery.spec.roundtrip_efficiency
    rig.simulator._stepped = {"b1": clock[0]}
    start = battery.soc_kwh
    await rig.simulator.on_command({"battery": "b1"}, command("discharge", 100.0), None)  # type: ignore[arg-type]
    clock[0] += 1800.0  # half an hour at 100 kW, then an idle command arrives before the next tick
    await rig.simulator.on_command({"battery": "b1"}, command("idle", 0.0), None)  # type: ignore[arg-type]
    rig.simulator._advance("b1", datetime.now(UTC))  # the next tick: nothing more at 0 kW
    assert battery.soc_kwh == pytest.approx(start - 50.0 / eta ** 0.5, rel=1e-9)
