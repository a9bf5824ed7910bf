"""The planner node's pure helpers: horizon trimming, planned SOC, the autopilot's slot command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import PriceForecast, PriceSlot, Schedule, ScheduleSlot
from nodes.planner.node import horizon, planned_soc_at, slot_command

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def forecast(hours: int = 3) -> PriceForecast:
    return PriceForecast(
        zone="de-lu",
        issued_at=T0,
        slots=[
            PriceSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_eur_per_mwh=10.0 * (i + 1))
            for i in range(hours)
        ],
    )


def schedule() -> Schedule:
    return Schedule(
        plan_id="p1",
        created_at=T0,
        soc_initial_kwh=100.0,
        expected_revenue_eur=1.0,
        slots=[
            ScheduleSlot(start=T0, end=T0 + H, price_eur_per_mwh=1, charge_kw=50, discharge_kw=0, soc_kwh=150),
            ScheduleSlot(start=T0 + H, end=T0 + 2 * H, price_eur_per_mwh=9, charge_kw=0, discharge_kw=50, soc_kwh=90),
            ScheduleSlot(start=T0 + 2 * H, end=T0 + 3 * H,
                          price_eur_per_mwh=5, charge_kw=0, discharge_kw=0, soc_kwh=90),
        ],
    )


def test_horizon_drops_past_slots_and_trims_the_current_one() -> None:
    now = T0 + timedelta(minutes=90)
    slots = horizon(forecast(), now)
    assert [s.start for s in slots] == [now, T0 + 2 * H]
    assert slots[0].end == T0 + 2 * H
    assert slots[0].price_eur_per_mwh == 20.0


def test_horizon_skips_a_sliver_of_a_slot_and_is_empty_after_the_end() -> None:
    assert horizon(forecast(), T0 + H - timedelta(seconds=10))[0].start == T0 + H
    assert horizon(forecast(), T0 + 3 * H) == []


def test_planned_soc_interpolates_within_a_slot() -> None:
    plan = schedule()
    assert planned_soc_at(plan, T0) == 100.0
    assert planned_soc_at(plan, T0 + timedelta(minutes=30)) == pytest.approx(125.0)
    assert planned_soc_at(plan, T0 + H + timedelta(minutes=30)) == pytest.approx(120.0)
    assert planned_soc_at(plan, T0 + 5 * H) is None


@pytest.mark.parametrize(
    ("minutes", "action", "power"), [(10, "charge", 50.0), (70, "discharge", 50.0), (130, "idle", 0.0)]
)
def test_slot_command_is_a_lease_until_the_slot_end(minutes: int, action: str, power: float) -> None:
    now = T0 + timedelta(minutes=minutes)
    command = slot_command(schedule(), now)
    assert command is not None
    assert (command.action, command.power_kw, command.source, command.plan_id) == (action, power, "planner", "p1")
    assert command.valid_until == T0 + H * (minutes // 60 + 1)
    assert command.issued_at == now


def test_no_command_outside_the_plan() -> None:
    assert slot_command(schedule(), T0 - timedelta(minutes=1)) is None


def test_slot_command_lease_is_capped_so_a_dead_planner_cannot_hold_a_slot() -> None:
    now = T0 + timedelta(minutes=10)
    command = slot_command(schedule(), now, lease_s=120)
    assert command is not None
    assert command.valid_until == now + timedelta(seconds=120)
    near_end = T0 + timedelta(minutes=59)
    capped = slot_command(schedule(), near_end, lease_s=120)
    assert capped is not None
    assert capped.valid_until == T0 + H  # the slot's end comes first
