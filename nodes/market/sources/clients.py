"""One small client per source: build the request, fetch it through :class:`Fetcher`, parse the answer.

Every client answers ``await client.fetch(begin, end)`` with :class:`ParsedPrices` (whatever the provider has
in [begin, end), possibly less: tomorrow is missing before publication) or :class:`NotYetPublished`; it raises
:class:`SourceError` subclasses (refused, unavailable, unreadable, no data) with one-line, token-free messages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from nodes.market.sources import aemo, awattar, energidataservice, energy_charts, entsoe, nordpool
from nodes.market.sources.http import Fetcher, SourceRefused
from nodes.market.sources.prices import NoData, NotYetPublished, ParsedPrices, ParseError, finish
from nodes.market.sources.zones import PUBLICATION_TZ, Zone

Result = ParsedPrices | NotYetPublished


class PriceClient(Protocol):
    """What the live feed needs from a source."""

    name: str

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        """Prices the provider has for [begin, end)."""
        ...


class EntsoeClient:
    """ENTSO-E A44; an acknowledgement on HTTP 400 is a rejected query, on HTTP 200 it is "no data"."""

    name = entsoe.SOURCE

    def __init__(self, fetcher: Fetcher, zone: Zone, token: str, base_url: str = entsoe.DEFAULT_URL) -> None:
        self.fetcher, self.zone, self._token, self.base_url = fetcher, zone, token, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        req = entsoe.request(self.zone, begin, end, self._token, self.base_url)
        answer = await self.fetcher.fetch(req, expect=(200, 400))
        if answer.status == 400:
            try:
                entsoe.parse(answer.body, self.zone)
            except NoData as exc:
                raise SourceRefused(f"{req.display()}: ENTSO-E rejected the query: {exc}", 400) from None
            raise SourceRefused(f"{req.display()}: HTTP 400", 400)
        return entsoe.parse(answer.body, self.zone)


class EnergyChartsClient:
    """Energy-Charts ``/price``; a 404 with ``{"detail": ...}`` means no data for the request."""

    name = energy_charts.SOURCE

    def __init__(self, fetcher: Fetcher, zone: Zone, base_url: str = energy_charts.DEFAULT_URL) -> None:
        self.fetcher, self.zone, self.base_url = fetcher, zone, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        req = energy_charts.request(self.zone, begin, end, self.base_url)
        answer = await self.fetcher.fetch(req, expect=(200, 404))
        return energy_charts.parse(answer.body, self.zone)


class AwattarClient:
    """aWATTar ``/v1/marketdata`` (api.awattar.de or api.awattar.at by zone)."""

    name = awattar.SOURCE

    def __init__(self, fetcher: Fetcher, zone: Zone, base_url: str | None = None) -> None:
        self.fetcher, self.zone, self.base_url = fetcher, zone, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        answer = await self.fetcher.fetch(awattar.request(self.zone, begin, end, self.base_url))
        return awattar.parse(answer.body, self.zone)


class NordpoolClient:
    """Nord Pool ``DayAheadPrices``, one request per CET delivery day; 204 (no content) is "not yet"."""

    name = nordpool.SOURCE

    def __init__(
        self, fetcher: Fetcher, zone: Zone, currency: str = "EUR", base_url: str = nordpool.DEFAULT_URL
    ) -> None:
        self.fetcher, self.zone, self.currency, self.base_url = fetcher, zone, currency, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        day = begin.astimezone(PUBLICATION_TZ).date()
        last = (end - timedelta(seconds=1)).astimezone(PUBLICATION_TZ).date()
        found: list[ParsedPrices] = []
        waiting: NotYetPublished | None = None
        while day <= last:
            req = nordpool.request(self.zone, day, self.currency, self.base_url)
            answer = await self.fetcher.fetch(req, expect=(200, 204))
            result = nordpool.parse(b"" if answer.status == 204 else answer.body, self.zone)
            if isinstance(result, NotYetPublished):
                waiting = waiting or result
            else:
                found.append(result)
            day += timedelta(days=1)
        if not found:
            assert waiting is not None
            return waiting
        currencies = {p.currency for p in found}
        if len(currencies) > 1:
            raise ParseError(f"Nord Pool answered in several currencies: {', '.join(sorted(currencies))}")
        slots = [s for p in found for s in p.slots]
        published = max((p.published_at for p in found if p.published_at), default=None)
        return finish(self.zone.id, currencies.pop(), slots, self.name, published)


class EnergiDataServiceClient:
    """Energi Data Service DayAheadPrices (or Elspotprices for days before 2025-10-01)."""

    name = energidataservice.SOURCE

    def __init__(
        self, fetcher: Fetcher, zone: Zone, currency: str = "EUR", base_url: str = energidataservice.DEFAULT_URL
    ) -> None:
        self.fetcher, self.zone, self.currency, self.base_url = fetcher, zone, currency, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        answer = await self.fetcher.fetch(energidataservice.request(self.zone, begin, end, self.base_url))
        return energidataservice.parse(answer.body, self.zone, self.currency)


class AemoClient:
    """AEMO NEM dashboard report: the recent 5-minute dispatch prices and the pre-dispatch forecast."""

    name = aemo.SOURCE

    def __init__(self, fetcher: Fetcher, zone: Zone, base_url: str = aemo.DEFAULT_URL) -> None:
        self.fetcher, self.zone, self.base_url = fetcher, zone, base_url

    async def fetch(self, begin: datetime, end: datetime) -> Result:
        answer = await self.fetcher.fetch(aemo.request(self.zone, self.base_url))
        return aemo.parse(answer.body, self.zone)
