"""The price feed on a real source: poll the provider on its timeline, publish what it answered.

Consumes: the provider's HTTP API (one client per source, :mod:`nodes.market.sources.clients`).
Produces: ``market/{zone}/prices`` (retained) each time the known slots change (today, plus tomorrow once the
provider publishes it); the node status ``degraded`` with the reason while the known prices do not cover the next
``BESS_MARKET_STALE_AFTER_H`` hours, or when the provider refuses the request (e.g. a wrong token).
Never publishes a slot the provider did not answer: no synthetic or replayed "tomorrow" with a real source.
Lifecycle: created in the node's ``run()`` (it owns one aiohttp session), polls until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Protocol

import aiohttp

from nodes import __version__
from nodes.contract.messages import NodeState, PriceForecast
from nodes.contract.topics import PRICES
from nodes.market.config import MarketConfig
from nodes.market.sources import Kind, aemo, energidataservice, energy_charts, entsoe, nordpool, source
from nodes.market.sources.clients import (
    AemoClient,
    AwattarClient,
    EnergiDataServiceClient,
    EnergyChartsClient,
    EntsoeClient,
    NordpoolClient,
    PriceClient,
)
from nodes.market.sources.convert import to_price_forecast
from nodes.market.sources.http import Fetcher, RetryPolicy, SourceRefused, SourceUnavailable
from nodes.market.sources.prices import NotYetPublished, ParsedPrices, Slot, SourceError
from nodes.market.sources.zones import ZONES, Zone
from nodes.market.timeline import coverage_problem, merge, next_poll, window
from nodes.runtime.core import MessageBus

log = logging.getLogger("bess.market.live")

#: re-check staleness at least this often while waiting for the next poll
_STATE_CHECK = timedelta(seconds=60)


class StatusSink(Protocol):
    """The part of the bus the feed reports through."""

    def set_state(self, state: NodeState, reason: str = "") -> None:
        """Set online/degraded with a reason."""
        ...


Publish = Callable[[PriceForecast], Awaitable[None]]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class FeedTimeline:
    """The schedule settings of one feed."""

    kind: Kind
    dayahead_at: time
    retry: timedelta
    stale_after: timedelta


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LiveFeed:
    """Polls one client for one zone and publishes each new state of the known prices."""

    def __init__(
        self,
        client: PriceClient,
        zone: Zone,
        timeline: FeedTimeline,
        publish: Publish,
        status: StatusSink,
        *,
        label: str,
        clock: Clock = _utc_now,
    ) -> None:
        self.client, self.zone, self.timeline = client, zone, timeline
        self._publish, self._status, self._clock = publish, status, clock
        self.label = label
        self.slots: tuple[Slot, ...] = ()
        self.currency: str | None = None
        self.last_problem = ""
        self.refusal = ""
        self.published = 0
        self.polls = 0
        self.failures = 0

    async def poll(self) -> datetime:
        """Ask the provider once, publish if the known prices changed; returns when to poll next."""
        now = self._clock()
        begin, end = window(now, self.zone)
        self.polls += 1
        failed = False
        retry_after: timedelta | None = None
        try:
            result = await self.client.fetch(begin, end)
        except SourceRefused as exc:
            failed, self.refusal, self.last_problem = True, str(exc), str(exc)
            log.error("%s refused: %s", self.label, exc)
        except SourceUnavailable as exc:
            failed, self.last_problem = True, str(exc)
            if exc.retry_after_s is not None:
                retry_after = timedelta(seconds=exc.retry_after_s)
            log.warning("%s unavailable: %s", self.label, exc)
        except SourceError as exc:
            # unreadable answer or an explicit "no data": nothing new, ask again later
            failed, self.last_problem = True, str(exc)
            log.warning("%s: %s", self.label, exc)
        except Exception as exc:  # a bug must not end the feed: log it with its traceback, count it, ask again
            failed, self.last_problem = True, f"unexpected {type(exc).__name__}"
            log.exception("%s: unexpected error", self.label)
        else:
            self.refusal = ""
            if isinstance(result, NotYetPublished):
                self.last_problem = ""
                log.info("%s: %s", self.label, result.reason)
            elif not await self._take(result, now, begin, end):
                failed = True
        if failed:
            self.failures += 1
        self.check_state(now)
        return next_poll(
            now,
            kind=self.timeline.kind,
            zone=self.zone,
            slots=self.slots,
            dayahead_at=self.timeline.dayahead_at,
            retry=self.timeline.retry,
            failed=failed,
            retry_after=retry_after,
        )

    async def _take(self, parsed: ParsedPrices, now: datetime, begin: datetime, end: datetime) -> bool:
        """Merge an answer into the known prices and publish them if they changed; False if that failed."""
        fresh = [s for s in parsed.slots if s.end > begin and s.start < end]
        known = self.slots if parsed.currency == self.currency else ()  # never mix currencies in one series
        merged = merge(known, fresh, keep_from=begin)
        self.last_problem = ""
        if merged == self.slots and parsed.currency == self.currency:
            log.info("%s: no new prices (known until %s)", self.label, _until(merged))
            return True
        series = ParsedPrices(parsed.zone, parsed.currency, merged, parsed.source, parsed.published_at)
        try:
            forecast = to_price_forecast(series, issued_at=now, source=self.label)
            await self._publish(forecast)
        except SourceError as exc:
            self.last_problem = str(exc)
            log.error("%s: %s", self.label, exc)
            return False
        except Exception as exc:  # the broker is away (BusUnavailable) or another publish failure: try again soon
            self.last_problem = f"could not publish: {exc}"
            log.error("%s: could not publish the prices: %s", self.label, exc)
            return False
        # known only once published: a failed publish is retried at the next poll
        self.slots, self.currency = merged, parsed.currency
        self.published += 1
        log.info("published %d %s slots for %s (%s .. %s)", len(merged), parsed.currency, self.zone.id,
                 _at(merged[0].start) if merged else "-", _until(merged))  # fmt: skip
        return True

    def check_state(self, now: datetime | None = None) -> None:
        """Report degraded (with the reason) when refused or when prices do not cover the next N hours."""
        moment = now or self._clock()
        if self.refusal:
            self._status.set_state("degraded", _cut(f"the provider refuses the request: {self.refusal}"))
            return
        stale = coverage_problem(self.slots, moment, self.timeline.stale_after)
        if stale:
            reason = f"prices are stale: {stale}"
            if self.last_problem:
                reason += f"; last request: {self.last_problem}"
            self._status.set_state("degraded", _cut(reason))
        else:
            self._status.set_state("online")

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Poll forever on the source's timeline, re-checking staleness every minute in between."""
        due = self._clock()
        while True:
            now = self._clock()
            if now >= due:
                due = await self.poll()
                log.info("%s: next request at %s", self.label, _at(due))
            else:
                self.check_state(now)
            wait = min(due - self._clock(), _STATE_CHECK).total_seconds()
            await sleep(max(0.0, wait))


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _until(slots: tuple[Slot, ...]) -> str:
    return _at(slots[-1].end) if slots else "-"


