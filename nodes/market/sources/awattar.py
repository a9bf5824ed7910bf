"""aWATTar market data (EPEX day-ahead for DE-LU and AT), pure: request building and parsing.

Format (aWATTar API v1, ``GET /v1/marketdata?start=<ms>&end=<ms>``): ``{"object": "list", "data": [...]}`` with
``start_timestamp`` / ``end_timestamp`` in epoch **milliseconds** (UTC) and ``marketprice`` in ``unit``
"Eur/MWh". Germany is api.awattar.de, Austria api.awattar.at.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nodes.market.sources import jsondoc
from nodes.market.sources.prices import NoData, ParsedPrices, ParseError, Slot, finish, parse_price
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import Zone

SOURCE = "awattar"


def default_url(zone: Zone) -> str:
    """aWATTar's API host for the zone's country."""
    if zone.awattar is None:
        raise ValueError(f"aWATTar has no prices for {zone.id} (only de-lu and at)")
    return f"https://api.awattar.{zone.awattar}"


def request(zone: Zone, begin: datetime, end: datetime, base_url: str | None = None) -> HttpRequest:
    """The market data query for [begin, end) (epoch milliseconds)."""
    url = (base_url or default_url(zone)).rstrip("/")
    return HttpRequest(
        method="GET",
        url=f"{url}/v1/marketdata",
        params={"start": str(int(begin.timestamp() * 1000)), "end": str(int(end.timestamp() * 1000))},
        label=f"aWATTar {zone.id} {begin.astimezone(UTC):%Y-%m-%dT%H:%MZ}..{end.astimezone(UTC):%Y-%m-%dT%H:%MZ}",
    )


def _ms(value: object, what: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(f"{what} is not an integer of epoch milliseconds")
    return datetime.fromtimestamp(value / 1000, UTC)


def parse(data: bytes, zone: Zone) -> ParsedPrices:
    """The prices of an aWATTar ``/v1/marketdata`` answer."""
    doc = jsondoc.obj(jsondoc.load(data, "aWATTar"), "the aWATTar answer")
    entries = jsondoc.array(doc.get("data"), "data")
    if not entries:
        raise NoData(f"aWATTar returned no market data for {zone.id}")
    slots: list[Slot] = []
    for i, raw in enumerate(entries):
        entry = jsondoc.obj(raw, f"data[{i}]")
        unit = jsondoc.text(entry.get("unit", "Eur/MWh"), f"data[{i}].unit")
        if unit.replace(" ", "").lower() != "eur/mwh":
            raise ParseError(f"data[{i}].unit is {unit!r}, expected Eur/MWh")
        start = _ms(entry.get("start_timestamp"), f"data[{i}].start_timestamp")
        end = _ms(entry.get("end_timestamp"), f"data[{i}].end_timestamp")
        slots.append(Slot(start, end, parse_price(entry.get("marketprice"), f"data[{i}].marketprice")))
    return finish(zone.id, "EUR", slots, SOURCE)
