"""The simulator's settings (``BESS_SIM_*``, ``BESS_BATTERIES``, see :mod:`nodes.runtime.config`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from nodes.contract.messages import BatterySpec
from nodes.contract.topics import id_problems
from nodes.runtime.config import MqttSettings
from nodes.simulator.faults import FaultError, FaultPlan, parse_faults
from nodes.simulator.fleet import MAX_SIM_COUNT, fleet_ids, initial_soc_kwh, varied_spec


class SimulatorConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_*`` settings of the simulator."""

    batteries: list[str] = msgspec.field(default_factory=lambda: ["battery-1"])
    #: > 0: simulate battery-0001 .. battery-<count> instead of BESS_BATTERIES (a fleet, see nodes/simulator/fleet.py)
    sim_count: int = 0
    #: same: every battery gets the BESS_SIM_* spec; varied: each its own, derived from its id (repeatable)
    sim_specs: Literal["same", "varied"] = "same"
    sim_capacity_kwh: float = 1000.0
    sim_soc_min_kwh: float = 100.0
    sim_soc_max_kwh: float = 950.0
    sim_max_charge_kw: float = 250.0
    sim_max_discharge_kw: float = 250.0
    sim_roundtrip_efficiency: float = 0.9
    sim_soc_initial_kwh: float | None = None
    sim_telemetry_interval_s: float = 2.0
    sim_speed: float = 1.0
    #: readings per battery kept until the recorder confirms them stored (battery/{battery}/stored); 0: none
    sim_keep_unconfirmed: int = 10_000
    #: readings kept over all batteries of this process (about 540 bytes each): 1,000 batteries x 10,000 would be
    #: 5.4 GB during a long recorder outage, so a large fleet keeps fewer per battery (``keep_per_battery``)
    sim_keep_unconfirmed_total: int = 1_000_000
    #: the longest autopilot (planner) lease obeyed, from arrival; longer ones are cut and the state says so
    max_lease_s: float = 600.0
    #: the longest lease of any other source (gateway, operators, bridges): the gateway's own maximum
    max_operator_lease_s: float = 86_400.0
    #: report what a BMS does (cell voltages and temperatures, SOH, codes, lifetime counters) with each reading
    sim_bms: bool = True
    #: fault injection for tests and demos (JSON, see nodes/simulator/faults.py); unset: none
    sim_fault: str | None = None

    def problems(self) -> list[str]:
        """Invalid combinations, reported at start-up (exit 2)."""
        found = [f"BESS_BATTERIES: {problem}" for b in self.batteries for problem in id_problems(b, "battery")]
        if not 0 <= self.sim_count <= MAX_SIM_COUNT:
            found.append(f"BESS_SIM_COUNT must be between 0 and {MAX_SIM_COUNT}")
        try:
            found += self.spec().problems()
        except msgspec.ValidationError as exc:
            found.append(f"battery spec: {exc}")
        if not 0 < self.max_lease_s <= self.max_operator_lease_s:
            found.append("BESS_MAX_LEASE_S must be > 0 and at most BESS_MAX_OPERATOR_LEASE_S")
        if self.sim_telemetry_interval_s <= 0 or self.sim_speed <= 0:
            found.append("BESS_SIM_TELEMETRY_INTERVAL_S and BESS_SIM_SPEED must be > 0")
        if not 0 <= self.sim_keep_unconfirmed <= 1_000_000:
            found.append("BESS_SIM_KEEP_UNCONFIRMED must be between 0 and 1000000")
        if not 1 <= self.sim_keep_unconfirmed_total <= 100_000_000:
            found.append("BESS_SIM_KEEP_UNCONFIRMED_TOTAL must be between 1 and 100000000")
        try:
            self.faults()
        except FaultError as exc:
            found.append(str(exc))
        return found

    def faults(self) -> FaultPlan:
        """The injected faults (``BESS_SIM_FAULT``); raises :class:`~nodes.simulator.faults.FaultError`."""
        return parse_faults(self.sim_fault, self.battery_ids())

    def keep_per_battery(self, batteries: int) -> int:
        """Readings each of ``batteries`` keeps until stored: ``BESS_SIM_KEEP_UNCONFIRMED``, within the total."""
        if self.sim_keep_unconfirmed == 0:
            return 0
        return max(1, min(self.sim_keep_unconfirmed, self.sim_keep_unconfirmed_total // max(batteries, 1)))

    def battery_ids(self) -> list[str]:
        """The batteries this simulator runs: the generated fleet of ``BESS_SIM_COUNT``, else ``BESS_BATTERIES``."""
        if self.sim_count > 0:
            return fleet_ids(min(self.sim_count, MAX_SIM_COUNT))
        return list(dict.fromkeys(self.batteries))

    def spec_for(self, battery: str) -> BatterySpec:
        """The spec ``battery`` publishes: the ``BESS_SIM_*`` one, or its own with ``BESS_SIM_SPECS=varied``."""
        spec = self.spec()
        return varied_spec(battery, spec) if self.sim_specs == "varied" else spec

    def start_soc_kwh(self, battery: str, spec: BatterySpec) -> float:
        """Where ``battery`` starts (before a retained reading of a previous run says otherwise)."""
        if self.sim_soc_initial_kwh is not None:
            return self.sim_soc_initial_kwh
        if self.sim_specs == "varied":
            return initial_soc_kwh(battery, spec)
        return (spec.soc_min_kwh + spec.soc_max_kwh) / 2

    def spec(self) -> BatterySpec:
        """The BatterySpec every simulated battery publishes (validated like a wire message)."""
        return msgspec.convert(
            {
                "capacity_kwh": self.sim_capacity_kwh,
                "soc_min_kwh": self.sim_soc_min_kwh,
                "soc_max_kwh": self.sim_soc_max_kwh,
                "max_charge_kw": self.sim_max_charge_kw,
                "max_discharge_kw": self.sim_max_discharge_kw,
                "roundtrip_efficiency": self.sim_roundtrip_efficiency,
                # what Home Assistant shows on the battery's device (so nobody mistakes it for real hardware)
                "manufacturer": "BESS",
                "model": "simulated battery",
            },
            BatterySpec,
        )


__all__ = ["SimulatorConfig"]
