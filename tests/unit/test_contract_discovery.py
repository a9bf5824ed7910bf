"""Home Assistant's topics in the contract: outside the root, under the configured prefix, plain text or JSON."""

from __future__ import annotations

import msgspec
import pytest

from nodes.contract.discovery import HA_CONFIG, HA_STATUS, DiscoveryConfig, HaStatus, TopicError, object_id
from nodes.contract.topics import TELEMETRY
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.unit.test_bus import Inbox


def test_discovery_topics_ignore_the_root_and_live_under_the_prefix() -> None:
    name = HA_CONFIG.name(root="site-7/bess/v1", component="sensor", device="battery-1", entity="soc_kwh")
    assert name == "homeassistant/sensor/battery-1/soc_kwh/config"
    moved = HA_CONFIG.under("ha-site-7")
    name = moved.name(component="number", device="b1", entity="power_setpoint")
    assert name == "ha-site-7/number/b1/power_setpoint/config"
    assert moved.filter(root="bess/v1") == "ha-site-7/+/+/+/config"
    parsed = moved.parse("ha-site-7/button/b1/replan/config")
    assert parsed == {"component": "button", "device": "b1", "entity": "replan"}
    assert moved.parse("homeassistant/button/b1/replan/config") is None, "another prefix is not ours"
    assert HA_STATUS.under("ha-site-7").template == "ha-site-7/status"
    with pytest.raises(TopicError):
        HA_CONFIG.under("bad/+/prefix")


def test_home_assistants_birth_is_plain_text_and_anything_else_is_a_validation_error() -> None:
    assert HA_STATUS.decode(b"online") == HaStatus(state="online")
    assert HA_STATUS.decode(b"offline\n") == HaStatus(state="offline")
    assert HA_STATUS.encode(HaStatus(state="online")) == b"online"
    with pytest.raises(msgspec.ValidationError):
        HA_STATUS.decode(b"restarting")


def test_number_keys_are_spelt_min_and_max_on_the_wire() -> None:
    config = DiscoveryConfig(name="x", unique_id="u", min_value=-250.0, max_value=250.0)
    assert msgspec.json.decode(HA_CONFIG.encode(config)) == {"name": "x", "unique_id": "u", "min": -250.0, "max": 250.0}


def test_object_ids_are_home_assistant_slugs() -> None:
    assert object_id("battery-1", "soc_kwh") == "battery_1_soc_kwh"
    assert object_id("bess", "planner") == "bess_planner"


async def test_the_bus_subscribes_and_publishes_an_external_topic_like_any_other() -> None:
    broker = MemoryBroker()
    hass, node = MemoryBus("hass", broker), MemoryBus("homeassistant", broker)
    inbox = Inbox()
    node.subscribe(HA_STATUS.under("ha"), inbox)
    node.subscribe(TELEMETRY, Inbox())  # no overlap with the root's topics
    await hass.publish_bytes("ha/status", b"online")
    await hass.publish_bytes("homeassistant/status", b"online")  # another prefix: not routed to the subscription
    await hass.publish_bytes("ha/status", b"garbage")
    await broker.idle()
    assert [(params, message) for params, message, _ in inbox.got] == [({}, HaStatus(state="online"))]
    assert node.counters["decode_errors"] == 1
