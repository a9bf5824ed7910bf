"""The optimiser on real day-ahead prices: every constraint of every plan, and never below the baselines."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import pytest

from nodes.contract.messages import BatterySpec, PriceSlot, Schedule
from nodes.market.prices_csv import read_prices, split_days
from nodes.planner import baseline
from nodes.planner.model import PlanOptions, SolverName, plan

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

PRICES = Path(__file__).parents[2].parent / "shared/data/prices"
FILES = sorted(PRICES.glob("*.csv")) if PRICES.is_dir() else []
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOL = 1e-6

BATTERIES = {
    "1mwh": BatterySpec(
        capacity_kwh=1000, soc_min_kwh=0, soc_max_kwh=1000, max_charge_kw=250, max_discharge_kw=250,
        roundtrip_efficiency=0.9,
    ),
    "asym": BatterySpec(
        capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=200, max_discharge_kw=300,
        roundtrip_efficiency=0.85, cycle_cost_per_mwh=8.0,
    ),
}
EVENTS = {
    "de_lu_dayahead_2023_hourly.csv": [date(2023, 7, 2), date(2023, 3, 26), date(2023, 10, 29)],  # -500, DST days
    "de_lu_dayahead_2022_hourly.csv": [date(2022, 8, 29)],  # the 871 EUR/MWh peak
    "de_lu_dayahead_2025-10_2026-08_15min.csv": [date(2026, 5, 1), date(2026, 3, 29)],  # -499.99, 92 quarters
}


def _skip_without_data() -> None:
    if not FILES:
        pytest.skip("../shared/data/prices not present (only in the dev workspace)")


@cache
def _days(name: str) -> list[tuple[date, list[PriceSlot]]]:
    return split_days(read_prices(PRICES / name))


def _sampled(name: str) -> list[tuple[date, list[PriceSlot]]]:
    """5 days spread over the file plus its notable events."""
    days = _days(name)
    picks = {days[round(k * (len(days) - 1) / 4)][0] for k in range(5)} | set(EVENTS.get(name, []))
    return [(day, slots) for day, slots in days if day in picks]


def check_plan(schedule: Schedule, prices: list[PriceSlot], spec: BatterySpec, soc0: float, target: float) -> None:
    """Every constraint, recomputed here from the published powers (independent of the model code)."""
    root = math.sqrt(spec.roundtrip_efficiency)
    assert len(schedule.slots) == len(prices)
    soc = soc0
    revenue = 0.0
    for slot, price in zip(schedule.slots, prices, strict=True):
        assert (slot.start, slot.end, slot.price_per_mwh) == (price.start, price.end, price.price_per_mwh)
        c, d = slot.charge_kw, slot.discharge_kw
        assert 0 <= c <= spec.max_charge_kw
        assert 0 <= d <= spec.max_discharge_kw
        assert c == 0 or d == 0, f"{slot.start}: charges {c} and discharges {d} at once"
        h = (slot.end - slot.start).total_seconds() / 3600
        soc = soc + root * c * h - d * h / root
        assert slot.soc_kwh == pytest.approx(soc, abs=TOL)
        assert spec.soc_min_kwh - TOL <= slot.soc_kwh <= spec.soc_max_kwh + TOL
        revenue += slot.price_per_mwh * (d - c) * h / 1000 - spec.cycle_cost_per_mwh * d * h / 1000
    assert schedule.slots[-1].soc_kwh >= target - TOL
    assert schedule.expected_revenue == pytest.approx(revenue, abs=TOL)


@pytest.mark.parametrize("battery_name", sorted(BATTERIES))
@pytest.mark.parametrize("file_name", [f.name for f in FILES] or ["(none)"])
def test_sampled_days_meet_every_constraint_and_beat_the_baselines(file_name: str, battery_name: str) -> None:
    _skip_without_data()
    spec = BATTERIES[battery_name]
    sampled = _sampled(file_name)
    assert len(sampled) >= 5
    for k, (day, prices) in enumerate(sampled):
        soc0 = spec.soc_min_kwh + (spec.soc_max_kwh - spec.soc_min_kwh) * (k % 3) / 2  # empty, half, full
        schedule = plan(prices, spec, soc0, created_at=NOW)
        check_plan(schedule, prices, spec, soc0, soc0)
        for dispatch in (baseline.top_n_daily(prices, spec, soc0), baseline.threshold(prices, spec, soc0)):
            scored = baseline.evaluate_dispatch(dispatch, spec)
            assert scored.violations == [], day
            assert schedule.expected_revenue >= scored.revenue - TOL, day
        assert schedule.baseline_revenue is not None
        assert schedule.expected_revenue >= schedule.baseline_revenue - TOL


def test_the_minus_500_day_is_exploited() -> None:
    _skip_without_data()
    spec = BATTERIES["1mwh"]
    (_, prices), = [(d, s) for d, s in _days("de_lu_dayahead_2023_hourly.csv") if d == date(2023, 7, 2)]
    schedule = plan(prices, spec, 0.0, created_at=NOW)
    check_plan(schedule, prices, spec, 0.0, 0.0)

    worst = min(range(len(prices)), key=lambda i: prices[i].price_per_mwh)
    assert prices[worst].price_per_mwh == -500.0
    assert schedule.slots[worst].charge_kw == spec.max_charge_kw  # paid 125 EUR to take 250 kWh
    assert schedule.expected_revenue > 100


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_multi_day_quarter_hour_horizon_with_options(solver: SolverName) -> None:
    _skip_without_data()
    days = dict(_days("de_lu_dayahead_2025-10_2026-08_15min.csv"))
    prices = days[date(2026, 4, 30)] + days[date(2026, 5, 1)]  # 192 quarter-hours around the -499.99 slot
    spec = BATTERIES["asym"]
    options = PlanOptions(solver=solver, switch_penalty=1.0, full_charge_every_slots=96, terminal_soc_kwh=500.0)
    schedule = plan(prices, spec, 300.0, created_at=NOW, options=options)

    check_plan(schedule, prices, spec, 300.0, 500.0)
    socs = [slot.soc_kwh for slot in schedule.slots]
    for k in range(len(socs) - 96 + 1):
        assert max(socs[k : k + 96]) >= spec.soc_max_kwh - TOL
