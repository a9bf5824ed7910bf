"""The simulator's tick schedule (pure: the wall clock is passed in): ticks on the interval's grid, never drifting.

Tick ``k`` is due at ``k * interval`` seconds since the epoch (at 1 s: every whole second), and every reading of
that tick carries that moment as its timestamp, however long publishing a 1,000-battery tick takes. The next
tick is due one interval after the last, not one interval after the work finished, so the work does not add up
into drift: over an hour at 1 Hz there are 3,600 ticks. A tick that starts late starts at once; one that is
more than a whole interval late is skipped (``skipped`` counts them, and no reading is made up for them), so an
overloaded or suspended process catches up with the clock instead of bunching old ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Ticks:
    """When the next tick is due and what the schedule has missed."""

    interval_s: float
    #: the index of the last tick handed out (its time is ``index * interval_s``); None before the first
    index: int | None = None
    ticks: int = 0
    skipped: int = 0
    #: the latest a tick started after its due time, in ms
    late_ms_max: int = 0

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be > 0")

    def due(self, now_s: float) -> float:
        """The epoch time (seconds) the next tick is due, given the wall clock ``now_s``."""
        if self.index is None:
            return math.floor(now_s / self.interval_s + 1) * self.interval_s
        return (self.index + 1) * self.interval_s

    def take(self, now_s: float) -> float:
        """Start the tick due at or before ``now_s`` (skipping those more than an interval late); its epoch time."""
        index = math.floor(now_s / self.interval_s + 1e-9) if self.index is None else self.index + 1
        latest = math.floor(now_s / self.interval_s + 1e-9)
        if latest - index >= 1:  # more than a whole interval behind: skip to the newest tick due
            self.skipped += latest - index
            index = latest
        self.index = index
        self.ticks += 1
        at = index * self.interval_s
        self.late_ms_max = max(self.late_ms_max, round(max(0.0, now_s - at) * 1000))
        return at


__all__ = ["Ticks"]
