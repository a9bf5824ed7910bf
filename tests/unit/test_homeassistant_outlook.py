"""The derived outlook (pure): the control mode the planner obeys, the plan's run now and the next change (as the
autopilot reads them), the price now, and when any of these changes without a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.contract.messages import ControlMode, PriceForecast, PriceSlot, Schedule, ScheduleSlot
from nodes.homeassistant.outlook import next_change, outlook, same

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def plan(currency: str = "EUR") -> Schedule:
    """Charge 250 kW for two hours, discharge 100 kW for one, then idle."""
    powers = [(250.0, 0.0), (250.0, 0.0), (0.0, 100.0), (0.0, 0.0)]
    slots = [ScheduleSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_per_mwh=10.0 * (i + 1), charge_kw=c,
                          discharge_kw=d, soc_kwh=500.0) for i, (c, d) in enumerate(powers)]
    return Schedule(plan_id="p-1", created_at=T0, soc_initial_kwh=500.0, slots=slots, expected_revenue=5.0,
                    zone="de-lu", currency=currency)


def prices() -> PriceForecast:
    return PriceForecast(zone="de-lu", issued_at=T0, currency="EUR", slots=[
        PriceSlot(start=T0 + i * timedelta(minutes=15), end=T0 + (i + 1) * timedelta(minutes=15),
                  price_per_mwh=40.0 + i) for i in range(16)])


def test_the_run_now_and_the_next_change_signed_like_telemetry() -> None:
    now = T0 + timedelta(minutes=30)
    out = outlook(now, control=None, default_mode="autopilot", schedule=plan(), forecast=prices(), slots=3)
    assert (out.action, out.power_kw, out.slot_end) == ("charge", -250.0, T0 + 2 * H), "the run of equal slots"
    assert (out.next_change_at, out.next_action, out.next_power_kw) == (T0 + 2 * H, "discharge", 100.0)
    assert [(s.start, s.action, s.power_kw) for s in out.upcoming] == [
        (T0, "charge", -250.0), (T0 + H, "charge", -250.0), (T0 + 2 * H, "discharge", 100.0)]
    assert (out.plan_id, out.control_mode, out.zone) == ("p-1", "autopilot", "de-lu")


def test_the_price_now_is_the_forecasts_slot_else_the_plans() -> None:
    now = T0 + timedelta(minutes=31)
    out = outlook(now, control=None, default_mode="manual", schedule=plan(), forecast=prices())
    assert (out.price_per_mwh, out.price_until, out.currency) == (42.0, T0 + timedelta(minutes=45), "EUR")
    from_plan = outlook(now, control=None, default_mode="manual", schedule=plan("AUD"), forecast=None)
    assert (from_plan.price_per_mwh, from_plan.price_until, from_plan.currency) == (10.0, T0 + H, "AUD")
    nothing = outlook(now, control=None, default_mode="manual", schedule=None, forecast=None)
    assert (nothing.price_per_mwh, nothing.action, nothing.currency, nothing.upcoming) == (None, None, None, [])


def test_the_control_mode_in_force_and_the_planners_default_after_it() -> None:
    manual = ControlMode(mode="manual", set_at=T0, until=T0 + H, source="homeassistant")
    during = outlook(T0 + timedelta(minutes=5), control=manual, default_mode="autopilot", schedule=None, forecast=None)
    assert (during.control_mode, during.control_until) == ("manual", T0 + H)
    after = outlook(T0 + H, control=manual, default_mode="autopilot", schedule=None, forecast=None)
    assert (after.control_mode, after.control_until) == ("autopilot", None)


def test_before_the_plan_starts_the_next_change_is_its_first_slot() -> None:
    out = outlook(T0 - timedelta(minutes=5), control=None, default_mode="autopilot", schedule=plan(), forecast=None)
    assert out.action is None
    assert (out.next_change_at, out.next_action, out.next_power_kw) == (T0, "charge", -250.0)


def test_the_next_boundary_is_the_first_of_slot_ends_and_mode_ends() -> None:
    now = T0 + timedelta(minutes=31)
    manual = ControlMode(mode="manual", set_at=T0, until=T0 + timedelta(minutes=40))
    assert next_change(now, manual, plan(), prices()) == T0 + timedelta(minutes=40)
    assert next_change(now, None, plan(), prices()) == T0 + timedelta(minutes=45), "the price slot ends first"
    assert next_change(now, None, plan(), None) == T0 + H
    assert next_change(T0 + 10 * H, None, plan(), prices()) is None, "nothing ahead"


def test_same_ignores_only_the_timestamp() -> None:
    a = outlook(T0, control=None, default_mode="autopilot", schedule=plan(), forecast=prices())
    b = outlook(T0 + timedelta(seconds=1), control=None, default_mode="autopilot", schedule=plan(), forecast=prices())
    assert a.ts != b.ts
    assert same(a, b)
    assert not same(None, b)
    assert not same(a, outlook(T0, control=None, default_mode="manual", schedule=plan(), forecast=prices()))
