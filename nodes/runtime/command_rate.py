"""The per-battery command rate bound, one rule for every producer of commands (pure; the clock passed in).

Real inverters and BMSs store setpoints, often in flash, so no producer may send a battery commands faster than
the bound: a token bucket per battery of ``BESS_COMMAND_BURST`` commands (default 10), refilled at
``BESS_COMMAND_RATE_PER_MIN`` (default 6 a minute, one every 10 s). The gateway answers 429 with Retry-After
beyond it; the planner's autopilot stays far below it by construction (:mod:`nodes.planner.autopilot`) and uses
the same bucket as a last guard.

One exception keeps the battery safe: a stop (an ``idle`` command) passes even with the bucket empty, one per
refill interval (10 s by default), so a burst of other commands can never lock an operator out of stopping the
battery, and a flood of stops is bounded all the same.

A producer bounds what *it* sends; each process keeps its own buckets (the device caps every lease as well).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_RATE_PER_MIN = 6.0
DEFAULT_BURST = 10
MAX_TRACKED = 100_000
"""Most batteries tracked at once; beyond it the fullest buckets (the idle ones) are forgotten."""


@dataclass
class _Bucket:
    tokens: float
    at: float
    last_stop_at: float | None = None


@dataclass
class Verdict:
    """The answer for one command: allowed, or how many seconds until one would be."""

    allowed: bool
    retry_after_s: float = 0.0
    why: str = ""


@dataclass
class CommandRateLimit:
    """Token buckets keyed by battery. Times are seconds on any monotonic clock, passed in."""

    rate_per_min: float = DEFAULT_RATE_PER_MIN
    burst: int = DEFAULT_BURST
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rate_per_min <= 0 or self.burst < 1:
            raise ValueError("the command rate must be > 0 a minute and the burst at least 1")

    @property
    def per_s(self) -> float:
        """Tokens refilled per second."""
        return self.rate_per_min / 60.0

    def _bucket(self, battery: str, now_s: float) -> _Bucket:
        bucket = self._buckets.get(battery)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_full(now_s)
            bucket = self._buckets[battery] = _Bucket(tokens=float(self.burst), at=now_s)
        else:
            bucket.tokens = min(float(self.burst), bucket.tokens + max(0.0, now_s - bucket.at) * self.per_s)
            bucket.at = now_s
        return bucket

    def _forget_full(self, now_s: float) -> None:
        # a full bucket carries no information: dropping it changes no answer
        full = [k for k, b in self._buckets.items() if b.tokens + (now_s - b.at) * self.per_s >= self.burst]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]

    def check(self, battery: str, action: str, now_s: float) -> Verdict:
        """May a command with ``action`` go to ``battery`` now? Does not count it (see :meth:`take`)."""
        bucket = self._bucket(battery, now_s)
        if bucket.tokens >= 1.0:
            return Verdict(True)
        wait = (1.0 - bucket.tokens) / self.per_s
        if action == "idle":
            since = None if bucket.last_stop_at is None else now_s - bucket.last_stop_at
            if since is None or since >= 1.0 / self.per_s:
                return Verdict(True, why="a stop passes even beyond the bound")
            wait = min(wait, 1.0 / self.per_s - since)
        return Verdict(
            False,
            retry_after_s=wait,
            why=(f"more than {self.burst} commands in a burst or {self.rate_per_min:g} a minute for battery "
                 f"{battery} (BESS_COMMAND_BURST, BESS_COMMAND_RATE_PER_MIN); retry in {math.ceil(wait)} s"),
        )

    def take(self, battery: str, action: str, now_s: float) -> None:
        """Count a command that was sent."""
        bucket = self._bucket(battery, now_s)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        if action == "idle":
            bucket.last_stop_at = now_s

    def allow(self, battery: str, action: str, now_s: float) -> Verdict:
        """:meth:`check`, and :meth:`take` when allowed."""
        verdict = self.check(battery, action, now_s)
        if verdict.allowed:
            self.take(battery, action, now_s)
        return verdict


def problems(rate_per_min: float, burst: int) -> list[str]:
    """Invalid settings (for the nodes' ``problems()``)."""
    found = []
    if not rate_per_min > 0 or not math.isfinite(rate_per_min):
        found.append("BESS_COMMAND_RATE_PER_MIN must be a number > 0")
    if burst < 1:
        found.append("BESS_COMMAND_BURST must be at least 1")
    return found


__all__ = ["DEFAULT_BURST", "DEFAULT_RATE_PER_MIN", "CommandRateLimit", "Verdict", "problems"]
