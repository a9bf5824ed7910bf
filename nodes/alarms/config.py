"""The alarms node's settings (``BESS_ALARMS``, ``BESS_ALARMS_*``, ``BESS_BATTERIES``; :mod:`nodes.runtime.config`)."""

from __future__ import annotations

import msgspec

from nodes.alarms.settings import AlarmConfig, AlarmConfigError, parse_alarm_settings
from nodes.contract.topics import id_problems
from nodes.runtime.config import MqttSettings


class AlarmsConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_*`` settings of the alarms node."""

    #: the batteries watched from the start, so one that never reports is an alarm too (telemetry_stale); any other
    #: battery is watched from its first spec, reading or command
    batteries: list[str] = msgspec.field(default_factory=list)
    #: the rules' settings: JSON with ``defaults`` and per-battery overrides (nodes/alarms/settings.py); unset: the
    #: built-in defaults
    alarms: str | None = None
    #: the market zone whose prices the batteries are planned on (the planner's BESS_PLANNER_ZONE)
    alarms_zone: str = "de-lu"
    #: after connecting, wait this long for the retained alarms (the book of the previous run) before judging
    alarms_restore_wait_s: float = 2.0

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = [f"BESS_BATTERIES: {p}" for battery in self.batteries for p in id_problems(battery, "battery")]
        found += id_problems(self.alarms_zone, "BESS_ALARMS_ZONE")
        if not 0 <= self.alarms_restore_wait_s <= 60:
            found.append("BESS_ALARMS_RESTORE_WAIT_S must be between 0 and 60")
        try:
            self.rules()
        except AlarmConfigError as exc:
            found.append(str(exc))
        return found

    def rules(self) -> AlarmConfig:
        """The parsed ``BESS_ALARMS`` (overrides only for ``BESS_BATTERIES`` when that is set)."""
        return parse_alarm_settings(self.alarms, self.batteries or None)


__all__ = ["AlarmsConfig"]
