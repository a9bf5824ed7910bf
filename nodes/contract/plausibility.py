"""When a measurement's timestamp is plausible: one rule for every way in (pure; the clock passed in).

A reading or a command stamped before 2000-01-01 or more than one day ahead of the receiver's clock is a
device with a wrong clock, a unit mistake (milliseconds read as seconds) or abuse, never a measurement. Stored, it
would sit in the database for ever (InfluxDB keeps year 2200 happily), and "the newest reading" would be that
one until then. The contract admits any zone-aware time, so the rule is applied where messages come in:

* the gateway refuses such a ``timestamp`` with 422 (``POST /write``) and counts it (``implausible``);
* the bus drops such a message on every subscription (recorder, planner, renderer, simulator), logs it
  (the first per topic, then at most once a minute with the count) and counts it (``implausible``).

Which field is the message's time: :data:`STAMPS`. Prices and schedules are forecasts (their slots lie ahead
by nature) and are not checked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import BatteryState, Command, Telemetry

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_AHEAD = timedelta(days=1)

STAMPS: dict[type[Any], str] = {Telemetry: "ts", BatteryState: "ts", Command: "issued_at"}
"""The timestamp field of each message type the rule applies to."""


def timestamp_problem(ts: datetime, now: datetime, field: str = "timestamp") -> str | None:
    """Why ``ts`` is not a plausible measurement time at ``now``, or None when it is."""
    if ts < EARLIEST:
        return f"{field} {ts.isoformat()} is before 2000-01-01: not a plausible measurement"
    if ts > now + MAX_AHEAD:
        return f"{field} {ts.isoformat()} is more than 1 day in the future"
    return None


def message_problem(message: object, now: datetime) -> str | None:
    """Why a decoded message's own timestamp is implausible (see :data:`STAMPS`), or None."""
    field = STAMPS.get(type(message))
    if field is None:
        return None
    ts = getattr(message, field)
    return timestamp_problem(ts, now, field) if isinstance(ts, datetime) else None


__all__ = ["EARLIEST", "MAX_AHEAD", "STAMPS", "message_problem", "timestamp_problem"]
