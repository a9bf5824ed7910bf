"""ENTSO-E Transparency Platform day-ahead prices (document type A44), pure: request building and parsing.

Format (ENTSO-E Transparency Platform RESTful API guide, "Day-ahead prices [12.1.D]"; IEC 62325-451-3
Publication_MarketDocument): ``TimeSeries`` with ``currency_Unit.name``, ``price_Measure_Unit.name`` (MWH),
``curveType`` and one or more ``Period`` (``timeInterval`` start/end in UTC, ``resolution`` PT15M/PT30M/PT60M,
``Point`` with a 1-based ``position`` and ``price.amount``). Traps handled here:

- positions are 1-based: position *p* starts at ``start + (p - 1) * resolution``;
- ``curveType`` A03 ("variable sized block") leaves out a position whose price equals the previous one: the
  previous price holds until the next given position, the last one until the end of the period;
  with A01 every position is given and an absent one is a gap;
- some zones return several TimeSeries for the same interval (e.g. a second auction): where they overlap,
  the one with the lowest ``classificationSequence_AttributeInstanceComponent.position`` wins;
- "no data" is an ``Acknowledgement_MarketDocument`` (HTTP 200 or 400) whose ``Reason/text`` says why:
  :class:`NoData` with that text, not a crash;
- prices are per MWh in ``currency_Unit.name`` (EUR for the European zones).
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from bisect import bisect_left
from datetime import UTC, datetime, timedelta

from nodes.market.sources.prices import NoData, ParsedPrices, ParseError, Slot, finish, parse_price, parse_time
from nodes.market.sources.request import HttpRequest
from nodes.market.sources.zones import Zone

SOURCE = "entsoe"
DEFAULT_URL = "https://web-api.tp.entsoe.eu/api"
_RESOLUTION = re.compile(r"^PT(\d+)([MH])$")
_DAY_AHEAD_CONTRACT = "A01"


def request(zone: Zone, begin: datetime, end: datetime, token: str, base_url: str = DEFAULT_URL) -> HttpRequest:
    """The A44 query for ``zone`` over [begin, end) (UTC, ``yyyyMMddHHmm``); the token is a secret parameter."""
    eic = _eic(zone)
    fmt = "%Y%m%d%H%M"
    return HttpRequest(
        method="GET",
        url=base_url,
        params={
            "documentType": "A44",
            "in_Domain": eic,
            "out_Domain": eic,
            "periodStart": begin.astimezone(UTC).strftime(fmt),
            "periodEnd": end.astimezone(UTC).strftime(fmt),
            "securityToken": token,
        },
        secret_params=frozenset({"securityToken"}),
        label=f"ENTSO-E A44 {zone.id} {begin.astimezone(UTC):%Y-%m-%dT%H:%MZ}..{end.astimezone(UTC):%Y-%m-%dT%H:%MZ}",
    )


def _eic(zone: Zone) -> str:
    if zone.eic is None:
        raise ValueError(f"ENTSO-E has no bidding zone for {zone.id}")
    return zone.eic


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(node: ET.Element, name: str) -> ET.Element | None:
    for item in node:
        if _local(item.tag) == name:
            return item
    return None


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [item for item in node if _local(item.tag) == name]


def _text(node: ET.Element, *path: str) -> str | None:
    current: ET.Element | None = node
    for name in path:
        if current is None:
            return None
        current = _child(current, name)
    if current is None or current.text is None:
        return None
    return current.text.strip()


def _resolution(text: str | None) -> timedelta:
    match = _RESOLUTION.match(text or "")
    if not match:
        raise ParseError(f"unsupported ENTSO-E resolution {text!r} (expected PT15M, PT30M or PT60M)")
    amount = int(match.group(1))
    step = timedelta(minutes=amount) if match.group(2) == "M" else timedelta(hours=amount)
    if step <= timedelta(0) or timedelta(days=1) % step:
        raise ParseError(f"unsupported ENTSO-E resolution {text!r}")
    return step


def _period_slots(period: ET.Element, curve: str, where: str) -> list[Slot]:
    start_text = _text(period, "timeInterval", "start")
    end_text = _text(period, "timeInterval", "end")
    if start_text is None or end_text is None:
        raise ParseError(f"{where}: Period without timeInterval start/end")
    start = parse_time(start_text, what=f"{where} start")
    end = parse_time(end_text, what=f"{where} end")
    step = _resolution(_text(period, "resolution"))
    span = end - start
    if span <= timedelta(0) or span % step:
        raise ParseError(f"{where}: interval {start_text}..{end_text} is not a whole number of {step}")
    count = span // step
    prices: dict[int, float] = {}
    for point in _children(period, "Point"):
        pos_text = _text(point, "position")
        amount = _text(point, "price.amount")
        if pos_text is None or amount is None:
            raise ParseError(f"{where}: Point without position or price.amount")
        try:
            position = int(pos_text)
        except ValueError:
            raise ParseError(f"{where}: position {pos_text!r} is not an integer") from None
        if not 1 <= position <= count:
            raise ParseError(f"{where}: position {position} outside 1..{count} (positions are 1-based)")
        if position in prices:
            raise ParseError(f"{where}: position {position} appears twice")
        prices[position] = parse_price(amount, f"{where} position {position} price.amount")
    slots: list[Slot] = []
    positions = sorted(prices)
    for i, position in enumerate(positions):
        # A03 leaves out repeated prices: a given position holds until the next given one (or the period end)
        last = positions[i + 1] - 1 if curve == "A03" and i + 1 < len(positions) else position
        if curve == "A03" and i + 1 == len(positions):
            last = count
        for p in range(position, last + 1):
            slot_start = start + (p - 1) * step
            slots.append(Slot(slot_start, slot_start + step, prices[position]))
    return slots


def _overlaps(accepted: list[Slot], starts: list[datetime], slot: Slot) -> bool:
    i = bisect_left(starts, slot.start)
    if i < len(accepted) and accepted[i].start < slot.end:
        return True
    return i > 0 and accepted[i - 1].end > slot.start


def parse(data: bytes, zone: Zone) -> ParsedPrices:
    """The day-ahead prices of ``zone`` in an A44 answer; :class:`NoData` for an acknowledgement document."""
    if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
        raise ParseError("ENTSO-E documents carry no DTD; refusing a document with entity declarations")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ParseError(f"not XML: {exc}") from None
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        code = _text(root, "Reason", "code") or "?"
        reason = _text(root, "Reason", "text") or "no reason given"
        raise NoData(f"ENTSO-E answered with an acknowledgement (no data), reason {code}: {reason}")
    if kind != "Publication_MarketDocument":
        raise ParseError(f"not an ENTSO-E price document: root element is {kind}")
    doc_type = _text(root, "type")
    if doc_type not in (None, "A44"):
        raise ParseError(f"ENTSO-E document type {doc_type}, expected A44 (prices)")
    created = _text(root, "createdDateTime")
    published = parse_time(created, what="createdDateTime") if created else None
    eic = _eic(zone)

    ranked: list[tuple[int, int, list[Slot]]] = []
    currencies: set[str] = set()
    for n, series in enumerate(_children(root, "TimeSeries"), start=1):
        where = f"TimeSeries {n}"
        contract = _text(series, "contract_MarketAgreement.type")
        if contract not in (None, _DAY_AHEAD_CONTRACT):
            continue  # not the day-ahead auction (e.g. an intraday auction in the same answer)
        domain = _text(series, "in_Domain.mRID") or _text(series, "out_Domain.mRID")
        if domain is not None and domain != eic:
            raise ParseError(f"{where} is for area {domain}, not {zone.id} ({eic})")
        currency = _text(series, "currency_Unit.name")
        if not currency:
            raise ParseError(f"{where} has no currency_Unit.name")
        unit = (_text(series, "price_Measure_Unit.name") or "MWH").upper()
        if unit != "MWH":
            raise ParseError(f"{where}: prices per {unit}, expected per MWH")
        curve = _text(series, "curveType") or "A01"
        if curve not in ("A01", "A03"):
            raise ParseError(f"{where}: unsupported curveType {curve}")
        seq_text = _text(series, "classificationSequence_AttributeInstanceComponent.position")
        try:
            seq = int(seq_text) if seq_text else 1
        except ValueError:
            raise ParseError(f"{where}: classificationSequence position {seq_text!r} is not an integer") from None
        slots: list[Slot] = []
        for m, period in enumerate(_children(series, "Period"), start=1):
            slots.extend(_period_slots(period, curve, f"{where} Period {m}"))
        slots.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(slots):
            if after.start < before.end:
                raise ParseError(f"{where}: its periods overlap at {after.start.isoformat()}")
        currencies.add(currency.upper())
        ranked.append((seq, n, slots))
    if not ranked:
        raise NoData(f"the ENTSO-E document has no day-ahead TimeSeries for {zone.id}")
    if len(currencies) > 1:
        raise ParseError(f"the ENTSO-E document mixes currencies: {', '.join(sorted(currencies))}")

    # lowest classificationSequence position first; document order only breaks ties
    accepted: list[Slot] = []
    starts: list[datetime] = []
    for _seq, _n, slots in sorted(ranked, key=lambda item: (item[0], item[1])):
        for slot in slots:
            if not _overlaps(accepted, starts, slot):
                i = bisect_left(starts, slot.start)
                accepted.insert(i, slot)
                starts.insert(i, slot.start)
    return finish(zone.id, currencies.pop(), accepted, SOURCE, published)
