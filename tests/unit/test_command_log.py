"""The command history's rows (pure): who, what, when, lease, and the outcome from the battery's own states; and
the reader that pages through the recorder's oldest-first answers to keep the newest commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import BatterySpec, BatteryState, Command, HistoryQuery, HistoryResult
from nodes.renderer import command_log
from nodes.renderer.command_history import CommandHistory

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=200, max_discharge_kw=250)


def cmd(cid: str, at_s: float, *, action: str = "discharge", power: float = 100.0, lease_s: float = 300,
        source: str = "planner") -> Command:
    issued = T0 + timedelta(seconds=at_s)
    return Command(command_id=cid, action=action, power_kw=power, issued_at=issued,  # type: ignore[arg-type]
                   valid_until=issued + timedelta(seconds=lease_s), source=source)  # type: ignore[arg-type]


def state(at_s: float, cid: str | None, power: float, limits: tuple[str, ...] = ()) -> BatteryState:
    mode = "discharging" if power > 0 else "charging" if power < 0 else "idle"
    return BatteryState(ts=T0 + timedelta(seconds=at_s), mode=mode, power_kw=power, command_id=cid,  # type: ignore[arg-type]
                        limits_hit=list(limits))


def by_id(rows: list[command_log.CommandRow]) -> dict[str, command_log.CommandRow]:
    return {row.command_id: row for row in rows}


def test_each_outcome_is_what_the_battery_reported_for_that_command() -> None:
    commands = [
        cmd("followed", 0),
        cmd("clamped", 400, power=400.0),  # the battery clamps to its 250 kW: expected, so followed
        cmd("at-limit", 800, action="charge", power=100.0),
        cmd("stuck", 1200),
        cmd("silent", 1600),
        cmd("fresh", 1990, lease_s=60),
    ]
    states = [
        state(1, "followed", 100.0),
        state(401, "clamped", 250.0, ("discharge power clamped to 250 kW",)),
        state(801, "at-limit", 0.0, ("soc_max reached",)),
        state(1201, "stuck", 30.0),
        state(1601, None, 0.0),
    ]
    rows = by_id(command_log.command_rows(commands, states, T0 + timedelta(seconds=2000), spec=SPEC))
    assert rows["followed"].outcome == "followed"
    assert rows["clamped"].outcome == "followed"
    assert "clamped to 250 kW" in rows["clamped"].outcome_detail
    assert (rows["at-limit"].outcome, rows["at-limit"].outcome_detail) == (
        "limited", "soc_max reached (reported 0 kW)")
    assert rows["stuck"].outcome == "not followed"
    assert rows["stuck"].outcome_detail == "reported 30 kW for 100 kW asked"
    assert rows["silent"].outcome == "not confirmed"
    assert rows["fresh"].outcome == "waiting", "issued 10 s ago: the battery may not have reported yet"


def test_the_end_is_the_next_command_or_the_lease() -> None:
    commands = [cmd("a", 0, lease_s=600), cmd("b", 100, lease_s=60, source="dashboard"), cmd("c", 1000, lease_s=900)]
    rows = command_log.command_rows(commands, [], T0 + timedelta(seconds=1200))
    assert [r.command_id for r in rows] == ["c", "b", "a"], "newest first"
    found = by_id(rows)
    assert (found["a"].end, found["a"].ended_at) == ("replaced", T0 + timedelta(seconds=100))
    assert found["a"].end_detail == "by dashboard b at 10:01:40"
    assert (found["b"].end, found["b"].ended_at) == ("lease ended", T0 + timedelta(seconds=160))
    assert found["c"].end == "running"
    assert found["c"].end_detail.startswith("700 s left")
    assert (found["b"].source, found["b"].lease_s) == ("dashboard", 60.0)
    assert found["a"].text == "DISCHARGE 100 kW", "a command without text (the planner's) is spelled out"


def test_the_table_is_bounded_to_the_newest_rows() -> None:
    commands = [cmd(f"c{i}", i * 10) for i in range(300)]
    rows = command_log.command_rows(commands, [], T0 + timedelta(hours=2), limit=200)
    assert len(rows) == 200
    assert rows[0].command_id == "c299"
    assert rows[-1].command_id == "c100"


def test_stored_rows_become_commands_and_states_and_merge_with_live_ones() -> None:
    iso = "2025-01-16T10:00:00Z"
    stored = command_log.commands_from_history(HistoryResult(ok=True, columns=[
        "time", "action", "power_kw", "command_id", "source", "valid_until", "plan_id", "text"], rows=[
        [iso, "charge", 50.0, "c-1", "homeassistant", "2025-01-16T10:05:00Z", None, "CHARGE 50 kW"],
        [iso, "warp", 1.0, "c-bad", "planner", "2025-01-16T10:05:00Z", None, None]]))
    assert [(c.command_id, c.source, c.valid_until) for c in stored] == [
        ("c-1", "homeassistant", T0 + timedelta(minutes=5))], "a row that is no command is skipped"
    states = command_log.states_from_history(HistoryResult(ok=True, columns=[
        "time", "mode", "power_kw", "command_id", "command_source", "valid_until", "limits_hit", "reason"], rows=[
        [iso, "idle", 0.0, "c-1", "homeassistant", None, "soc_max reached,lease capped to 600 s", ""]]))
    assert states[0].limits_hit == ["soc_max reached", "lease capped to 600 s"]
    live = cmd("c-2", 60)
    merged = command_log.merge_commands(stored, [live, stored[0]])
    assert [c.command_id for c in merged] == ["c-1", "c-2"], "one per id, oldest first"


async def test_the_reader_pages_forward_and_keeps_the_newest_commands() -> None:
    """The recorder answers oldest first with a limit: the newest commands are on the last page."""
    total = 12_000
    asked: list[HistoryQuery] = []

    async def history(query: HistoryQuery) -> HistoryResult:
        asked.append(query)
        if query.kind == "state":
            return HistoryResult(ok=True, columns=["time", "mode", "power_kw", "command_id"], rows=[])
        start = int((query.begin - T0).total_seconds())
        rows: list[list[Any]] = [
            [(T0 + timedelta(seconds=i)).isoformat(), "idle", 0.0, f"c{i}", "planner",
             (T0 + timedelta(seconds=i + 60)).isoformat(), None, None]
            for i in range(max(start, 0), total)
        ][: query.limit]
        return HistoryResult(ok=True, columns=["time", "action", "power_kw", "command_id", "source", "valid_until",
                                               "plan_id", "text"], rows=rows, truncated=len(rows) == query.limit)

    reader = CommandHistory(history, limit=200)
    stored = await reader.stored("b1", "w", T0, T0 + timedelta(days=1))
    assert len(stored.commands) == 200
    assert stored.commands[-1].command_id == f"c{total - 1}", "the newest"
    assert stored.note is None
    command_pages = [q for q in asked if q.kind == "command"]
    assert len(command_pages) == 3, "5000 + 5000 + 2000"
    states = [q for q in asked if q.kind == "state"]
    assert states[0].begin == stored.commands[0].issued_at, "states only from the oldest command shown"
    again = await reader.stored("b1", "w", T0, T0 + timedelta(days=1))
    assert again is stored, "cached"
    reader.forget("b1")
    assert await reader.stored("b1", "w", T0, T0 + timedelta(days=1)) is not stored
