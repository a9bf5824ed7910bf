"""Does the battery do what it is told: commanded against actual power, and how fast it responds (pure).

What the battery was told at any instant follows from the Commands themselves, with the device's rules
(:mod:`nodes.simulator.battery`): the latest command issued wins; it holds until its ``valid_until`` (a lease),
after which the battery should be idle; a command already expired when issued is ignored. Before the first
command nothing is known and nothing is judged.

What it can do is bounded by its spec, so the expected power is the commanded one clamped to the spec's power
limits, and time when the SOC sits at the limit the command drives towards (a charge at ``soc_max``) is left out:
a battery that refuses to overcharge is following its rules, not failing a command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import numpy as np

from nodes.contract import energy
from nodes.contract.messages import BatterySpec
from nodes.diagnostics import commanded
from nodes.diagnostics.commanded import CommandLike
from nodes.diagnostics.history import BoolArray, FloatArray, History, Intervals
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.result import Result, hours, not_enough, pct

TRACKING_METHOD = (
    "At every reading under a known command (the latest issued; idle once its lease ran out), the expected "
    "power is the commanded one clamped to the spec's power limits; |actual - expected| is weighted by the time "
    "the reading's power holds (to the next reading, at most {hold:g} s). Not following: off by more than the "
    "tolerance ({tolerance_pct:g} % of the larger power limit). Time at the SOC limit the command drives "
    "towards is left out."
)
RESPONSE_METHOD = (
    "For every change of the expected power (a command with a new power, or a lease running out) that is more "
    "than the tolerance away from the power the battery had just before: the time from the change (the "
    "command's issued_at, or the lease's end) to the first reading within the tolerance of the new power. "
    "Changes at an SOC limit or across a telemetry gap are left out; a change the battery did not reach before "
    "the next one counts as not reached. The median over changes is the response delay; it is resolved to one "
    "reading interval."
)


@dataclass(frozen=True, slots=True, eq=False)
class CommandTimeline:
    """The commanded power as a step function: ``power_kw[j]`` holds on ``[change_s[j], change_s[j+1])``."""

    change_s: FloatArray
    power_kw: FloatArray
    commands: int

    def at(self, time_s: FloatArray) -> tuple[BoolArray, FloatArray]:
        """``(known, commanded power)`` at each time: unknown before the first command."""
        if self.change_s.size == 0:
            return np.zeros(time_s.shape[0], dtype=np.bool_), np.zeros(time_s.shape[0])
        j = np.searchsorted(self.change_s, time_s, side="right") - 1
        known = j >= 0
        return known, np.where(known, self.power_kw[np.clip(j, 0, None)], 0.0)


def timeline(commands: Iterable[CommandLike]) -> CommandTimeline:
    """The commanded power over time (see the module docstring for the device's rules)."""
    valid = sorted((c for c in commands if c.valid_until > c.issued_at), key=lambda c: c.issued_at)
    if not valid:
        return CommandTimeline(np.empty(0), np.empty(0), 0)
    issued = np.array([c.issued_at.timestamp() for c in valid])
    until = np.array([c.valid_until.timestamp() for c in valid])
    power = np.array([commanded.signed_power_kw(c) for c in valid])
    change = np.unique(np.concatenate((issued, until)))
    latest = np.searchsorted(issued, change, side="right") - 1  # >= 0: every change is at or after issued[0]
    value = np.where(change < until[latest], power[latest], 0.0)
    return CommandTimeline(change, value, len(valid))


class TrackingResult(Result, kw_only=True, frozen=True):
    """Commanded against actual power."""

    mean_abs_error_kw: float | None = None
    not_following_fraction: float | None = None
    """Share of the judged time with the power off by more than ``tolerance_kw``."""
    tolerance_kw: float
    commands: int = 0
    limited_hours: float = 0.0
    """Time under command left out because the SOC sat at the limit the command drives towards."""


class ResponseResult(Result, kw_only=True, frozen=True):
    """Delay from a change of the commanded power to the battery reaching it."""

    delay_s: float | None = None
    """Median over the changes reached."""
    max_delay_s: float | None = None
    steps: int = 0
    """Changes reached (the sample of the median)."""
    not_reached: int = 0
    resolution_s: float | None = None
    """The median interval between readings: a delay is known to within this."""


@dataclass(frozen=True, slots=True, eq=False)
class _Expected:
    known: BoolArray
    power_kw: FloatArray
    limited: BoolArray


def _tolerance_kw(spec: BatterySpec, options: DiagnosticsOptions) -> float:
    return commanded.tolerance_kw(spec, options.tracking_tolerance_pct)


def _expected(line: CommandTimeline, time_s: FloatArray, soc_kwh: FloatArray, spec: BatterySpec,
              options: DiagnosticsOptions) -> _Expected:
    known, power = line.at(time_s)
    expected = commanded.expected_power_kw(power, spec)
    return _Expected(known, expected, commanded.at_soc_limit(expected, soc_kwh, spec, options.soc_limit_tolerance_pct))


def command_tracking(history: History, iv: Intervals, line: CommandTimeline, spec: BatterySpec,
                     options: DiagnosticsOptions) -> TrackingResult:
    """Mean absolute error and share of time not following, over readings under a known command."""
    tol = _tolerance_kw(spec, options)
    n = len(iv.dt_s)
    method = TRACKING_METHOD.format(hold=options.max_hold_s, tolerance_pct=options.tracking_tolerance_pct)
    if n == 0 or line.commands == 0:
        need = "the Commands sent to the battery and readings under them" if line.commands == 0 else "readings"
        return TrackingResult(title="command tracking", summary=not_enough(need), need=need, method=method,
                              readings=0, hours=0.0, tolerance_kw=tol, commands=line.commands)
    exp = _expected(line, history.time_s[:-1], history.soc_kwh[:-1], spec, options)
    judged = iv.measured & exp.known & ~exp.limited
    limited = iv.measured & exp.known & exp.limited
    weight = np.where(judged, iv.dt_s, 0.0)
    judged_s = float(weight.sum())
    limited_h = float(iv.dt_s[limited].sum()) / energy.SECONDS_PER_HOUR
    base = {"title": "command tracking", "method": method, "readings": int(judged.sum()),
            "hours": judged_s / energy.SECONDS_PER_HOUR, "tolerance_kw": tol, "commands": line.commands,
            "limited_hours": limited_h}
    if judged_s < options.min_tracking_s:
        need = (f"{options.min_tracking_s:g} s of readings with a reported power under a known command (not at an "
                f"SOC limit); have {judged_s:g} s")
        return msgspec.convert({**base, "summary": not_enough(need), "need": need}, TrackingResult)
    error = np.abs(np.where(judged, iv.power_kw, 0.0) - np.where(judged, exp.power_kw, 0.0))
    mae = float((error * weight).sum() / judged_s)
    off = float(weight[error > tol].sum() / judged_s)
    largest = max(spec.max_charge_kw, spec.max_discharge_kw)
    summary = (f"mean error {mae:.1f} kW ({pct(mae / largest) if largest > 0 else 'n/a'} of the {largest:g} kW "
               f"limit), off by more than {tol:.1f} kW for {pct(off)} of {hours(judged_s / 3600)} under "
               f"{line.commands} commands")
    if limited_h > 0:
        summary += f"; {hours(limited_h)} at an SOC limit left out"
    return msgspec.convert({**base, "summary": summary, "mean_abs_error_kw": mae, "not_following_fraction": off},
                           TrackingResult)


def response_delay(history: History, iv: Intervals, line: CommandTimeline, spec: BatterySpec,
                   options: DiagnosticsOptions) -> ResponseResult:
    """Median delay from a change of the commanded power to the first reading that follows it."""
    tol = _tolerance_kw(spec, options)
    t, power = history.time_s, history.power_kw
    resolution = history.sample_period_s()
    delays: list[float] = []
    not_reached = 0
    if line.commands and len(history) > 1:
        expected = commanded.expected_power_kw(line.power_kw, spec)
        steps = np.flatnonzero(np.append(True, np.abs(np.diff(expected)) > tol))
        # a silence longer than the hold breaks the chain of readings (segment ids per reading)
        segment = np.concatenate(([0], np.cumsum(iv.dt_s > options.max_hold_s)))
        for rank, j in enumerate(steps):
            start = float(line.change_s[j])
            stop = float(line.change_s[steps[rank + 1]]) if rank + 1 < len(steps) else float(t[-1]) + 1.0
            target = float(expected[j])
            before = int(np.searchsorted(t, start, side="left")) - 1
            if before < 0 or not np.isfinite(power[before]) or start - t[before] > options.max_hold_s:
                continue  # nothing known of the power before the change
            if abs(float(power[before]) - target) <= tol:
                continue  # the battery was already there: no step to respond to
            if bool(commanded.at_soc_limit(target, float(history.soc_kwh[before]), spec,
                                           options.soc_limit_tolerance_pct)):
                continue
            after = int(np.searchsorted(t, stop, side="left"))
            window = slice(before + 1, after)
            close = np.flatnonzero(np.abs(power[window] - target) <= tol)
            if close.size:
                hit = before + 1 + int(close[0])
                if segment[hit] == segment[before]:
                    delays.append(float(t[hit]) - start)
            elif after - 1 > before and segment[after - 1] == segment[before] and t[after - 1] >= stop - (
                    options.max_hold_s):
                not_reached += 1  # readings right up to the next change, none within the tolerance
    judged_h = (float(t[-1] - t[0]) / energy.SECONDS_PER_HOUR) if len(history) > 1 else 0.0
    base = {"title": "response delay", "method": RESPONSE_METHOD, "readings": len(history), "hours": judged_h,
            "steps": len(delays), "not_reached": not_reached, "resolution_s": resolution}
    if len(delays) < options.min_response_steps:
        need = (f"{options.min_response_steps} changes of the commanded power the battery reached, with readings "
                f"around them; have {len(delays)}"
                + (f" ({not_reached} not reached)" if not_reached else ""))
        return msgspec.convert({**base, "summary": not_enough(need), "need": need}, ResponseResult)
    median = float(np.median(delays))
    summary = (f"median response {median:.0f} s (max {max(delays):.0f} s) over {len(delays)} command changes"
               + (f", {not_reached} not reached before the next change" if not_reached else "")
               + (f"; resolution {resolution:g} s (median reading interval)" if resolution else ""))
    return msgspec.convert({**base, "summary": summary, "delay_s": median, "max_delay_s": max(delays)},
                           ResponseResult)


__all__ = [
    "CommandLike",
    "CommandTimeline",
    "ResponseResult",
    "TrackingResult",
    "command_tracking",
    "response_delay",
    "timeline",
]
