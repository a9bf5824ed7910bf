"""The homeassistant node's wiring on the in-memory bus: retained configs for every battery it hears of, sent
again on Home Assistant's birth and only then (or on a change), the outlook following the clock, the nodes'
connectivity sensors, and removal when a battery's retained spec and telemetry are cleared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from nodes.contract.discovery import HA_CONFIG
from nodes.contract.messages import (
    BatterySpec,
    ControlMode,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)
from nodes.contract.topics import CONTROL, OUTLOOK, PRICES, SCHEDULE, SPEC, TELEMETRY
from nodes.homeassistant.config import HomeAssistantConfig
from nodes.homeassistant.entities import BATTERY_ENTITIES
from nodes.homeassistant.node import HomeAssistantNode
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)


class Rig:
    """The node and its peers (a device, the market, the planner, the gateway, Home Assistant) on one broker."""

    def __init__(self, **config: Any) -> None:
        self.broker = MemoryBroker()
        self.clock = FakeClock(T0 + timedelta(minutes=10))
        self.bus = MemoryBus("homeassistant", self.broker)
        self.node = HomeAssistantNode(HomeAssistantConfig(**config), self.bus, clock=self.clock)
        self.device = MemoryBus("simulator", self.broker)
        self.market = MemoryBus("market", self.broker)
        self.planner = MemoryBus("planner", self.broker)
        self.gateway = MemoryBus("gateway", self.broker)
        self.hass = MemoryBus("hass", self.broker)

    async def start(self) -> None:
        await self.device.publish(SPEC, SPEC_B1, battery="battery-1")
        await self.device.publish(TELEMETRY, Telemetry(ts=self.clock.now, soc_kwh=500.0), battery="battery-1")
        await self.node.setup()
        await self.step()

    async def step(self) -> None:
        await self.broker.idle()
        await self.node.step()
        await self.broker.idle()

    def configs(self, prefix: str = "homeassistant") -> dict[str, dict[str, Any]]:
        """The retained discovery configs, by topic."""
        return {name: msgspec.json.decode(payload) for name, (payload, _) in self.broker.retained.items()
                if name.startswith(prefix + "/") and name.endswith("/config")}

    def config_publishes(self) -> int:
        return sum(1 for sent in self.bus.published if HA_CONFIG.parse(sent.topic) is not None)


def schedule() -> Schedule:
    slots = [ScheduleSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_per_mwh=50.0, charge_kw=100.0 * (i == 0),
                          discharge_kw=100.0 * (i == 1), soc_kwh=500.0) for i in range(3)]
    return Schedule(plan_id="p-1", created_at=T0, soc_initial_kwh=500.0, slots=slots, expected_revenue=3.0,
                    zone="de-lu", currency="EUR")


async def test_a_battery_heard_of_gets_its_retained_configs_under_the_prefix() -> None:
    rig = Rig()
    await rig.start()
    configs = rig.configs()
    base = {f"homeassistant/{c}/battery-1/{k}/config" for c, k in BATTERY_ENTITIES}
    without_currency = {f"homeassistant/sensor/battery-1/{k}/config" for k in ("price", "expected_revenue",
                                                                                "revenue_today")}
    assert set(configs) == base - without_currency, "money and prices wait for their currency"
    await rig.market.publish(PRICES, PriceForecast(zone="de-lu", issued_at=T0, slots=[
        PriceSlot(start=T0, end=T0 + H, price_per_mwh=42.0)]), zone="de-lu")
    await rig.planner.publish(SCHEDULE, schedule(), battery="battery-1")
    await rig.step()
    assert set(rig.configs()) == base
    outlook = rig.broker.retained_message(OUTLOOK, battery="battery-1")
    assert outlook is not None
    assert (outlook.action, outlook.power_kw) == ("charge", -100.0)
    assert (outlook.price_per_mwh, outlook.currency) == (42.0, "EUR")


async def test_configs_are_sent_again_on_home_assistants_birth_and_otherwise_only_when_they_change() -> None:
    rig = Rig()
    await rig.start()
    first = rig.config_publishes()
    assert first == len(rig.configs())
    await rig.device.publish(TELEMETRY, Telemetry(ts=rig.clock.now, soc_kwh=510.0), battery="battery-1")
    await rig.step()
    assert rig.config_publishes() == first, "nothing changed: nothing sent"
    await rig.hass.publish_bytes("homeassistant/status", b"offline")
    await rig.step()
    assert rig.config_publishes() == first
    await rig.hass.publish_bytes("homeassistant/status", b"online")
    await rig.step()
    assert rig.config_publishes() == 2 * first, "every config again after Home Assistant's birth"
    assert rig.bus.counters["ha_births"] == 1
    bigger = msgspec.structs.replace(SPEC_B1, capacity_kwh=2000.0, soc_max_kwh=1900.0)
    await rig.device.publish(SPEC, bigger, battery="battery-1")
    await rig.step()
    assert rig.config_publishes() == 2 * first + 1, "only the percentage depends on the capacity"
    percent = rig.configs()["homeassistant/sensor/battery-1/soc_percent/config"]
    assert "/ 2000.0 *" in percent["value_template"]


async def test_the_outlook_follows_the_clock_and_the_control_mode() -> None:
    rig = Rig(planner_autopilot=True)
    await rig.start()
    await rig.planner.publish(SCHEDULE, schedule(), battery="battery-1")
    await rig.step()
    now = rig.broker.retained_message(OUTLOOK, battery="battery-1")
    assert now is not None
    assert (now.control_mode, now.action, now.next_change_at) == ("autopilot", "charge", T0 + H)
    until = rig.clock.now + timedelta(minutes=5)
    await rig.gateway.publish(CONTROL, ControlMode(mode="manual", set_at=rig.clock.now, until=until,
                                                   source="homeassistant"), battery="battery-1")
    await rig.step()
    manual = rig.broker.retained_message(OUTLOOK, battery="battery-1")
    assert manual is not None
    assert (manual.control_mode, manual.control_until) == ("manual", until)
    assert await rig.node.step() == until, "the loop wakes when the mode ends"
    rig.clock.now = T0 + H + timedelta(seconds=1)  # the mode has ended and the next slot has begun
    await rig.step()
    later = rig.broker.retained_message(OUTLOOK, battery="battery-1")
    assert later is not None
    assert (later.control_mode, later.action, later.power_kw) == ("autopilot", "discharge", 100.0)


async def test_every_node_seen_gets_a_connectivity_sensor() -> None:
    rig = Rig()
    await rig.start()
    for bus in (rig.planner, rig.gateway, rig.device):
        await bus.publish_status()
    await rig.step()
    nodes = {name.split("/")[3] for name in rig.configs() if name.startswith("homeassistant/binary_sensor/bess/")}
    assert nodes == {"planner", "gateway", "simulator"}
    planner = rig.configs()["homeassistant/binary_sensor/bess/planner/config"]
    assert (planner["device_class"], planner["state_topic"]) == ("connectivity", "bess/v1/node/planner/status")


async def test_a_battery_whose_retained_spec_and_telemetry_are_cleared_is_removed() -> None:
    rig = Rig()
    await rig.start()
    await rig.device.publish(SPEC, SPEC_B1, battery="battery-2")
    await rig.device.publish(TELEMETRY, Telemetry(ts=rig.clock.now, soc_kwh=5.0), battery="battery-2")
    await rig.step()
    assert any("/battery-2/" in name for name in rig.configs())
    await rig.device.publish_bytes(rig.device.name(SPEC, battery="battery-2"), b"", retain=True)
    await rig.step()
    assert any("/battery-2/" in name for name in rig.configs()), "a spec alone cleared: still there"
    await rig.device.publish_bytes(rig.device.name(SPEC, battery="battery-1"), b"", retain=True)
    await rig.device.publish_bytes(rig.device.name(TELEMETRY, battery="battery-1"), b"", retain=True)
    await rig.step()
    assert not any("/battery-1/" in name for name in rig.configs()), "every config cleared (retained empty)"
    assert rig.broker.retained_message(OUTLOOK, battery="battery-1") is None
    assert "battery-1" not in rig.node.batteries
    await rig.hass.publish_bytes("homeassistant/status", b"online")
    await rig.step()
    assert not any("/battery-1/" in name for name in rig.configs()), "Home Assistant's birth does not revive it"
    assert any("/battery-2/" in name for name in rig.configs())
    assert rig.bus.counters["batteries_forgotten"] == 1


async def test_another_prefix_and_dashboard_url_and_no_device_node() -> None:
    rig = Rig(ha_discovery_prefix="ha-test", ha_dashboard_url="https://bess.example.org/", ha_device_node="")
    await rig.start()
    configs = rig.configs("ha-test")
    soc = configs["ha-test/sensor/battery-1/soc_kwh/config"]
    assert soc["device"]["configuration_url"] == "https://bess.example.org/battery/battery-1"
    assert "availability" not in soc
    assert rig.configs() == {}, "nothing under the default prefix"
    await rig.hass.publish_bytes("ha-test/status", b"online")
    await rig.step()
    assert rig.bus.counters["ha_births"] == 1


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    problems = HomeAssistantConfig(ha_discovery_prefix="home/+", ha_dashboard_url="bess.local:8050",
                                   ha_device_node="Sim", ha_outlook_slots=99,
                                   ha_device_node_of=["battery-1", "battery-2=Bridge"]).problems()
    text = " | ".join(problems)
    for variable in ("BESS_HA_DISCOVERY_PREFIX", "BESS_HA_DASHBOARD_URL", "BESS_HA_DEVICE_NODE",
                     "BESS_HA_OUTLOOK_SLOTS", "'battery-1' is not battery=node", "BESS_HA_DEVICE_NODE_OF node"):
        assert variable in text
    assert HomeAssistantConfig().problems() == []
    assert HomeAssistantConfig(dashboard_port=8123).dashboard_url == "http://127.0.0.1:8123"


async def test_a_disabled_alarm_rule_has_no_sensor_and_a_stale_config_of_it_is_cleared() -> None:
    rig = Rig(alarms='{"defaults": {"prices_stale": {"enabled": false}}}')
    stale = "homeassistant/binary_sensor/battery-1/alarm_prices_stale/config"
    await rig.bus.publish_bytes(stale, b'{"name": "from a run with the rule on"}', retain=True)  # an older run's
    await rig.start()
    configs = rig.configs()
    assert stale not in configs, "cleared (an empty retained payload removes the entity)"
    hot = configs["homeassistant/binary_sensor/battery-1/alarm_cell_temp_high/config"]
    assert (hot["device_class"], hot["state_topic"]) == ("problem", "bess/v1/battery/battery-1/alarm/cell_temp_high")
    before = len(rig.bus.published)
    await rig.step()
    assert len(rig.bus.published) == before, "cleared once, not on every pass"


def test_bad_alarm_settings_are_refused_naming_bess_alarms() -> None:
    problems = HomeAssistantConfig(alarms='{"defaults": {"cell_temp_hot": {}}}').problems()
    assert any(p.startswith("BESS_ALARMS: ") and "cell_temp_hot" in p for p in problems), problems


def devices(rig: Rig) -> set[str]:
    return {name.split("/")[2] for name in rig.configs() if "/bess/" not in name}


async def test_ids_without_a_spec_get_no_device_and_the_devices_are_capped_with_a_reason() -> None:
    rig = Rig(ha_max_batteries=3)
    await rig.start()
    for i in range(500):  # a burst of ids written over HTTP: telemetry only
        await rig.gateway.publish(TELEMETRY, Telemetry(ts=rig.clock.now, soc_kwh=1.0), battery=f"burst-{i}")
    await rig.step()
    assert devices(rig) == {"battery-1"}, "an id that only got telemetry is not a device"
    assert rig.node.bus.counters["configs_published"] < 40, "no configs for the burst"
    assert rig.node.bus.state == "online"

    for i in range(2, 6):  # four more devices announce a spec: two fit under the cap of 3
        await rig.device.publish(SPEC, SPEC_B1, battery=f"battery-{i}")
    await rig.step()
    assert devices(rig) == {"battery-1", "battery-2", "battery-3"}
    assert rig.node.bus.state == "degraded"
    assert rig.node.bus.reason == "2 more batteries have no Home Assistant device: at most 3 (BESS_HA_MAX_BATTERIES)"
    assert rig.node.bus.status().counters["batteries_without_spec"] == 500


async def test_an_allow_list_names_the_devices_spec_or_not() -> None:
    rig = Rig(ha_batteries=["battery-1", "meter-7"])
    await rig.start()
    await rig.gateway.publish(TELEMETRY, Telemetry(ts=rig.clock.now, soc_kwh=1.0), battery="meter-7")
    await rig.device.publish(SPEC, SPEC_B1, battery="battery-9")
    await rig.step()
    assert devices(rig) == {"battery-1", "meter-7"}
