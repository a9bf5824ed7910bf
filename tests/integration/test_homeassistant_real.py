"""A real Home Assistant (2024.3.3) pointed at the test broker sees every battery the way the README promises.

Opt-in: it runs when Home Assistant is installed (``deploy/ha-venv`` puts it in ~/.cache/bess/ha-venv, or set
``BESS_HA_HASS=/path/to/bin/hass``) and skips with that reason otherwise. Home Assistant starts headless from a
pre-seeded config directory (:mod:`tests.support.hass`): its MQTT integration on the test broker with the test's
discovery prefix, its recorder on SQLite, whose ``states`` table is what these tests read. Home Assistant acts by
itself through automations triggered over MQTT (no token, no user): the number's ``number.set_value`` is Home
Assistant's own command, sent on the topic and with the template of the discovery config.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nodes.contract.discovery import object_id
from nodes.contract.topics import COMMAND, REVENUE, SPEC, STATE, STATUS, TELEMETRY
from nodes.homeassistant.entities import BATTERY_ENTITIES
from tests.support.hass import HomeAssistant, find_hass
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for

HASS, WHY = find_hass()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(HASS is None, reason=WHY)]

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def entity(battery: str, component: str, key: str) -> str:
    """The entity id Home Assistant makes from our ``object_id``: ``sensor.battery_1_soc_kwh``."""
    return f"{component}.{object_id(battery, key)}"


def known(state: str) -> bool:
    return state not in ("unknown", "unavailable")


@pytest.fixture
def stack(run_node: Any, node_env: dict[str, str], services: Services, battery_id: str) -> dict[str, Any]:
    """Every node of deploy/up on the test broker and database, with the test's own discovery prefix."""
    prefix = f"ha{uuid.uuid4().hex[:8]}"
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "1",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_HA_DISCOVERY_PREFIX": prefix,
        "BESS_STATUS_INTERVAL_S": "2",
        "BESS_RENDERER_DAY_TZ": "UTC",
    }
    nodes: dict[str, NodeProcess] = {
        name: run_node(name, env)
        for name in ("recorder", "simulator", "market", "planner", "gateway", "renderer", "homeassistant")
    }
    return {"env": env, "prefix": prefix, "nodes": nodes}


@pytest.fixture
def home_assistant(stack: dict[str, Any], services: Services, tmp_path: Path) -> Iterator[HomeAssistant]:
    assert HASS is not None

    def publish(topic: str, payload: bytes) -> None:
        with services.mqtt_client() as client:
            client.publish(topic, payload, qos=1)

    ha = HomeAssistant.start(HASS, tmp_path / "ha", mqtt_port=services.mqtt_port, prefix=stack["prefix"],
                             drive=f"{stack['prefix']}-drive", publish=publish)
    yield ha
    code = ha.stop()
    print(f"Home Assistant stopped with {code}")


