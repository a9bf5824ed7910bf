"""What the price feed publishes and when (pure: the clock and the price source are passed in).

A day-ahead market publishes the next day's prices once a day; a feed here publishes, at start and at every
hour boundary, the forecast from the start of the current local day to the end of the next one, so a planner
always has today and tomorrow. Prices come from a :class:`PriceSource`: the bundled synthetic series, or a CSV of
real prices replayed onto the current dates (shifted by whole weeks, so weekdays and weekends stay aligned).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from nodes.contract.messages import DEFAULT_CURRENCY, PriceForecast, PriceSlot
from nodes.market.synthetic import MARKET_TZ, synthetic_slots

WEEK = timedelta(days=7)


class PriceSource(Protocol):
    """Anything that can give price slots for a window."""

    @property
    def name(self) -> str:
        """Where the prices come from (published as PriceForecast.source)."""
        ...

    def slots(self, begin: datetime, end: datetime) -> list[PriceSlot]:
        """Price slots covering [begin, end)."""
        ...


@dataclass(frozen=True)
class SyntheticSource:
    """The bundled synthetic day-shaped series."""

    step: timedelta = timedelta(hours=1)
    name: str = "synthetic day-shaped series"

    def slots(self, begin: datetime, end: datetime) -> list[PriceSlot]:
        return synthetic_slots(begin, end, self.step)


class ReplaySource:
    """Real prices from a file, moved onto the requested dates by a whole number of weeks (cycling the file)."""

    def __init__(self, slots: Sequence[PriceSlot], name: str) -> None:
        if len(slots) < 2:
            raise ValueError("a replay needs at least two price slots")
        self._slots = list(slots)
        self._by_start = {s.start: s for s in slots}
        self.first = slots[0].start
        self.last_end = slots[-1].end
        self.weeks = int((self.last_end - self.first) / WEEK)
        if self.weeks < 1:
            raise ValueError("a replay file must cover at least one week")
        self.name = name

    def _shift(self, begin: datetime, end: datetime) -> timedelta:
        weeks_since = (begin - self.first) // WEEK
        shift = WEEK * (weeks_since - weeks_since % self.weeks)
        while end - shift > self.last_end:
            shift += WEEK * self.weeks if end - shift - WEEK * self.weeks >= self.first else WEEK
        return shift

    def slots(self, begin: datetime, end: datetime) -> list[PriceSlot]:
        shift = self._shift(begin, end)
        out: list[PriceSlot] = []
        for slot in self._slots:
            start = slot.start + shift
            if slot.end + shift <= begin:
                continue
            if start >= end:
                break
            out.append(PriceSlot(start=start, end=slot.end + shift, price_per_mwh=slot.price_per_mwh))
        return out


def forecast_window(now: datetime) -> tuple[datetime, datetime]:
    """Start of the current local market day to the end of the next one, in UTC."""
    local = now.astimezone(MARKET_TZ)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day_after = (day_start + timedelta(days=2, hours=3)).replace(hour=0)  # +3 h absorbs a DST day
    return day_start.astimezone(UTC), day_after.astimezone(UTC)


def build_forecast(zone: str, source: PriceSource, now: datetime, currency: str = DEFAULT_CURRENCY) -> PriceForecast:
    """The forecast the feed publishes at ``now``; ``currency`` names the prices' currency (the file's, for a
    replay; a label for the synthetic series, whose numbers do not change with it)."""
    begin, end = forecast_window(now)
    return PriceForecast(
        zone=zone, issued_at=now, slots=source.slots(begin, end), source=source.name, currency=currency
    )


def next_hour(now: datetime) -> datetime:
    """The next whole hour after ``now``."""
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


@dataclass
class FeedClock:
    """Wall-clock time, optionally running ``speed`` times faster from the moment it was made (for demos)."""

    speed: float = 1.0

    def __post_init__(self) -> None:
        self._origin = datetime.now(UTC)
        self._origin_monotonic = time.monotonic()

    def now(self) -> datetime:
        """The feed's current time."""
        elapsed = time.monotonic() - self._origin_monotonic
        return self._origin + timedelta(seconds=elapsed * self.speed)

    def seconds_until(self, moment: datetime) -> float:
        """Real seconds until the feed's clock reaches ``moment``."""
        return max(0.0, (moment - self.now()).total_seconds() / self.speed)
