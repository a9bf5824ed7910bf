"""Where telemetry is missing: every silence between readings longer than a threshold (pure).

Why it matters beyond the chart: every other diagnostic skips what it cannot see, and a KPI over a window with a
two-hour hole is a KPI over less than the window. The list says exactly where the holes are (start: the last
reading before, end: the first reading after), so an operator can match them with a network or device log.
Given the window asked for (``begin``, ``end``), silence before the first and after the last reading counts too:
a battery that stopped reporting an hour ago has a gap that is still open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
import numpy as np

from nodes.contract import energy
from nodes.diagnostics.history import History, to_datetime
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.result import Result, hours, not_enough, pct

GapKind = Literal["between", "before_first", "after_last"]
METHOD = (
    "Every pair of consecutive readings more than {threshold:g} s apart is a gap from the earlier reading to the "
    "later one; with a window given, the time from its begin to the first reading and from the last reading to "
    "its end counts too when longer than the threshold."
)


class Gap(msgspec.Struct, kw_only=True, frozen=True):
    """A silence in the telemetry."""

    start: datetime
    end: datetime
    duration_s: float
    kind: GapKind = "between"
    """``before_first``/``after_last``: bounded by the window asked for, not by a reading."""


class GapsResult(Result, kw_only=True, frozen=True):
    """The telemetry gaps of a window."""

    gaps: tuple[Gap, ...] = ()
    threshold_s: float
    gap_s: float = 0.0
    """Total time in gaps."""
    window_s: float = 0.0


def telemetry_gaps(history: History, options: DiagnosticsOptions, begin: datetime | None = None,
                   end: datetime | None = None) -> GapsResult:
    """Gaps above ``options.gap_threshold_s`` in ``history`` (and at the edges of ``[begin, end]`` when given)."""
    threshold = options.gap_threshold_s
    t = history.time_s
    found: list[Gap] = []
    if begin is not None and end is not None and len(history) == 0 and (end - begin).total_seconds() > threshold:
        found.append(Gap(start=begin, end=end, duration_s=(end - begin).total_seconds(), kind="before_first"))
    if begin is not None and len(history) and t[0] - begin.timestamp() > threshold:
        found.append(Gap(start=begin, end=to_datetime(float(t[0])), duration_s=float(t[0]) - begin.timestamp(),
                         kind="before_first"))
    if len(history) > 1:
        dt = np.diff(t)
        for k in np.flatnonzero(dt > threshold):
            found.append(Gap(start=to_datetime(float(t[k])), end=to_datetime(float(t[k + 1])),
                             duration_s=float(dt[k])))
    if end is not None and len(history) and end.timestamp() - t[-1] > threshold:
        found.append(Gap(start=to_datetime(float(t[-1])), end=end, duration_s=end.timestamp() - float(t[-1]),
                         kind="after_last"))
    first = begin.timestamp() if begin is not None else (float(t[0]) if len(history) else None)
    last = end.timestamp() if end is not None else (float(t[-1]) if len(history) else None)
    window_s = max(last - first, 0.0) if first is not None and last is not None else 0.0
    total = sum(g.duration_s for g in found)

    def result(summary: str, need: str | None = None) -> GapsResult:
        return GapsResult(title="telemetry gaps", summary=summary, need=need,
                          method=METHOD.format(threshold=threshold), readings=len(history),
                          hours=window_s / energy.SECONDS_PER_HOUR, gaps=tuple(found), threshold_s=threshold,
                          gap_s=total, window_s=window_s)

    if window_s <= 0:
        need = "two readings, or a window (begin and end) to look for telemetry in"
        return result(not_enough(need), need)
    window_h = window_s / energy.SECONDS_PER_HOUR
    if not found:
        return result(f"no gap above {threshold:g} s in {hours(window_h)} ({len(history):,} readings)")
    longest = max(found, key=lambda g: g.duration_s)
    summary = (f"{len(found)} gap{'s' if len(found) > 1 else ''} above {threshold:g} s, "
               f"{hours(total / energy.SECONDS_PER_HOUR)} in total ({pct(total / window_s)} of {hours(window_h)}); "
               f"longest {hours(longest.duration_s / energy.SECONDS_PER_HOUR)} from "
               f"{longest.start.isoformat(timespec='seconds')} to {longest.end.isoformat(timespec='seconds')}")
    return result(summary)


__all__ = ["Gap", "GapKind", "GapsResult", "telemetry_gaps"]
