"""Commands become each device's own writes: charge, discharge and idle per profile, setpoints beyond the spec
refused (and said), the lease's end and the bridge's start and stop send the device's idle write; a fake clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from nodes.bridge.config import BridgeConfig, Device
from nodes.bridge.writes import Controller, DeviceWrite
from nodes.contract.leases import LeaseCaps
from nodes.contract.messages import Command
from nodes.runtime.config import load

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "4"}
VICTRON_SETPOINT = "W/c0619ab1b2c3/settings/0/Settings/CGwacs/AcPowerSetPoint"


def device(profile: str, **env: str) -> Device:
    return load(BridgeConfig, {"BESS_BRIDGE_PROFILE": profile, **SPEC_ENV, **env}).device()


def controller(profile: str, **env: str) -> Controller:
    dev = device(profile, **env)
    return Controller(dev.bound, dev.spec, LeaseCaps(automatic_s=600, operator_s=86_400))


def command(action: str, power_kw: float, *, at: datetime = T0, lease_s: float = 300, source: str = "planner",
            command_id: str = "c-1") -> Command:
    return Command(command_id=command_id, action=action, power_kw=power_kw, issued_at=at,  # type: ignore[arg-type]
                   valid_until=at + timedelta(seconds=lease_s), source=source)  # type: ignore[arg-type]


def as_json(writes: list[DeviceWrite]) -> list[tuple[str, object]]:
    return [(w.topic, json.loads(w.payload)) for w in writes]


# -- each vendor's writes ---------------------------------------------------------------------------------------


def test_victron_charge_discharge_and_idle_write_the_ess_grid_setpoint() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    assert as_json(ctl.start(T0)) == [(VICTRON_SETPOINT, {"value": 0})]  # start: the device's own mode
    assert as_json(ctl.apply(command("charge", 3.2), T0)) == [(VICTRON_SETPOINT, {"value": 3200})]  # + import
    assert as_json(ctl.apply(command("discharge", 2.5, command_id="c-2"), T0)) == [(VICTRON_SETPOINT, {"value": -2500})]
    assert as_json(ctl.apply(command("idle", 0, command_id="c-3"), T0)) == [(VICTRON_SETPOINT, {"value": 0})]


def test_solarassistant_writes_the_growatt_work_mode_and_rate_in_percent_of_the_spec() -> None:
    ctl = controller("solarassistant")
    assert [(w.topic, w.payload) for w in ctl.start(T0)] == [
        ("solar_assistant/inverter_1/work_mode_priority/set", b"Load first")]
    assert [(w.topic, w.payload) for w in ctl.apply(command("charge", 2.5), T0)] == [
        ("solar_assistant/inverter_1/work_mode_priority/set", b"Battery first"),
        ("solar_assistant/inverter_1/battery_first_grid_charge/set", b"Enabled"),
        ("solar_assistant/inverter_1/battery_first_charge_rate/set", b"50"),  # 2.5 of max_charge_kw 5
    ]
    assert [(w.topic, w.payload) for w in ctl.apply(command("discharge", 4, command_id="c-2"), T0)] == [
        ("solar_assistant/inverter_1/work_mode_priority/set", b"Grid first"),
        ("solar_assistant/inverter_1/grid_first_discharge_rate/set", b"100"),  # 4 of max_discharge_kw 4
    ]


def test_generic_json_merges_the_steps_of_one_topic_into_one_object() -> None:
    ctl = controller("generic-json", BESS_BRIDGE_VARS="prefix=home/bat")
    assert as_json(ctl.apply(command("charge", 1.5), T0)) == [("home/bat/set", {"mode": "charge", "power_w": 1500})]
    assert as_json(ctl.apply(command("idle", 0, command_id="c-2"), T0)) == [
        ("home/bat/set", {"mode": "idle", "power_w": 0})]


# -- the spec -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "power_kw", "limit"), [("charge", 5.01, "max_charge_kw 5"),
                                                           ("discharge", 4.5, "max_discharge_kw 4")])
def test_a_setpoint_beyond_the_spec_is_refused_counted_and_said(action: str, power_kw: float, limit: str) -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.start(T0)
    ctl.apply(command("charge", 1.0, command_id="ok-1"), T0)
    assert ctl.apply(command(action, power_kw, command_id="big"), T0) == []  # nothing reaches the device
    assert ctl.refused == 1
    assert ctl.command is not None
    assert ctl.command.command_id == "ok-1"
    state = ctl.state(T0, live=True, measured_kw=-1.0)
    assert state.limits_hit == [f"refused {action} beyond the spec"]
    assert limit in state.reason
    assert "still following ok-1" in state.reason
    # the next acceptable command clears the note
    ctl.apply(command("charge", 5.0, command_id="ok-2"), T0)
    assert ctl.state(T0, live=True, measured_kw=None).limits_hit == []


def test_the_spec_maximum_itself_is_within_the_spec() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    assert as_json(ctl.apply(command("charge", 5.0), T0)) == [(VICTRON_SETPOINT, {"value": 5000})]
    assert ctl.refused == 0


# -- leases -------------------------------------------------------------------------------------------------------


def test_the_lease_end_without_a_renewal_sends_the_idle_write() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.start(T0)
    ctl.apply(command("discharge", 2.0, lease_s=300), T0)
    assert ctl.tick(T0 + timedelta(seconds=299)) == []  # still within the lease
    assert as_json(ctl.tick(T0 + timedelta(seconds=300))) == [(VICTRON_SETPOINT, {"value": 0})]
    assert (ctl.command, ctl.leases_ended) == (None, 1)
    assert "ended at 2025-01-16T10:05:00+00:00 without a renewal" in ctl.reason
    assert ctl.tick(T0 + timedelta(seconds=301)) == []  # once


def test_a_renewal_keeps_the_device_going_without_writing_it_again() -> None:
    ctl = controller("solarassistant")
    ctl.start(T0)
    assert len(ctl.apply(command("charge", 2.5, lease_s=300), T0)) == 3
    renewal = command("charge", 2.5, at=T0 + timedelta(seconds=240), lease_s=300, command_id="c-2")
    assert ctl.apply(renewal, T0 + timedelta(seconds=240)) == []  # the inverter's flash is spared
    assert ctl.tick(T0 + timedelta(seconds=300)) == []  # the old lease's end no longer matters
    assert [w.payload for w in ctl.tick(T0 + timedelta(seconds=540))] == [b"Load first"]  # the renewal's end


def test_a_changed_power_writes_only_what_changed() -> None:
    ctl = controller("solarassistant")
    ctl.apply(command("charge", 2.5), T0)
    assert [(w.topic, w.payload) for w in ctl.apply(command("charge", 5.0, command_id="c-2"), T0)] == [
        ("solar_assistant/inverter_1/battery_first_charge_rate/set", b"100")]


def test_a_far_future_lease_is_capped_from_arrival() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.apply(command("discharge", 1.0, lease_s=10 * 86_400, source="planner"), T0)
    assert ctl.command is not None
    assert ctl.command.valid_until == T0 + timedelta(seconds=600)
    assert ctl.state(T0, live=True, measured_kw=None).limits_hit == ["lease capped to 600 s"]
    assert as_json(ctl.tick(T0 + timedelta(seconds=600))) == [(VICTRON_SETPOINT, {"value": 0})]


def test_an_expired_command_is_ignored() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    assert ctl.apply(command("charge", 1.0, at=T0 - timedelta(seconds=400), lease_s=300), T0) == []
    assert ctl.command is None
    assert "ignored expired" in ctl.reason


def test_stop_sends_the_idle_write_even_when_the_device_was_told_so_already() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.start(T0)
    assert as_json(ctl.stop(T0)) == [(VICTRON_SETPOINT, {"value": 0})]


def test_writes_that_did_not_reach_the_broker_are_sent_again_at_the_next_tick() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.apply(command("charge", 1.0), T0)
    ctl.not_sent()
    assert as_json(ctl.tick(T0 + timedelta(seconds=1))) == [(VICTRON_SETPOINT, {"value": 1000})]
    assert ctl.tick(T0 + timedelta(seconds=2)) == []


def test_the_state_says_offline_while_the_device_is_silent() -> None:
    ctl = controller("victron", BESS_BRIDGE_PORTAL_ID="c0619ab1b2c3")
    ctl.apply(command("charge", 1.0), T0)
    state = ctl.state(T0, live=False, measured_kw=-1.0, offline_reason="no message from the device for 130 s")
    assert (state.mode, state.power_kw, state.command_id) == ("offline", 0.0, "c-1")
    assert state.reason.startswith("no message from the device for 130 s")
    assert ctl.state(T0, live=True, measured_kw=-1.0).mode == "charging"
