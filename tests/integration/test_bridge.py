"""Device bridges on a real broker and database: a Victron-format and a SolarAssistant-format device, simulated in
their own dialects, appear as batteries (retained spec and telemetry, stored in InfluxDB, on the dashboard) and
obey the autopilot through their own write topics; a stopped bridge leaves its device in its idle mode."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from nodes.contract.messages import Command, PriceForecast, PriceSlot
from nodes.contract.topics import COMMAND, PRICES, SPEC, STATE, TELEMETRY
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from tests.support.fake_devices import FakeSolarAssistant, FakeVictronGx
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration
T = TypeVar("T")

SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5",
            "BESS_BRIDGE_TELEMETRY_INTERVAL_S": "1"}


def _retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=1.0).get(topic)
    return json.loads(payload) if payload else None


async def waiting(predicate: Callable[[], T], **kwargs: Any) -> T:
    """:func:`wait_for` in a thread: the fake devices live on this test's event loop and must keep answering."""
    return await asyncio.to_thread(wait_for, predicate, **kwargs)


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


async def test_victron_and_solarassistant_devices_appear_as_batteries_and_obey_the_autopilot(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, influx_db: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    victron_id, sa_id, portal = f"victron-{tag}", f"sa-{tag}", f"c0619a{tag}"
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    gx = FakeVictronGx(settings, portal, soc_percent=60.0)
    sa = FakeSolarAssistant(settings, device=f"total{tag}", inverter=f"inverter{tag}", soc_percent=55.0)
    probe = Bus(f"probe-{tag}", settings, persistent=False)
    commands: dict[str, list[Command]] = {victron_id: [], sa_id: []}

    async def on_command(params: dict[str, str], command: Command, delivery: Delivery) -> None:
        if command.source == "planner":
            commands[params["battery"]].append(command)

    probe.subscribe(COMMAND, on_command)
    await gx.start()
    await sa.start()
    await probe.start()
    try:
        env = {**node_env, "BESS_PLANNER_AUTOPILOT": "true", "BESS_STATUS_INTERVAL_S": "1"}
        run_node("recorder", env)
        renderer = run_node("renderer", env)
        run_node("planner", env)
        victron = run_node("bridge", {**env, **SPEC_ENV, "BESS_NODE_ID": f"bridge-{victron_id}",
                                      "BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": portal,
                                      "BESS_BRIDGE_BATTERY": victron_id})
        run_node("bridge", {**env, **SPEC_ENV, "BESS_NODE_ID": f"bridge-{sa_id}",
                            "BESS_BRIDGE_PROFILE": "solarassistant", "BESS_BRIDGE_DEVICE": sa.device,
                            "BESS_BRIDGE_VARS": f"inverter={sa.inverter}", "BESS_BRIDGE_BATTERY": sa_id})

        # the devices appear as batteries: retained spec and telemetry, the device's own feed
        for battery, soc_kwh in ((victron_id, 6.0), (sa_id, 5.5)):
            spec = await waiting(lambda b=battery: _retained(services, SPEC.name(root=topic_root, battery=b)),
                            timeout=30, what=f"the retained spec of {battery}")
            assert (spec["capacity_kwh"], spec["max_discharge_kw"]) == (10.0, 5.0)
            reading = await waiting(lambda b=battery: _retained(services, TELEMETRY.name(root=topic_root, battery=b)),
                               timeout=30, what=f"the retained telemetry of {battery}")
            decoded = TELEMETRY.decode(json.dumps(reading).encode())  # as the planner reads it
            assert (decoded.soc_kwh, decoded.source) == (soc_kwh, "device")
        assert gx.keepalives[:1] == [b""], "the bridge wakes dbus-flashmq with a keep-alive"

        # prices that make discharging now the plan: dear now, cheap for the next hours
        now = datetime.now(UTC).replace(microsecond=0)
        forecast = PriceForecast(zone="de-lu", issued_at=now, slots=[
            PriceSlot(start=now + timedelta(hours=h), end=now + timedelta(hours=h + 1),
                      price_per_mwh=900.0 if h == 0 else 5.0) for h in range(6)])
        await probe.publish(PRICES, forecast, wait_ack=True, zone="de-lu")

        await wait_for_async(lambda: commands[victron_id] and commands[victron_id][-1].action == "discharge",
                             timeout=60, what="the autopilot's discharge command for the Victron battery")
        power_kw = commands[victron_id][-1].power_kw
        setpoint = f"W/{portal}/settings/0/Settings/CGwacs/AcPowerSetPoint"
        await wait_for_async(lambda: (setpoint, {"value": -round(power_kw * 1000)}) in gx.writes, timeout=15,
                             what=f"the GX's grid setpoint at -{power_kw} kW (export)")

        await wait_for_async(lambda: commands[sa_id] and commands[sa_id][-1].action == "discharge",
                             timeout=60, what="the autopilot's discharge command for the SolarAssistant battery")
        sa_power = commands[sa_id][-1].power_kw
        expected = [(f"solar_assistant/{sa.inverter}/work_mode_priority/set", "Grid first"),
                    (f"solar_assistant/{sa.inverter}/grid_first_discharge_rate/set", str(round(sa_power / 5 * 100)))]
        await wait_for_async(lambda: all(w in sa.writes for w in expected), timeout=15,
                             what="SolarAssistant's grid-first mode at the plan's rate")

        state = await waiting(lambda: (s := _retained(services, STATE.name(root=topic_root, battery=victron_id)))
                         and s.get("command_source") == "planner" and s, timeout=15, what="the bridge's state")
        assert state["mode"] == "discharging"

        # stored like any battery's readings, and on the dashboard
        for battery in (victron_id, sa_id):
            rows = await waiting(lambda b=battery: services.influx_rows(
                influx_db, f"SELECT soc_kwh, source FROM telemetry WHERE battery = '{b}'"), timeout=30,
                what=f"{battery}'s telemetry in InfluxDB")
            assert rows[-1]["source"] == "device"
        dashboard = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
        await asyncio.to_thread(renderer.wait_online, services.mqtt_host, services.mqtt_port, topic_root)

        def listed() -> Any:
            status, body = _get(f"{dashboard}/api/batteries")
            listed = {b["battery"] for b in json.loads(body)["batteries"]} if status == 200 else set()
            return listed if {victron_id, sa_id} <= listed else None

        await waiting(listed, timeout=30, what="both batteries on the dashboard", ignore=(OSError,))
        status, page = await asyncio.to_thread(_get, f"{dashboard}/battery/{victron_id}")
        assert status == 200
        assert victron_id.encode() in page

        # a stopped bridge leaves its device in the device's own mode (ESS self-consumption)
        assert await asyncio.to_thread(victron.stop) == 0  # the fake GX's loop keeps running meanwhile
        assert gx.writes[-1] == (setpoint, {"value": 0})
    finally:
        await probe.stop()
        await sa.stop()
        await gx.stop()
