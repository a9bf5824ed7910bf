"""Round-trip efficiency, usable capacity and equivalent full cycles from measured energy (pure).

Why three methods and not one: each answers a different question with the data that answers it best.

* **efficiency** needs the cells to end where they started, or the energy still stored in them is counted as
  lost: it uses closed SOC cycles only (:func:`closed_cycles`);
* **capacity** needs how far a kWh moves the SOC, which any charging or discharging interval shows: it uses full
  and partial cycles alike (:func:`usable_capacity`);
* **cycles** count wear: discharged energy over the usable range, the dashboard's rule
  (:func:`nodes.contract.energy.full_cycles` of the metered discharge), so the two screens agree.

All three integrate power by the shared model of :mod:`nodes.diagnostics.history`.
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec
import numpy as np

from nodes.contract import energy
from nodes.contract.messages import BatterySpec
from nodes.diagnostics.history import FloatArray, History, IntArray, Intervals, limit_stops, to_datetime
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.result import Result, hours, kwh, not_enough, pct, spec_pct

EFFICIENCY_METHOD = (
    "Closed SOC cycles: within each stretch of measured power (the power reported at a reading held until the "
    "next, at most {hold:g} s), starting at its first reading, every time the reported SOC swings at least "
    "{depth} away from the starting level and comes back to it, the time in between is a closed cycle (its end "
    "interpolated to the crossing). The cells hold the same energy at both ends of a closed cycle, so grid "
    "energy discharged / grid energy charged over all closed cycles is the round-trip efficiency; under the "
    "spec's rule (sqrt(eta) each way, nodes/contract/energy.py) the ratio is eta exactly. Equivalent full "
    "cycles: discharged energy in the closed cycles / usable range."
)
CAPACITY_METHOD = (
    "Full and partial cycles: over every measured charging interval, a = SOC gained / grid energy charged; over "
    "every discharging interval, b = SOC lost / grid energy discharged (intervals ending at an SOC limit left "
    "out: the device stops inside them). With sqrt(eta) each way, a = k*sqrt(eta) and b = k/sqrt(eta), where k "
    "is reported SOC kWh per kWh in the cells, so k = sqrt(a*b) whatever the efficiency, and the usable range "
    "holds (soc_max - soc_min) / k kWh. a/b is the efficiency these intervals imply (a cross-check)."
)
NEED_RANGE = "a spec with soc_max_kwh above soc_min_kwh"
CYCLES_METHOD = (
    "Grid energy discharged over measured intervals (power held from a reading to the next, at most {hold:g} s) "
    "/ the spec's usable range (soc_max - soc_min), the dashboard's rule."
)


class CycleWindow(msgspec.Struct, kw_only=True, frozen=True):
    """One closed SOC cycle: the SOC at ``start`` and at ``end`` is ``soc_kwh``."""

    start: datetime
    end: datetime
    soc_kwh: float
    depth_kwh: float
    """The largest distance of the SOC from ``soc_kwh`` inside the cycle."""
    charged_kwh: float
    discharged_kwh: float

    @property
    def roundtrip_efficiency(self) -> float | None:
        """Discharged / charged energy of this cycle alone."""
        return self.discharged_kwh / self.charged_kwh if self.charged_kwh > 0 else None


class EfficiencyResult(Result, kw_only=True, frozen=True):
    """Measured round-trip efficiency over closed SOC cycles."""

    roundtrip_efficiency: float | None = None
    spec_roundtrip_efficiency: float
    cycles: int = 0
    """Closed SOC cycles used."""
    full_cycles: float = 0.0
    """Equivalent full cycles of discharge inside them."""
    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0
    windows: tuple[CycleWindow, ...] = ()


class CapacityResult(Result, kw_only=True, frozen=True):
    """Energy the usable SOC range holds in the cells, estimated from full and partial cycles."""

    usable_kwh: float | None = None
    spec_usable_kwh: float
    soc_scale: float | None = None
    """k: reported SOC kWh per kWh in the cells (1 when the SOC is true; above 1 when capacity has faded)."""
    implied_roundtrip_efficiency: float | None = None
    charge_swing_kwh: float = 0.0
    """SOC gained over the charging intervals used."""
    discharge_swing_kwh: float = 0.0
    """SOC lost over the discharging intervals used."""


class CycleCountResult(Result, kw_only=True, frozen=True):
    """Equivalent full cycles the battery made."""

    full_cycles: float | None = None
    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0
    spec_usable_kwh: float


def _cumulative(values: FloatArray) -> FloatArray:
    """Running sum at each reading: entry ``k`` is the sum over the intervals before reading ``k``."""
    return np.concatenate(([0.0], np.cumsum(values)))


def _first_at_or_after(indices: IntArray, position: int) -> int | None:
    """The first index in the sorted ``indices`` at or after ``position``."""
    k = int(np.searchsorted(indices, position, side="left"))
    return int(indices[k]) if k < indices.shape[0] else None


def closed_cycles(history: History, iv: Intervals, min_depth_kwh: float) -> list[CycleWindow]:
    """Closed SOC cycles within the measured segments (see :data:`EFFICIENCY_METHOD`).

    The level is the SOC at each segment's first reading; a cycle opens where the previous one closed (or at the
    segment's start), swings at least ``min_depth_kwh`` to one side, and closes where the SOC comes back to the
    level, interpolated inside that interval (power is constant over an interval, so SOC and energy are linear).
    """
    if min_depth_kwh <= 0:
        raise ValueError("min_depth_kwh must be > 0")
    soc, t = history.soc_kwh, history.time_s
    charged, discharged = _cumulative(iv.charged_kwh), _cumulative(iv.discharged_kwh)
    found: list[CycleWindow] = []
    for first, last in iv.segments():
        level = float(soc[first])
        part = soc[first:last + 1]
        above = np.flatnonzero(part >= level + min_depth_kwh) + first
        below = np.flatnonzero(part <= level - min_depth_kwh) + first
        at_or_below = np.flatnonzero(part <= level) + first
        at_or_above = np.flatnonzero(part >= level) + first
        open_at, open_t, open_c, open_d = first, float(t[first]), float(charged[first]), float(discharged[first])
        while True:
            up = _first_at_or_after(above, open_at)
            down = _first_at_or_after(below, open_at)
            if up is None and down is None:
                break
            rising = down is None or (up is not None and up < down)
            swing_at = up if rising else down
            assert swing_at is not None
            back = _first_at_or_after(at_or_below if rising else at_or_above, swing_at + 1)
            if back is None:
                break
            # soc[back - 1] is strictly on the swing's side of the level and soc[back] at or past it
            before, after = float(soc[back - 1]), float(soc[back])
            share = (level - before) / (after - before)
            k = back - 1
            end_t = float(t[k]) + share * float(iv.dt_s[k])
            end_c = float(charged[k]) + share * float(iv.charged_kwh[k])
            end_d = float(discharged[k]) + share * float(iv.discharged_kwh[k])
            depth = float(np.max(np.abs(soc[open_at:back] - level)))
            found.append(CycleWindow(start=to_datetime(open_t), end=to_datetime(end_t), soc_kwh=level,
                                     depth_kwh=depth, charged_kwh=end_c - open_c, discharged_kwh=end_d - open_d))
            open_at, open_t, open_c, open_d = back, end_t, end_c, end_d
    return found


def _readings_within(history: History, windows: list[CycleWindow]) -> int:
    """Readings inside the windows (a reading on the boundary of two windows counts in both)."""
    t = history.time_s
    total = 0
    for window in windows:
        total += int(np.searchsorted(t, window.end.timestamp(), side="right")
                     - np.searchsorted(t, window.start.timestamp(), side="left"))
    return total


def roundtrip_efficiency(history: History, iv: Intervals, spec: BatterySpec,
                         options: DiagnosticsOptions) -> EfficiencyResult:
    """Measured round-trip efficiency over closed SOC cycles, compared with the spec's."""
    usable = energy.usable_kwh(spec)
    depth = options.min_cycle_depth_pct / 100.0 * usable
    found = closed_cycles(history, iv, depth) if usable > 0 else []
    windows = [w for w in found if w.charged_kwh > 0 and w.discharged_kwh > 0]
    charged = sum(w.charged_kwh for w in windows)
    discharged = sum(w.discharged_kwh for w in windows)
    full = discharged / usable if usable > 0 else 0.0
    span_h = sum((w.end - w.start).total_seconds() for w in windows) / energy.SECONDS_PER_HOUR

    def result(summary: str, need: str | None = None, measured: float | None = None) -> EfficiencyResult:
        return EfficiencyResult(
            title="round-trip efficiency", summary=summary, need=need,
            method=EFFICIENCY_METHOD.format(hold=options.max_hold_s, depth=kwh(depth)),
            readings=_readings_within(history, windows), hours=span_h, roundtrip_efficiency=measured,
            spec_roundtrip_efficiency=spec.roundtrip_efficiency, cycles=len(windows), full_cycles=full,
            charged_kwh=charged, discharged_kwh=discharged, windows=tuple(windows),
        )

    if usable <= 0:
        return result(not_enough(NEED_RANGE), NEED_RANGE)
    if len(windows) < options.min_cycles or full < options.min_efficiency_full_cycles:
        need = (f"at least {options.min_cycles} closed SOC cycles (a swing of {kwh(depth)} or more and back) "
                f"holding {options.min_efficiency_full_cycles:g} equivalent full cycles; have {len(windows)} "
                f"holding {full:.2f}")
        return result(not_enough(need), need)
    measured = discharged / charged
    return result(f"measured {pct(measured)} vs spec {spec_pct(spec.roundtrip_efficiency)} over {len(windows)} "
                  f"cycles ({full:.1f} equivalent full cycles, {hours(span_h)})", measured=measured)


