"""A bundled, deterministic day-shaped price series (pure), for a local stack with no price CSV.

The shape follows a typical continental European day-ahead day: cheap night, a morning ramp, a solar dip
around noon (sometimes negative on sunny weekends), an evening peak. Each day gets its own level and noise from
a seed derived from the date, so the same day always has the same prices (reproducible demos and tests).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from nodes.contract.messages import PriceSlot

MARKET_TZ = ZoneInfo("Europe/Berlin")

# EUR/MWh per local hour 0..23 (a winter-spring weekday's shape, before level and noise).
_SHAPE = (
    72, 66, 62, 60, 61, 68, 86, 112, 121, 105, 84, 66,
    55, 52, 60, 78, 101, 134, 152, 143, 122, 104, 92, 80,
)


def _day_prices(day: date) -> list[float]:
    rng = random.Random(day.toordinal())
    level = 0.75 + 0.5 * rng.random()
    sunny = rng.random() < (0.45 if day.weekday() >= 5 else 0.25)
    prices: list[float] = []
    for hour, base in enumerate(_SHAPE):
        price = base * level + rng.gauss(0.0, 6.0)
        if sunny and 10 <= hour <= 15:
            # a solar surplus pushes midday prices down, occasionally below zero
            price -= 70.0 * math.sin(math.pi * (hour - 9.5) / 7.0)
        prices.append(round(price, 2))
    return prices


def synthetic_slots(begin: datetime, end: datetime, step: timedelta = timedelta(hours=1)) -> list[PriceSlot]:
    """Price slots of ``step`` covering [begin, end) (UTC, aligned to ``step``), from the local-day shape."""
    if begin.tzinfo is None or end.tzinfo is None:
        raise ValueError("begin and end must be timezone-aware")
    step_s = int(step.total_seconds())
    if step_s <= 0 or 3600 % step_s:
        raise ValueError("step must divide one hour (e.g. 15 min or 1 h)")
    start_epoch = int(begin.timestamp()) // step_s * step_s
    cursor = datetime.fromtimestamp(start_epoch, UTC)
    cache: dict[date, list[float]] = {}
    slots: list[PriceSlot] = []
    while cursor < end:
        local = cursor.astimezone(MARKET_TZ)
        day_prices = cache.setdefault(local.date(), _day_prices(local.date()))
        # interpolate within the hour so 15-minute slots are not flat steps
        here = day_prices[local.hour]
        nxt = day_prices[(local.hour + 1) % 24]
        price = here + (nxt - here) * (local.minute / 60.0)
        slots.append(PriceSlot(start=cursor, end=cursor + step, price_per_mwh=round(price, 2)))
        cursor += step
    return slots
