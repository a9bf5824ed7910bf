"""The simulated battery obeys commands within its limits, and a command is only a lease."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatterySpec, Command
from nodes.simulator.battery import SimBattery

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
