"""The fleet view's rows and totals (nodes/renderer/fleet.py), and the table the index page writes from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import Alarm, BatterySpec, BatteryState, Schedule, ScheduleSlot, Telemetry
from nodes.renderer.fleet import (
    FRESH_S,
    fleet_row,
    fleet_totals,
    plan_revenue_between,
    utc_day,
)
from nodes.renderer.web_fleet import fleet_table, whole_pct

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=250, max_discharge_kw=250,
                   cycle_cost_per_mwh=10.0)


def slot(start_h: float, hours: float, price: float, charge_kw: float = 0.0, discharge_kw: float = 0.0) -> ScheduleSlot:
    start = datetime(2025, 1, 16, tzinfo=UTC) + timedelta(hours=start_h)
    return ScheduleSlot(start=start, end=start + timedelta(hours=hours), price_per_mwh=price, charge_kw=charge_kw,
                        discharge_kw=discharge_kw, soc_kwh=500)


def plan(*slots: ScheduleSlot, currency: str = "EUR") -> Schedule:
    return Schedule(plan_id="p", created_at=NOW, soc_initial_kwh=500, slots=list(slots), expected_revenue=0.0,
                    currency=currency)


def alarm(rule: str, severity: str, state: str = "raised") -> Alarm:
    return Alarm(rule=rule, state=state, since=NOW, severity=severity, message=rule)  # type: ignore[arg-type]


def reading(age_s: float, soc: float, power: float | None = 0.0) -> Telemetry:
    return Telemetry(ts=NOW - timedelta(seconds=age_s), soc_kwh=soc, power_kw=power)


def test_today_is_the_utc_day_of_now() -> None:
    late = datetime(2025, 1, 16, 23, 30, tzinfo=UTC)
    assert utc_day(late) == (datetime(2025, 1, 16, tzinfo=UTC), datetime(2025, 1, 17, tzinfo=UTC))


def test_plan_revenue_today_counts_only_the_part_of_each_slot_inside_today_and_deducts_wear() -> None:
    schedule = plan(
        slot(-2, 1, 999.0, discharge_kw=100),      # yesterday: not counted
        slot(2, 1, 50.0, charge_kw=200),           # buys 200 kWh at 50/MWh: -10
        slot(18, 1, 150.0, discharge_kw=200),      # sells 200 kWh at 150/MWh: +30, wear 200 kWh x 10/MWh = 2
        slot(23.5, 1, 100.0, discharge_kw=100),    # half inside: 50 kWh at 100/MWh = +5, wear 0.5
    )
    begin, end = utc_day(NOW)
    assert plan_revenue_between(schedule, SPEC, begin, end) == pytest.approx(-10 + 30 - 2 + 5 - 0.5)
    assert plan_revenue_between(schedule, None, begin, end) == pytest.approx(-10 + 30 + 5), "no spec: no wear known"
    assert plan_revenue_between(plan(slot(-5, 1, 10.0)), SPEC, begin, end) is None, "no slot today: no number"


def test_a_plan_inside_today_shows_what_the_planner_expects() -> None:
    from nodes.planner.baseline import dispatch_of, evaluate_dispatch

    schedule = plan(slot(1, 1, 40.0, charge_kw=250), slot(9, 1, 120.0, discharge_kw=200), slot(15, 0.25, 80.0))
    expected = evaluate_dispatch(dispatch_of(schedule), SPEC).revenue  # the planner's own scorer
    assert plan_revenue_between(schedule, SPEC, *utc_day(NOW)) == pytest.approx(expected)


def test_a_row_says_what_is_known_and_nothing_more() -> None:
    row = fleet_row("b1", now=NOW, telemetry=reading(42, 512.0, 50.0),
                    state=BatteryState(ts=NOW, mode="discharging"), control_mode="manual", control_text="Control: x",
                    alarms=[alarm("node_degraded", "warning"), alarm("cell_temp_high", "critical"),
                            alarm("bms_alarm", "critical", "cleared")],
                    spec=SPEC, schedule=plan(slot(13, 1, 100.0, discharge_kw=100)), notes={"planner": "ok"})
    assert (row.soc_kwh, row.soc_pct, row.power_kw, row.mode, row.control_mode) == (512.0, 51.2, 50.0,
                                                                                      "discharging", "manual")
    assert (row.alarms, row.alarm_severity, row.alarm_rules) == (2, "critical", ["cell_temp_high", "node_degraded"])
    assert row.revenue_today == pytest.approx(10.0 - 1.0)
    assert row.currency == "EUR"
    assert (row.telemetry_age_s, row.fresh) == (42.0, True)
    empty = fleet_row("b2", now=NOW)
    assert (empty.soc_kwh, empty.soc_pct, empty.power_kw, empty.revenue_today, empty.fresh) == (
        None, None, None, None, False)
    assert empty.revenue_note == "no plan received"
    no_spec = fleet_row("b3", now=NOW, telemetry=reading(1, 7.5))
    assert (no_spec.soc_kwh, no_spec.soc_pct) == (7.5, None), "no % without a capacity"


def test_totals_sum_fresh_readings_and_never_add_two_currencies() -> None:
    rows = [
        fleet_row("a", now=NOW, telemetry=reading(10, 400.0, 100.0), spec=SPEC,
                  schedule=plan(slot(13, 1, 100.0, discharge_kw=100)), alarms=[alarm("x", "warning")]),
        fleet_row("b", now=NOW, telemetry=reading(20, 600.0, -50.0), spec=SPEC,
                  schedule=plan(slot(13, 1, 100.0, discharge_kw=200), currency="GBP")),
        fleet_row("c", now=NOW, telemetry=reading(5, 7.0, None)),                  # no spec, no power reported
        fleet_row("d", now=NOW, telemetry=reading(FRESH_S + 1, 900.0, 250.0), spec=SPEC,
                  alarms=[alarm("telemetry_stale", "critical")]),                   # stale: not counted
        fleet_row("e", now=NOW),                                                     # never heard from
    ]
    totals = fleet_totals(rows)
    assert (totals.batteries, totals.counted) == (5, 3)
    assert totals.energy_kwh == pytest.approx(400 + 600 + 7)
    assert totals.capacity_kwh == pytest.approx(2000), "only the counted batteries with a spec"
    assert totals.energy_pct == pytest.approx((400 + 600) / 2000 * 100), "of the batteries whose capacity is known"
    assert (totals.power_kw, totals.power_counted) == (pytest.approx(50.0), 2)
    assert totals.revenue_today == {"EUR": pytest.approx(9.0), "GBP": pytest.approx(18.0)}
    assert (totals.alarms, totals.alarm_severity) == (2, "critical"), "every battery's alarms, stale ones too"
    assert set(totals.how) == {"energy", "power", "revenue", "alarms"}
    none = fleet_totals([fleet_row("e", now=NOW)])
    assert (none.energy_kwh, none.power_kw, none.energy_pct, none.revenue_today) == (None, None, None, {})


def test_the_table_has_a_row_per_battery_sortable_headers_and_the_totals() -> None:
    rows = [fleet_row("a", now=NOW, telemetry=reading(10, 400.0, 100.0), spec=SPEC),
            fleet_row("b<x", now=NOW)]
    html = fleet_table(rows, fleet_totals(rows), "Europe/Berlin", NOW)
    assert html.count('class="battery-row"') == 2
    assert html.count("<th scope=\"col\" data-sort-key=") == 8
    assert 'id="battery-b&lt;x"' in html, "ids are escaped"
    assert "<x" not in html
    assert 'data-total="energy" data-value="400.0"' in html
    assert '<span class="fill" style="width:40.0%"></span><i class="tick" style="left:10.0%"></i>' in html
    assert "2025-01-16 12:59:50 CET" in html, "the reading's time in the display zone (UTC+1 in January)"
    assert 'data-ts="2025-01-16T11:59:50Z"' in html, "the data stays UTC"


def test_percentages_round_half_up_as_the_page_script_does() -> None:
    assert [whole_pct(v) for v in (52.5, 52.49, 0.5, 99.5)] == ["53", "52", "1", "100"]  # Math.round, not half-even
