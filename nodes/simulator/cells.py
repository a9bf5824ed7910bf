"""What a simulated battery's BMS reports (pure: power and time in, Telemetry's BMS fields out).

Plausible, not a cell chemistry model: enough for the dashboard's battery panel, the alarm rules and the tests
to see values that move the way a real pack's do.

* Cells are LFP (``cells_in_series``, default 240, about 770 V nominal): the open-circuit voltage follows the
  flat LFP curve of :data:`LFP_OCV` over the SOC; under load the voltage drops (discharge) or rises (charge) by
  the current times the resistance. The pack current is the power over the pack voltage (+ discharging). The
  resistance scales with the capacity (more strings in parallel), so the lift follows the C-rate. No taper: above
  ~90 % SOC, charging at 1C lifts a cell past 3.65 V, where a real BMS would cut the current.
* The pack warms with the power it moves: it tends to ``ambient_c`` plus ``rise_c_at_max`` times the share of
  its largest power, with the time constant ``time_constant_s`` (exact first-order step, so a big ``dt`` is
  fine). The spread between the coldest and the hottest cell grows with the power.
* State of health fades a little with throughput (:data:`FADE_PCT_PER_CYCLE` per equivalent full cycle).
* The lifetime counters add up the energy in and out (the grid side, as ``power_kw``).
* The BMS raises its own codes beyond its hard limits (:data:`BMS_LIMITS`), as a real BMS does before it trips.

A ``hot_cell_c`` (fault injection, :mod:`nodes.simulator.faults`) overrides the hottest cell's temperature.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from nodes.contract.energy import SECONDS_PER_HOUR

LFP_OCV: tuple[tuple[float, float], ...] = (
    (0.0, 2.95), (0.05, 3.18), (0.15, 3.24), (0.5, 3.29), (0.85, 3.33), (0.95, 3.38), (1.0, 3.50),
)
"""An LFP cell's open-circuit voltage (V) against the SOC (fraction of capacity), linear in between."""
FADE_PCT_PER_CYCLE = 0.004
"""State of health lost per equivalent full cycle (about 80 % after 5000 cycles)."""
BMS_LIMITS = {"CELL_OVER_TEMP": 60.0, "CELL_UNDER_TEMP": -10.0, "CELL_OVER_VOLTAGE": 3.65, "CELL_UNDER_VOLTAGE": 2.5}
"""Where the simulated BMS reports a code of its own (°C and V): beyond the alarm rules' default thresholds."""


def ocv_v(soc_fraction: float) -> float:
    """The cell's open-circuit voltage at ``soc_fraction`` (clamped to 0..1)."""
    x = min(max(soc_fraction, 0.0), 1.0)
    for (x0, v0), (x1, v1) in itertools.pairwise(LFP_OCV):
        if x <= x1:
            return v0 + (v1 - v0) * (x - x0) / (x1 - x0)
    return LFP_OCV[-1][1]


@dataclass
class PackModel:
    """The pack of one simulated battery: its temperature, health and lifetime counters."""

    capacity_kwh: float
    max_power_kw: float
    cells_in_series: int = 240
    cell_resistance_ohm: float = 0.0002
    """The resistance a cell's current sees in a pack of :attr:`reference_capacity_kwh`."""
    reference_capacity_kwh: float = 1000.0
    ambient_c: float = 25.0
    rise_c_at_max: float = 12.0
    time_constant_s: float = 1800.0
    soh_new_pct: float = 98.0
    temp_c: float = 25.0
    charged_kwh_total: float = 0.0
    discharged_kwh_total: float = 0.0

    def step(self, power_kw: float, dt_s: float) -> None:
        """Advance ``dt_s`` seconds at ``power_kw`` (+ discharging): warm or cool, count the energy."""
        if dt_s <= 0:
            return
        target = self.ambient_c + self.rise_c_at_max * min(abs(power_kw) / self.max_power_kw, 1.0)
        self.temp_c = target + (self.temp_c - target) * math.exp(-dt_s / self.time_constant_s)
        moved = abs(power_kw) * dt_s / SECONDS_PER_HOUR
        if power_kw > 0:
            self.discharged_kwh_total += moved
        elif power_kw < 0:
            self.charged_kwh_total += moved

    @property
    def soh_pct(self) -> float:
        """State of health: the new pack's, less the fade of the cycles done."""
        cycles = self.discharged_kwh_total / self.capacity_kwh
        return max(self.soh_new_pct - FADE_PCT_PER_CYCLE * cycles, 0.0)

    def report(self, soc_kwh: float, power_kw: float, hot_cell_c: float | None = None) -> dict[str, object]:
        """Telemetry's BMS fields for the pack at ``soc_kwh`` moving ``power_kw`` now."""
        share = min(abs(power_kw) / self.max_power_kw, 1.0)
        ocv = ocv_v(soc_kwh / self.capacity_kwh)
        pack_ocv = ocv * self.cells_in_series
        current_a = power_kw * 1000.0 / pack_ocv
        # A bigger pack has more strings in parallel, each carrying its share of the current: the drop follows the
        # C-rate, not the pack current (a 2 MWh pack at 1C would otherwise read 0.5 V over its cells and raise
        # CELL_OVER_VOLTAGE while charging at 15 % SOC). + discharging: the voltage sags; charging lifts it.
        drop_v = current_a * self.cell_resistance_ohm * self.reference_capacity_kwh / self.capacity_kwh
        cell_v = ocv - drop_v
        spread_v = 0.006 + 0.01 * share
        spread_c = 1.0 + 2.5 * share
        t_max = self.temp_c + spread_c * 0.6 if hot_cell_c is None else hot_cell_c
        values: dict[str, object] = {
            "pack_voltage_v": round(cell_v * self.cells_in_series, 2),
            "pack_current_a": round(current_a, 2),
            "cell_voltage_min_v": round(cell_v - spread_v / 2, 4),
            "cell_voltage_max_v": round(cell_v + spread_v / 2, 4),
            "cell_temp_min_c": round(self.temp_c - spread_c * 0.4, 2),
            "cell_temp_max_c": round(t_max, 2),
            "soh_pct": round(self.soh_pct, 3),
            "energy_charged_kwh_total": round(self.charged_kwh_total, 3),
            "energy_discharged_kwh_total": round(self.discharged_kwh_total, 3),
        }
        values["bms_alarms"] = bms_codes(values)
        return values


def bms_codes(values: dict[str, object]) -> list[str]:
    """The codes a BMS reports for these values (:data:`BMS_LIMITS`)."""
    def number(name: str) -> float:
        value = values[name]
        assert isinstance(value, float | int)
        return float(value)

    codes = []
    if number("cell_temp_max_c") > BMS_LIMITS["CELL_OVER_TEMP"]:
        codes.append("CELL_OVER_TEMP")
    if number("cell_temp_min_c") < BMS_LIMITS["CELL_UNDER_TEMP"]:
        codes.append("CELL_UNDER_TEMP")
    if number("cell_voltage_max_v") > BMS_LIMITS["CELL_OVER_VOLTAGE"]:
        codes.append("CELL_OVER_VOLTAGE")
    if number("cell_voltage_min_v") < BMS_LIMITS["CELL_UNDER_VOLTAGE"]:
        codes.append("CELL_UNDER_VOLTAGE")
    return codes


__all__ = ["BMS_LIMITS", "FADE_PCT_PER_CYCLE", "LFP_OCV", "PackModel", "bms_codes", "ocv_v"]
