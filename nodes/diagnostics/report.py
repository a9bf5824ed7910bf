"""All diagnostics of one battery over one window, in one call (pure: history, spec, commands in; a report out).

This is what a node or the renderer calls on stored history: read the raw telemetry of the window (no
``every_s``: bucket means blur the turning points the methods look for) and the Commands sent in it (and the
last one before it, whose lease may reach into the window), then :func:`diagnose`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from nodes.contract.messages import BatterySpec
from nodes.diagnostics.commanded import CommandLike
from nodes.diagnostics.consistency import ConsistencyResult, soc_consistency
from nodes.diagnostics.cycles import (
    CapacityResult,
    CycleCountResult,
    EfficiencyResult,
    equivalent_full_cycles,
    roundtrip_efficiency,
    usable_capacity,
)
from nodes.diagnostics.gaps import GapsResult, telemetry_gaps
from nodes.diagnostics.history import History, intervals, to_datetime
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.result import Result
from nodes.diagnostics.tracking import (
    ResponseResult,
    TrackingResult,
    command_tracking,
    response_delay,
    timeline,
)


class DiagnosticsReport(msgspec.Struct, kw_only=True, frozen=True):
    """Every diagnostic of one battery over ``[begin, end]``, each with its basis."""

    begin: datetime | None
    end: datetime | None
    readings: int
    efficiency: EfficiencyResult
    capacity: CapacityResult
    cycles: CycleCountResult
    tracking: TrackingResult
    response: ResponseResult
    consistency: ConsistencyResult
    gaps: GapsResult

    def results(self) -> list[Result]:
        """The results in the order a panel shows them."""
        return [self.efficiency, self.capacity, self.cycles, self.tracking, self.response, self.consistency,
                self.gaps]


def diagnose(
    history: History,
    spec: BatterySpec,
    commands: Iterable[CommandLike] = (),
    *,
    options: DiagnosticsOptions | None = None,
    begin: datetime | None = None,
    end: datetime | None = None,
) -> DiagnosticsReport:
    """Every diagnostic of ``history`` against ``spec`` (and ``commands``, for tracking and response).

    ``begin``/``end``: the window asked for (gaps at its edges count); they default to the first and last
    reading.
    """
    opts = options or DiagnosticsOptions()
    iv = intervals(history, opts.max_hold_s)
    line = timeline(commands)
    return DiagnosticsReport(
        begin=begin or (to_datetime(float(history.time_s[0])) if len(history) else None),
        end=end or (to_datetime(float(history.time_s[-1])) if len(history) else None),
        readings=len(history),
        efficiency=roundtrip_efficiency(history, iv, spec, opts),
        capacity=usable_capacity(history, iv, spec, opts),
        cycles=equivalent_full_cycles(history, iv, spec, opts),
        tracking=command_tracking(history, iv, line, spec, opts),
        response=response_delay(history, iv, line, spec, opts),
        consistency=soc_consistency(history, iv, spec, opts),
        gaps=telemetry_gaps(history, opts, begin, end),
    )


__all__ = ["DiagnosticsReport", "diagnose"]
