"""The planner's rules about its inputs, pure (no I/O, the clock passed in).

* **Control precedence** (:func:`effective_mode`): a retained :class:`ControlMode` on ``battery/{battery}/control``
  rules while it is in force (until its ``until``); otherwise the planner's configured default applies
  (``BESS_PLANNER_AUTOPILOT``, minus the batteries of ``BESS_PLANNER_AUTOPILOT_OFF``). Only ``autopilot`` lets
  the planner send commands; ``manual`` and ``idle`` leave the battery to the operator (the planner keeps
  planning, so the schedule stays visible).
* **Trusted telemetry** (:func:`trusted_telemetry`): a battery's own feed (``source == "device"``) is what the
  planner plans from whenever it is live (a device reading no older than ``device_window``). Other telemetry
  (``source == "gateway"``: an HTTP ``POST /write``) counts only for a battery without a live device feed, so
  an HTTP client cannot steer the planner of a battery that reports for itself. Within each source the
  newest reading by its own timestamp wins, so a backfilled old record never replaces a newer one.
* **Bounded details** (:func:`bounded_details`): per-battery notes for the node's status, at most
  ``limit`` entries of at most 500 characters, the rest summarised in one entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from nodes.contract.messages import ControlMode, ControlModeName, Telemetry

DEVICE_SOURCE = "device"
MAX_DETAIL_CHARS = 500
MORE_KEY = "(more)"
"""Key of the summary entry; not a valid battery id, so it can never hide one."""


def default_mode(autopilot: bool, autopilot_off: list[str], battery: str) -> ControlModeName:
    """The mode when no ControlMode is in force: autopilot when configured for this battery, else manual."""
    return "autopilot" if autopilot and battery not in autopilot_off else "manual"


def effective_mode(control: ControlMode | None, now: datetime, default: ControlModeName) -> ControlModeName:
    """The mode in force at ``now``: the retained ControlMode while it lasts, else ``default``."""
    if control is None:
        return default
    return control.mode_at(now) or default


def control_expiry(control: ControlMode | None, now: datetime) -> datetime | None:
    """When the ControlMode in force ends (the planner must wake then to resume at once), or None."""
    if control is None or control.until is None or control.until <= now:
        return None
    return control.until


def newer(held: Telemetry | None, incoming: Telemetry) -> Telemetry:
    """The newer of two readings by their own timestamps (a tie goes to the incoming one)."""
    return incoming if held is None or incoming.ts >= held.ts else held


def device_feed_live(device: Telemetry | None, now: datetime, device_window: timedelta) -> bool:
    """True when the battery's own feed reported within ``device_window`` of ``now``."""
    return device is not None and now - device.ts <= device_window


def trusted_telemetry(
    device: Telemetry | None, other: Telemetry | None, now: datetime, device_window: timedelta
) -> Telemetry | None:
    """The reading to plan from: the device's while its feed is live, else the newest of both."""
    if device_feed_live(device, now, device_window):
        return device
    if device is None or other is None:
        return device or other
    return newer(device, other)


def bounded_details(notes: Mapping[str, str], limit: int) -> dict[str, str]:
    """At most ``limit`` notes (sorted by battery id, each cut to 500 characters), plus one summary entry."""
    names = sorted(notes)
    shown = names[:limit] if len(names) > limit else names
    details = {name: _cut(notes[name]) for name in shown}
    hidden = len(names) - len(shown)
    if hidden:
        details[MORE_KEY] = f"{hidden} more batteries have notes; not listed to keep the status small (see the log)"
    return details


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


__all__ = [
    "DEVICE_SOURCE",
    "MORE_KEY",
    "bounded_details",
    "control_expiry",
    "default_mode",
    "device_feed_live",
    "effective_mode",
    "newer",
    "trusted_telemetry",
]
