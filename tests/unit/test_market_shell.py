"""The market's wiring on the in-memory bus: the price feed publishes a retained forecast for its zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nodes.contract.messages import PriceForecast
from nodes.contract.topics import PRICES, STATUS
from nodes.market.config import MarketConfig
from nodes.market.node import Market
from nodes.runtime.config import load
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.waiting import wait_for_async


async def test_the_market_publishes_a_retained_forecast_for_its_zone() -> None:
    broker = MemoryBroker()
    bus = MemoryBus("market", broker)
    market = Market(MarketConfig(market_zone="de-lu"), bus)
    heard: list[PriceForecast] = []

    async def on_prices(params: dict[str, str], forecast: PriceForecast, delivery: Delivery) -> None:
        heard.append(forecast)

    MemoryBus("planner", broker).subscribe(PRICES, on_prices, zone="de-lu")
    await market.setup()
    await bus.start()
    runner = asyncio.create_task(market.run())
    try:
        await wait_for_async(lambda: heard, timeout=5, what="the first forecast")
    finally:
        runner.cancel()
    [forecast] = heard
    now = datetime.now(UTC)
    assert forecast.zone == "de-lu"
    assert forecast.slots[0].start <= now < forecast.slots[-1].end  # today onwards
    assert broker.retained_message(PRICES, zone="de-lu") == forecast  # a planner starting later gets it
    await bus.publish_status()
    status = broker.retained_message(STATUS, node="market")
    assert status is not None
    assert (status.state, status.counters["forecasts"]) == ("online", 1)


async def test_a_csv_replay_publishes_in_the_files_currency(tmp_path: Path) -> None:
    """BESS_MARKET_CURRENCY names the currency of a CSV's prices: the forecast says AUD, the prices unchanged."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [f"{(start + timedelta(hours=h)).strftime('%Y-%m-%dT%H:%M:%SZ')},{100 + h % 24}" for h in range(24 * 8)]
    path = tmp_path / "nem.csv"
    path.write_text("timestamp,price\n" + "\n".join(rows) + "\n")
    config = load(MarketConfig, {"BESS_MARKET_CSV": str(path), "BESS_MARKET_CURRENCY": "AUD",
                                 "BESS_MARKET_ZONE": "nsw1"})
    assert config.problems() == []
    broker = MemoryBroker()
    market = Market(config, MemoryBus("market", broker))
    await market.publish_now()
    forecast = broker.retained_message(PRICES, zone="nsw1")
    assert forecast is not None
    assert forecast.currency == "AUD"
    assert forecast.source == "replay of nem.csv"
    assert {s.price_per_mwh for s in forecast.slots} <= {100.0 + h for h in range(24)}


async def test_the_synthetic_series_carries_its_currency_label() -> None:
    broker = MemoryBroker()
    market = Market(MarketConfig(market_zone="uk", market_currency="GBP"), MemoryBus("market", broker))
    await market.publish_now()
    forecast = broker.retained_message(PRICES, zone="uk")
    assert forecast is not None
    assert forecast.currency == "GBP"
    default = Market(MarketConfig(market_zone="de-lu"), MemoryBus("market", broker))
    await default.publish_now()
    euro = broker.retained_message(PRICES, zone="de-lu")
    assert euro is not None
    assert euro.currency == "EUR"
