"""What the gateway knows of the batteries behind it (pure, no I/O): which ids exist, and who commands each.

A battery is *known* once the gateway has seen its spec, telemetry or state on the bus, or has itself published
telemetry for it (``POST /write``). Commands and control changes for an unknown battery are refused with 404
unless the caller says ``"force": true``: a typo in a battery id must not silently command nothing.

The gateway learns ids from retained messages and live traffic since it started, so after a restart a battery
that only ever got HTTP writes (never retained) is unknown until its next write.
"""

from __future__ import annotations

import logging

from nodes.contract.messages import ControlMode

log = logging.getLogger("bess.gateway")

MAX_BATTERIES = 100_000
"""Ids kept at most: a misbehaving publisher inventing ids cannot grow the gateway without bound."""


class Fleet:
    """Known battery ids and the latest ControlMode per battery (from the retained ``battery/+/control``)."""

    def __init__(self, max_batteries: int = MAX_BATTERIES) -> None:
        self._known: set[str] = set()
        self._controls: dict[str, ControlMode] = {}
        self._max = max_batteries
        self._full_logged = False

    def saw(self, battery: str) -> None:
        """Remember that ``battery`` exists (it has a spec, telemetry or state, or the gateway wrote for it)."""
        if battery in self._known:
            return
        if len(self._known) >= self._max:
            if not self._full_logged:
                self._full_logged = True
                log.warning("more than %d battery ids seen; not remembering more (commands to them need force)",
                            self._max)
            return
        self._known.add(battery)

    def known(self, battery: str) -> bool:
        """True when ``battery`` was seen."""
        return battery in self._known

    def count(self) -> int:
        """How many battery ids are known."""
        return len(self._known)

    def set_control(self, battery: str, control: ControlMode) -> None:
        """The ControlMode of ``battery``, as published on its retained control topic."""
        self._controls[battery] = control

    def control(self, battery: str) -> ControlMode | None:
        """The latest ControlMode of ``battery`` (in force or not), or None when none was seen."""
        return self._controls.get(battery)


__all__ = ["MAX_BATTERIES", "Fleet"]
