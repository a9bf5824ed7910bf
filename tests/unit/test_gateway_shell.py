"""The gateway node's wiring on the in-memory bus: what devices and the planner publish is what the HTTP side
knows (specs, batteries, control modes), its own writes do not come back to it, and its counters are its status.

The listener is not started (no port is bound): the routes themselves are tested in test_gateway_app.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatterySpec, BatteryState, ControlMode, Telemetry
from nodes.contract.topics import CONTROL, SPEC, STATE, STATUS, TELEMETRY
from nodes.gateway.config import GatewayConfig
from nodes.gateway.node import GatewayService
from nodes.runtime.http_serve import Listener
from nodes.runtime.memory import MemoryBroker, MemoryBus

NOW = datetime.now(UTC)
SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=200,
                      max_discharge_kw=250)


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus("gateway", MemoryBroker())


@pytest.fixture
async def service(bus: MemoryBus, monkeypatch: pytest.MonkeyPatch) -> GatewayService:
    async def no_listening(self: Listener, *args: object) -> None:
        return None

    monkeypatch.setattr(Listener, "start", no_listening)
    gateway = GatewayService(GatewayConfig(), bus)
    await gateway.setup()
    return gateway


async def test_specs_readings_states_and_control_modes_reach_the_http_side(
    service: GatewayService, bus: MemoryBus
) -> None:
    device, planner = MemoryBus("device", bus.broker), MemoryBus("planner", bus.broker)
    assert not service.fleet.known("b1")
    await device.publish(SPEC, SPEC_B1, battery="b1")
    await device.publish(TELEMETRY, Telemetry(ts=NOW, soc_kwh=500), battery="b2")
    await device.publish(STATE, BatteryState(ts=NOW, mode="idle"), battery="b3")
    mode = ControlMode(mode="manual", set_at=NOW, until=NOW + timedelta(minutes=5), source="gateway")
    await planner.publish(CONTROL, mode, battery="b1")
    await bus.broker.idle()
    assert service.specs.get("b1") == SPEC_B1
    assert all(service.fleet.known(b) for b in ("b1", "b2", "b3"))
    assert service.fleet.control("b1") == mode


async def test_the_gateways_own_writes_do_not_come_back_to_it(service: GatewayService, bus: MemoryBus) -> None:
    await bus.publish(TELEMETRY, Telemetry(ts=NOW, soc_kwh=500, source="gateway"), retain=False, battery="b9")
    await bus.broker.idle()
    assert not service.fleet.known("b9")  # MQTT 5 no-local: a POST /write does not make a battery "seen"
    assert bus.counters["received"] == 0


async def test_the_status_carries_the_http_counters(service: GatewayService, bus: MemoryBus) -> None:
    await bus.publish_status()
    status = bus.broker.retained_message(STATUS, node="gateway")
    assert status is not None
    assert status.counters["awaiting_receipt"] == 0
    assert status.counters["http_connections"] == 0  # the listener's counters are merged in
