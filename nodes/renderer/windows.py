"""Time windows of the dashboard, as a viewer asks for them in the URL (pure).

A window belongs to the viewer, never to the server: ``/battery/b1?window=7d`` or
``?begin=2025-01-14T00:00:00Z&end=2025-01-17T00:00:00Z`` (``end`` left out: up to now). No parameter means
:data:`DEFAULT_WINDOW`, the last 24 h, which is what the retained figure topics show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

MAX_WINDOW_S: Final = 366 * 86400
MIN_WINDOW_S: Final = 60
WINDOW_PRESETS: Final = (("6 h", "6h"), ("24 h", "24h"), ("7 d", "7d"), ("30 d", "30d"))
LIVE_SLACK_S: Final = 60.0
"""A window ending less than this before now is a live window (it shows the plan ahead and updates)."""

_UNITS: Final = {"m": 60, "h": 3600, "d": 86400}
_RELATIVE = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")


class WindowError(ValueError):
    """A window parameter that cannot be used; ``field`` names the query parameter."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TimeWindow(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The window a viewer looks at. ``window_s`` set: the last ``window_s`` seconds, sliding with time.
    Otherwise ``begin`` to ``end`` (``end`` None: up to now)."""

    begin: datetime | None = None
    end: datetime | None = None
    window_s: int | None = None

    def resolve(self, now: datetime) -> tuple[datetime, datetime]:
        """Concrete ``(begin, end)`` at ``now``."""
        if self.window_s is not None:
            return now - timedelta(seconds=self.window_s), now
        end = self.end or now
        return (self.begin or end - timedelta(days=1)), end

    def is_live(self, now: datetime) -> bool:
        """Does the window reach up to now (so it moves and the plan ahead belongs to it)?"""
        return self.window_s is not None or self.end is None or (now - self.end).total_seconds() < LIVE_SLACK_S

    @property
    def key(self) -> str:
        """A stable text for caches and URLs: ``24h`` or ``2025-01-14T00:00:00Z/2025-01-17T00:00:00Z``."""
        if self.window_s is not None:
            return relative_text(self.window_s)
        return f"{_iso(self.begin) if self.begin else ''}/{_iso(self.end) if self.end else ''}"

    @property
    def query(self) -> str:
        """The URL query that selects this window (empty for the default)."""
        if self == DEFAULT_WINDOW:
            return ""
        if self.window_s is not None:
            return "window=" + relative_text(self.window_s)
        text = f"begin={_iso(self.begin)}" if self.begin else ""
        return text + (f"&end={_iso(self.end)}" if self.end else "")


DEFAULT_WINDOW: Final = TimeWindow(window_s=86400)


def _iso(value: datetime | None) -> str:
    assert value is not None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def relative_text(seconds: int) -> str:
    """``86400 -> "24h"``, ``604800 -> "7d"``, ``5400 -> "90m"`` (whole days above 2 days)."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _time(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise WindowError(f"{field}={text!r} is not an RFC 3339 time (e.g. 2025-01-16T10:00:00Z)", field) from None
    if value.tzinfo is None:
        raise WindowError(f"{field}={text!r} has no time zone: add Z for UTC", field)
    return value.astimezone(UTC)


def parse_window(query: Mapping[str, str], now: datetime) -> TimeWindow:
    """The window a URL query asks for (see the module docstring); :class:`WindowError` if it makes no sense."""
    relative = query.get("window")
    begin_text, end_text = query.get("begin"), query.get("end")
    if relative is not None and (begin_text or end_text):
        raise WindowError("give either window or begin/end, not both", "window")
    if relative is not None:
        match = _RELATIVE.fullmatch(relative.strip())
        if match is None:
            raise WindowError(f"window={relative!r}: use a number and m, h or d, e.g. 6h, 24h, 7d, 30d", "window")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
            raise WindowError(f"window={relative!r}: a window is 1 minute to {MAX_WINDOW_S // 86400} days", "window")
        return TimeWindow(window_s=seconds)
    if not begin_text:
        if end_text:
            raise WindowError("end needs a begin", "begin")
        return DEFAULT_WINDOW
    begin = _time(begin_text, "begin")
    end = _time(end_text, "end") if end_text else None
    if end is not None and end <= begin:
        raise WindowError("end must be after begin", "end")
    if end is None and begin >= now:
        raise WindowError("begin must be in the past", "begin")
    if ((end or now) - begin).total_seconds() > MAX_WINDOW_S:
        raise WindowError(f"a window is at most {MAX_WINDOW_S // 86400} days", "begin")
    return TimeWindow(begin=begin, end=end)