def usable_capacity(history: History, iv: Intervals, spec: BatterySpec,
                    options: DiagnosticsOptions) -> CapacityResult:
    """Usable capacity from full or partial cycles (see :data:`CAPACITY_METHOD`), compared with the spec's range."""
    usable = energy.usable_kwh(spec)
    tolerance = options.soc_limit_tolerance_pct / 100.0 * usable
    use = iv.measured & ~limit_stops(history, iv, spec.soc_min_kwh, spec.soc_max_kwh, tolerance)
    charging = use & (iv.charged_kwh > 0)
    discharging = use & (iv.discharged_kwh > 0)
    charged = float(iv.charged_kwh[charging].sum())
    discharged = float(iv.discharged_kwh[discharging].sum())
    rise = float(iv.soc_change_kwh[charging].sum())
    fall = -float(iv.soc_change_kwh[discharging].sum())
    used = charging | discharging
    used_h = float(iv.dt_s[used].sum()) / energy.SECONDS_PER_HOUR
    swing = options.min_capacity_swing_pct / 100.0 * usable

    def result(summary: str, need: str | None = None, scale: float | None = None,
               implied: float | None = None) -> CapacityResult:
        return CapacityResult(
            title="usable capacity", summary=summary, need=need, method=CAPACITY_METHOD,
            readings=int(used.sum()), hours=used_h, spec_usable_kwh=usable,
            usable_kwh=None if scale is None else usable / scale, soc_scale=scale,
            implied_roundtrip_efficiency=implied, charge_swing_kwh=rise, discharge_swing_kwh=fall,
        )

    if usable <= 0:
        return result(not_enough(NEED_RANGE), NEED_RANGE)
    if rise < swing or fall < swing or charged <= 0 or discharged <= 0:
        need = (f"an SOC swing of {kwh(swing)} in each direction ({options.min_capacity_swing_pct:g} % of the "
                f"usable range, full or partial cycles); have {kwh(max(rise, 0.0))} up and {kwh(max(fall, 0.0))} "
                "down")
        return result(not_enough(need), need)
    a, b = rise / charged, fall / discharged
    scale = math.sqrt(a * b)
    estimate = usable / scale
    return result(f"estimated {kwh(estimate)} usable vs spec {kwh(usable)} ({pct(estimate / usable)}) from "
                  f"{kwh(rise)} of SOC charged and {kwh(fall)} discharged over {hours(used_h)}",
                  scale=scale, implied=a / b)


