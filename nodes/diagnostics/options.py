"""How much data each diagnostic needs and how it judges (one Struct, defaults an operator can live with).

Why thresholds at all: a round-trip efficiency from one shallow swing, or a response delay from one command,
is a number with no meaning; each diagnostic refuses to give one below these minimums and says what it needs.
Percentages of the usable range (``soc_max - soc_min``) and of the larger power limit keep the defaults right for
a 10 kWh home battery and a 100 MWh plant alike.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from nodes.diagnostics.commanded import SOC_LIMIT_MARGIN_PCT, TOLERANCE_PCT
from nodes.diagnostics.history import MAX_HOLD_S

Positive = Annotated[float, Meta(gt=0.0)]
Share = Annotated[float, Meta(gt=0.0, le=100.0)]


class DiagnosticsOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the diagnostics (units and bases in the names)."""

    max_hold_s: Positive = MAX_HOLD_S
    """A reported power holds at most this long; a longer silence is not integrated."""
    gap_threshold_s: Positive = 300.0
    """Readings further apart than this are a telemetry gap."""
    min_cycles: Annotated[int, Meta(ge=1)] = 2
    """Closed SOC cycles the efficiency needs."""
    min_cycle_depth_pct: Share = 20.0
    """A swing away from the starting SOC and back counts as a cycle when it is at least this deep."""
    min_efficiency_full_cycles: Positive = 1.0
    """Equivalent full cycles of discharge the closed cycles must hold (shallow swings amplify SOC rounding)."""
    min_capacity_swing_pct: Share = 50.0
    """SOC swing, in each direction, the capacity estimate needs (summed over full or partial cycles)."""
    soc_limit_tolerance_pct: Annotated[float, Meta(ge=0.0, le=100.0)] = SOC_LIMIT_MARGIN_PCT
    """Within this of an SOC limit the battery counts as at the limit (it may refuse to go further)."""
    tracking_tolerance_pct: Share = TOLERANCE_PCT
    """Actual power within this of the commanded power follows the command."""
    min_tracking_s: Positive = 600.0
    """Seconds under a known command the tracking error needs."""
    min_response_steps: Annotated[int, Meta(ge=1)] = 3
    """Command changes the response delay needs."""
    min_consistency_hours: Positive = 12.0
    """Hours of measured power the SOC consistency check needs."""
    min_idle_hours: Positive = 6.0
    """Hours at zero power the idle SOC drift needs."""


__all__ = ["DiagnosticsOptions"]
