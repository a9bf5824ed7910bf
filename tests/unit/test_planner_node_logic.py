"""The planner node's pure helpers: horizon trimming, planned SOC, the autopilot's setpoints and leases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from nodes.contract.messages import Command, PriceForecast, PriceSlot, Schedule, ScheduleSlot
from nodes.planner import autopilot
from nodes.planner.inputs import horizon, planned_soc_at

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def forecast(hours: int = 3) -> PriceForecast:
    return PriceForecast(
        zone="de-lu",
        issued_at=T0,
        slots=[
            PriceSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_per_mwh=10.0 * (i + 1))
            for i in range(hours)
        ],
    )


def schedule() -> Schedule:
    return Schedule(
        plan_id="p1",
        created_at=T0,
        soc_initial_kwh=100.0,
        expected_revenue=1.0,
        slots=[
            ScheduleSlot(start=T0, end=T0 + H, price_per_mwh=1, charge_kw=50, discharge_kw=0, soc_kwh=150),
            ScheduleSlot(start=T0 + H, end=T0 + 2 * H, price_per_mwh=9, charge_kw=0, discharge_kw=50, soc_kwh=90),
            ScheduleSlot(start=T0 + 2 * H, end=T0 + 3 * H,
                          price_per_mwh=5, charge_kw=0, discharge_kw=0, soc_kwh=90),
        ],
    )


def test_horizon_drops_past_slots_and_trims_the_current_one() -> None:
    now = T0 + timedelta(minutes=90)
    slots = horizon(forecast(), now)
    assert [s.start for s in slots] == [now, T0 + 2 * H]
    assert slots[0].end == T0 + 2 * H
    assert slots[0].price_per_mwh == 20.0


def test_horizon_keeps_what_is_left_of_the_current_slot_and_is_empty_after_the_end() -> None:
    # the autopilot follows the slot containing now: a re-plan 10 s before the boundary must still cover it
    ten_s_left = T0 + H - timedelta(seconds=10)
    assert horizon(forecast(), ten_s_left)[0].start == ten_s_left
    assert horizon(forecast(), T0 + H - timedelta(milliseconds=500))[0].start == T0 + H
    assert horizon(forecast(), T0 + 3 * H) == []


def test_planned_soc_interpolates_within_a_slot() -> None:
    plan = schedule()
    assert planned_soc_at(plan, T0) == 100.0
    assert planned_soc_at(plan, T0 + timedelta(minutes=30)) == pytest.approx(125.0)
    assert planned_soc_at(plan, T0 + H + timedelta(minutes=30)) == pytest.approx(120.0)
    assert planned_soc_at(plan, T0 + 5 * H) is None


@pytest.mark.parametrize(
    ("minutes", "action", "power", "end_h"),
    [(10, "charge", 50.0, 1), (70, "discharge", 50.0, 2), (130, "idle", 0.0, 3)],
)
def test_setpoint_is_the_slot_containing_now(minutes: int, action: str, power: float, end_h: int) -> None:
    setpoint = autopilot.setpoint_at(schedule(), T0 + timedelta(minutes=minutes))
    assert setpoint is not None
    assert (setpoint.action, setpoint.power_kw, setpoint.plan_id, setpoint.end) == (action, power, "p1", T0 + end_h * H)


def test_setpoint_spans_contiguous_slots_with_the_same_action_and_power() -> None:
    plan = schedule()
    same = ScheduleSlot(start=T0 + 3 * H, end=T0 + 4 * H, price_per_mwh=5, charge_kw=0, discharge_kw=0, soc_kwh=90)
    plan = msgspec.structs.replace(plan, slots=[*plan.slots, same])
    setpoint = autopilot.setpoint_at(plan, T0 + 2 * H)
    assert setpoint is not None
    assert (setpoint.action, setpoint.end) == ("idle", T0 + 4 * H)
    assert autopilot.setpoint_at(plan, T0 + 4 * H) is None
    assert autopilot.setpoint_at(plan, T0 - timedelta(minutes=1)) is None


def _held(action: str, power: float, issued: datetime, until: datetime) -> Command:
    return Command(command_id="a-1", action=action, power_kw=power, issued_at=issued,  # type: ignore[arg-type]
                   valid_until=until, source="planner")


def test_decide_sends_a_lease_of_lease_s_or_until_the_handover() -> None:
    setpoint = autopilot.setpoint_at(schedule(), T0)
    assert setpoint is not None
    first = autopilot.decide(None, setpoint, T0 + timedelta(minutes=10), 300, 5)
    assert first.send
    assert first.valid_until == T0 + timedelta(minutes=15)
    near_end = autopilot.decide(None, setpoint, T0 + timedelta(minutes=59), 300, 5)
    assert near_end.valid_until == T0 + H + timedelta(seconds=5)  # the run's end plus the handover grace


def test_decide_renews_only_when_the_lease_can_really_be_extended() -> None:
    setpoint = autopilot.setpoint_at(schedule(), T0)
    assert setpoint is not None
    held = _held("charge", 50.0, T0, T0 + timedelta(minutes=5))
    early = autopilot.decide(held, setpoint, T0 + timedelta(minutes=2), 300, 5)
    assert not early.send
    assert early.wake_at == T0 + timedelta(minutes=4)  # renewal margin: a fifth of the lease
    renew = autopilot.decide(held, setpoint, T0 + timedelta(minutes=4), 300, 5)
    assert renew.send
    assert renew.valid_until == T0 + timedelta(minutes=9)
    # a lease that already reaches the run's end plus the grace is never re-sent: the boundary hands over
    capped = _held("charge", 50.0, T0 + timedelta(minutes=56), T0 + H + timedelta(seconds=5))
    for second in range(0, 240, 1):
        decision = autopilot.decide(capped, setpoint, T0 + timedelta(minutes=56, seconds=second / 1), 300, 5)
        assert not decision.send
        assert decision.wake_at == T0 + H


def test_decide_sends_at_once_when_the_setpoint_changes_or_the_lease_ended() -> None:
    setpoint = autopilot.setpoint_at(schedule(), T0 + H)
    assert setpoint is not None
    held = _held("charge", 50.0, T0 + timedelta(minutes=58), T0 + H + timedelta(seconds=5))
    assert autopilot.decide(held, setpoint, T0 + H, 300, 5).send
    same = _held("discharge", 50.0, T0, T0 + H)
    assert autopilot.decide(same, setpoint, T0 + H, 300, 5).why == "the previous lease ended"
