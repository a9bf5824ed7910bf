"""Nord Pool data portal day-ahead prices, pure: request building and parsing.

Format (dataportal-api.nordpoolgroup.com, ``GET /api/DayAheadPrices?date=YYYY-MM-DD&market=DayAhead&
deliveryArea=SE3&currency=EUR``, one CET delivery day per request): ``multiAreaEntries`` with ``deliveryStart``
/ ``deliveryEnd`` (UTC) and ``entryPerArea`` {area: price per MWh}; the currency is the one asked for and is
echoed in ``currency``. Before the auction result is published the portal answers 204 with no body (or no
entries): that is :class:`NotYetPublished`, not an error.
"""

from __future__ import annotations

from datetime import date

from nodes.market.sources import jsondoc
from nodes.market.sources.prices import NotYetPublished, ParsedPrices, ParseError, Slot, finish, parse_price, parse_time
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import Zone

SOURCE = "nordpool"
DEFAULT_URL = "https://dataportal-api.nordpoolgroup.com/api"


def area(zone: Zone) -> str:
    """The zone's Nord Pool delivery area."""
    if zone.nordpool is None:
        raise ValueError(f"Nord Pool has no delivery area for {zone.id}")
    return zone.nordpool


def request(zone: Zone, day: date, currency: str = "EUR", base_url: str = DEFAULT_URL) -> HttpRequest:
    """The query for one CET delivery day."""
    return HttpRequest(
        method="GET",
        url=f"{base_url.rstrip('/')}/DayAheadPrices",
        params={"date": day.isoformat(), "market": "DayAhead", "deliveryArea": area(zone), "currency": currency},
        label=f"Nord Pool {area(zone)} {day} {currency}",
    )


def parse(data: bytes, zone: Zone) -> ParsedPrices | NotYetPublished:
    """The prices of a DayAheadPrices answer, or :class:`NotYetPublished` for the empty pre-publication answer."""
    name = area(zone)
    if not data.strip():
        return NotYetPublished(zone.id, SOURCE, f"Nord Pool has not published {name} yet (empty answer)")
    doc = jsondoc.obj(jsondoc.load(data, "Nord Pool"), "the Nord Pool answer")
    entries = jsondoc.array(doc.get("multiAreaEntries", []), "multiAreaEntries")
    day = doc.get("deliveryDateCET", "?")
    if not entries:
        return NotYetPublished(zone.id, SOURCE, f"Nord Pool has no {name} prices for {day} yet")
    areas = doc.get("deliveryAreas")
    if isinstance(areas, list) and name not in areas:
        raise ParseError(f"the Nord Pool answer is for {', '.join(map(str, areas))}, not {name}")
    currency = jsondoc.text(doc.get("currency"), "currency")
    updated = doc.get("updatedAt")
    published = parse_time(updated, what="updatedAt") if isinstance(updated, str) else None
    slots: list[Slot] = []
    for i, raw in enumerate(entries):
        entry = jsondoc.obj(raw, f"multiAreaEntries[{i}]")
        per_area = jsondoc.obj(entry.get("entryPerArea"), f"multiAreaEntries[{i}].entryPerArea")
        value = per_area.get(name)
        if value is None:
            continue  # no price for this area in this period: a gap
        start = parse_time(jsondoc.text(entry.get("deliveryStart"), "deliveryStart"), what="deliveryStart")
        end = parse_time(jsondoc.text(entry.get("deliveryEnd"), "deliveryEnd"), what="deliveryEnd")
        slots.append(Slot(start, end, parse_price(value, f"multiAreaEntries[{i}].entryPerArea.{name}")))
    if not slots:
        return NotYetPublished(zone.id, SOURCE, f"Nord Pool lists {day} but no {name} price yet")
    return finish(zone.id, currency, slots, SOURCE, published)
