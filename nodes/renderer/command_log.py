"""The command history of a battery: who sent what, when, for how long, and what became of it (pure).

Built from the stored commands (the recorder's ``command`` history kind: every Command on ``battery/{b}/set``,
from the planner, the gateway, Home Assistant or the dashboard) and the stored battery states (``state``), plus
the ones the renderer received since (not stored yet). A refused request never becomes a Command, so it is not
here: the panel shows its refusal (``battery/{battery}/request/result``).

**Outcome** is what the battery itself reported doing with the command, from its states that name the command
(``command_id``), judged by the rule of the ``command_not_followed`` alarm and the diagnostics
(:mod:`nodes.diagnostics.commanded`: the commanded power clamped to the spec's limits, within 5 % of the larger
power limit):

* ``followed``: a state naming the command reported the expected power;
* ``limited``: it reported a limit instead (``soc_max reached``, ``charge power clamped to ...``);
* ``not followed``: states name it, but with another power and no limit;
* ``not confirmed``: no state names it ``CONFIRM_WITHIN_S`` after it was issued (lost, ignored, or a device that
  does not report command ids); ``waiting`` before that.

**End** is how the lease ended: ``replaced`` by the next command (any source) issued before its ``valid_until``,
``lease ended`` at ``valid_until``, or ``running`` with the time left.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from nodes.contract.messages import BatterySpec, BatteryState, Command, HistoryResult
from nodes.diagnostics import commanded

CONFIRM_WITHIN_S = 30.0
"""A command no state names after this long is ``not confirmed``."""
MAX_ROWS = 200
"""The table shows at most this many commands, newest first."""
OUTCOME_HELP = (
    "Outcome: what the battery reported doing with the command, from its states that name it (command_id): "
    "followed (the expected power, within 5 % of its larger power limit), limited (it reported a limit such as "
    "soc_max reached), not followed (another power, no limit), not confirmed (no state named it within "
    f"{CONFIRM_WITHIN_S:g} s). End: replaced by the next command, lease ended at valid_until, or running. Refused "
    "requests never became commands: the panel shows their reason."
)

Outcome = Literal["followed", "limited", "not followed", "not confirmed", "waiting"]
End = Literal["replaced", "lease ended", "running"]


class CommandRow(msgspec.Struct, kw_only=True):
    """One row of the command history table (the JSON of ``GET /api/commands/{battery}``)."""

    command_id: str
    issued_at: datetime
    source: str
    action: str
    power_kw: float
    text: str
    valid_until: datetime
    lease_s: float
    outcome: Outcome
    outcome_detail: str
    end: End
    ended_at: datetime | None
    end_detail: str


def _iso_time(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%H:%M:%S}"


def _fmt_kw(value: float) -> str:
    return f"{value:g} kW"


def _spelled(command: Command) -> str:
    """The command in words when it carries no text (the planner's): ``DISCHARGE 250 kW``, ``IDLE``."""
    if command.action == "idle":
        return "IDLE"
    return f"{command.action.upper()} {command.power_kw:g} kW"


def commands_from_history(result: HistoryResult) -> list[Command]:
    """The stored commands of a history answer (``time`` is each one's ``issued_at``); bad rows are skipped."""
    return _rows(result, Command, "issued_at")


def states_from_history(result: HistoryResult) -> list[BatteryState]:
    """The stored battery states of a history answer (``time`` is each one's ``ts``)."""
    found = []
    for row in _dicts(result, "ts"):
        limits = row.get("limits_hit")
        row["limits_hit"] = [part for part in limits.split(",") if part] if isinstance(limits, str) else []
        try:
            found.append(msgspec.convert({k: v for k, v in row.items() if v is not None and v != ""}, BatteryState))
        except msgspec.ValidationError:
            continue
    return found


def _dicts(result: HistoryResult, time_name: str) -> list[dict[str, Any]]:
    rows = []
    for row in result.rows:
        values = dict(zip(result.columns, row, strict=False))
        values[time_name] = values.pop("time", None)
        rows.append(values)
    return rows


def _rows(result: HistoryResult, kind: type[Command], time_name: str) -> list[Command]:
    found = []
    for row in _dicts(result, time_name):
        try:
            found.append(msgspec.convert({k: v for k, v in row.items() if v is not None and v != ""}, kind))
        except msgspec.ValidationError:
            continue
    return found


def merge_commands(stored: Sequence[Command], live: Sequence[Command]) -> list[Command]:
    """Stored and live commands, one per id, oldest first (a live one fills in what is not stored yet)."""
    by_id = {c.command_id: c for c in live}
    by_id.update({c.command_id: c for c in stored})
    return sorted(by_id.values(), key=lambda c: (c.issued_at, c.command_id))


def merge_states(stored: Sequence[BatteryState], live: Sequence[BatteryState]) -> list[BatteryState]:
    """Stored and live states, one per (ts, command), oldest first."""
    by_key = {(s.ts, s.command_id, s.power_kw): s for s in live}
    by_key.update({(s.ts, s.command_id, s.power_kw): s for s in stored})
    return sorted(by_key.values(), key=lambda s: s.ts)


def _outcome(command: Command, states: Sequence[BatteryState], spec: BatterySpec | None,
             now: datetime) -> tuple[Outcome, str]:
    naming = [s for s in states if s.command_id == command.command_id]
    asked = commanded.signed_power_kw(command)
    if not naming:
        if (now - command.issued_at).total_seconds() < CONFIRM_WITHIN_S:
            return "waiting", "no state of the battery names it yet"
        return "not confirmed", f"no state of the battery named it within {CONFIRM_WITHIN_S:g} s"
    if spec is not None:
        expected, tolerance = commanded.expected_power_kw(asked, spec), commanded.tolerance_kw(spec)
    else:
        expected, tolerance = asked, max(0.05 * abs(asked), 0.5)
    for state in naming:
        if abs(state.power_kw - expected) <= tolerance:
            limits = f" ({', '.join(state.limits_hit)})" if state.limits_hit else ""
            return "followed", f"reported {_fmt_kw(state.power_kw)} at {_iso_time(state.ts)}{limits}"
    limited = next((s for s in naming if s.limits_hit), None)
    if limited is not None:
        return "limited", f"{', '.join(limited.limits_hit)} (reported {_fmt_kw(limited.power_kw)})"
    last = naming[-1]
    return "not followed", f"reported {_fmt_kw(last.power_kw)} for {_fmt_kw(asked)} asked"


def command_rows(commands: Sequence[Command], states: Sequence[BatteryState], now: datetime, *,
                 spec: BatterySpec | None = None, limit: int = MAX_ROWS) -> list[CommandRow]:
    """The history rows of ``commands`` (any order), newest first, at most ``limit``."""
    ordered = sorted(commands, key=lambda c: (c.issued_at, c.command_id))
    rows: list[CommandRow] = []
    for index, command in enumerate(ordered):
        after = ordered[index + 1] if index + 1 < len(ordered) else None
        end: End
        if after is not None and after.issued_at < command.valid_until:
            end, ended_at = "replaced", after.issued_at
            end_detail = f"by {after.source} {after.command_id} at {_iso_time(after.issued_at)}"
        elif command.valid_until <= now:
            end, ended_at, end_detail = "lease ended", command.valid_until, f"at {_iso_time(command.valid_until)}"
        else:
            left = (command.valid_until - now).total_seconds()
            end, ended_at, end_detail = "running", None, f"{left:.0f} s left, ends {_iso_time(command.valid_until)}"
        outcome, detail = _outcome(command, states, spec, now)
        rows.append(CommandRow(
            command_id=command.command_id, issued_at=command.issued_at, source=command.source, action=command.action,
            power_kw=command.power_kw, text=command.text or _spelled(command), valid_until=command.valid_until,
            lease_s=round((command.valid_until - command.issued_at).total_seconds(), 3), outcome=outcome,
            outcome_detail=detail, end=end, ended_at=ended_at, end_detail=end_detail,
        ))
    rows.reverse()
    return rows[:limit]


__all__ = [
    "CONFIRM_WITHIN_S",
    "MAX_ROWS",
    "OUTCOME_HELP",
    "CommandRow",
    "command_rows",
    "commands_from_history",
    "merge_commands",
    "merge_states",
    "states_from_history",
]
