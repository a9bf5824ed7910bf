"""The planner's settings (``BESS_PLANNER_*`` and the shared command bound, see :mod:`nodes.runtime.config`)."""

from __future__ import annotations

import os
from datetime import timedelta

import msgspec

from nodes.contract.topics import id_problems
from nodes.runtime import command_rate
from nodes.runtime.command_rate import DEFAULT_BURST, DEFAULT_RATE_PER_MIN
from nodes.runtime.config import MqttSettings

MAX_STALE_AFTER_H = 168
"""A week: no day-ahead feed publishes that far ahead, so a larger limit would keep the planner degraded forever."""


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
    #: processes solving a batch of plans (a new forecast for a fleet); None: one per core. 1: one thread, in turn
    planner_workers: int | None = None
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
    #: prices that do not cover every moment of the next this many hours are stale: the node is degraded (and
    #: keeps planning on the real slots it has; see nodes.planner.coverage). The market feed's
    #: BESS_MARKET_STALE_AFTER_H has the same default, so feed and planner turn degraded together.
    planner_prices_stale_after_h: float = 6.0

    @property
    def workers(self) -> int:
        """``planner_workers``, or the number of cores when unset."""
        return self.planner_workers if self.planner_workers is not None else max(os.cpu_count() or 1, 1)

    @property
    def prices_stale_after(self) -> timedelta:
        """``planner_prices_stale_after_h`` as a duration."""
        return timedelta(hours=self.planner_prices_stale_after_h)

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
        if self.planner_workers is not None and not 1 <= self.planner_workers <= 256:
            found.append("BESS_PLANNER_WORKERS must be 1 to 256 (processes solving plans; unset: one per core)")
        if self.planner_device_feed_window_s <= 0:
            found.append("BESS_PLANNER_DEVICE_FEED_WINDOW_S must be > 0")
        if not 0 < self.planner_prices_stale_after_h <= MAX_STALE_AFTER_H:  # NaN and inf too
            found.append(f"BESS_PLANNER_PRICES_STALE_AFTER_H must be > 0 and at most {MAX_STALE_AFTER_H} hours "
                         "(a feed publishes today and tomorrow: 24 to 48 h ahead)")
        found += [
            f"BESS_PLANNER_AUTOPILOT_OFF: {problem}"
            for battery in self.planner_autopilot_off
            for problem in id_problems(battery, "battery")
        ]
        return found


__all__ = ["PlannerConfig"]
