"""Home Assistant discovery on a real broker, with the real nodes as processes (no Home Assistant: what it would
receive and what its controls' payloads do; tests/integration/test_homeassistant_real.py runs Home Assistant).

Home Assistant's side is played with its own payloads: the select's ``{"mode": ...}``, the number's
``{"power_kw": ...}`` (their command_templates), the button's press payload and its birth ``online``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from nodes.contract.topics import COMMAND, REQUEST_RESULT, SCHEDULE, SPEC, STATUS, TELEMETRY
from nodes.homeassistant.entities import BATTERY_ENTITIES
from tests.integration.test_gateway import start_gateway
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _configs(services: Services, prefix: str, battery: str) -> dict[str, Any]:
    found = services.read_retained(f"{prefix}/+/{battery}/+/config", timeout=3.0)
    return {topic.split("/")[3]: json.loads(payload) for topic, payload in found.items() if payload}


def _retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=2.0).get(topic)
    return json.loads(payload) if payload else None


def _stack(run_node: Any, services: Services, node_env: dict[str, str], battery_id: str) -> tuple[
        dict[str, str], dict[str, NodeProcess]]:
    prefix = f"ha{uuid.uuid4().hex[:8]}"
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_HA_DISCOVERY_PREFIX": prefix,
        "BESS_STATUS_INTERVAL_S": "1",
    }
    nodes = {name: run_node(name, env) for name in ("simulator", "market", "planner", "homeassistant")}
    nodes["gateway"] = start_gateway(run_node, services, env)[0]
    return env, nodes


def test_configs_are_retained_resent_on_home_assistants_birth_and_the_controls_command_the_battery(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    started = time.monotonic()
    env, nodes = _stack(run_node, services, node_env, battery_id)
    prefix = env["BESS_HA_DISCOVERY_PREFIX"]
    every = {key for _, key in BATTERY_ENTITIES}

    def complete() -> dict[str, Any] | None:
        nodes["homeassistant"].assert_alive()
        found = _configs(services, prefix, battery_id)
        return found if set(found) == every else None

    configs = wait_for(complete, timeout=60, what="every discovery config of the battery (after its first plan)")
    print(f"every config of {battery_id} retained {time.monotonic() - started:.1f} s after the nodes started")
    soc = configs["soc_kwh"]
    assert soc["state_topic"] == TELEMETRY.name(root=topic_root, battery=battery_id)
    assert soc["device"]["identifiers"] == [f"bess_{battery_id}"]
    assert (soc["device"]["manufacturer"], soc["device"]["model"]) == ("BESS", "simulated battery"), "from the spec"
    assert configs["power_setpoint"]["max"] == 250.0, "the simulator's spec: 250 kW"
    assert configs["price"]["unit_of_measurement"] == "EUR/MWh"

    # Home Assistant (re)starts: every config arrives again, live (not as a retained replay)
    with services.mqtt_client() as client:
        client.subscribe(f"{prefix}/+/{battery_id}/+/config", qos=1)
        retained = {m.topic for m in client.messages(timeout=1.0) if m.retain}
        assert len(retained) == len(every)
        client.publish(f"{prefix}/status", b"online", qos=1)
        again: set[str] = set()
        deadline = time.monotonic() + 10
        while len(again) < len(every) and time.monotonic() < deadline:
            message = client.receive(timeout=1.0)
            if message is not None and not message.retain:
                again.add(message.topic)
        assert again == retained

    # the number: what Home Assistant sends for 40 (its command_template) -> a Command on the set topic
    request_topic = configs["power_setpoint"]["command_topic"]
    set_topic = COMMAND.name(root=topic_root, battery=battery_id)
    result_topic = REQUEST_RESULT.name(root=topic_root, battery=battery_id)
    with services.mqtt_client() as client:
        client.subscribe(set_topic, qos=1)
        client.publish(request_topic, configs["power_setpoint"]["command_template"].replace("{{ value }}", "40.0"),
                       qos=1)
        commands = [json.loads(m.payload) for m in client.messages(timeout=5.0)]
    command = next(c for c in commands if c["source"] == "homeassistant")
    assert (command["action"], command["power_kw"], command["text"]) == ("discharge", 40.0, "DISCHARGE 40 kW")
    result = wait_for(lambda: _retained(services, result_topic), timeout=5, what="the request's result")
    assert (result["outcome"], result["command_id"]) == ("accepted", command["command_id"])

    # a value beyond the spec: refused with the gateway's reason, no Command
    with services.mqtt_client() as client:
        client.subscribe(set_topic, qos=1)
        client.publish(request_topic, b'{"power_kw": -900}', qos=1)

        def refused() -> Any:
            found = _retained(services, result_topic)
            return found if found and found["outcome"] == "refused" else None

        result = wait_for(refused, timeout=5, what="the refusal on the result topic")
        late = [json.loads(m.payload) for m in client.messages(timeout=0.5)]
    assert (result["status"], result["field"]) == (422, "power_kw")
    assert "max_charge_kw of 250 kW" in result["error"]
    assert not [c for c in late if c["source"] == "homeassistant"], "nothing sent for a refused value"

    # the select: mode idle -> the IDLE command, and the outlook (the select's state) says idle
    with services.mqtt_client() as client:
        client.subscribe(set_topic, qos=1)
        client.publish(configs["control_mode"]["command_topic"], b'{"mode": "idle"}', qos=1)
        idle = [json.loads(m.payload) for m in client.messages(timeout=3.0)]
    assert any(c["action"] == "idle" and c["source"] == "homeassistant" for c in idle)
    outlook = configs["control_mode"]["state_topic"]
    wait_for(lambda: (_retained(services, outlook) or {}).get("control_mode") == "idle", timeout=5,
             what="the outlook saying idle")

    # the button: a new plan
    schedule_topic = SCHEDULE.name(root=topic_root, battery=battery_id)
    def created() -> datetime:
        return datetime.fromisoformat(_retained(services, schedule_topic)["created_at"])

    before = created()
    with services.mqtt_client() as client:
        client.publish(configs["replan"]["command_topic"], configs["replan"]["payload_press"], qos=1)
    wait_for(lambda: created() > before, timeout=10, what="a new plan")


def test_entities_fed_by_a_dead_node_become_unavailable_and_a_cleared_battery_is_removed(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env, nodes = _stack(run_node, services, node_env, battery_id)
    prefix = env["BESS_HA_DISCOVERY_PREFIX"]
    configs = wait_for(lambda: _configs(services, prefix, battery_id).get("expected_revenue") and
                       _configs(services, prefix, battery_id), timeout=60, what="the plan's entities")
    [availability] = configs["expected_revenue"]["availability"]
    planner_status = STATUS.name(root=topic_root, node="planner")
    assert availability["topic"] == planner_status
    assert _retained(services, planner_status)["state"] != "offline"
    nodes["planner"].kill_now()  # no goodbye: the broker publishes the planner's last will
    wait_for(lambda: _retained(services, planner_status)["state"] == "offline", timeout=20,
             what="the planner's last will")
    # what Home Assistant evaluates: the availability template on that payload says offline
    assert availability["value_template"] == "{{ 'offline' if value_json.state == 'offline' else 'online' }}"
    connectivity = services.read_retained(f"{prefix}/binary_sensor/bess/planner/config")
    assert connectivity, "the planner has its connectivity sensor"

    # a battery nobody simulates: its retained spec and telemetry, then both cleared
    gone = f"{battery_id}-x"
    with services.mqtt_client() as client:
        client.publish(SPEC.name(root=topic_root, battery=gone),
                       b'{"capacity_kwh": 10, "soc_min_kwh": 1, "soc_max_kwh": 9, "max_charge_kw": 5, '
                       b'"max_discharge_kw": 5}', qos=1, retain=True)
        client.publish(TELEMETRY.name(root=topic_root, battery=gone),
                       json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "soc_kwh": 5}),
                       qos=1, retain=True)
    wait_for(lambda: "soc_kwh" in _configs(services, prefix, gone), timeout=10, what="the new battery's configs")
    with services.mqtt_client() as client:
        client.publish(SPEC.name(root=topic_root, battery=gone), b"", qos=1, retain=True)
        client.publish(TELEMETRY.name(root=topic_root, battery=gone), b"", qos=1, retain=True)
    wait_for(lambda: not _configs(services, prefix, gone), timeout=10, what="its configs cleared")
    assert _configs(services, prefix, battery_id), "the other battery keeps its entities"


def test_an_alarm_is_a_problem_sensor_that_turns_on_and_off_with_its_retained_topic(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    """A hot cell on a simulated battery: the alarm sensor's config points at the alarm topic the alarms node
    raises and clears, and its availability at the alarms node's status; a disabled rule has no sensor."""
    prefix = f"ha{uuid.uuid4().hex[:8]}"
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_FAULT": json.dumps({battery_id: {"kind": "hot_cell", "at_s": 3, "for_s": 6}}),
        "BESS_ALARMS": json.dumps({"defaults": {"cell_temp_high": {"raise_after_s": 1, "clear_after_s": 1},
                                                "prices_stale": {"enabled": False}}}),
        "BESS_ALARMS_RESTORE_WAIT_S": "0.5",
        "BESS_HA_DISCOVERY_PREFIX": prefix,
    }
    run_node("alarms", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    homeassistant = run_node("homeassistant", env)
    run_node("simulator", env)

    def config() -> Any:
        homeassistant.assert_alive()
        return _configs(services, prefix, battery_id).get("alarm_cell_temp_high")

    sensor = wait_for(config, timeout=30, what="the hot cell alarm's binary sensor config")
    assert "alarm_prices_stale" not in _configs(services, prefix, battery_id), "disabled in BESS_ALARMS"
    assert sensor["device_class"] == "problem"
    assert sensor["state_topic"] == f"{topic_root}/battery/{battery_id}/alarm/cell_temp_high"
    [availability] = sensor["availability"]
    assert availability["topic"] == STATUS.name(root=topic_root, node="alarms")
    assert _retained(services, availability["topic"])["state"] == "online"
    # what Home Assistant evaluates ({{ 'ON' if value_json.state == 'raised' else 'OFF' }}) on the retained payload
    assert sensor["value_template"] == "{{ 'ON' if value_json.state == 'raised' else 'OFF' }}"
    raised = wait_for(lambda: (_retained(services, sensor["state_topic"]) or {}).get("state") == "raised"
                      and _retained(services, sensor["state_topic"]), timeout=30, what="the alarm raised")
    assert raised["severity"] == "critical"
    wait_for(lambda: _retained(services, sensor["state_topic"])["state"] == "cleared", timeout=30,
             what="the alarm cleared when the fault ends")
