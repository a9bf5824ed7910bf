"""The price feed: publishes PriceForecasts as a day-ahead market would.

Consumes: nothing.
Produces: ``market/{zone}/prices`` (retained) at start and at every hour boundary of the feed's clock: the
prices from the start of the current local day to the end of the next.
Source: ``BESS_MARKET_CSV`` (header ``timestamp,price``, EUR/MWh, slot starts in UTC, as in the shared price
files) replayed onto the current dates, or the bundled synthetic series when no CSV is given.
Clock: real time; ``BESS_MARKET_SPEED`` > 1 runs the feed's clock faster for demos.
Lifecycle: the common node lifecycle (nodes.runtime.node).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from nodes.contract.topics import PRICES, id_problems
from nodes.market.feed import FeedClock, PriceSource, ReplaySource, SyntheticSource, build_forecast, next_hour
from nodes.runtime.bus import Bus, MqttSettings
from nodes.runtime.node import Service

log = logging.getLogger("bess.market")


class MarketConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_MARKET_*`` settings."""

    market_zone: str = "de-lu"
    market_csv: str | None = None
    market_step_s: int = 3600
    market_speed: float = 1.0

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.market_zone, "BESS_MARKET_ZONE")
        if self.market_csv and not Path(self.market_csv).is_file():
            found.append(f"BESS_MARKET_CSV: no such file {self.market_csv}")
        if self.market_step_s not in (900, 1800, 3600):
            found.append("BESS_MARKET_STEP_S must be 900, 1800 or 3600")
        if self.market_speed <= 0:
            found.append("BESS_MARKET_SPEED must be > 0")
        return found


def make_source(config: MarketConfig) -> PriceSource:
    """The configured price source."""
    if config.market_csv:
        from nodes.planner.prices_csv import read_prices

        path = Path(config.market_csv)
        return ReplaySource(read_prices(path), name=f"replay of {path.name}")
    return SyntheticSource(step=timedelta(seconds=config.market_step_s))


class Market(Service[MarketConfig]):
    """Publishes a forecast at start and every hour."""

    name = "market"

    def __init__(self, config: MarketConfig) -> None:
        super().__init__(config)
        self.source = make_source(config)
        self.clock = FeedClock(config.market_speed)
        self.bus: Bus | None = None

    async def setup(self, bus: Bus) -> None:
        self.bus = bus

    async def publish_now(self) -> None:
        """Publish the forecast for the feed's current time."""
        assert self.bus is not None
        forecast = build_forecast(self.config.market_zone, self.source, self.clock.now())
        if not forecast.slots:
            self.bus.set_state("degraded", "the price source has no prices for today")
            return
        await self.bus.publish(PRICES, forecast, zone=self.config.market_zone)
        self.bus.counters["forecasts"] += 1
        log.info("published %d slots for %s (%s .. %s)", len(forecast.slots), self.config.market_zone,
                 forecast.slots[0].start.isoformat(), forecast.slots[-1].end.isoformat())

    async def run(self) -> None:
        while True:
            await self.publish_now()
            await asyncio.sleep(self.clock.seconds_until(next_hour(self.clock.now())) + 0.01)
