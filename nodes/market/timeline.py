"""The day-ahead timeline of a real price source (pure: the clock is passed in).

- **Window**: the feed asks for, and publishes, the start of the zone's current delivery day to the end of the
  next one (CET/CEST days in Europe, NEM days in Australia): "today plus tomorrow once known". Nothing the
  provider did not answer is ever published: before the auction result there is no tomorrow, not a replayed one.
- **When to ask** (:func:`next_poll`): a day-ahead source is asked at start, then at the daily publication time
  (``dayahead_at`` in CET/CEST, 12:45 by default: SDAC / Nord Pool / EPEX publish around then), then every
  ``retry`` until tomorrow is there; once it is, not again until the next day's publication time. A real-time
  source (AEMO, 5-minute dispatch) is asked every 5 minutes, just after each dispatch interval ends.
- **Merging** (:func:`merge`): a new answer replaces what was known over the span it covers; known slots outside
  it stay; slots that ended before the window start are dropped.
- **Staleness** (:func:`coverage_problem`): prices are stale when the known slots do not cover every moment of
  the next N hours; the feed then reports ``degraded`` with this reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from nodes.market.sources import Kind
from nodes.market.sources.prices import Slot
from nodes.market.sources.zones import PUBLICATION_TZ, Zone

REALTIME_STEP = timedelta(minutes=5)
#: AEMO publishes a dispatch interval's price shortly after the interval ends
REALTIME_DELAY = timedelta(seconds=30)


def day_start(now: datetime, zone: Zone, days: int = 0) -> datetime:
    """Start (UTC) of the zone's delivery day ``days`` after the one holding ``now`` (DST days are 23 or 25 h)."""
    today = now.astimezone(zone.delivery_tz).date()
    return datetime.combine(today + timedelta(days=days), time(0), tzinfo=zone.delivery_tz).astimezone(UTC)


def window(now: datetime, zone: Zone) -> tuple[datetime, datetime]:
    """Start of the zone's current delivery day to the end of the next one, in UTC."""
    return day_start(now, zone), day_start(now, zone, 2)


def publication(day_cet: datetime, dayahead_at: time) -> datetime:
    """The publication moment ``dayahead_at`` (CET/CEST) on the CET calendar day of ``day_cet``, in UTC."""
    local = datetime.combine(day_cet.astimezone(PUBLICATION_TZ).date(), dayahead_at, tzinfo=PUBLICATION_TZ)
    return local.astimezone(UTC)


def known_until(slots: Sequence[Slot], now: datetime) -> datetime | None:
    """End of the unbroken run of slots that covers ``now`` (None if no slot covers ``now``)."""
    cursor: datetime | None = None
    for slot in sorted(slots, key=lambda s: s.start):
        if slot.end <= now:
            continue
        if cursor is None:
            if slot.start > now:
                return None
            cursor = slot.end
        elif slot.start == cursor:
            cursor = slot.end
        else:
            break
    return cursor


def next_poll(
    now: datetime,
    *,
    kind: Kind,
    zone: Zone,
    slots: Sequence[Slot],
    dayahead_at: time,
    retry: timedelta,
    failed: bool = False,
    retry_after: timedelta | None = None,
) -> datetime:
    """When to ask the provider again."""
    if kind == "real-time":
        epoch = datetime(2000, 1, 1, tzinfo=UTC)
        due = epoch + ((now - epoch) // REALTIME_STEP + 1) * REALTIME_STEP + REALTIME_DELAY
    else:
        have = known_until(slots, now)
        today_pub = publication(now, dayahead_at)
        if have is not None and have >= day_start(now, zone, 2):
            due = publication(now + timedelta(days=1), dayahead_at)  # the day after tomorrow, when it is out
        elif have is None or have < day_start(now, zone, 1):
            due = now + retry  # today itself is incomplete (it was published yesterday): ask again soon
        elif now < today_pub:
            due = today_pub
        else:
            due = now + retry  # after publication time and tomorrow still missing: ask again soon
        if failed:
            due = min(due, now + retry)
    if retry_after is not None:
        due = max(due, now + retry_after)
    return due


def merge(known: Sequence[Slot], fresh: Sequence[Slot], keep_from: datetime) -> tuple[Slot, ...]:
    """``fresh`` over the span it covers, ``known`` elsewhere; slots ending at or before ``keep_from`` dropped."""
    if fresh:
        first = min(s.start for s in fresh)
        last = max(s.end for s in fresh)
        kept = [s for s in known if s.end <= first or s.start >= last]
    else:
        kept = list(known)
    merged = sorted([*kept, *fresh], key=lambda s: s.start)
    return tuple(s for s in merged if s.end > keep_from)


def coverage_problem(slots: Sequence[Slot], now: datetime, horizon: timedelta) -> str | None:
    """Why the slots do not cover [now, now + horizon) without a hole, or None when they do."""
    need = now + horizon
    hours = horizon.total_seconds() / 3600
    cursor = now
    for slot in sorted(slots, key=lambda s: s.start):
        if slot.end <= cursor:
            continue
        if slot.start > cursor:
            return f"no price for {_hhmm(cursor)}..{_hhmm(slot.start)} (within the next {hours:g} h)"
        cursor = slot.end
        if cursor >= need:
            return None
    if cursor == now:
        return "no price slot covers the current time"
    ahead = (cursor - now).total_seconds() / 3600
    return f"prices end at {_hhmm(cursor)}, {ahead:.1f} h ahead; less than the {hours:g} h required"


def _hhmm(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
