"""The bridge's wiring on the in-memory bus, with a fake clock: a Victron-format device's values become the
battery's spec, telemetry and state; Commands become the device's writes; the keep-alive, the lease's end, a
refusal, a silent device and the stop all do what the README says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from nodes.bridge.config import BridgeConfig
from nodes.bridge.node import Bridge
from nodes.contract.messages import BatteryState, Command
from nodes.contract.topics import COMMAND, SPEC, STATE, TELEMETRY
from nodes.runtime.config import load
from nodes.runtime.memory import MemoryBroker, MemoryBus

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
PORTAL = "c0619ab1b2c3"
SETPOINT = f"W/{PORTAL}/settings/0/Settings/CGwacs/AcPowerSetPoint"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Rig:
    def __init__(self, **env: str) -> None:
        self.broker = MemoryBroker()
        self.clock = Clock()
        config = load(BridgeConfig, {
            "BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": PORTAL, "BESS_BRIDGE_BATTERY": "home",
            "BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5",
            "BESS_BRIDGE_TELEMETRY_INTERVAL_S": "5", **env})
        self.bridge = Bridge(config, MemoryBus("bridge", self.broker), clock=self.clock)
        self.device = MemoryBus("gx", self.broker)  # the GX: publishes N/..., receives R/... and W/...
        self.planner = MemoryBus("planner", self.broker)

    def device_writes(self) -> list[tuple[str, object]]:
        return [(s.topic, json.loads(s.payload)) for s in self.bridge.bus.published if s.topic.startswith("W/")]

    def keepalives(self) -> list[bytes]:
        return [s.payload for s in self.bridge.bus.published if s.topic == f"R/{PORTAL}/keepalive"]

    def states(self) -> list[BatteryState]:
        return self.bridge.bus.sent(STATE, battery="home")

    async def start(self) -> None:
        await self.bridge.setup()
        await self.bridge.begin(self.clock.now)

    async def report(self, soc_percent: float, power_w: float) -> None:
        for path, value in (("Soc", soc_percent), ("Power", power_w)):
            payload = json.dumps({"value": value}).encode()
            await self.device.publish_bytes(f"N/{PORTAL}/system/0/Dc/Battery/{path}", payload)
        await self.broker.idle()

    async def step(self, seconds: float = 0.0) -> None:
        self.clock.now += timedelta(seconds=seconds)
        await self.bridge.step(self.clock.now)
        await self.broker.idle()

    async def command(self, action: str, power_kw: float, *, lease_s: float = 300, command_id: str = "c-1") -> None:
        await self.planner.publish(COMMAND, Command(
            command_id=command_id, action=action, power_kw=power_kw, issued_at=self.clock.now,  # type: ignore[arg-type]
            valid_until=self.clock.now + timedelta(seconds=lease_s), source="planner"), battery="home")
        await self.broker.idle()


async def test_a_victron_device_appears_as_a_battery_with_spec_telemetry_and_state() -> None:
    rig = Rig()
    await rig.start()
    spec = rig.broker.retained_message(SPEC, battery="home")
    assert spec is not None
    assert (spec.capacity_kwh, spec.max_charge_kw) == (10.0, 5.0)
    assert rig.device_writes() == [(SETPOINT, {"value": 0})]  # the idle write at start
    await rig.step()
    assert rig.keepalives() == [b""]  # dbus-flashmq publishes nothing without it
    assert rig.bridge.bus.sent(TELEMETRY) == []  # nothing heard yet: no telemetry ...
    assert rig.bridge.bus.state == "degraded"
    assert "no message from the device yet" in rig.bridge.bus.reason
    assert rig.states()[-1].mode == "offline"
    await rig.report(62.0, -1500.0)
    await rig.step(5)
    [reading] = rig.bridge.bus.sent(TELEMETRY, battery="home")
    assert (reading.soc_kwh, reading.power_kw, reading.source) == (6.2, 1.5, "device")
    assert rig.broker.retained_message(TELEMETRY, battery="home") == reading  # retained, like a device's feed
    assert rig.bridge.bus.state == "online"
    assert rig.states()[-1].mode == "idle"
    await rig.step(30)
    assert rig.keepalives() == [b"", b""]  # every interval_s


async def test_a_command_reaches_the_device_and_the_lease_end_sends_the_idle_write() -> None:
    rig = Rig()
    await rig.start()
    await rig.report(50.0, 0.0)
    await rig.command("discharge", 3.0, lease_s=60)
    assert rig.device_writes()[-1] == (SETPOINT, {"value": -3000})
    state = rig.states()[-1]
    assert (state.mode, state.command_id) == ("discharging", "c-1")
    await rig.step(59)
    assert rig.device_writes()[-1] == (SETPOINT, {"value": -3000})
    await rig.step(1)
    assert rig.device_writes()[-1] == (SETPOINT, {"value": 0})
    assert rig.states()[-1].mode == "idle"
    assert "without a renewal" in rig.states()[-1].reason
    assert rig.bridge.bus.status().counters["leases_ended"] == 1
    await rig.step(5)
    telemetry = rig.bridge.bus.sent(TELEMETRY, battery="home")
    assert telemetry[0].target_discharge_kw == 3.0
    assert telemetry[-1].target_discharge_kw == 0.0


async def test_a_setpoint_beyond_the_spec_is_refused_and_the_state_says_so() -> None:
    rig = Rig()
    await rig.start()
    await rig.report(50.0, 0.0)
    writes_before = len(rig.device_writes())
    await rig.command("charge", 7.5)
    assert len(rig.device_writes()) == writes_before
    state = rig.states()[-1]
    assert state.limits_hit == ["refused charge beyond the spec"]
    assert "charge 7.5 kW is above max_charge_kw 5" in state.reason
    assert rig.bridge.bus.status().counters["refused"] == 1


async def test_an_unusable_reading_is_counted_and_dropped_and_the_bridge_keeps_going() -> None:
    rig = Rig()
    await rig.start()
    await rig.report(40.0, 0.0)
    await rig.device.publish_bytes(f"N/{PORTAL}/system/0/Dc/Battery/Soc", b'{"value": "full"}')
    await rig.broker.idle()
    await rig.step(5)
    assert rig.bridge.bus.status().counters["invalid_readings"] == 1
    assert rig.bridge.bus.sent(TELEMETRY)[-1].soc_kwh == 4.0  # the last good value


async def test_a_silent_device_degrades_the_bridge_and_stops_its_telemetry() -> None:
    rig = Rig()
    await rig.start()
    await rig.report(40.0, 0.0)
    await rig.step(5)
    published = len(rig.bridge.bus.sent(TELEMETRY))
    await rig.step(121)  # victron: stale after 120 s; the last message was 126 s ago
    assert rig.bridge.bus.state == "degraded"
    assert "no message from the device for 126 s" in rig.bridge.bus.details["home"]
    assert rig.states()[-1].mode == "offline"
    await rig.step(5)
    assert len(rig.bridge.bus.sent(TELEMETRY)) == published  # no stale readings presented as live
    await rig.report(41.0, 0.0)
    await rig.step(5)
    assert rig.bridge.bus.state == "online"
    assert rig.states()[-1].mode == "idle"


async def test_the_stop_sends_the_idle_write_and_waits_for_the_broker() -> None:
    rig = Rig()
    await rig.start()
    await rig.report(50.0, 0.0)
    await rig.command("charge", 2.0)
    await rig.bridge.shutdown()
    last = rig.bridge.bus.published[-2]  # the idle write, then the last state
    assert (last.topic, json.loads(last.payload), last.wait_ack, last.retain) == (SETPOINT, {"value": 0}, True, False)
    assert "bridge stopped" in rig.states()[-1].reason


async def test_a_reconnect_sends_the_first_keepalive_again() -> None:
    rig = Rig(BESS_BRIDGE_PROFILE="victron")
    await rig.start()
    await rig.step()
    assert len(rig.keepalives()) == 1
    rig.bridge.bus.disconnect()  # type: ignore[attr-defined]
    rig.bridge.bus.reconnect()  # type: ignore[attr-defined]
    await rig.step(1)
    assert len(rig.keepalives()) == 2  # not waiting 30 s: the device may have forgotten us
