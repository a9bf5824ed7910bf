"""The latest BatterySpec per battery, as seen on the retained ``battery/+/spec`` topic (pure, no I/O).

The gateway checks command power against it. A battery whose spec was never seen is "unknown": commands are
accepted (the device enforces its own limits) and the response says ``spec_known: false``.
"""

from __future__ import annotations

from nodes.contract.messages import BatterySpec
from nodes.gateway.commands import ParsedCommand, describe, plain_number


class SpecBook:
    """Latest spec per battery id."""

    def __init__(self) -> None:
        self._specs: dict[str, BatterySpec] = {}

    def update(self, battery: str, spec: BatterySpec) -> None:
        """Remember ``spec`` as the current spec of ``battery``."""
        self._specs[battery] = spec

    def get(self, battery: str) -> BatterySpec | None:
        """The current spec of ``battery``, or ``None`` when none was seen."""
        return self._specs.get(battery)

    def known(self) -> list[str]:
        """Battery ids with a known spec, sorted."""
        return sorted(self._specs)

    def violation(self, battery: str, parsed: ParsedCommand) -> str | None:
        """Why ``parsed`` exceeds the battery's limits, or ``None`` when it is within them (or no spec is known)."""
        spec = self._specs.get(battery)
        if spec is None or parsed.action == "idle":
            return None
        limit_name = "max_charge_kw" if parsed.action == "charge" else "max_discharge_kw"
        limit: float = getattr(spec, limit_name)
        if parsed.power_kw <= limit:
            return None
        return f"{describe(parsed)} exceeds {battery}'s {limit_name} of {plain_number(limit)} kW (from its BatterySpec)"


__all__ = ["SpecBook"]