def _cut(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_client(
    name: str, fetcher: Fetcher, zone: Zone, *, token: str = "", currency: str = "EUR", base_url: str | None = None
) -> PriceClient:
    """The client of source ``name`` (``base_url`` None: the provider's own)."""
    if name == "entsoe":
        return EntsoeClient(fetcher, zone, token, base_url or entsoe.DEFAULT_URL)
    if name == "energy-charts":
        return EnergyChartsClient(fetcher, zone, base_url or energy_charts.DEFAULT_URL)
    if name == "awattar":
        return AwattarClient(fetcher, zone, base_url)
    if name == "nordpool":
        return NordpoolClient(fetcher, zone, currency, base_url or nordpool.DEFAULT_URL)
    if name == "energidataservice":
        return EnergiDataServiceClient(fetcher, zone, currency, base_url or energidataservice.DEFAULT_URL)
    if name == "aemo":
        return AemoClient(fetcher, zone, base_url or aemo.DEFAULT_URL)
    raise ValueError(f"{name} is not a live price source")


async def run_live(config: MarketConfig, bus: MessageBus, *, clock: Clock = _utc_now) -> None:
    """Run the configured live source until cancelled, publishing on ``bus``."""
    spec = source(config.source)
    zone = ZONES[config.market_zone]
    policy = RetryPolicy(timeout_s=config.market_timeout_s)
    headers = {"User-Agent": f"bess-market/{__version__}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        client = make_client(
            spec.name,
            Fetcher(session, policy),
            zone,
            token=config.token(),
            currency=config.currency,
            base_url=config.base_url(),
        )

        async def publish(forecast: PriceForecast) -> None:
            await bus.publish(PRICES, forecast, zone=zone.id)
            bus.counters["forecasts"] += 1

        timeline = FeedTimeline(
            spec.kind, config.dayahead_at, timedelta(seconds=config.market_retry_s), config.stale_after
        )
        feed = LiveFeed(client, zone, timeline, publish, bus, label=spec.label, clock=clock)
        bus.set_counters_source(lambda: {"polls": feed.polls, "poll_failures": feed.failures})
        log.info("market feed on %s for %s (%s)", spec.label, zone.id, zone.name)
        await feed.run()
