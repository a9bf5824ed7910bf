"""The planner's settings (``BESS_PLANNER_*`` and the shared command bound, see :mod:`nodes.runtime.config`)."""

from __future__ import annotations

import msgspec

from nodes.contract.topics import id_problems
from nodes.runtime import command_rate
from nodes.runtime.command_rate import DEFAULT_BURST, DEFAULT_RATE_PER_MIN
from nodes.runtime.config import MqttSettings


class PlannerConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_PLANNER_*`` settings."""

    planner_zone: str = "de-lu"
    planner_autopilot: bool = False
    planner_autopilot_off: list[str] = msgspec.field(default_factory=list)
    planner_drift_kwh: float | None = None
    planner_max_telemetry_age_s: float = 300.0
    #: per change of direction, in the forecast's currency; BESS_PLANNER_SWITCH_PENALTY_EUR is the deprecated name
    #: (the attribute keeps it until that variable is removed, as the gateway's renamed settings do)
    planner_switch_penalty_eur: float = msgspec.field(default=0.0, name="planner_switch_penalty")
    planner_solver: str = "cbc"
    planner_min_replan_interval_s: float = 1.0
    planner_lease_s: float = 300.0
    #: how long a lease outlasts its run of slots, so the next run's command, sent at the boundary, takes over
    #: without a moment uncovered (a planner dying at the boundary holds the old setpoint this long at most);
    #: at most a quarter of the lease is used (a 4 s lease gets 1 s)
    planner_handover_s: float = 5.0
    command_rate_per_min: float = DEFAULT_RATE_PER_MIN
    command_burst: int = DEFAULT_BURST
    #: a device reading this recent makes the device feed "live": HTTP writes for that battery are ignored
    planner_device_feed_window_s: float = 600.0

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.planner_zone, "BESS_PLANNER_ZONE")
        if self.planner_lease_s < 2:
            found.append("BESS_PLANNER_LEASE_S must be at least 2 seconds")
        if self.planner_handover_s <= 0:
            found.append("BESS_PLANNER_HANDOVER_S must be > 0")
        if self.planner_max_telemetry_age_s <= 0:
            found.append("BESS_PLANNER_MAX_TELEMETRY_AGE_S must be > 0")
        found += command_rate.problems(self.command_rate_per_min, self.command_burst)
        if self.planner_solver not in ("cbc", "highs"):
            found.append("BESS_PLANNER_SOLVER must be cbc or highs")
        if self.planner_device_feed_window_s <= 0:
            found.append("BESS_PLANNER_DEVICE_FEED_WINDOW_S must be > 0")
        found += [
            f"BESS_PLANNER_AUTOPILOT_OFF: {problem}"
            for battery in self.planner_autopilot_off
            for problem in id_problems(battery, "battery")
        ]
        return found


__all__ = ["PlannerConfig"]
