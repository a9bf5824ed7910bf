"""The market's wiring on the in-memory bus: the price feed publishes a retained forecast for its zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nodes.contract.messages import PriceForecast
from nodes.contract.topics import PRICES, STATUS
from nodes.market.config import MarketConfig
from nodes.market.node import Market
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
