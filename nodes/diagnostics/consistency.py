"""Can the reported SOC be trusted: integrated power against the SOC the battery reports (pure).

A battery's SOC is its own estimate (coulomb counting, voltage models); its power is metered. Integrated with the
spec's efficiency rule, the power says how the SOC should have moved; what the reported SOC did beyond that is
drift: a sensor or model error that makes the planner plan on energy that is not there.

Why the spec's efficiency and not the measured one: the measured efficiency comes from the same SOC readings
(closed SOC cycles), so it absorbs a drift into itself and the check would always pass. A residual that grows
with energy moved rather than with time means the efficiency is not the spec's (the round-trip efficiency result
says by how much); the residual at rest involves no efficiency and isolates the sensor.
"""

from __future__ import annotations

import numpy as np

from nodes.contract import energy
from nodes.contract.messages import BatterySpec
from nodes.diagnostics.commanded import tolerance_kw
from nodes.diagnostics.history import History, Intervals, limit_stops
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.result import Result, hours, kwh, not_enough, pct, spec_pct

SECONDS_PER_DAY = 86_400.0
MOVING_RATIO = 4.0
"""A drift this many times larger overall than at rest is put down to the efficiency, not the sensor."""
METHOD = (
    "Over every measured interval (power held from a reading to the next, at most {hold:g} s) not ending at an "
    "SOC limit, the SOC change the power explains under the spec's rule (+ sqrt(eta) x energy charged, - energy "
    "discharged / sqrt(eta), eta = {eta} from the spec) is subtracted from the reported SOC change. The sum is the "
    "drift; per day, over the days those intervals cover. At rest: the same over intervals with |power| within "
    "{tolerance_kw:.1f} kW (no efficiency involved). 0 is expected."
)


class ConsistencyResult(Result, kw_only=True, frozen=True):
    """Reported SOC against the SOC the metered power explains."""

    drift_kwh: float | None = None
    """Reported minus explained SOC change, summed (+: the reported SOC rose more than the power explains)."""
    drift_kwh_per_day: float | None = None
    spec_roundtrip_efficiency: float
    rest_drift_kwh_per_day: float | None = None
    """The same at rest only (None with less than ``min_idle_hours`` at rest)."""
    rest_hours: float = 0.0


def explained_soc_change_kwh(iv: Intervals, roundtrip_efficiency: float) -> np.ndarray:
    """The SOC change each interval's energy explains: ``sqrt(eta)*charged - discharged/sqrt(eta)``."""
    root = energy.one_way(roundtrip_efficiency)
    result: np.ndarray = root * iv.charged_kwh - iv.discharged_kwh / root
    return result


def soc_consistency(history: History, iv: Intervals, spec: BatterySpec,
                    options: DiagnosticsOptions) -> ConsistencyResult:
    """Drift of the reported SOC against integrated power (see the module docstring)."""
    margin = options.soc_limit_tolerance_pct / 100.0 * energy.usable_kwh(spec)
    use = iv.measured & ~limit_stops(history, iv, spec.soc_min_kwh, spec.soc_max_kwh, margin)
    residual = iv.soc_change_kwh - explained_soc_change_kwh(iv, spec.roundtrip_efficiency)
    used_s = float(iv.dt_s[use].sum())
    tol = tolerance_kw(spec, options.tracking_tolerance_pct)
    with np.errstate(invalid="ignore"):
        rest = use & (np.abs(iv.power_kw) <= tol)
    rest_s = float(iv.dt_s[rest].sum())
    rest_h = rest_s / energy.SECONDS_PER_HOUR
    rest_per_day = (float(residual[rest].sum()) / (rest_s / SECONDS_PER_DAY)
                    if rest_h >= options.min_idle_hours else None)
    method = METHOD.format(hold=options.max_hold_s, eta=spec_pct(spec.roundtrip_efficiency), tolerance_kw=tol)

    def result(summary: str, need: str | None = None, drift: float | None = None) -> ConsistencyResult:
        return ConsistencyResult(
            title="SOC consistency", summary=summary, need=need, method=method, readings=int(use.sum()),
            hours=used_s / energy.SECONDS_PER_HOUR, drift_kwh=drift,
            drift_kwh_per_day=None if drift is None else drift / (used_s / SECONDS_PER_DAY),
            spec_roundtrip_efficiency=spec.roundtrip_efficiency, rest_drift_kwh_per_day=rest_per_day,
            rest_hours=rest_h,
        )

    if used_s / energy.SECONDS_PER_HOUR < options.min_consistency_hours:
        need = (f"{options.min_consistency_hours:g} h of readings with a reported power at most "
                f"{options.max_hold_s:g} s apart; have {hours(used_s / energy.SECONDS_PER_HOUR)}")
        return result(not_enough(need), need)
    drift = float(residual[use].sum())
    days = used_s / SECONDS_PER_DAY
    per_day = drift / days
    usable = energy.usable_kwh(spec)
    summary = (f"reported SOC drifts {per_day:+.2f} kWh/day against the integrated power, 0 expected "
               f"({'+' if drift >= 0 else ''}{kwh(drift)} over {days:.1f} days"
               + (f", {pct(abs(per_day) / usable, 2)} of the usable range per day" if usable > 0 else "")
               + f"; spec efficiency {spec_pct(spec.roundtrip_efficiency)})")
    if rest_per_day is not None:
        summary += f"; at rest {rest_per_day:+.2f} kWh/day over {hours(rest_h)}"
        if abs(rest_per_day) * MOVING_RATIO < abs(per_day):
            # a sensor drifts with time, at rest too; an efficiency error only moves the SOC while energy moves
            summary += ": it grows with energy moved, so the efficiency is likely not the spec's"
    return result(summary, drift=drift)


__all__ = ["ConsistencyResult", "explained_soc_change_kwh", "soc_consistency"]
