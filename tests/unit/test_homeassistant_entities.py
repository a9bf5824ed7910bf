"""The discovery payload builders (pure): every config follows Home Assistant's rules, ids are stable, a battery's
entities share one device, and each entity is unavailable exactly while a node feeding it is offline.

The rules below were read in Home Assistant 2024.3.3's source (``homeassistant/components/mqtt/{mixins,config,
sensor,binary_sensor,number,select,button}.py`` and ``homeassistant/components/sensor/const.py``); the opt-in
tests/integration/test_homeassistant_real.py checks the same configs with Home Assistant's own schemas and a
running Home Assistant.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from nodes.contract.discovery import HA_CONFIG
from nodes.contract.messages import BatterySpec
from nodes.homeassistant.discovery import Wiring
from nodes.homeassistant.entities import BATTERY_ENTITIES, BatteryFacts, EntityConfig, battery_entities, node_entity

SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=200, max_discharge_kw=250,
                   manufacturer="ACME", model="BX-1")
WIRING = Wiring(root="bess/v1", prefix="homeassistant", device_node="simulator",
                dashboard_url="http://bess.local:8050", version="0.1.0")
FULL = BatteryFacts(spec=SPEC, plan_currency="EUR", price_currency="EUR")

# MQTT_ENTITY_COMMON_SCHEMA + MQTT_AVAILABILITY_SCHEMA + MQTT_BASE_SCHEMA (qos, encoding)
COMMON = {"name", "unique_id", "object_id", "device", "origin", "availability", "availability_mode",
          "availability_topic", "availability_template", "payload_available", "payload_not_available",
          "entity_category", "icon", "enabled_by_default", "json_attributes_topic", "json_attributes_template", "qos",
          "encoding"}
ALLOWED: dict[str, set[str]] = {
    "sensor": COMMON | {"state_topic", "value_template", "device_class", "state_class", "unit_of_measurement",
                        "suggested_display_precision", "last_reset_value_template", "expire_after", "force_update"},
    "binary_sensor": COMMON | {"state_topic", "value_template", "device_class", "expire_after", "force_update",
                               "off_delay", "payload_on", "payload_off"},
    "number": COMMON | {"command_topic", "command_template", "state_topic", "value_template", "optimistic", "retain",
                        "device_class", "min", "max", "step", "mode", "payload_reset", "unit_of_measurement"},
    "select": COMMON | {"command_topic", "command_template", "state_topic", "value_template", "optimistic", "retain",
                        "options"},
    "button": COMMON | {"command_topic", "command_template", "device_class", "payload_press", "retain"},
}
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "number": {"command_topic"},
            "select": {"command_topic", "options"}, "button": {"command_topic"}}
# DEVICE_CLASS_UNITS and DEVICE_CLASS_STATE_CLASSES of the classes used here
UNITS = {"energy_storage": {"Wh", "kWh", "MWh", "GJ", "MJ"}, "battery": {"%"}, "power": {"W", "kW"},
         "timestamp": {None}}
STATE_CLASSES = {"energy_storage": {"measurement"}, "battery": {"measurement"}, "power": {"measurement"},
                 "monetary": {"total"}, "timestamp": {None}}
ISO_4217 = {"EUR", "AUD", "USD", "GBP", "SEK", "NOK", "DKK", "PLN", "CHF"}


def wire(entity: EntityConfig) -> dict[str, Any]:
    """The config as Home Assistant receives it."""
    decoded: dict[str, Any] = msgspec.json.decode(HA_CONFIG.encode(entity.config))
    return decoded


def check_home_assistant_rules(entity: EntityConfig) -> None:
    config = wire(entity)
    assert set(config) <= ALLOWED[entity.component], set(config) - ALLOWED[entity.component]
    assert REQUIRED[entity.component] <= set(config)
    assert config["origin"]["name"] == "bess"
    device = config["device"]
    assert device["identifiers"], "a device needs an identifier"
    assert device["configuration_url"].startswith(("http://", "https://"))
    klass, unit, state_class = config.get("device_class"), config.get("unit_of_measurement"), config.get("state_class")
    if entity.component == "sensor":
        if klass in UNITS:
            assert unit in UNITS[klass], f"{entity.key}: {klass} in {unit}"
        if klass in STATE_CLASSES:
            assert state_class in STATE_CLASSES[klass], f"{entity.key}: {klass} with {state_class}"
        if klass == "monetary":
            assert unit in ISO_4217, entity.key
            assert state_class == "total", entity.key
        if unit is not None and unit.endswith("/MWh"):
            assert klass is None, "a price is a rate, not an amount of money"
        if state_class is not None:
            assert unit is not None, f"{entity.key}: a numeric sensor names its unit"
    if entity.component == "number":
        assert config["min"] < config["max"]
    for entry in config.get("availability", []):
        assert entry["topic"].startswith("bess/v1/node/")
        assert entry["topic"].endswith("/status")
    if len(config.get("availability", [])) > 1:
        assert config["availability_mode"] == "all"


def test_every_config_of_a_battery_follows_home_assistants_rules() -> None:
    entities = battery_entities("battery-1", FULL, WIRING)
    assert [(e.component, e.key) for e in entities] == list(BATTERY_ENTITIES), "every entity, in the table's order"
    for entity in (*entities, node_entity("planner", WIRING)):
        check_home_assistant_rules(entity)


def test_the_named_classes_and_units() -> None:
    by_key = {e.key: wire(e) for e in battery_entities("battery-1", FULL, WIRING)}
    assert {k: by_key["soc_kwh"][k] for k in ("device_class", "unit_of_measurement", "state_class")} == {
        "device_class": "energy_storage", "unit_of_measurement": "kWh", "state_class": "measurement"}
    assert (by_key["soc_percent"]["device_class"], by_key["soc_percent"]["unit_of_measurement"]) == ("battery", "%")
    assert (by_key["power_kw"]["device_class"], by_key["power_kw"]["unit_of_measurement"]) == ("power", "kW")
    assert by_key["price"]["unit_of_measurement"] == "EUR/MWh"
    for key in ("expected_revenue", "revenue_today"):
        assert (by_key[key]["device_class"], by_key[key]["state_class"], by_key[key]["unit_of_measurement"]) == (
            "monetary", "total", "EUR")
    assert by_key["revenue_today"]["last_reset_value_template"] == "{{ value_json.day_start }}"
    assert by_key["lease_end"]["device_class"] == "timestamp"
    # Home Assistant logs a warning for each value of a timestamp sensor that is no time: never "None"
    assert by_key["lease_end"]["value_template"] == (
        "{{ value_json.valid_until if value_json.valid_until is defined else value_json.ts }}")
    assert by_key["control_mode"]["options"] == ["autopilot", "manual", "idle"]
    setpoint = by_key["power_setpoint"]
    assert (setpoint["min"], setpoint["max"], setpoint["unit_of_measurement"]) == (-200.0, 250.0, "kW"), "from the spec"
    assert setpoint["command_template"] == '{"power_kw": {{ value }}}'
    assert by_key["soc_percent"]["value_template"] == "{{ (value_json.soc_kwh / 1000.0 * 100) | round(1) }}"


def test_values_come_from_the_existing_topics_and_only_now_values_from_the_derived_ones() -> None:
    state_topics = {e.key: wire(e).get("state_topic") for e in battery_entities("battery-1", FULL, WIRING)}
    b = "bess/v1/battery/battery-1"
    assert {k: v for k, v in state_topics.items() if v == f"{b}/telemetry"}.keys() == {
        "soc_kwh", "soc_percent", "power_kw"}
    assert {k for k, v in state_topics.items() if v == f"{b}/state"} == {"mode", "lease_end", "power_setpoint"}
    assert state_topics["expected_revenue"] == f"{b}/schedule"
    assert state_topics["revenue_today"] == f"{b}/revenue"
    assert state_topics["planner_status"] == "bess/v1/node/planner/status"
    assert {k for k, v in state_topics.items() if v == f"{b}/outlook"} == {
        "planned_action", "planned_power_kw", "next_action", "next_power_kw", "price", "control_mode"}


def test_each_entity_is_unavailable_while_a_node_feeding_it_is_offline() -> None:
    feeds = {e.key: [a["topic"].split("/")[3] for a in wire(e).get("availability", [])]
             for e in battery_entities("battery-1", FULL, WIRING)}
    assert feeds["soc_kwh"] == feeds["mode"] == feeds["lease_end"] == ["simulator"]
    assert feeds["planned_action"] == feeds["next_power_kw"] == ["homeassistant", "planner"]
    assert feeds["expected_revenue"] == feeds["planner_status"] == feeds["replan"] == ["planner"]
    assert feeds["revenue_today"] == ["renderer"]
    assert feeds["power_setpoint"] == feeds["last_request"] == ["gateway"]
    assert feeds["control_mode"] == ["gateway", "homeassistant"]
    assert feeds["price"] == ["homeassistant"]
    assert "availability" not in wire(node_entity("planner", WIRING)), "a connectivity sensor shows offline itself"
    real_device = Wiring(root="bess/v1", prefix="homeassistant", device_node=None, dashboard_url="http://x",
                         version="0.1.0")
    [soc] = [e for e in battery_entities("b", FULL, real_device) if e.key == "soc_kwh"]
    assert "availability" not in wire(soc), "no device node: its values are always available"
    degraded_is_available = wire(soc_of(WIRING))["availability"][0]["value_template"]
    assert degraded_is_available == "{{ 'offline' if value_json.state == 'offline' else 'online' }}"


def test_a_bridged_battery_is_available_while_its_bridge_is() -> None:
    wiring = dataclasses.replace(WIRING, device_nodes={"battery-1": "bridge"})
    [bridged] = [e for e in battery_entities("battery-1", FULL, wiring) if e.key == "soc_kwh"]
    [simulated] = [e for e in battery_entities("battery-2", FULL, wiring) if e.key == "soc_kwh"]
    assert [a["topic"] for a in wire(bridged)["availability"]] == ["bess/v1/node/bridge/status"]
    assert [a["topic"] for a in wire(simulated)["availability"]] == ["bess/v1/node/simulator/status"]


def soc_of(wiring: Wiring) -> EntityConfig:
    return next(e for e in battery_entities("battery-1", FULL, wiring) if e.key == "soc_kwh")


def test_unique_ids_are_stable_and_every_entity_shares_the_batterys_device() -> None:
    plain = battery_entities("battery-1", FULL, WIRING)
    other = battery_entities(
        "battery-1", BatteryFacts(spec=BatterySpec(capacity_kwh=50, soc_min_kwh=0, soc_max_kwh=50, max_charge_kw=5,
                                                   max_discharge_kw=5), plan_currency="AUD", price_currency="AUD"),
        Wiring(root="site-7/bess/v1", prefix="ha", device_node="bridge", dashboard_url="https://x", version="9"),
    )
    assert [e.config.unique_id for e in plain] == [e.config.unique_id for e in other], "ids never follow settings"
    assert len({e.config.unique_id for e in plain}) == len(plain)
    assert plain[0].config.unique_id == "bess_battery-1_soc_kwh"
    assert plain[0].config.object_id == "battery_1_soc_kwh"
    devices = {msgspec.json.encode(e.config.device) for e in plain}
    assert len(devices) == 1, "one device block for all of a battery's entities"
    device = wire(plain[0])["device"]
    assert device == {"identifiers": ["bess_battery-1"], "name": "battery-1", "manufacturer": "ACME", "model": "BX-1",
                      "sw_version": "0.1.0", "configuration_url": "http://bess.local:8050/battery/battery-1"}
    assert {e.device for e in plain} == {"battery-1"}
    assert node_entity("planner", WIRING).config.unique_id == "bess_node_planner"


@pytest.mark.parametrize(
    ("facts", "missing"),
    [
        (BatteryFacts(), {"soc_percent", "power_setpoint", "price", "expected_revenue", "revenue_today"}),
        (BatteryFacts(spec=SPEC), {"price", "expected_revenue", "revenue_today"}),
        (BatteryFacts(spec=SPEC, price_currency="EUR"), set()),
        (BatteryFacts(spec=SPEC, plan_currency="EUR"), {"price"}),
    ],
)
def test_an_entity_waits_for_the_facts_it_needs(facts: BatteryFacts, missing: set[str]) -> None:
    keys = {e.key for e in battery_entities("battery-1", facts, WIRING)}
    assert {key for _, key in BATTERY_ENTITIES} - keys == missing


def test_a_money_or_price_value_is_shown_only_in_the_units_currency() -> None:
    by_key = {e.key: wire(e) for e in battery_entities("b", BatteryFacts(plan_currency="AUD", price_currency="AUD"),
                                                        WIRING)}
    assert by_key["expected_revenue"]["value_template"] == (
        "{{ value_json.expected_revenue if (value_json.currency | default('EUR')) == 'AUD' else None }}")
    assert by_key["price"]["value_template"] == (
        "{{ value_json.price_per_mwh if (value_json.currency | default('')) == 'AUD' else None }}")
    assert by_key["price"]["unit_of_measurement"] == "AUD/MWh"


def test_every_alarm_rule_is_a_problem_sensor_on_its_retained_alarm_topic_available_with_the_alarms_node() -> None:
    from nodes.alarms.settings import RULE_IDS

    by_key = {e.key: (e, wire(e)) for e in battery_entities("battery-1", FULL, WIRING)}
    alarm_keys = [key for key in by_key if key.startswith("alarm_")]
    assert alarm_keys == [f"alarm_{rule}" for rule in RULE_IDS], "one per rule, in the alarms node's order"
    entity, config = by_key["alarm_cell_temp_high"]
    assert entity.component == "binary_sensor"
    assert config["device_class"] == "problem"
    assert config["state_topic"] == config["json_attributes_topic"] == "bess/v1/battery/battery-1/alarm/cell_temp_high"
    assert config["value_template"] == "{{ 'ON' if value_json.state == 'raised' else 'OFF' }}"
    assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    assert [a["topic"] for a in config["availability"]] == ["bess/v1/node/alarms/status"]
    assert "value_json.severity" in config["json_attributes_template"]
    assert "value_json.message" in config["json_attributes_template"]
    assert config["name"] == "Alarm: cell temperature high"
    assert config["unique_id"] == "bess_battery-1_alarm_cell_temp_high"
    assert config["object_id"] == "battery_1_alarm_cell_temp_high"


def test_a_rule_disabled_for_the_battery_gets_no_alarm_sensor() -> None:
    from nodes.homeassistant.config import enabled_alarm_rules, parse_alarm_settings

    alarms = parse_alarm_settings('{"defaults": {"prices_stale": {"enabled": false}},'
                                  ' "batteries": {"b2": {"bms_alarm": {"enabled": false}}}}')
    rules_b1, rules_b2 = enabled_alarm_rules(alarms, "b1"), enabled_alarm_rules(alarms, "b2")
    assert "prices_stale" not in rules_b1
    assert "bms_alarm" in rules_b1
    assert {"prices_stale", "bms_alarm"}.isdisjoint(rules_b2)
    keys = {e.key for e in battery_entities("b2", BatteryFacts(spec=SPEC, alarm_rules=rules_b2), WIRING)}
    assert "alarm_cell_temp_high" in keys
    assert {"alarm_prices_stale", "alarm_bms_alarm"}.isdisjoint(keys)


def test_the_last_request_says_who_sent_it_home_assistant_or_the_dashboard() -> None:
    """The result topic is shared: the sensor's attributes name the request's source."""
    [last] = [wire(e) for e in battery_entities("battery-1", FULL, WIRING) if e.key == "last_request"]
    assert "'source': value_json.source | default('homeassistant')" in last["json_attributes_template"]
