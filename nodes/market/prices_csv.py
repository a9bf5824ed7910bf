"""Day-ahead prices from a ``timestamp,price`` CSV into PriceSlots, and slicing them into local delivery days.

The market's file format: the feed replays such a file (``BESS_MARKET_CSV``) and the planner's offline CLI
(``python -m nodes.planner plan|backtest``) plans and backtests on one. The format is the one of
``shared/data/prices/*.csv``: a header ``timestamp,price``, then one row per
delivery period with its UTC start (ISO-8601 with ``Z``) and the price per MWh. The file does not name its
currency: the reader does (``BESS_MARKET_CURRENCY`` for the feed, ``--currency`` for the planner's CLI; EUR,
as in the shared files, by default). A slot ends where the next one starts, so a file may change resolution
(hourly to 15-min); the last slot gets the most common step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import groupby, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from nodes.contract.messages import PriceSlot
from nodes.market.sources.prices import PRICE_SANITY_LIMIT, plausible_price

HEADER = ("timestamp", "price")
MAX_STEP = timedelta(hours=1)
"""No market has periods longer than an hour; a longer step is missing rows, not a long slot."""
PRICE_BOUND = PRICE_SANITY_LIMIT
"""The bound every price source applies (the wire's bound on ``price_per_mwh``)."""
DEFAULT_TZ = "Europe/Berlin"


class PriceCsvError(ValueError):
    """A price file that cannot be read; the message names the file and the line."""


def read_prices(path: str | Path) -> list[PriceSlot]:
    """Read a price CSV file (see the module docstring); raises :class:`PriceCsvError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceCsvError(f"{path}: cannot read: {exc}") from exc
    return parse_prices(text, source=str(path))


def parse_prices(text: str, *, source: str = "<prices>") -> list[PriceSlot]:
    """Parse the text of a price CSV into contiguous PriceSlots."""
    starts: list[datetime] = []
    prices: list[float] = []
    lines: list[int] = []
    rows = text.splitlines()
    if not rows or tuple(cell.strip().lower() for cell in rows[0].split(",")) != HEADER:
        first = rows[0] if rows else ""
        raise PriceCsvError(f"{source}:1: expected the header 'timestamp,price', got {first!r}")
    for number, row in enumerate(rows[1:], start=2):
        if not row.strip():
            continue
        where = f"{source}:{number}"
        cells = row.split(",")
        if len(cells) != 2:
            raise PriceCsvError(f"{where}: expected 2 fields 'timestamp,price', got {len(cells)}: {row!r}")
        start = _timestamp(cells[0].strip(), where)
        price = _price(cells[1].strip(), where)
        if starts:
            step = start - starts[-1]
            if step <= timedelta(0):
                raise PriceCsvError(
                    f"{where}: {cells[0].strip()} is not after the previous row's {starts[-1]:%Y-%m-%dT%H:%M:%SZ} "
                    "(rows must be sorted, without duplicates)"
                )
            if step > MAX_STEP:
                raise PriceCsvError(f"{where}: gap of {step} after line {lines[-1]} (missing rows?)")
        starts.append(start)
        prices.append(price)
        lines.append(number)
    if len(starts) < 2:
        raise PriceCsvError(f"{source}: need at least 2 rows to know the slot length, got {len(starts)}")
    common = Counter(b - a for a, b in pairwise(starts)).most_common(1)[0][0]
    ends = [*starts[1:], starts[-1] + common]
    return [
        PriceSlot(start=start, end=end, price_per_mwh=price)
        for start, end, price in zip(starts, ends, prices, strict=True)
    ]


def split_days(slots: Sequence[PriceSlot], tz: str = DEFAULT_TZ) -> list[tuple[date, list[PriceSlot]]]:
    """Group slots by the local delivery day of their start (23, 24 or 25 hours around DST changes)."""
    zone = ZoneInfo(tz)
    return [
        (day, list(group))
        for day, group in groupby(slots, key=lambda slot: slot.start.astimezone(zone).date())
    ]


def select(slots: Sequence[PriceSlot], begin: datetime | None, end: datetime | None) -> list[PriceSlot]:
    """The slots that lie inside ``[begin, end)``; None leaves that side open."""
    return [
        slot
        for slot in slots
        if (begin is None or slot.start >= begin) and (end is None or slot.end <= end)
    ]


def _timestamp(text: str, where: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise PriceCsvError(f"{where}: bad timestamp {text!r} (want ISO-8601 UTC like 2023-01-01T00:00:00Z)") from None
    if value.tzinfo is None:
        raise PriceCsvError(f"{where}: timestamp {text!r} has no time zone (want a trailing Z)")
    return value.astimezone(UTC)


def _price(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PriceCsvError(f"{where}: bad price {text!r} (want a number per MWh)") from None
    if not plausible_price(value):
        raise PriceCsvError(f"{where}: price {text!r} is outside [-{PRICE_BOUND:g}, {PRICE_BOUND:g}] per MWh")
    return value
