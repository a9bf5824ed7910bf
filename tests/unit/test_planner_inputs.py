"""The planner's pure input rules (nodes/planner/inputs.py): drift, what blocks planning, the next boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.contract.messages import BatterySpec, Schedule, ScheduleSlot, Telemetry
from nodes.planner.inputs import drifted, next_boundary, telemetry_problem

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=250, max_discharge_kw=250)
PLAN = Schedule(plan_id="p", created_at=T0, soc_initial_kwh=500.0, expected_revenue=0.0, slots=[
    ScheduleSlot(start=T0, end=T0 + HOUR, price_per_mwh=10.0, charge_kw=200.0, discharge_kw=0.0,
                 soc_kwh=700.0),
    ScheduleSlot(start=T0 + 2 * HOUR, end=T0 + 3 * HOUR, price_per_mwh=90.0, charge_kw=0.0,
                 discharge_kw=200.0, soc_kwh=500.0),
])


def test_drift_is_measured_against_the_plan_at_the_readings_time() -> None:
    half = Telemetry(ts=T0 + HOUR / 2, soc_kwh=660.0)  # the plan says 600 at half past
    assert drifted(PLAN, half, SPEC, None) == 600.0  # 60 kWh > 5 % of 1000 kWh
    assert drifted(PLAN, half, SPEC, 70.0) is None
    assert drifted(PLAN, Telemetry(ts=T0 + HOUR / 2, soc_kwh=605.0), None, None) is None  # 10 kWh without a spec
    assert drifted(PLAN, Telemetry(ts=T0 - HOUR, soc_kwh=0.0), SPEC, None) is None  # outside the plan


def test_what_stops_planning() -> None:
    assert telemetry_problem(None, T0, 300) == "not planned: no telemetry received"
    stale = telemetry_problem(Telemetry(ts=T0 - timedelta(seconds=400), soc_kwh=1.0), T0, 300)
    assert stale is not None
    assert "400 s old" in stale
    assert telemetry_problem(Telemetry(ts=T0, soc_kwh=1.0), T0, 300) is None


def test_the_next_boundary_is_a_slot_edge_or_the_next_hour() -> None:
    assert next_boundary([PLAN, None], T0 + HOUR / 2) == T0 + HOUR
    assert next_boundary([PLAN], T0 + HOUR) == T0 + 2 * HOUR  # a plan's later start counts
    assert next_boundary([], T0 + HOUR / 2) == T0 + HOUR  # nothing planned: the next full hour