def test_home_assistant_shows_the_battery_its_controls_command_it_and_a_stopped_planner_is_unavailable(
    stack: dict[str, Any], home_assistant: HomeAssistant, services: Services, topic_root: str, battery_id: str
) -> None:
    ha = home_assistant
    soc = entity(battery_id, "sensor", "soc_kwh")
    state, attributes = ha.wait_for_state(soc, known, timeout=180, what="the SOC sensor with a value")
    first_value_s = time.monotonic() - ha.started_at
    assert (attributes["device_class"], attributes["unit_of_measurement"], attributes["state_class"]) == (
        "energy_storage", "kWh", "measurement")
    assert NUMBER.match(state), state

    # every entity of the battery exists; the values that come from running nodes are numbers
    every = {entity(battery_id, component, key) for component, key in BATTERY_ENTITIES}

    def all_there() -> dict[str, tuple[str, dict[str, Any]]] | None:
        ha.assert_alive()
        states = ha.states()
        return states if every <= set(states) else None

    states = wait_for(all_there, timeout=60, interval=1, what=f"all {len(every)} entities in Home Assistant")
    numeric = ("soc_percent", "power_kw", "planned_power_kw", "price", "expected_revenue")
    for key in numeric:
        entity_id = entity(battery_id, "sensor", key)
        value, _ = ha.wait_for_state(entity_id, lambda s: bool(NUMBER.match(s)), timeout=60)
        print(f"{entity_id} = {value}")
    _, price = ha.states()[entity(battery_id, "sensor", "price")]
    assert price["unit_of_measurement"] == "EUR/MWh"
    assert "device_class" not in price, "a price is not monetary"
    revenue, money = ha.wait_for_state(entity(battery_id, "sensor", "revenue_today"), lambda s: bool(NUMBER.match(s)),
                                       timeout=90, what="today's realised revenue from the renderer")
    assert (money["device_class"], money["state_class"], money["unit_of_measurement"]) == ("monetary", "total", "EUR")
    assert ha.states()[entity(battery_id, "select", "control_mode")][0] == "autopilot"
    number_id = entity(battery_id, "number", "power_setpoint")
    _, number = states[number_id]
    assert (number["device_class"], number["unit_of_measurement"]) == ("power", "kW")  # min/max: not recorded
    assert entity(battery_id, "button", "replan") in states
    print(f"first SOC value {first_value_s:.1f} s after hass started; revenue today {revenue} EUR so far; "
          f"entities: {sorted(e for e in ha.states() if battery_id.replace('-', '_') in e)}")

    # Home Assistant itself sets the number: its MQTT number publishes the command -> gateway -> Command
    set_topic = COMMAND.name(root=topic_root, battery=battery_id)
    with services.mqtt_client() as client:
        client.subscribe(set_topic, qos=1)
        sent_at = time.monotonic()
        ha.drive("number.set_value", number_id, value=40)

        def from_home_assistant() -> dict[str, Any] | None:
            message = client.receive(timeout=1.0)
            command = json.loads(message.payload) if message is not None else None
            return command if command and command["source"] == "homeassistant" else None

        command = wait_for(from_home_assistant, timeout=30, interval=0, what="a Command from Home Assistant")
    print(f"number.set_value -> Command on the set topic in {time.monotonic() - sent_at:.2f} s: {command}")
    assert (command["action"], command["power_kw"], command["text"]) == ("discharge", 40.0, "DISCHARGE 40 kW")
    ha.wait_for_state(entity(battery_id, "select", "control_mode"), lambda s: s == "manual", timeout=30,
                      what="the select showing manual after the setpoint")
    ha.wait_for_state(entity(battery_id, "sensor", "last_request"), lambda s: s == "accepted", timeout=30)

    # the battery now discharges 40 kW (whatever the plan said at this hour, it may have been idle): the renderer's
    # integral since midnight moves, and Home Assistant shows exactly the value the renderer computed
    revenue_topic = REVENUE.name(root=topic_root, battery=battery_id)

    def same_as_the_renderer() -> str | None:
        shown = ha.states()[entity(battery_id, "sensor", "revenue_today")][0]
        published = services.read_retained(revenue_topic).get(revenue_topic)
        value = json.loads(published)["realised_revenue"] if published else None
        return shown if value is not None and value != 0 and shown == str(value) else None

    moved = wait_for(same_as_the_renderer, timeout=90, interval=1, what="a nonzero revenue, as the renderer's")
    print(f"revenue today in Home Assistant after discharging: {moved} EUR")

    # stop the planner: its entities become unavailable (its offline status), the others stay
    stopped_at = time.monotonic()
    assert stack["nodes"]["planner"].stop() == 0
    for key in ("expected_revenue", "planned_action", "planner_status"):
        ha.wait_for_state(entity(battery_id, "sensor", key), lambda s: s == "unavailable", timeout=30)
    ha.wait_for_state(entity(battery_id, "button", "replan"), lambda s: s == "unavailable", timeout=30)
    print(f"planner entities unavailable {time.monotonic() - stopped_at:.1f} s after the planner stopped")
    assert known(ha.states()[soc][0]), "the SOC does not depend on the planner"
    ha.wait_for_state(f"binary_sensor.{object_id('bess', 'planner')}", lambda s: s == "off", timeout=30)
    status = services.read_retained(STATUS.name(root=topic_root, node="planner"))
    assert json.loads(next(iter(status.values())))["state"] == "offline"

    # nothing Home Assistant received was refused by its MQTT integration or its sensor rules
    problems = [line for line in ha.log_text().splitlines()
                if ("homeassistant.components.mqtt" in line or "homeassistant.components.sensor" in line)
                and (" WARNING " in line or " ERROR " in line)]
    assert problems == []


def test_the_soc_sensor_follows_the_telemetry_it_reads(
    stack: dict[str, Any], home_assistant: HomeAssistant, services: Services, topic_root: str, battery_id: str
) -> None:
    """A battery fed by the test itself (no simulator): each reading's SOC becomes Home Assistant's state."""
    ha = home_assistant
    fed = f"{battery_id}-fed"
    spec = {"capacity_kwh": 200, "soc_min_kwh": 10, "soc_max_kwh": 190, "max_charge_kw": 50, "max_discharge_kw": 50}
    with services.mqtt_client() as client:
        client.publish(SPEC.name(root=topic_root, battery=fed), json.dumps(spec), qos=1, retain=True)
    for soc_kwh in (123.4, 56.75, 180.0):
        reading = {"ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "soc_kwh": soc_kwh, "power_kw": -5.0}
        with services.mqtt_client() as client:
            client.publish(TELEMETRY.name(root=topic_root, battery=fed), json.dumps(reading), qos=1, retain=True)
        ha.wait_for_state(entity(fed, "sensor", "soc_kwh"), lambda s, v=soc_kwh: s == str(v), timeout=180,
                          what=f"Home Assistant's SOC {soc_kwh}")
        percent, _ = ha.wait_for_state(entity(fed, "sensor", "soc_percent"), lambda s, v=soc_kwh: s == str(
            round(v / 200 * 100, 1)), timeout=30)
        print(f"{fed}: SOC {soc_kwh} kWh = {percent} % in Home Assistant")
    # a state with a lease, then one without: the lease's end, then the time the battery reported none
    lease_end = entity(fed, "sensor", "lease_end")
    for state, expected, lease in (({"mode": "discharging", "valid_until": "2030-01-01T00:05:00Z"},
                                    "2030-01-01T00:05:00+00:00", True),
                                   ({"mode": "idle"}, "", False)):
        now = datetime.now(UTC).replace(microsecond=0)
        payload = {"ts": now.isoformat().replace("+00:00", "Z"), **state}
        with services.mqtt_client() as client:
            client.publish(STATE.name(root=topic_root, battery=fed), json.dumps(payload), qos=1, retain=True)
        shown = expected or now.isoformat()
        _, attributes = ha.wait_for_state(lease_end, lambda s, e=shown: s == e, timeout=30, what=f"lease end {shown}")
        assert attributes["lease"] is lease
    problems = [line for line in ha.log_text().splitlines()
                if "homeassistant.components.mqtt" in line and (" WARNING " in line or " ERROR " in line)]
    assert problems == [], "no value Home Assistant refuses"
