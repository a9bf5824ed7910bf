"""The device side of a Command's lease (pure, no clock): how long a device obeys a command it was given.

Why in the contract: every device honours the same rule (the simulated one, :mod:`nodes.simulator.battery`, and
every bridge to a real one, :mod:`nodes.bridge.writes`), and the rule is part of what a Command means: the
command holds until its ``valid_until``, and no longer than a cap counted from the moment it arrived, so a dead
controller's far-future lease is not obeyed for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTOMATIC_SOURCES = frozenset({"planner"})
"""Sources whose commands are renewed by a program while it lives: their leases get the short cap."""


@dataclass(frozen=True)
class LeaseCaps:
    """The longest lease the device obeys, from the moment a command arrives.

    ``automatic_s`` (``BESS_MAX_LEASE_S``) for the autopilot, which renews its leases while it lives;
    ``operator_s`` (``BESS_MAX_OPERATOR_LEASE_S``) for everyone else (gateway, operators, Home Assistant,
    dashboard, bridges): the gateway's own maximum, 24 h.
    """

    automatic_s: float = 600.0
    operator_s: float = 86_400.0

    def cap_s(self, source: str) -> tuple[float, str]:
        """The cap for a command from ``source`` and the setting that sets it."""
        if source in AUTOMATIC_SOURCES:
            return self.automatic_s, "BESS_MAX_LEASE_S"
        return self.operator_s, "BESS_MAX_OPERATOR_LEASE_S"


__all__ = ["AUTOMATIC_SOURCES", "LeaseCaps"]
