"""Market-performance insights on small inputs, each number computed by hand in the comments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from nodes.contract.messages import BatterySpec, HistoryResult, Schedule, ScheduleSlot, Telemetry
from nodes.renderer.insights import Insights, compute_insights, plan_revenue
from nodes.renderer.series import PriceSeries, TelemetrySeries

T0 = datetime(2025, 1, 16, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
HOUR_HOLD = 7200.0
"""Hand calculations below use hourly readings; let a measured power hold that long (the default is 15 min)."""
SPEC = BatterySpec(
    capacity_kwh=700.0,
    soc_min_kwh=100.0,
    soc_max_kwh=600.0,
    max_charge_kw=250.0,
    max_discharge_kw=250.0,
    cycle_cost_per_mwh=10.0,
)


def hourly_prices(*prices: float) -> PriceSeries:
    return PriceSeries.from_arrays(
        [(T0 + i * H).timestamp() for i in range(len(prices))],
        [(T0 + (i + 1) * H).timestamp() for i in range(len(prices))],
        list(prices),
    )


def samples(*rows: tuple[timedelta, float, float | None]) -> TelemetrySeries:
    return TelemetrySeries.from_telemetry(Telemetry(ts=T0 + dt, soc_kwh=soc, power_kw=p) for dt, soc, p in rows)


def test_buy_low_sell_high_by_hand() -> None:
    # Power holds from a sample to the next: charge 100 kW for 2 h (prices 20, 30), discharge 150 kW for 1 h
    # (price 100). The last sample starts no interval, so its power is not integrated.
    tel = samples((0 * H, 500.0, -100.0), (1 * H, 590.0, -100.0), (2 * H, 680.0, 150.0), (3 * H, 530.0, 0.0))
    ins = compute_insights(tel, hourly_prices(20.0, 30.0, 100.0), SPEC, max_hold_s=HOUR_HOLD)
    # revenue = (-100*20 - 100*30 + 150*100) / 1000 = (-2000 - 3000 + 15000) / 1000 = 10 EUR
    assert ins.realised_revenue == pytest.approx(10.0)
    assert ins.energy_charged_kwh == pytest.approx(200.0)
    assert ins.energy_discharged_kwh == pytest.approx(150.0)
    # energy-weighted: buy (100*20 + 100*30) / 200 = 25; sell 100
    assert ins.avg_buy_price_per_mwh == pytest.approx(25.0)
    assert ins.avg_sell_price_per_mwh == pytest.approx(100.0)
    assert ins.spread_per_mwh == pytest.approx(75.0)
    # cycles = discharged / (soc_max - soc_min) = 150 / 500
    assert ins.full_cycles == pytest.approx(0.3)
    # lost = charged - discharged - SOC gained = 200 - 150 - (530 - 500) = 20 kWh
    assert ins.soc_start_kwh == 500.0
    assert ins.soc_end_kwh == 530.0
    assert ins.efficiency_loss_kwh == pytest.approx(20.0)
    # wear = 150 kWh = 0.15 MWh x 10 EUR/MWh
    assert ins.cycle_cost == pytest.approx(1.5)
    assert ins.begin == T0
    assert ins.end == T0 + 3 * H
    assert ins.samples == 4
    assert ins.unpriced_energy_kwh == 0.0
    assert ins.gap_s == 0.0
    assert ins.derived_energy_kwh == 0.0
    assert ins.power_source == "measured"
    assert ins.plan_id is None
    assert ins.expected_revenue is None
    assert ins.plan_revenue_to_date is None


def test_a_hold_is_split_at_price_slot_boundaries() -> None:
    # One sample at 00:00 charging 60 kW, the next at 02:00.
    tel = samples((0 * H, 500.0, -60.0), (2 * H, 620.0, 0.0))
    ins = compute_insights(tel, hourly_prices(10.0, 50.0), None, max_hold_s=HOUR_HOLD)
    # 60 kWh at 10 EUR/MWh + 60 kWh at 50 EUR/MWh = -(0.6 + 3.0) EUR
    assert ins.realised_revenue == pytest.approx(-3.6)
    assert ins.avg_buy_price_per_mwh == pytest.approx(30.0)
    assert ins.avg_sell_price_per_mwh is None  # never sold: unknown, not 0
    assert ins.full_cycles is None
    assert ins.cycle_cost is None
    # 120 kWh in, nothing out, SOC +120: nothing lost
    assert ins.efficiency_loss_kwh == pytest.approx(0.0)


def test_energy_without_a_price_counts_as_energy_not_revenue() -> None:
    tel = samples((0 * H, 500.0, 100.0), (1 * H, 400.0, 100.0), (2 * H, 300.0, 0.0))
    ins = compute_insights(tel, hourly_prices(80.0), SPEC, max_hold_s=HOUR_HOLD)  # only the first hour is priced
    assert ins.energy_discharged_kwh == pytest.approx(200.0)
    assert ins.unpriced_energy_kwh == pytest.approx(100.0)
    assert ins.realised_revenue == pytest.approx(8.0)  # 100 kWh x 80 EUR/MWh
    assert ins.avg_sell_price_per_mwh == pytest.approx(80.0)


def test_long_gaps_fall_back_to_the_soc_change_and_very_long_ones_are_not_integrated() -> None:
    minute = timedelta(minutes=1)
    tel = samples(
        (0 * minute, 500.0, -60.0),
        (1 * minute, 501.0, -60.0),
        (2 * minute, 502.0, -60.0),
        (3 * H, 512.0, -60.0),  # 2 h 58 min later: too long to hold 60 kW, the SOC says +10 kWh
        (3 * H + minute, 513.0, -60.0),
        (10 * H, 513.0, 0.0),  # 7 h later: longer than 6 h, nothing is known in between
    )
    ins = compute_insights(tel, hourly_prices(*[10.0] * 11), None)
    # 1 + 1 kWh measured, 10 kWh derived from SOC, 1 kWh measured; the 7 h gap adds nothing
    assert ins.energy_charged_kwh == pytest.approx(13.0)
    assert ins.derived_energy_kwh == pytest.approx(10.0)
    assert ins.power_source == "measured and derived from SOC"
    assert ins.gap_s == pytest.approx(7 * 3600 - 60)
    assert ins.realised_revenue == pytest.approx(-0.13)


def test_missing_power_is_derived_from_the_soc_change() -> None:
    tel = samples((0 * H, 500.0, 50.0), (1 * H, 450.0, None), (2 * H, 400.0, 0.0))
    ins = compute_insights(tel, hourly_prices(100.0, 200.0), None, max_hold_s=HOUR_HOLD)
    # 50 kW measured for 00:00-01:00, then 50 kW from the SOC change (450 -> 400 in 1 h): 50 kWh at 100 and
    # 50 kWh at 200 EUR/MWh
    assert ins.energy_discharged_kwh == pytest.approx(100.0)
    assert ins.derived_energy_kwh == pytest.approx(50.0)
    assert ins.realised_revenue == pytest.approx(15.0)
    assert ins.samples == 3


def test_efficiency_loss_is_never_negative() -> None:
    # SOC rises by more than the energy charged: the readings disagree, the loss is not shown as negative
    bad = compute_insights(samples((0 * H, 500.0, -100.0), (1 * H, 650.0, 0.0)), hourly_prices(10.0), None,
                           max_hold_s=HOUR_HOLD)
    assert bad.efficiency_loss_kwh is None
    assert bad.loss_note == "power and SOC readings disagree by 50.0 kWh"
    # a rounding-sized disagreement (0.1 % of the energy) is no loss: 0, not -0.1
    close = compute_insights(samples((0 * H, 500.0, -100.0), (1 * H, 600.1, 0.0)), hourly_prices(10.0), None,
                             max_hold_s=HOUR_HOLD)
    assert close.efficiency_loss_kwh == 0.0
    # the SOC falls 100 kWh while 10 kWh are reported discharged: not an efficiency loss of 90 kWh
    faster = compute_insights(samples((0 * H, 500.0, 10.0), (1 * H, 400.0, 0.0)), hourly_prices(10.0), None,
                              max_hold_s=HOUR_HOLD)
    assert faster.efficiency_loss_kwh is None
    assert faster.loss_note == "power and SOC readings disagree: the SOC fell 90.0 kWh more than the power explains"


def test_schedule_numbers() -> None:
    plan = Schedule(
        plan_id="p-7",
        created_at=T0,
        soc_initial_kwh=300.0,
        slots=[
            ScheduleSlot(
                start=T0, end=T0 + H, price_per_mwh=20.0, charge_kw=100.0, discharge_kw=0.0, soc_kwh=395.0
            ),
            ScheduleSlot(
                start=T0 + H, end=T0 + 2 * H, price_per_mwh=120.0, charge_kw=0.0, discharge_kw=100.0, soc_kwh=300.0
            ),
        ],
        expected_revenue=10.0,
        baseline_revenue=4.0,
    )
    # Whole plan: -100 kWh x 20 + 100 kWh x 120 = (-2000 + 12000) / 1000 = 10 EUR
    assert plan_revenue(plan) == pytest.approx(10.0)
    # Only 00:30-01:30: -50 kWh x 20 + 50 kWh x 120 = 5 EUR
    assert plan_revenue(plan, (T0 + 0.5 * H).timestamp(), (T0 + 1.5 * H).timestamp()) == pytest.approx(5.0)

    tel = samples((0.5 * H, 350.0, -100.0), (1 * H, 395.0, 100.0), (1.5 * H, 345.0, 0.0))
    ins = compute_insights(tel, PriceSeries.from_schedule(plan), SPEC, plan, max_hold_s=HOUR_HOLD)
    assert ins.plan_id == "p-7"
    assert ins.expected_revenue == 10.0
    assert ins.baseline_revenue == 4.0
    assert ins.plan_revenue_to_date == pytest.approx(5.0)  # the plan over the telemetry window
    assert ins.realised_revenue == pytest.approx(5.0)  # -50 kWh x 20 + 50 kWh x 120


def test_empty_inputs() -> None:
    ins = compute_insights(TelemetrySeries.empty(), PriceSeries.empty(), SPEC, None)
    assert ins == Insights(samples=0, full_cycles=0.0, cycle_cost=0.0)
    assert ins.spread_per_mwh is None
    one = compute_insights(samples((0 * H, 500.0, 10.0)), hourly_prices(10.0), None)
    assert one.energy_discharged_kwh == 0.0
    assert one.efficiency_loss_kwh is None
    assert one.soc_start_kwh == 500.0
    zero_range = BatterySpec(
        capacity_kwh=10.0, soc_min_kwh=5.0, soc_max_kwh=5.0, max_charge_kw=1.0, max_discharge_kw=1.0
    )
    assert (
        compute_insights(samples((0 * H, 5.0, 1.0), (1 * H, 5.0, 0.0)), hourly_prices(1.0), zero_range).full_cycles
        is None
    )


def test_history_and_messages_give_the_same_insights() -> None:
    rows = [
        ["2025-01-16T00:00:00Z", 500.0, -100.0, 100.0, None],
        ["2025-01-16T01:00:00Z", 590.0, -100.0, 100.0, None],
        ["2025-01-16T02:00:00Z", 680.0, 150.0, None, 150.0],
        ["2025-01-16T03:00:00Z", 530.0, 0.0, None, None],
    ]
    history = TelemetrySeries.from_history(
        HistoryResult(
            ok=True, columns=["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw"], rows=rows
        )
    )
    prices = PriceSeries.from_history(
        HistoryResult(
            ok=True,
            columns=["time", "price_per_mwh"],
            rows=[["2025-01-16T00:00:00Z", 20.0], ["2025-01-16T01:00:00Z", 30.0], ["2025-01-16T02:00:00Z", 100.0]],
        )
    )
    from_history = compute_insights(history, prices, SPEC, max_hold_s=HOUR_HOLD)
    from_messages = compute_insights(
        samples((0 * H, 500.0, -100.0), (1 * H, 590.0, -100.0), (2 * H, 680.0, 150.0), (3 * H, 530.0, 0.0)),
        hourly_prices(20.0, 30.0, 100.0),
        SPEC,
        max_hold_s=HOUR_HOLD,
    )
    assert from_history == from_messages
    assert from_history.realised_revenue == pytest.approx(10.0)


def test_insights_encode_as_json() -> None:
    ins = compute_insights(
        samples((0 * H, 500.0, 10.0), (1 * H, 490.0, 0.0)), hourly_prices(50.0), SPEC, max_hold_s=HOUR_HOLD
    )
    decoded = msgspec.json.decode(msgspec.json.encode(ins), type=Insights)
    assert decoded == ins
    assert decoded.realised_revenue == pytest.approx(0.5)
