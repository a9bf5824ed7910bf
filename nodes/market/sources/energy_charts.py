"""Energy-Charts (Fraunhofer ISE) day-ahead prices, pure: request building and parsing.

Format (api.energy-charts.info, ``GET /price?bzn=...&start=...&end=...``): a JSON object with ``unix_seconds``
(UTC start of each period) and ``price`` arrays of equal length and ``unit`` ("EUR / MWh": Energy-Charts
publishes EUR/MWh for every bidding zone, also DKK/SEK/NOK/PLN zones). A ``null`` price is a missing slot, kept as
a gap. A period ends where the next one starts (hourly, or quarter-hourly since 2025-10-01); the last one lasts
as long as the one before it. A ``{"detail": ...}`` answer (no data for the request) is :class:`NoData`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.market.sources import jsondoc
from nodes.market.sources.prices import NoData, ParsedPrices, ParseError, Slot, finish, parse_price
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import Zone

SOURCE = "energy-charts"
DEFAULT_URL = "https://api.energy-charts.info"
#: SDAC moved to 15-minute products with delivery day 2025-10-01 (CET): a lone period after that is 15 minutes
QUARTER_HOURS_FROM = datetime(2025, 9, 30, 22, 0, tzinfo=UTC)
_LONGEST_STEP_S = 3600


def request(zone: Zone, begin: datetime, end: datetime, base_url: str = DEFAULT_URL) -> HttpRequest:
    """The price query over the local delivery days touching [begin, end) (``start``/``end`` are dates, inclusive)."""
    if zone.energy_charts is None:
        raise ValueError(f"Energy-Charts has no bidding zone for {zone.id}")
    first = begin.astimezone(zone.delivery_tz).date()
    last = (end - timedelta(seconds=1)).astimezone(zone.delivery_tz).date()
    return HttpRequest(
        method="GET",
        url=f"{base_url.rstrip('/')}/price",
        params={"bzn": zone.energy_charts, "start": first.isoformat(), "end": last.isoformat()},
        label=f"Energy-Charts {zone.energy_charts} {first}..{last}",
    )


def parse(data: bytes, zone: Zone) -> ParsedPrices:
    """The prices of an Energy-Charts ``/price`` answer."""
    doc = jsondoc.obj(jsondoc.load(data, "Energy-Charts"), "the Energy-Charts answer")
    if "unix_seconds" not in doc and "detail" in doc:
        raise NoData(f"Energy-Charts has no prices: {str(doc['detail'])[:200]}")
    seconds = jsondoc.array(doc.get("unix_seconds"), "unix_seconds")
    prices = jsondoc.array(doc.get("price"), "price")
    if len(seconds) != len(prices):
        raise ParseError(f"unix_seconds has {len(seconds)} entries but price has {len(prices)}")
    unit = jsondoc.text(doc.get("unit", "EUR / MWh"), "unit")
    if unit.replace(" ", "").upper() != "EUR/MWH":
        raise ParseError(f"unexpected Energy-Charts unit {unit!r} (expected EUR / MWh)")
    starts: list[int] = []
    for i, value in enumerate(seconds):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParseError(f"unix_seconds[{i}] is not an integer")
        if starts and value <= starts[-1]:
            raise ParseError(f"unix_seconds[{i}] is not after the previous entry")
        starts.append(value)
    slots: list[Slot] = []
    for i, (start_s, value) in enumerate(zip(starts, prices, strict=True)):
        if value is None:
            continue  # Energy-Charts marks a missing period with null: a gap, not a price
        start = datetime.fromtimestamp(start_s, UTC)
        if i + 1 < len(starts) and starts[i + 1] - start_s <= _LONGEST_STEP_S:
            end_s = starts[i + 1]  # a period ends where the next one starts
        elif i > 0 and start_s - starts[i - 1] <= _LONGEST_STEP_S:
            end_s = start_s + (
                start_s - starts[i - 1]
            )  # the last one (or one before a hole) as long as its predecessor
        else:
            end_s = start_s + (900 if start >= QUARTER_HOURS_FROM else 3600)
        slots.append(Slot(start, datetime.fromtimestamp(end_s, UTC), parse_price(value, f"price[{i}]")))
    if not slots and starts:
        raise NoData(f"Energy-Charts lists {len(starts)} periods for {zone.id} but every price is null")
    return finish(zone.id, "EUR", slots, SOURCE)
