"""The price feed: publishes PriceForecasts as a day-ahead market would.

Consumes: nothing (or a provider's HTTP API, see below).
Produces: ``market/{zone}/prices`` (retained).
Source (``BESS_MARKET_SOURCE``, settings in :mod:`nodes.market.config`):

- ``synthetic`` (default) / ``csv``: at start and at every hour boundary of the feed's clock, the prices from the
  start of the current local day to the end of the next: the bundled synthetic series, or ``BESS_MARKET_CSV``
  (header ``timestamp,price``, per MWh in ``BESS_MARKET_CURRENCY``, EUR by default, slot starts in UTC, as in the
  shared price files) replayed onto the current dates. ``BESS_MARKET_SPEED`` > 1 runs this clock faster for demos.
- ``entsoe`` | ``energy-charts`` | ``awattar`` | ``nordpool`` | ``energidataservice`` | ``aemo``: real prices,
  polled on the source's timeline and published when new slots exist (:mod:`nodes.market.live`).

Lifecycle: the common node lifecycle (nodes.runtime.node).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from nodes.contract.topics import PRICES
from nodes.market.config import MarketConfig
from nodes.market.feed import FeedClock, PriceSource, ReplaySource, SyntheticSource, build_forecast, next_hour
from nodes.runtime.core import MessageBus
from nodes.runtime.node import Service

log = logging.getLogger("bess.market")

__all__ = ["Market", "MarketConfig", "make_source"]


def make_source(config: MarketConfig) -> PriceSource:
    """The configured offline price source (synthetic or CSV replay)."""
    if config.source == "csv" and config.market_csv:
        from nodes.market.prices_csv import read_prices

        path = Path(config.market_csv)
        return ReplaySource(read_prices(path), name=f"replay of {path.name}")
    return SyntheticSource(step=timedelta(seconds=config.market_step_s))


class Market(Service[MarketConfig]):
    """Publishes a forecast at start and every hour (offline sources), or follows a real source."""

    name = "market"

    def __init__(self, config: MarketConfig, bus: MessageBus) -> None:
        super().__init__(config, bus)
        self.source = None if config.live else make_source(config)
        self.clock = FeedClock(config.market_speed)

    async def publish_now(self) -> None:
        """Publish the forecast for the feed's current time."""
        assert self.source is not None
        forecast = build_forecast(self.config.market_zone, self.source, self.clock.now(), self.config.currency)
        if not forecast.slots:
            self.bus.set_state("degraded", "the price source has no prices for today")
            return
        await self.bus.publish(PRICES, forecast, zone=self.config.market_zone)
        self.bus.counters["forecasts"] += 1
        log.info("published %d %s slots for %s (%s .. %s)", len(forecast.slots), forecast.currency,
                 self.config.market_zone,
                 forecast.slots[0].start.isoformat(), forecast.slots[-1].end.isoformat())

    async def run(self) -> None:
        if self.config.live:
            from nodes.market.live import run_live

            await run_live(self.config, self.bus)
            return
        while True:
            await self.publish_now()
            await asyncio.sleep(self.clock.seconds_until(next_hour(self.clock.now())) + 0.01)
