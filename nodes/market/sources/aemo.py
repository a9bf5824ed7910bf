"""AEMO NEM prices (5-minute dispatch and pre-dispatch forecasts, AUD/MWh), pure: request building and parsing.

Two documented shapes are read:

- the NEM data dashboard report (``POST https://visualisations.aemo.com.au/aemo/apps/api/report/5MIN`` with
  ``{"timeScale": ["30MIN"]}``): ``{"5MIN": [{"SETTLEMENTDATE", "REGIONID", "RRP", "PERIODTYPE"}, ...]}`` where
  ``PERIODTYPE`` ACTUAL rows are 5-minute dispatch prices and FORECAST rows are 30-minute pre-dispatch prices;
- the NEMweb MMS CSV files (``C``/``I``/``D`` rows): ``DISPATCH,PRICE`` (``SETTLEMENTDATE``, ``REGIONID``,
  ``INTERVENTION``, ``RRP``; 5-minute dispatch) and ``PREDISPATCH,REGION_PRICES`` (``DATETIME``, ``REGIONID``,
  ``INTERVENTION``, ``RRP``; 30-minute pre-dispatch).

Traps: NEM time is UTC+10 all year (no daylight saving, also in the NSW/VIC/TAS summer) and the times carry no
zone; a NEM time stamp marks the **end** of its interval; rows with ``INTERVENTION`` 1 are intervention
pricing runs and are skipped. Dispatch (what happened) wins over pre-dispatch (a forecast) where both cover a
period; a forecast period that overlaps the last dispatch interval is cut to start after it.
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import datetime, timedelta

from nodes.market.sources import jsondoc
from nodes.market.sources.prices import NoData, ParsedPrices, ParseError, Slot, finish, parse_price, parse_time
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import NEM_TIME, Zone

SOURCE = "aemo"
DEFAULT_URL = "https://visualisations.aemo.com.au"
CURRENCY = "AUD"
DISPATCH_STEP = timedelta(minutes=5)
PREDISPATCH_STEP = timedelta(minutes=30)


def region(zone: Zone) -> str:
    """The zone's NEM region id."""
    if zone.aemo is None:
        raise ValueError(f"AEMO has no NEM region for {zone.id}")
    return zone.aemo


def request(zone: Zone, base_url: str = DEFAULT_URL) -> HttpRequest:
    """The dashboard report: the last day of dispatch prices and the pre-dispatch forecast, every region."""
    return HttpRequest(
        method="POST",
        url=f"{base_url.rstrip('/')}/aemo/apps/api/report/5MIN",
        json_body={"timeScale": ["30MIN"]},
        label=f"AEMO NEM report {region(zone)}",
    )


def _nem_time(text: str, what: str) -> datetime:
    # NEM time stamps look like 2025-01-15T10:05:00 or "2025/01/15 10:05:00", always without a zone
    return parse_time(text.replace("/", "-"), assume=NEM_TIME, what=what)


def _slots(ends: dict[datetime, float], default_step: timedelta) -> list[Slot]:
    """Interval-ending stamps -> slots; the step is the series' own spacing (the smallest gap), else the default."""
    stamps = sorted(ends)
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    step = min(*gaps, default_step) if gaps else default_step
    return [Slot(end - step, end, ends[end]) for end in stamps]


def _merge(dispatch: list[Slot], predispatch: list[Slot]) -> list[Slot]:
    """Dispatch prices where they exist; pre-dispatch after the last dispatch interval (cut where it overlaps)."""
    if not dispatch:
        return predispatch
    last = max(s.end for s in dispatch)
    merged = list(dispatch)
    for slot in predispatch:
        if slot.end <= last:
            continue
        merged.append(Slot(max(slot.start, last), slot.end, slot.price_per_mwh))
    return merged


def _add(target: dict[datetime, float], end: datetime, price: float, what: str) -> None:
    if end in target and target[end] != price:
        raise ParseError(f"two different prices for the interval ending {end.isoformat()} ({what})")
    target[end] = price


