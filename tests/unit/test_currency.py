"""Prices and plans in any ISO 4217 currency: an AEMO (AUD) forecast plans in AUD, the dashboard draws A$, and
amounts in two currencies are never added (issue 11 part B)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from nodes.contract.messages import BatterySpec, HistoryResult, PriceForecast, PriceSlot, Schedule, Telemetry
from nodes.contract.topics import PRICES, SCHEDULE, SPEC, TELEMETRY
from nodes.market.sources import aemo
from nodes.market.sources.convert import to_price_forecast
from nodes.market.sources.zones import ZONES
from nodes.planner.cli import main as planner_main
from nodes.planner.config import PlannerConfig
from nodes.planner.node import Planner
from nodes.renderer import currency
from nodes.renderer.figures import render_all
from nodes.renderer.insights import compute_insights
from nodes.renderer.series import PriceSeries, TelemetrySeries
from nodes.runtime.config import load
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "market"
SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)
T0 = datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)


def aemo_forecast() -> PriceForecast:
    """The NSW1 fixture in AEMO's own format, through the real parser and the feed's conversion."""
    parsed = aemo.parse((FIXTURES / "aemo_report_5min_2025-01-15.json").read_bytes(), ZONES["nsw1"])
    return to_price_forecast(parsed, issued_at=T0)


def forecast(code: str, price: float = 50.0, hours: int = 4) -> PriceForecast:
    slots = [PriceSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_per_mwh=price + 40 * i) for i in range(hours)]
    return PriceForecast(zone="nsw1", issued_at=T0, slots=slots, currency=code)


def plan_in(code: str) -> Schedule:
    example = SCHEDULE.example
    return msgspec.structs.replace(example, currency=code)


def telemetry() -> TelemetrySeries:
    return TelemetrySeries.from_telemetry(
        [Telemetry(ts=T0 + timedelta(minutes=15 * i), soc_kwh=500.0 + 10 * i, power_kw=-40.0) for i in range(8)]
    )


async def test_an_aemo_forecast_is_planned_in_aud_by_the_planner_node() -> None:
    prices = aemo_forecast()
    assert prices.currency == "AUD"
    broker = MemoryBroker()
    clock = FakeClock(prices.slots[0].start + timedelta(minutes=1))
    bus = MemoryBus("planner", broker)
    planner = Planner(PlannerConfig(planner_zone="nsw1"), bus, clock=clock)  # type: ignore[arg-type]
    peer = MemoryBus("peer", broker)
    schedules: list[Schedule] = []

    async def on_schedule(params: dict[str, str], schedule: Schedule, delivery: Delivery) -> None:
        schedules.append(schedule)

    peer.subscribe(SCHEDULE, on_schedule)
    await peer.publish(PRICES, prices, zone="nsw1")
    await peer.publish(SPEC, SPEC_B1, battery="b1")
    await peer.publish(TELEMETRY, Telemetry(ts=clock.now, soc_kwh=500.0), battery="b1")
    await planner.setup()
    await broker.idle()
    await planner.step()
    await broker.idle()
    [schedule] = schedules
    assert schedule.currency == "AUD"
    assert schedule.zone == "nsw1"
    # the plan's prices are the forecast's AUD prices, not converted
    by_start = {s.start: s.price_per_mwh for s in prices.slots}
    assert all(by_start[s.start] == s.price_per_mwh for s in schedule.slots if s.start in by_start)
    assert SCHEDULE.decode(SCHEDULE.encode(schedule)).currency == "AUD"


def test_the_planner_cli_plans_and_prints_in_the_currency_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "prices.csv"
    csv.write_text("timestamp,price\n" + "".join(f"2025-01-15T{h:02d}:00:00Z,{20 + 60 * (h % 3)}\n" for h in range(6)))
    battery = tmp_path / "battery.json"
    battery.write_bytes(msgspec.json.encode(SPEC_B1))
    args = ["plan", "--prices", str(csv), "--battery", str(battery), "--soc-initial-kwh", "500"]
    assert planner_main([*args, "--currency", "AUD"]) == 0
    out, err = capsys.readouterr()
    assert msgspec.json.decode(out.splitlines()[0], type=Schedule).currency == "AUD"
    assert "expected revenue AUD " in err
    assert "price AUD/MWh" in err
    assert "EUR" not in err
    assert planner_main([*args, "--currency", "aud"]) == 2
    assert "ISO 4217" in capsys.readouterr().err


def test_symbols_and_codes() -> None:
    assert [currency.money(12.5, c) for c in ("EUR", "GBP", "USD", "AUD", "DKK")] == [
        "€12.50", "£12.50", "$12.50", "A$12.50", "DKK 12.50",
    ]
    assert currency.money(-3.0, "AUD") == "−A$3.00"
    assert currency.money(None, "AUD") == "—"
    assert [currency.per_mwh(c) for c in ("EUR", "AUD", "SEK")] == ["€/MWh", "A$/MWh", "SEK/MWh"]


def test_the_renderer_draws_aud_prices_and_plans_with_a_dollar_sign() -> None:
    prices = PriceSeries.from_forecast(forecast("AUD"))
    plan = plan_in("AUD")
    tele = telemetry()
    insights = compute_insights(tele, prices, SPEC_B1, plan)
    assert (insights.status, insights.currency) == ("ok", "AUD")
    figures = render_all(tele, prices, plan, SPEC_B1, insights, now=T0 + H)
    price_fig = figures["prices"]
    assert price_fig.layout.yaxis.title.text == "price (A$/MWh)"
    assert "A$/MWh" in price_fig.data[0].hovertemplate
    schedule_fig = figures["schedule"]
    assert "expected revenue A$22.13" in schedule_fig.layout.title.text
    assert schedule_fig.layout.yaxis.title.text == "price (A$/MWh)"
    assert "A$/MWh" in schedule_fig.data[0].hovertemplate  # the plan's price line says its currency on hover
    texts = " ".join(" ".join(t.text) for t in figures["insights"].data if t.text is not None)
    assert "A$" in texts
    assert "€" not in texts
    assert figures["insights"].layout.meta["insights"]["currency"] == "AUD"


def test_prices_in_one_currency_and_a_plan_in_another_are_an_error_not_a_sum() -> None:
    prices = PriceSeries.from_forecast(forecast("EUR"))
    plan = plan_in("AUD")
    tele = telemetry()
    insights = compute_insights(tele, prices, SPEC_B1, plan)
    assert insights.status == "unavailable"
    assert insights.note == (
        "prices are in EUR but the plan is in AUD: amounts in different currencies are not added or compared"
    )
    assert insights.realised_revenue == 0.0  # nothing summed
    figures = render_all(tele, prices, plan, SPEC_B1, insights, now=T0 + H)
    assert all(t.name != "price" for t in figures["prices"].data)  # no price line on a wrong axis
    shown = " ".join(a.text for a in figures["prices"].layout.annotations)
    assert "prices not drawn: prices are in EUR but the plan is in AUD" in shown
    kpis = " ".join(a.text for a in figures["insights"].layout.annotations)
    assert "prices are in EUR but the plan is in AUD" in kpis


def test_two_price_currencies_in_one_view_are_an_error_and_each_slot_keeps_its_own() -> None:
    eur = PriceSeries.from_forecast(forecast("EUR", hours=2))
    later = forecast("AUD", hours=4)
    aud = PriceSeries.from_forecast(msgspec.structs.replace(later, slots=later.slots[2:]))
    both = eur.merge(aud)
    assert both.currencies == {"EUR", "AUD"}
    assert both.window(T0, T0 + 2 * H).currencies == {"EUR"}
    assert both.window(T0 + 2 * H, T0 + 4 * H).currencies == {"AUD"}
    insights = compute_insights(telemetry(), both, SPEC_B1, None)
    assert insights.status == "unavailable"
    assert "prices in AUD and EUR in one view" in insights.note


def test_price_history_rows_carry_their_currency() -> None:
    result = HistoryResult(
        ok=True,
        columns=["time", "price_per_mwh", "end", "currency"],
        rows=[
            ["2025-01-15T00:00:00Z", 10.0, "2025-01-15T01:00:00Z", "AUD"],
            ["2025-01-15T01:00:00Z", 20.0, "2025-01-15T02:00:00Z", "AUD"],
        ],
    )
    assert PriceSeries.from_history(result).currencies == {"AUD"}
    # points stored before prices named a currency were EUR, as their messages were
    legacy = HistoryResult(ok=True, columns=["time", "price_per_mwh"], rows=[["2025-01-15T00:00:00Z", 1.0]])
    assert PriceSeries.from_history(legacy).currencies == {"EUR"}


def test_the_switch_penalty_setting_lost_its_eur_and_the_old_name_still_works(caplog: pytest.LogCaptureFixture) -> None:
    assert load(PlannerConfig, {"BESS_PLANNER_SWITCH_PENALTY": "2.5"}).planner_switch_penalty_eur == 2.5
    assert load(PlannerConfig, {"BESS_PLANNER_SWITCH_PENALTY_EUR": "1.5"}).planner_switch_penalty_eur == 1.5
    assert "BESS_PLANNER_SWITCH_PENALTY_EUR is deprecated" in caplog.text
