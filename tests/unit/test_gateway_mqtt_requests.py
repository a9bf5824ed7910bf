"""Home Assistant's controls at the gateway, on the in-memory bus: the MQTT request topics go through the code of
``POST /mqtt/publish`` and ``POST /control`` (spec limits, unknown battery, idle lock, command rate, lease), the
Command and ControlMode name ``homeassistant``, and every request's outcome is on the retained result topic."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import Command, ControlMode, ModeRequest, PowerRequest, RequestResult
from nodes.contract.topics import COMMAND, CONTROL, MODE_REQUEST, POWER_REQUEST, REQUEST_RESULT
from nodes.contract.topics import SPEC as SPEC_TOPIC
from nodes.gateway.app import Gateway, create_app
from nodes.gateway.config import GatewayConfig
from nodes.gateway.mqtt_requests import MqttRequests
from nodes.gateway.node import GatewayService
from nodes.gateway.specs import SpecBook
from nodes.runtime.http_serve import Listener
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.unit.test_gateway_app import NOW, SPEC, make_gateway


class Rig:
    """The gateway's bus and Home Assistant's, on one broker; the battery ``limited`` has the spec SPEC."""

    def __init__(self, **settings: Any) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus("gateway", self.broker)
        self.hass = MemoryBus("hass", self.broker)
        specs = SpecBook()
        specs.update("limited", SPEC)
        self.gateway: Gateway = make_gateway(self.bus, specs, known=("battery-1", "limited"), **settings)
        MqttRequests(self.gateway).subscribe()

    async def power(self, battery: str, power_kw: float, **extra: Any) -> RequestResult:
        await self.hass.publish(POWER_REQUEST, PowerRequest(power_kw=power_kw, **extra), battery=battery)
        return await self._result(battery)

    async def mode(self, battery: str, mode: str) -> RequestResult:
        await self.hass.publish(MODE_REQUEST, ModeRequest(mode=mode), battery=battery)  # type: ignore[arg-type]
        return await self._result(battery)

    async def _result(self, battery: str) -> RequestResult:
        await self.broker.idle()
        result = self.broker.retained_message(REQUEST_RESULT, battery=battery)
        assert result is not None
        return result

    def commands(self, battery: str) -> list[Command]:
        return self.bus.sent(COMMAND, battery=battery)

    def controls(self, battery: str) -> list[ControlMode]:
        return self.bus.sent(CONTROL, battery=battery)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_a_positive_setpoint_is_a_discharge_command_from_home_assistant_under_manual_mode(rig: Rig) -> None:
    result = await rig.power("limited", 50.0)
    [command] = rig.commands("limited")
    assert (command.action, command.power_kw, command.source, command.text) == (
        "discharge", 50.0, "homeassistant", "DISCHARGE 50 kW")
    assert command.valid_until == NOW + timedelta(seconds=rig.gateway.settings.command_lease_s)
    [manual] = rig.controls("limited")
    assert (manual.mode, manual.until, manual.source) == ("manual", command.valid_until, "homeassistant")
    assert "homeassistant command" in manual.reason
    assert (result.outcome, result.command_id, result.text, result.mode) == (
        "accepted", command.command_id, "DISCHARGE 50 kW", "manual")
    assert rig.gateway.counters["mqtt_requests_accepted"] == 1


@pytest.mark.parametrize(("power_kw", "action", "text"), [(-120.5, "charge", "CHARGE 120.5 kW"), (0.0, "idle", "IDLE")])
async def test_negative_is_charge_and_zero_is_idle(rig: Rig, power_kw: float, action: str, text: str) -> None:
    await rig.power("limited", power_kw, valid_for_s=60)
    [command] = rig.commands("limited")
    assert (command.action, command.power_kw, command.text) == (action, abs(power_kw), text)
    assert command.valid_until == NOW + timedelta(seconds=60), "the request's own lease"


async def test_a_setpoint_beyond_the_spec_is_refused_with_the_http_error_and_nothing_is_sent(rig: Rig) -> None:
    result = await rig.power("limited", -300.0)
    assert rig.commands("limited") == []
    assert rig.controls("limited") == []
    assert (result.outcome, result.status, result.field) == ("refused", 422, "power_kw")
    assert result.error == "CHARGE 300 kW exceeds limited's max_charge_kw of 200 kW (from its BatterySpec)"
    assert rig.gateway.counters["mqtt_requests_refused"] == 1


async def test_the_refusal_is_the_same_text_as_post_mqtt_publish_gives(rig: Rig) -> None:
    """One implementation: the HTTP route and the MQTT request say the same for the same order."""
    mqtt = await rig.power("limited", 300.0)
    app = create_app(rig.gateway, openapi=b"{}")
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/mqtt/publish", json={"command": "DISCHARGE 300kW", "battery": "limited"})
        body = await response.json()
    assert (response.status, body["error"]) == (mqtt.status, mqtt.error)


async def test_an_unknown_battery_is_refused_there_is_no_force_over_mqtt(rig: Rig) -> None:
    result = await rig.power("gone-1", 10.0)
    assert (result.outcome, result.status) == ("refused", 404)
    assert rig.commands("gone-1") == []


async def test_mode_idle_sends_idle_and_then_locks_out_setpoints_like_post_control(rig: Rig) -> None:
    accepted = await rig.mode("battery-1", "idle")
    [idle] = rig.commands("battery-1")
    [mode] = rig.controls("battery-1")
    assert (idle.action, idle.source) == ("idle", "homeassistant")
    assert (mode.mode, mode.source, mode.until, mode.reason) == ("idle", "homeassistant", None, "homeassistant idle")
    assert (accepted.outcome, accepted.request, accepted.mode) == ("accepted", "mode", "idle")
    refused = await rig.power("battery-1", 20.0)
    assert (refused.outcome, refused.status) == ("refused", 409)
    assert "control mode idle" in refused.error
    assert len(rig.commands("battery-1")) == 1, "the setpoint did not pass the idle lock"
    back = await rig.mode("battery-1", "autopilot")
    assert back.outcome == "accepted"
    assert rig.controls("battery-1")[-1].mode == "autopilot"


async def test_the_command_rate_bound_is_the_gateways_own() -> None:
    rig = Rig(command_burst=2, command_rate_per_min=1.0)
    assert (await rig.power("battery-1", 10.0)).outcome == "accepted"
    assert (await rig.power("battery-1", 11.0)).outcome == "accepted"
    limited = await rig.power("battery-1", 12.0)
    assert (limited.outcome, limited.status, limited.field) == ("refused", 429, "power_kw")
    assert len(rig.commands("battery-1")) == 2
    assert rig.gateway.counters["commands_rate_limited"] == 1


async def test_an_undecodable_request_is_counted_and_dropped_without_a_result(rig: Rig) -> None:
    await rig.hass.publish_bytes(rig.hass.name(POWER_REQUEST, battery="battery-1"), b'{"power_kw": "lots"}')
    await rig.hass.publish_bytes(rig.hass.name(MODE_REQUEST, battery="battery-1"), b'{"mode": "turbo"}')
    await rig.broker.idle()
    assert rig.bus.counters["decode_errors"] == 2
    assert rig.commands("battery-1") == []
    assert rig.broker.retained_message(REQUEST_RESULT, battery="battery-1") is None


async def test_the_gateway_node_subscribes_the_request_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_listening(self: Listener, *args: object) -> None:
        return None

    monkeypatch.setattr(Listener, "start", no_listening)
    broker = MemoryBroker()
    device, hass = MemoryBus("simulator", broker), MemoryBus("hass", broker)
    await device.publish(SPEC_TOPIC, SPEC, battery="battery-1")
    bus = MemoryBus("gateway", broker)
    await GatewayService(GatewayConfig(), bus).setup()
    await broker.idle()
    await hass.publish(POWER_REQUEST, PowerRequest(power_kw=-25.0), battery="battery-1")
    await broker.idle()
    [command] = bus.sent(COMMAND, battery="battery-1")
    assert (command.action, command.power_kw, command.source) == ("charge", 25.0, "homeassistant")


async def test_a_dashboard_request_names_the_dashboard_and_its_result_carries_the_request_id(rig: Rig) -> None:
    """The dashboard's panel publishes the same topics: the gateway's one implementation, its own source and id."""
    result = await rig.power("limited", -40.0, valid_for_s=900, source="dashboard", request_id="r-abc")
    [command] = rig.commands("limited")
    assert (command.action, command.power_kw, command.source) == ("charge", 40.0, "dashboard")
    assert command.valid_until == NOW + timedelta(seconds=900)
    [manual] = rig.controls("limited")
    assert (manual.source, manual.until) == ("dashboard", command.valid_until)
    assert manual.reason.startswith("dashboard command ")
    assert (result.outcome, result.source, result.request_id, result.command_id) == (
        "accepted", "dashboard", "r-abc", command.command_id)


async def test_a_refused_dashboard_request_echoes_its_id_with_the_http_error(rig: Rig) -> None:
    result = await rig.power("limited", 999.0, source="dashboard", request_id="r-big")
    assert (result.outcome, result.status, result.request_id, result.source) == ("refused", 422, "r-big", "dashboard")
    assert rig.commands("limited") == []


async def test_a_dashboard_idle_mode_sends_an_idle_command_from_the_dashboard(rig: Rig) -> None:
    await rig.hass.publish(MODE_REQUEST, ModeRequest(mode="idle", source="dashboard", request_id="r-idle"),
                           battery="battery-1")
    result = await rig._result("battery-1")
    [idle] = rig.commands("battery-1")
    [mode] = rig.controls("battery-1")
    assert (idle.action, idle.source, mode.source, mode.reason) == ("idle", "dashboard", "dashboard", "dashboard idle")
    assert (result.request_id, result.mode) == ("r-idle", "idle")
