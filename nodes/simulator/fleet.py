"""A simulated fleet (pure: no I/O, no clock): generated battery ids and specs that differ per battery.

``BESS_SIM_COUNT=N`` names N batteries ``battery-0001`` .. ``battery-N`` (at least four digits, so the ids sort
in order); ``BESS_SIM_SPECS=varied`` gives each battery a spec of its own, derived from its id alone (a hash,
never Python's per-process ``hash()``), so a restarted simulator, a benchmark re-run and a test all see the same
fleet: capacities from a home battery to a grid-scale block, C-rates 0.25 to 1, round-trip efficiencies 0.80 to
0.95. The plain spec of the ``BESS_SIM_*`` settings is what ``same`` gives every battery (the default).
"""

from __future__ import annotations

import hashlib

import msgspec

from nodes.contract.messages import BatterySpec

#: the most batteries ``BESS_SIM_COUNT`` may ask one simulator process for
MAX_SIM_COUNT = 100_000
CAPACITIES_KWH = (13.5, 50.0, 100.0, 215.0, 500.0, 1000.0, 2000.0)
"""Capacities a varied fleet draws from: a home battery, commercial cabinets, grid-scale blocks."""
C_RATES = (0.25, 0.5, 1.0)
SOC_MIN_SHARES = (0.0, 0.05, 0.1)
SOC_MAX_SHARES = (0.9, 0.95, 1.0)
EFFICIENCY_RANGE = (0.80, 0.95)


def fleet_ids(count: int) -> list[str]:
    """``battery-0001`` .. ``battery-<count>``: at least four digits, zero-padded to the widest."""
    width = max(4, len(str(count)))
    return [f"battery-{i:0{width}d}" for i in range(1, count + 1)]


def _draws(battery: str) -> bytes:
    """Stable pseudo-random bytes of a battery id (the same in every process and Python version)."""
    return hashlib.sha256(f"bess-sim-spec/{battery}".encode()).digest()


def varied_spec(battery: str, base: BatterySpec) -> BatterySpec:
    """The spec of ``battery`` in a varied fleet: derived from its id alone; labels (manufacturer, model) and
    the wear cost of ``base`` are kept."""
    draw = _draws(battery)
    capacity = CAPACITIES_KWH[draw[0] % len(CAPACITIES_KWH)]
    low, high = EFFICIENCY_RANGE
    efficiency = round(low + (high - low) * int.from_bytes(draw[5:7], "big") / 0xFFFF, 4)
    return msgspec.structs.replace(
        base,
        capacity_kwh=capacity,
        soc_min_kwh=round(capacity * SOC_MIN_SHARES[draw[1] % len(SOC_MIN_SHARES)], 3),
        soc_max_kwh=round(capacity * SOC_MAX_SHARES[draw[2] % len(SOC_MAX_SHARES)], 3),
        max_charge_kw=round(capacity * C_RATES[draw[3] % len(C_RATES)], 3),
        max_discharge_kw=round(capacity * C_RATES[draw[4] % len(C_RATES)], 3),
        roundtrip_efficiency=efficiency,
    )


def initial_soc_kwh(battery: str, spec: BatterySpec) -> float:
    """Where a varied battery starts when nothing says otherwise: somewhere in its range, from its id."""
    share = _draws(battery)[7] / 255
    return round(spec.soc_min_kwh + share * (spec.soc_max_kwh - spec.soc_min_kwh), 3)


__all__ = ["CAPACITIES_KWH", "MAX_SIM_COUNT", "fleet_ids", "initial_soc_kwh", "varied_spec"]
