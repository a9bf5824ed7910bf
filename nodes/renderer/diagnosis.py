"""The diagnostics panel of a battery page: what :mod:`nodes.diagnostics` found, as rows with their basis (pure).

The renderer reads the window's raw telemetry and the Commands sent (:mod:`nodes.renderer.diagnoser` does the
I/O), runs :func:`nodes.diagnostics.report.diagnose` and keeps the answer as a :class:`DiagnosticsPanel`: one
:class:`DiagnosticRow` per diagnostic with its number, the spec's number, the sample it rests on (``41 cycles``)
and the method in words, or ``not enough data: need ...`` and no number. The panel, ``GET /api/diagnostics`` and
the CSV export show these rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec

from nodes.contract.messages import Action, HistoryResult
from nodes.diagnostics.report import DiagnosticsReport
from nodes.diagnostics.result import Result

PanelStatus = Literal["ready", "computing", "unavailable"]


@dataclass(frozen=True, slots=True)
class StoredCommand:
    """A Command as the recorder stored it (its ``issued_at`` is the row's time): what tracking needs of it."""

    action: str
    power_kw: float
    issued_at: datetime
    valid_until: datetime


def commands_from_history(result: HistoryResult) -> list[StoredCommand]:
    """The stored Commands of a history answer (kind ``command``); rows that are not one are skipped."""
    found: list[StoredCommand] = []
    index = {name: i for i, name in enumerate(result.columns)}
    need = ("time", "action", "valid_until")
    if any(name not in index for name in need):
        return found
    actions: tuple[Action, ...] = ("charge", "discharge", "idle")
    for row in result.rows:
        try:
            action = row[index["action"]]
            issued = datetime.fromisoformat(str(row[index["time"]]).replace("Z", "+00:00"))
            until = datetime.fromisoformat(str(row[index["valid_until"]]).replace("Z", "+00:00"))
            power = row[index["power_kw"]] if "power_kw" in index else 0.0
            power_kw = float(power) if power is not None else 0.0
        except (IndexError, TypeError, ValueError):
            continue
        if action in actions and issued.tzinfo is not None and until.tzinfo is not None:
            found.append(StoredCommand(str(action), power_kw, issued, until))
    return found


class DiagnosticRow(msgspec.Struct, kw_only=True, frozen=True):
    """One diagnostic as the panel shows it: a number only with its basis."""

    key: str
    """``efficiency``, ``capacity``, ``cycles``, ``tracking``, ``response``, ``consistency``, ``gaps``."""
    title: str
    value: float | None
    """The measured number in ``unit`` (None: not enough data, see ``need``)."""
    unit: str
    spec_value: float | None = None
    """The spec's number in the same unit, where the spec has one."""
    sample: int | None = None
    """How many of ``sample_unit`` the number rests on (cycles, commands, command changes, gaps)."""
    sample_unit: str = ""
    summary: str
    """``measured 86.8 % vs spec 90 % over 41 cycles (...)`` or ``not enough data: need ...``."""
    method: str
    readings: int
    hours: float
    need: str | None = None


class DiagnosticsPanel(msgspec.Struct, kw_only=True, frozen=True):
    """The diagnostics of one battery over one window (``status`` says whether ``rows`` are there)."""

    battery: str
    window: str
    status: PanelStatus
    note: str = ""
    """Why there are no rows (``unavailable``) or what is being done (``computing``)."""
    computed_at: datetime | None = None
    begin: datetime | None = None
    end: datetime | None = None
    readings: int = 0
    """Raw readings the report was computed from."""
    commands: int = 0
    """Stored Commands it was judged against."""
    rows: list[DiagnosticRow] = msgspec.field(default_factory=list)
    refresh_s: float | None = None
    """When a page showing the panel should ask again."""


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100.0


def _row(key: str, result: Result, value: float | None, unit: str, *, spec: float | None = None,
         sample: int | None = None, sample_unit: str = "") -> DiagnosticRow:
    return DiagnosticRow(key=key, title=result.title, value=value if result.enough else None, unit=unit,
                         spec_value=spec, sample=sample, sample_unit=sample_unit, summary=result.summary,
                         method=result.method, readings=result.readings, hours=result.hours, need=result.need)


def panel_rows(report: DiagnosticsReport) -> list[DiagnosticRow]:
    """Every result of ``report`` as a panel row, in the report's order."""
    eff, cap, cyc = report.efficiency, report.capacity, report.cycles
    trk, rsp, con, gap = report.tracking, report.response, report.consistency, report.gaps
    return [
        _row("efficiency", eff, _pct(eff.roundtrip_efficiency), "%", spec=_pct(eff.spec_roundtrip_efficiency),
             sample=eff.cycles, sample_unit="closed SOC cycles"),
        _row("capacity", cap, cap.usable_kwh, "kWh", spec=cap.spec_usable_kwh),
        _row("cycles", cyc, cyc.full_cycles, "equivalent full cycles"),
        _row("tracking", trk, _pct(trk.not_following_fraction), "% of time not following",
             sample=trk.commands, sample_unit="commands"),
        _row("response", rsp, rsp.delay_s, "s (median)", sample=rsp.steps, sample_unit="command changes"),
        _row("consistency", con, con.drift_kwh_per_day, "kWh/day drift", spec=0.0 if con.enough else None),
        _row("gaps", gap, gap.gap_s / 3600.0, "h in gaps", sample=len(gap.gaps), sample_unit="gaps"),
    ]


def csv_rows(panel: DiagnosticsPanel) -> tuple[Sequence[str], list[list[Any]]]:
    """The panel as CSV columns and rows (one row per diagnostic; times of the panel itself are UTC)."""
    columns = ("diagnostic", "value", "unit", "spec_value", "sample", "sample_unit", "summary", "readings",
               "hours", "need", "method", "window_begin_utc", "window_end_utc", "computed_at_utc")
    rows = [[r.title, r.value, r.unit, r.spec_value, r.sample, r.sample_unit, r.summary, r.readings, r.hours,
             r.need, r.method, panel.begin, panel.end, panel.computed_at] for r in panel.rows]
    return columns, rows


__all__ = [
    "DiagnosticRow",
    "DiagnosticsPanel",
    "PanelStatus",
    "StoredCommand",
    "commands_from_history",
    "csv_rows",
    "panel_rows",
]
