"""The simulated battery obeys commands within its limits, and a command is only a lease."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatterySpec, Command
from nodes.runtime.config import load
from nodes.runtime.memory import MemoryBus
from nodes.simulator.battery import LeaseCaps, SimBattery
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.node import Simulator

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
SPEC = BatterySpec(
    capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=200, max_discharge_kw=250,
    roundtrip_efficiency=0.81,
)


def command(action: str, power_kw: float, minutes: float = 60, at: datetime = T0) -> Command:
    return Command(
        command_id=f"c-{action}-{power_kw}", action=action,  # type: ignore[arg-type]
        power_kw=power_kw, issued_at=at, valid_until=at + timedelta(minutes=minutes),
    )


def test_discharge_integrates_soc_with_efficiency() -> None:
    battery = SimBattery(SPEC, 500)
    battery.apply(command("discharge", 90), T0)
    battery.step(1800, T0 + timedelta(minutes=30))
    # 90 kW for 0.5 h at the grid is 45 kWh; the cells give 45 / sqrt(0.81) = 50 kWh
    assert battery.soc_kwh == pytest.approx(450.0)
    assert battery.mode == "discharging"
    assert battery.telemetry(T0).power_kw == pytest.approx(90.0)


def test_charge_integrates_soc_with_efficiency() -> None:
    battery = SimBattery(SPEC, 500)
    battery.apply(command("charge", 100), T0)
    battery.step(3600, T0 + timedelta(minutes=59))
    assert battery.soc_kwh == pytest.approx(500 + 100 * math.sqrt(0.81))
    assert battery.telemetry(T0).power_kw == pytest.approx(-100.0)


def test_power_is_clamped_to_the_spec() -> None:
    battery = SimBattery(SPEC, 500)
    battery.apply(command("charge", 500), T0)
    assert battery.power_kw == -200
    assert battery.limits_hit == ["charge power clamped to 200 kW"]


def test_stops_exactly_at_soc_limits() -> None:
    battery = SimBattery(SPEC, 120)
    battery.apply(command("discharge", 250, minutes=600), T0)
    battery.step(3600, T0 + timedelta(minutes=60))
    assert battery.soc_kwh == SPEC.soc_min_kwh
    assert battery.mode == "idle"
    assert "soc_min reached" in battery.limits_hit
    full = SimBattery(SPEC, 890)
    full.apply(command("charge", 200, minutes=600), T0)
    full.step(3600, T0 + timedelta(minutes=60))
    assert full.soc_kwh == SPEC.soc_max_kwh
    assert full.mode == "idle"


def test_expired_lease_goes_idle() -> None:
    battery = SimBattery(SPEC, 500)
    battery.apply(command("discharge", 100, minutes=5), T0)
    battery.step(60, T0 + timedelta(minutes=1))
    assert battery.mode == "discharging"
    battery.step(60, T0 + timedelta(minutes=6))
    assert battery.mode == "idle"
    assert battery.power_kw == 0
    assert battery.command is None
    assert "expired" in battery.reason


def test_an_already_expired_command_is_ignored() -> None:
    battery = SimBattery(SPEC, 500)
    battery.apply(command("discharge", 100, minutes=5, at=T0 - timedelta(hours=1)), T0)
    assert battery.mode == "idle"
    assert battery.command is None


def test_state_reports_command_and_lease() -> None:
    battery = SimBattery(SPEC, 500)
    order = command("discharge", 100)
    battery.apply(order, T0)
    state = battery.state(T0)
    assert (state.mode, state.command_id, state.valid_until) == ("discharging", order.command_id, order.valid_until)
    before = battery.state_key()
    battery.apply(command("idle", 0), T0)
    assert battery.state_key() != before


def test_initial_soc_is_clipped_into_limits() -> None:
    assert SimBattery(SPEC, 5000).soc_kwh == SPEC.soc_max_kwh


def test_a_lease_in_9999_is_capped_and_the_state_says_so() -> None:
    """Issue 16: a Command with valid_until 9999-12-31 was followed long after the planner died."""
    battery = SimBattery(SPEC, 500, caps=LeaseCaps(automatic_s=600, operator_s=86_400))
    forever = Command(command_id="a-forever", action="discharge", power_kw=100, issued_at=T0,
                      valid_until=datetime(9999, 12, 31, tzinfo=UTC), source="planner")
    battery.apply(forever, T0)
    state = battery.state(T0)
    assert state.valid_until == T0 + timedelta(seconds=600)
    assert state.limits_hit == ["lease capped to 600 s"]
    assert "BESS_MAX_LEASE_S" in state.reason
    assert "9999-12-31" in state.reason
    battery.step(599, T0 + timedelta(seconds=599))
    assert battery.mode == "discharging"
    battery.step(2, T0 + timedelta(seconds=601))
    assert battery.mode == "idle"
    assert battery.state(T0 + timedelta(seconds=601)).limits_hit == []


def test_operator_leases_get_the_long_cap_and_a_lease_within_the_cap_is_untouched() -> None:
    battery = SimBattery(SPEC, 500, caps=LeaseCaps(automatic_s=600, operator_s=86_400))
    operator = Command(command_id="c-1", action="charge", power_kw=50, issued_at=T0,
                       valid_until=T0 + timedelta(days=30), source="gateway")
    battery.apply(operator, T0)
    assert battery.state(T0).valid_until == T0 + timedelta(hours=24)
    assert "BESS_MAX_OPERATOR_LEASE_S" in battery.state(T0).reason
    short = command("discharge", 90, minutes=5)
    battery.apply(short, T0)
    assert battery.state(T0).valid_until == short.valid_until
    assert battery.state(T0).limits_hit == []
    assert "capped" not in battery.state(T0).reason


def test_the_caps_are_settings() -> None:
    config = load(SimulatorConfig, {"BESS_MAX_LEASE_S": "120", "BESS_MAX_OPERATOR_LEASE_S": "3600"})
    simulator = Simulator(config, MemoryBus("simulator"))
    assert simulator.batteries["battery-1"].caps == LeaseCaps(automatic_s=120, operator_s=3600)
    assert load(SimulatorConfig, {"BESS_MAX_LEASE_S": "0"}).problems()
