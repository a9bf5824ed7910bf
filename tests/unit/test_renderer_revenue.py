"""Today's realised revenue for Home Assistant (battery/{battery}/revenue): the dashboard's own KPI since midnight
on the day's clock, published only when it is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nodes.contract import energy
from nodes.contract.messages import PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import PRICES, REVENUE, TELEMETRY
from nodes.renderer.config import RendererConfig
from nodes.renderer.insights import Insights, pending
from nodes.renderer.node import Renderer
from nodes.renderer.revenue import day_clock, day_revenue, day_start
from nodes.runtime.memory import MemoryBus
from tests.unit.test_renderer_shell import Rig


def test_the_day_clock_is_the_setting_else_the_price_zones_local_clock_else_utc() -> None:
    assert day_clock("Australia/Brisbane", "de-lu") == (ZoneInfo("Australia/Brisbane"), "Australia/Brisbane")
    assert day_clock("", "de-lu") == (ZoneInfo("Europe/Berlin"), "Europe/Berlin")
    assert day_clock("", "my-own-zone") == (UTC, "UTC")
    with pytest.raises(ValueError, match="BESS_RENDERER_DAY_TZ"):
        day_clock("Mars/Olympus_Mons", "de-lu")
    assert "BESS_RENDERER_DAY_TZ" in " ".join(RendererConfig(renderer_day_tz="nowhere").problems())


def test_the_day_starts_at_local_midnight_also_on_a_daylight_saving_day() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2025-03-30: clocks jump from 02:00 to 03:00; midnight was still UTC+1
    assert day_start(datetime(2025, 3, 30, 12, 0, tzinfo=UTC), berlin) == datetime(2025, 3, 29, 23, 0, tzinfo=UTC)
    assert day_start(datetime(2025, 7, 1, 21, 59, tzinfo=UTC), berlin) == datetime(2025, 6, 30, 22, 0, tzinfo=UTC)
    assert day_start(datetime(2025, 7, 1, 22, 1, tzinfo=UTC), berlin) == datetime(2025, 7, 1, 22, 0, tzinfo=UTC)


def test_nothing_is_said_while_the_kpi_is_not_known_or_has_no_currency() -> None:
    now = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    start = day_start(now, UTC)
    assert day_revenue(pending("computing", "reading"), start, "UTC", now, currency_known=True) is None
    assert day_revenue(pending("unavailable", "no recorder"), start, "UTC", now, currency_known=True) is None
    known = Insights(realised_revenue=12.5, samples=10, currency="AUD", end=now - timedelta(seconds=3))
    assert day_revenue(known, start, "UTC", now, currency_known=False) is None
    message = day_revenue(known, start, "UTC", now, currency_known=True)
    assert message is not None
    assert (message.realised_revenue, message.currency, message.day_start, message.until) == (
        12.5, "AUD", start, now - timedelta(seconds=3))


async def test_the_renderer_publishes_the_dashboards_integral_since_midnight() -> None:
    rig = Rig()
    rig.renderer = Renderer(RendererConfig(history_timeout_s=0.2, renderer_day_tz="UTC"), rig.bus)
    now = datetime.now(UTC)
    market = MemoryBus("market", rig.broker)
    await market.publish(PRICES, PriceForecast(zone="de-lu", issued_at=now, currency="EUR", slots=[
        PriceSlot(start=now - timedelta(hours=1), end=now + timedelta(hours=1), price_per_mwh=100.0)]), zone="de-lu")
    await rig.start()  # three readings 10 s apart, charging at 10 kW
    await rig.renderer.render("b1")
    await rig.broker.idle()
    message = rig.broker.retained_message(REVENUE, battery="b1")
    assert message is not None
    charged_kwh = energy.energy_kwh(10.0, 20.0)  # held between the readings: 20 s at 10 kW
    assert message.energy_charged_kwh == pytest.approx(charged_kwh)
    assert message.realised_revenue == pytest.approx(-energy.value_at(charged_kwh, 100.0)), "buying costs money"
    assert (message.currency, message.tz, message.samples) == ("EUR", "UTC", 3)
    assert message.day_start == day_start(message.computed_at, UTC)
    # at most every BESS_RENDERER_REVENUE_INTERVAL_S: a second render right away publishes nothing new
    await rig.device.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=503.0, power_kw=-10.0), battery="b1")
    await rig.renderer.render("b1")
    await rig.broker.idle()
    assert rig.bus.counters["revenue_published"] == 1
    await rig.renderer.shutdown()


async def test_without_a_recorder_no_revenue_is_published() -> None:
    rig = Rig(recorder=False)
    await rig.start()
    await rig.renderer.render("b1")
    await rig.broker.idle()
    assert rig.broker.retained_message(REVENUE, battery="b1") is None
    await rig.renderer.shutdown()


