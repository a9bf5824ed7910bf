"""What every price-source parser returns (pure): price slots in the provider's currency, or "not yet".

A parser turns the bytes a provider answered into a :class:`ParsedPrices` (zone, ISO 4217 currency, slots of
``(start, end, price_per_mwh)`` in UTC, sorted, non-overlapping; a missing price is a gap, never a made-up value)
or, where the provider says so, :class:`NotYetPublished`. A document that cannot be read raises
:class:`ParseError`; a provider's explicit "no data" answer raises :class:`NoData` with the provider's reason.
Both are :class:`SourceError`, whose message is one line naming the problem.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

#: a price beyond this (per MWh, in any currency) is a unit or parsing error, not a market price
PRICE_SANITY_LIMIT = 1e5
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class SourceError(Exception):
    """A price source problem; the message is one line that names it."""


class ParseError(SourceError):
    """The document is not what the provider documents (wrong shape, unreadable times or prices)."""


class NoData(SourceError):
    """The provider answered, in its documented way, that it has no prices for the request."""


class Slot(NamedTuple):
    """One delivery period: UTC start (inclusive), UTC end (exclusive), price per MWh in the document's currency."""

    start: datetime
    end: datetime
    price_per_mwh: float


@dataclass(frozen=True)
class ParsedPrices:
    """The prices a document holds, in the provider's own currency."""

    zone: str
    currency: str
    slots: tuple[Slot, ...]
    #: which source produced them (``entsoe``, ``nordpool``, ...)
    source: str
    #: when the provider says it made the document, if it says
    published_at: datetime | None = None

    @property
    def begin(self) -> datetime:
        """Start of the first slot."""
        return self.slots[0].start

    @property
    def end(self) -> datetime:
        """End of the last slot."""
        return self.slots[-1].end


@dataclass(frozen=True)
class NotYetPublished:
    """The provider answered "nothing yet" (for example Nord Pool before the auction result): not an error."""

    zone: str
    source: str
    reason: str


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are refused (every source must say which clock it uses)."""
    if moment.tzinfo is None:
        raise ParseError(f"time without a zone: {moment.isoformat()}")
    return moment.astimezone(UTC)


def parse_time(text: str, *, assume: timezone | None = None, what: str = "time") -> datetime:
    """An ISO 8601 time as UTC. ``assume`` is the documented zone of zone-less times (e.g. EDS ``HourUTC``)."""
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("/", "-"))
    except ValueError:
        raise ParseError(f"{what} is not an ISO 8601 time: {raw[:40]!r}") from None
    if moment.tzinfo is None:
        if assume is None:
            raise ParseError(f"{what} has no time zone: {raw[:40]!r}")
        moment = moment.replace(tzinfo=assume)
    return moment.astimezone(UTC)


def plausible_price(price: float) -> bool:
    """A finite price within the sanity limit: the one rule every price source applies (the CSV files too)."""
    return math.isfinite(price) and abs(price) <= PRICE_SANITY_LIMIT


def parse_price(value: object, what: str) -> float:
    """A finite price within the sanity limit (numbers, or numeric strings as in XML/CSV)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ParseError(f"{what} is not a number: {str(value)[:40]!r}")
    try:
        price = float(value)
    except ValueError:
        raise ParseError(f"{what} is not a number: {str(value)[:40]!r}") from None
    if not plausible_price(price):
        raise ParseError(f"{what} is not a plausible price per MWh: {value!r}")
    return price


def finish(
    zone: str,
    currency: str,
    slots: Iterable[Slot],
    source: str,
    published_at: datetime | None = None,
) -> ParsedPrices:
    """Check and sort the slots every parser produced: UTC, start < end, no overlaps, at least one slot."""
    code = currency.strip().upper()
    if not _CURRENCY.match(code):
        raise ParseError(f"currency is not an ISO 4217 code: {currency[:20]!r}")
    ordered = sorted(slots, key=lambda s: s.start)
    if not ordered:
        raise NoData(f"the {source} document holds no prices for {zone}")
    for slot in ordered:
        if slot.start.utcoffset() != timedelta(0) or slot.end.utcoffset() != timedelta(0):
            raise ParseError(f"slot {slot.start.isoformat()} is not in UTC")
        if slot.end <= slot.start:
            raise ParseError(f"slot {slot.start.isoformat()} ends before it starts")
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise ParseError(
                f"slots overlap: {before.start.isoformat()}..{before.end.isoformat()} and {after.start.isoformat()}"
            )
    return ParsedPrices(zone=zone, currency=code, slots=tuple(ordered), source=source, published_at=published_at)
