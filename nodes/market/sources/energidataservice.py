"""Energi Data Service (Energinet) day-ahead prices, pure: request building and parsing.

Format (api.energidataservice.dk, ``GET /dataset/<name>?start=...&end=...&filter={"PriceArea":[...]}``): a JSON
object with ``records``, newest first. Two datasets:

- ``Elspotprices`` (hourly, delivery up to 2025-09-30): ``HourUTC``, ``PriceArea``, ``SpotPriceDKK``,
  ``SpotPriceEUR``;
- ``DayAheadPrices`` (quarter-hourly, since 2025-10-01): ``TimeUTC``, ``PriceArea``, ``DayAheadPriceDKK``,
  ``DayAheadPriceEUR``.

``HourUTC`` / ``TimeUTC`` carry no zone designator: they are UTC by name (the ``...DK`` twins are Danish local
time and are not used). Prices are per MWh, in DKK and EUR: the currency picks the column. A ``null`` price is
a gap. ``total`` counts every matching record: an answer with fewer ``records`` was cut by the ``limit``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

from nodes.market.sources import jsondoc
from nodes.market.sources.prices import NoData, ParsedPrices, ParseError, Slot, finish, parse_price, parse_time
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import Zone

SOURCE = "energidataservice"
DEFAULT_URL = "https://api.energidataservice.dk"
#: first delivery day of the quarter-hourly DayAheadPrices dataset (Danish time); Elspotprices ends the day before
DAY_AHEAD_FROM = date(2025, 10, 1)
CURRENCIES = ("EUR", "DKK")
#: the API's ``start``/``end`` are Danish local time
DANISH_TIME = ZoneInfo("Europe/Copenhagen")

#: dataset -> (time field, price field prefix, period length)
_DATASETS: dict[str, tuple[str, str, timedelta]] = {
    "Elspotprices": ("HourUTC", "SpotPrice", timedelta(hours=1)),
    "DayAheadPrices": ("TimeUTC", "DayAheadPrice", timedelta(minutes=15)),
}


def dataset_for(day: date) -> str:
    """The dataset that holds a (Danish) delivery day."""
    return "DayAheadPrices" if day >= DAY_AHEAD_FROM else "Elspotprices"


def price_area(zone: Zone) -> str:
    """The zone's Energi Data Service PriceArea."""
    if zone.eds is None:
        raise ValueError(f"Energi Data Service has no PriceArea for {zone.id}")
    return zone.eds


def request(zone: Zone, begin: datetime, end: datetime, base_url: str = DEFAULT_URL) -> HttpRequest:
    """The query for [begin, end) in the dataset of the first delivery day.

    ``start``/``end`` are Danish local time (the API's convention; ``end`` excluded). The API returns 100 records
    unless told otherwise, fewer than two quarter-hourly days: ``limit`` is set to hold the whole window.
    """
    name = dataset_for(begin.astimezone(DANISH_TIME).date())
    time_field, _, step = _DATASETS[name]
    fmt = "%Y-%m-%dT%H:%M"
    return HttpRequest(
        method="GET",
        url=f"{base_url.rstrip('/')}/dataset/{name}",
        params={
            "start": begin.astimezone(DANISH_TIME).strftime(fmt),
            "end": end.astimezone(DANISH_TIME).strftime(fmt),
            "filter": msgspec.json.encode({"PriceArea": [price_area(zone)]}).decode(),
            "sort": f"{time_field} DESC",
            "limit": str(int((end - begin) / step) + 8),
        },
        label=f"Energi Data Service {name} {price_area(zone)} {begin.astimezone(UTC):%Y-%m-%dT%H:%MZ}",
    )


def parse(data: bytes, zone: Zone, currency: str = "EUR") -> ParsedPrices:
    """The prices of an Elspotprices or DayAheadPrices answer, in EUR or DKK."""
    code = currency.upper()
    if code not in CURRENCIES:
        raise ParseError(f"Energi Data Service publishes EUR and DKK, not {currency}")
    doc = jsondoc.obj(jsondoc.load(data, "Energi Data Service"), "the Energi Data Service answer")
    records = jsondoc.array(doc.get("records"), "records")
    total = doc.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and total > len(records):
        # newest first: a cut answer silently lacks the oldest periods asked for
        raise ParseError(f"the answer is cut: {len(records)} of {total} records (raise the request's limit)")
    if not records:
        raise NoData(f"Energi Data Service returned no records for {zone.id}")
    name = doc.get("dataset")
    if name is None:  # older answers omit the dataset name: the time field tells
        first = jsondoc.obj(records[0], "records[0]")
        name = "DayAheadPrices" if "TimeUTC" in first else "Elspotprices"
    if name not in _DATASETS:
        raise ParseError(f"unknown Energi Data Service dataset {name!r} (expected Elspotprices or DayAheadPrices)")
    time_field, prefix, step = _DATASETS[name]
    price_field = f"{prefix}{code}"
    wanted = price_area(zone)
    by_start: dict[datetime, float | None] = {}
    seen_areas: set[str] = set()
    for i, raw in enumerate(records):
        record = jsondoc.obj(raw, f"records[{i}]")
        area = record.get("PriceArea")
        seen_areas.add(str(area))
        if area != wanted:
            continue
        stamp = jsondoc.text(record.get(time_field), f"records[{i}].{time_field}")
        # HourUTC/TimeUTC have no zone designator but are UTC by definition
        start = parse_time(stamp, assume=UTC, what=f"records[{i}].{time_field}")
        value = record.get(price_field)
        price = None if value is None else parse_price(value, f"records[{i}].{price_field}")
        if start in by_start and by_start[start] != price:
            raise ParseError(f"two different {wanted} prices for {start.isoformat()}")
        by_start[start] = price
    if not by_start:
        raise ParseError(f"no {wanted} records in the answer (areas: {', '.join(sorted(seen_areas))})")
    slots = [Slot(start, start + step, price) for start, price in by_start.items() if price is not None]
    if not slots:
        raise NoData(f"every {wanted} {price_field} in the answer is null")
    return finish(zone.id, code, slots, SOURCE)
