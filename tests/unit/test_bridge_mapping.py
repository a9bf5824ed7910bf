"""Device payloads in each vendor's own format become this project's Telemetry: % -> kWh from the capacity,
W -> kW, the device's sign turned into ours (+ discharging); unknown and bad values handled as the vendor means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.bridge.config import BridgeConfig, Device
from nodes.bridge.mapping import DeviceReadings, Mapper, MappingError, decode_value, telemetry
from nodes.runtime.config import load

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5"}


def device(profile: str, **env: str) -> Device:
    return load(BridgeConfig, {"BESS_BRIDGE_PROFILE": profile, **SPEC_ENV, **env}).device()


def feed(dev: Device, messages: list[tuple[str, bytes]]) -> tuple[DeviceReadings, list[str]]:
    mapper = Mapper(dev.bound, dev.spec.capacity_kwh)
    held = DeviceReadings()
    problems: list[str] = []
    for topic, payload in messages:
        problems += mapper.read(topic, payload, T0, held)
    return held, problems


def test_victron_dbus_flashmq_values_become_telemetry() -> None:
    dev = device("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    held, problems = feed(dev, [
        # what dbus-flashmq publishes: N/<portal id>/<service>/<instance>/<path>, {"value": x}
        ("N/c0619ab1b2c3/system/0/Dc/Battery/Soc", b'{"value": 87.5}'),
        ("N/c0619ab1b2c3/system/0/Dc/Battery/Power", b'{"value": -2150.0}'),  # Victron: - is discharging
    ])
    assert problems == []
    reading = telemetry(held, T0)
    assert reading is not None
    assert (reading.soc_kwh, reading.power_kw, reading.source) == (8.75, 2.15, "device")  # 87.5 % of 10 kWh


def test_victron_null_and_empty_payloads_make_a_value_unknown_not_wrong() -> None:
    dev = device("victron", BESS_BRIDGE_PORTAL_ID="p1")
    held, problems = feed(dev, [
        ("N/p1/system/0/Dc/Battery/Soc", b'{"value": 50}'),
        ("N/p1/system/0/Dc/Battery/Power", b'{"value": 500}'),
        ("N/p1/system/0/Dc/Battery/Power", b'{"value": null}'),  # dbus-flashmq: an invalid D-Bus value
    ])
    assert (held.soc_kwh, held.power_kw, problems) == (5.0, None, [])
    held, _ = feed(dev, [("N/p1/system/0/Dc/Battery/Soc", b'{"value": 50}'),
                         ("N/p1/system/0/Dc/Battery/Soc", b"")])  # the device disappeared
    assert held.soc_kwh is None
    assert telemetry(held, T0) is None  # no SOC, no telemetry


def test_solarassistant_plain_scalars_become_telemetry() -> None:
    dev = device("solarassistant")
    held, problems = feed(dev, [
        ("solar_assistant/total/battery_state_of_charge/state", b"64"),
        ("solar_assistant/total/battery_power/state", b"85"),  # + charging on SolarAssistant
    ])
    assert problems == []
    reading = telemetry(held, T0)
    assert reading is not None
    assert (reading.soc_kwh, reading.power_kw) == (6.4, -0.085)  # ours: - charging


def test_solarassistant_reads_one_device_when_told() -> None:
    dev = device("solarassistant", BESS_BRIDGE_DEVICE="battery_1")
    mapper = Mapper(dev.bound, dev.spec.capacity_kwh)
    assert set(mapper.topics) == {"solar_assistant/battery_1/battery_state_of_charge/state",
                                  "solar_assistant/battery_1/battery_power/state"}


def test_generic_json_reads_both_values_from_one_object() -> None:
    dev = device("generic-json", BESS_BRIDGE_VARS="prefix=home/bat")
    held, problems = feed(dev, [("home/bat/state", b'{"battery": {"soc": 55.5, "power_w": -1200}, "temp": 21}')])
    assert problems == []
    assert (held.soc_kwh, held.power_kw) == pytest.approx((5.55, -1.2))  # generic profile: + discharging


def test_a_json_object_without_one_value_keeps_the_other() -> None:
    dev = device("generic-json")
    held, problems = feed(dev, [("battery/state", b'{"battery": {"soc": 20}}')])
    assert held.soc_kwh == 2.0
    assert problems == ["power: no 'battery.power_w' in the object (missing at 'power_w')"]


@pytest.mark.parametrize(
    ("payload", "encoding", "error"),
    [
        (b'{"value": "abc"}', "value_json", "expected a number, got 'abc'"),
        (b"{not json", "value_json", "not JSON"),
        (b"[1, 2]", "value_json", 'expected {"value": ...}'),
        (b"NaN", "scalar", "is not a plausible reading"),
        (b"1e400", "scalar", "is not a plausible reading"),
        (b"\xff\xfe", "scalar", "not UTF-8 text"),
        (b'{"value": true}', "value_json", "expected a number, got True"),
    ],
)
def test_bad_values_are_errors(payload: bytes, encoding: str, error: str) -> None:
    with pytest.raises(MappingError, match=error.replace("(", r"\(").replace("{", r"\{").replace("[", r"\[")):
        decode_value(payload, encoding, "")  # type: ignore[arg-type]


def test_an_soc_outside_0_100_percent_is_dropped_and_the_last_good_value_kept() -> None:
    dev = device("solarassistant")
    held, problems = feed(dev, [("solar_assistant/total/battery_state_of_charge/state", b"40"),
                                ("solar_assistant/total/battery_state_of_charge/state", b"140")])
    assert held.soc_kwh == 4.0
    assert problems == ["soc: state of charge 140 % is outside 0..100"]


def test_the_device_is_live_while_it_talks() -> None:
    held = DeviceReadings()
    assert not held.live(T0, timedelta(seconds=60))
    held.last_message_at = T0
    assert held.live(T0 + timedelta(seconds=60), timedelta(seconds=60))
    assert not held.live(T0 + timedelta(seconds=61), timedelta(seconds=60))
