"""The dashboard's display time zone (``BESS_DISPLAY_TZ``): validation and how a time is written in it (pure).

Data stays UTC everywhere (messages, storage, the API, CSV exports); only what a person reads on the dashboard
may be shown in a local zone. The page has a toggle between UTC and the configured zone; the page's script
converts with the browser's ``Intl`` (the same IANA database), this module writes the times the server puts
into a page before its script runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE = "UTC"


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not an IANA time zone the dashboard can use (None: it is one)."""
    if name == DEFAULT_ZONE:
        return None
    if not name or name != name.strip():
        return "BESS_DISPLAY_TZ must be an IANA time zone such as Europe/Berlin or UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"BESS_DISPLAY_TZ: {name[:64]!r} is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)"
    return None


def zone(name: str) -> tzinfo:
    """The zone of a name :func:`zone_problem` accepted."""
    return UTC if name == DEFAULT_ZONE else ZoneInfo(name)


def display_time(ts: datetime, name: str, *, seconds: bool = True) -> str:
    """``ts`` as a person reads it in zone ``name``: ``2025-01-16 13:00:00 CET`` (``UTC`` for UTC)."""
    local = ts.astimezone(zone(name))
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    abbreviation = "UTC" if name == DEFAULT_ZONE else local.tzname() or name
    return f"{text} {abbreviation}"


def utc_offset_s(ts: datetime, name: str) -> float:
    """Seconds the zone's clock is ahead of UTC at ``ts`` (daylight saving included)."""
    offset = ts.astimezone(zone(name)).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


__all__ = ["DEFAULT_ZONE", "display_time", "utc_offset_s", "zone", "zone_problem"]
