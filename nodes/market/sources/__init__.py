"""Real price sources: one pure parser per provider, small aiohttp clients, the zone table.

========================  ==========  ==========================================================  ==============
source                    kind        document                                                    currency
========================  ==========  ==========================================================  ==============
``entsoe``                day-ahead   ENTSO-E Transparency Platform A44 Publication_MarketDocument  currency_Unit
``energy-charts``         day-ahead   Energy-Charts ``/price`` JSON                                EUR
``awattar``               day-ahead   aWATTar ``/v1/marketdata`` JSON                              EUR
``nordpool``              day-ahead   Nord Pool data portal ``DayAheadPrices`` JSON                as requested
``energidataservice``     day-ahead   Energi Data Service Elspotprices / DayAheadPrices JSON       EUR or DKK
``aemo``                  real-time   AEMO NEM dashboard report JSON or NEMweb MMS CSV             AUD
========================  ==========  ==========================================================  ==============

:func:`parse_document` is the pure entry point (bytes -> :class:`ParsedPrices` | :class:`NotYetPublished`);
:mod:`nodes.market.sources.clients` fetches; :mod:`nodes.market.sources.convert` makes a PriceForecast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nodes.market.sources import aemo, awattar, energidataservice, energy_charts, entsoe, nordpool
from nodes.market.sources.prices import NotYetPublished, ParsedPrices, ParseError
from nodes.market.sources.zones import Zone

Kind = Literal["day-ahead", "real-time"]
Parser = Callable[[bytes, Zone, str], "ParsedPrices | NotYetPublished"]


@dataclass(frozen=True)
class SourceSpec:
    """What the feed and the ``parse`` command need to know about one source."""

    name: str
    label: str
    kind: Kind
    #: currencies a user may ask for (the first is the default); ``()`` = whatever the document says
    currencies: tuple[str, ...]
    zone_field: str
    parse: Parser

    def serves(self, zone: Zone) -> bool:
        """Whether this source has prices for ``zone``."""
        return getattr(zone, self.zone_field) is not None


def _entsoe(data: bytes, zone: Zone, currency: str) -> ParsedPrices:
    return entsoe.parse(data, zone)


def _energy_charts(data: bytes, zone: Zone, currency: str) -> ParsedPrices:
    return energy_charts.parse(data, zone)


def _awattar(data: bytes, zone: Zone, currency: str) -> ParsedPrices:
    return awattar.parse(data, zone)


def _nordpool(data: bytes, zone: Zone, currency: str) -> ParsedPrices | NotYetPublished:
    return nordpool.parse(data, zone)


def _eds(data: bytes, zone: Zone, currency: str) -> ParsedPrices:
    return energidataservice.parse(data, zone, currency)


def _aemo(data: bytes, zone: Zone, currency: str) -> ParsedPrices:
    return aemo.parse(data, zone)


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("entsoe", "ENTSO-E A44 day-ahead", "day-ahead", (), "eic", _entsoe),
        SourceSpec("energy-charts", "Energy-Charts day-ahead", "day-ahead", ("EUR",), "energy_charts", _energy_charts),
        SourceSpec("awattar", "aWATTar day-ahead", "day-ahead", ("EUR",), "awattar", _awattar),
        SourceSpec(
            "nordpool", "Nord Pool day-ahead", "day-ahead",
            ("EUR", "DKK", "NOK", "SEK", "PLN", "RON", "BGN"), "nordpool", _nordpool,
        ),
        SourceSpec(
            "energidataservice", "Energi Data Service day-ahead", "day-ahead",
            energidataservice.CURRENCIES, "eds", _eds,
        ),
        SourceSpec("aemo", "AEMO NEM dispatch + pre-dispatch", "real-time", ("AUD",), "aemo", _aemo),
    )
}  # fmt: skip


def source(name: str) -> SourceSpec:
    """The source called ``name``; ValueError lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown price source {name!r}; known: {', '.join(SOURCES)}") from None


def parse_document(name: str, data: bytes, zone: Zone, currency: str | None = None) -> ParsedPrices | NotYetPublished:
    """Parse a saved answer of source ``name`` for ``zone`` (pure)."""
    spec = source(name)
    if not spec.serves(zone):
        raise ParseError(f"{spec.name} has no prices for zone {zone.id}")
    chosen = (currency or (spec.currencies[0] if spec.currencies else "EUR")).upper()
    if spec.currencies and chosen not in spec.currencies:
        raise ParseError(f"{spec.name} publishes {', '.join(spec.currencies)}, not {chosen}")
    return spec.parse(data, zone, chosen)