def _parse_report(doc: object, zone: Zone) -> ParsedPrices:
    report = jsondoc.obj(doc, "the AEMO report")
    rows = jsondoc.array(report.get("5MIN"), "5MIN")
    name = region(zone)
    actual: dict[datetime, float] = {}
    forecast: dict[datetime, float] = {}
    regions: set[str] = set()
    for i, raw in enumerate(rows):
        row = jsondoc.obj(raw, f"5MIN[{i}]")
        row_region = row.get("REGIONID", row.get("REGION"))
        regions.add(str(row_region))
        if row_region != name:
            continue
        end = _nem_time(jsondoc.text(row.get("SETTLEMENTDATE"), f"5MIN[{i}].SETTLEMENTDATE"), "SETTLEMENTDATE")
        price = parse_price(row.get("RRP"), f"5MIN[{i}].RRP")
        kind = row.get("PERIODTYPE", "ACTUAL")
        if kind == "ACTUAL":
            _add(actual, end, price, "ACTUAL")
        elif kind == "FORECAST":
            _add(forecast, end, price, "FORECAST")
        else:
            raise ParseError(f"5MIN[{i}].PERIODTYPE is {kind!r}, expected ACTUAL or FORECAST")
    if not actual and not forecast:
        if not rows:
            raise NoData("the AEMO report has no rows")
        raise ParseError(f"the AEMO report has no {name} rows (regions: {', '.join(sorted(regions))})")
    slots = _merge(_slots(actual, DISPATCH_STEP), _slots(forecast, PREDISPATCH_STEP))
    return finish(zone.id, CURRENCY, slots, SOURCE)


def _parse_mms(data: bytes, zone: Zone) -> ParsedPrices:
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ParseError("the AEMO file is neither JSON nor UTF-8 CSV") from None
    name = region(zone)
    headers: dict[tuple[str, str], list[str]] = {}
    dispatch: dict[datetime, float] = {}
    predispatch: dict[datetime, float] = {}
    published: datetime | None = None
    tables = 0
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(lines))), start=1):
        if not row:
            continue
        kind = row[0]
        if kind == "C" and number == 1 and len(row) > 6:
            try:
                published = _nem_time(f"{row[5]} {row[6]}", "report time")
            except ParseError:
                published = None
            continue
        if kind == "I" and len(row) > 4:
            headers[(row[1], row[2])] = row[4:]
            tables += 1
            continue
        if kind != "D" or len(row) < 4:
            continue
        table = (row[1], row[2])
        if table not in (("DISPATCH", "PRICE"), ("PREDISPATCH", "REGION_PRICES")):
            continue
        columns = headers.get(table)
        if columns is None:
            raise ParseError(f"line {number}: {'.'.join(table)} data before its I header row")
        record = dict(zip(columns, row[4:], strict=False))
        if record.get("REGIONID") != name or record.get("INTERVENTION", "0").strip() not in ("0", ""):
            continue  # another region, or an intervention pricing run
        stamp_field = "SETTLEMENTDATE" if table[0] == "DISPATCH" else "DATETIME"
        stamp = record.get(stamp_field)
        if not stamp:
            raise ParseError(f"line {number}: no {stamp_field}")
        end = _nem_time(stamp, f"line {number} {stamp_field}")
        price = parse_price(record.get("RRP"), f"line {number} RRP")
        _add(dispatch if table[0] == "DISPATCH" else predispatch, end, price, f"line {number}")
    if not tables:
        raise ParseError("not an AEMO MMS CSV file (no I header rows)")
    if not dispatch and not predispatch:
        raise NoData(f"the AEMO file has no DISPATCH.PRICE or PREDISPATCH.REGION_PRICES rows for {name}")
    slots = _merge(_slots(dispatch, DISPATCH_STEP), _slots(predispatch, PREDISPATCH_STEP))
    return finish(zone.id, CURRENCY, slots, SOURCE, published)


def parse(data: bytes, zone: Zone) -> ParsedPrices:
    """The prices of ``zone``'s NEM region in a dashboard report (JSON) or a NEMweb MMS CSV file."""
    if data.lstrip()[:1] in (b"{", b"["):
        return _parse_report(jsondoc.load(data, "AEMO"), zone)
    if not data.strip():
        raise ParseError("the AEMO answer is empty")
    return _parse_mms(data, zone)