def equivalent_full_cycles(history: History, iv: Intervals, spec: BatterySpec,
                           options: DiagnosticsOptions) -> CycleCountResult:
    """Equivalent full cycles: metered discharge over the usable range (the dashboard's rule)."""
    usable = energy.usable_kwh(spec)
    discharged = float(iv.discharged_kwh.sum())
    covered_h = iv.measured_s / energy.SECONDS_PER_HOUR
    cycles = energy.full_cycles(discharged, spec)

    def result(summary: str, need: str | None = None) -> CycleCountResult:
        return CycleCountResult(
            title="equivalent full cycles", summary=summary, need=need,
            method=CYCLES_METHOD.format(hold=options.max_hold_s), readings=int(iv.measured.sum()),
            hours=covered_h, full_cycles=None if need else cycles, charged_kwh=float(iv.charged_kwh.sum()),
            discharged_kwh=discharged, spec_usable_kwh=usable,
        )

    if cycles is None:
        return result(not_enough(NEED_RANGE), NEED_RANGE)
    if covered_h <= 0:
        need = f"two readings with a reported power at most {options.max_hold_s:g} s apart"
        return result(not_enough(need), need)
    return result(f"{cycles:.1f} equivalent full cycles: {kwh(discharged)} discharged / {kwh(usable)} usable "
                  f"(spec), over {hours(covered_h)} of measured power")


__all__ = [
    "CapacityResult",
    "CycleCountResult",
    "CycleWindow",
    "EfficiencyResult",
    "closed_cycles",
    "equivalent_full_cycles",
    "roundtrip_efficiency",
    "usable_capacity",
]
