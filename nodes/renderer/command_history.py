"""Reading a battery's command history for a window: stored commands and states from the recorder, the live tail.

The recorder answers oldest first and at most ``limit`` rows, while the table shows the newest commands; so the
window is read forward page by page, keeping the newest :data:`~nodes.renderer.command_log.MAX_ROWS`, and the
states only from the oldest command shown on. Answers are cached per battery and window for ``cache_s`` (several
viewers, a panel that refreshes), and the commands and states the renderer received since are merged in, so a
command just sent is in the table before the recorder has stored it. Outcomes: :mod:`nodes.renderer.command_log`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nodes.contract.messages import BatterySpec, BatteryState, Command, HistoryKind, HistoryQuery, HistoryResult
from nodes.renderer import command_log

History = Callable[[HistoryQuery], Awaitable[HistoryResult]]
"""``history(query)``: the recorder's answer (raises TimeoutError / BusUnavailable / RuntimeError)."""

PAGE_ROWS = 5000
MAX_PAGES = 40
"""At most this many pages of commands (200,000) per window; beyond, the table says it shows part of it."""


@dataclass(frozen=True)
class Stored:
    """What the recorder had for a window: commands (the newest), their states, and what was left out."""

    commands: list[Command]
    states: list[BatteryState]
    note: str | None
    read_at: float


class CommandHistory:
    """The history table's data, from the recorder (cached briefly) and the live tail."""

    def __init__(self, history: History, *, cache_s: float = 10.0, limit: int = command_log.MAX_ROWS) -> None:
        self.history = history
        self.cache_s = cache_s
        self.limit = limit
        self._cache: dict[tuple[str, str], Stored] = {}

    async def _pages(self, kind: HistoryKind, battery: str, begin: datetime, end: datetime,
                     keep: int | None) -> tuple[list[list[Any]], list[str], bool]:
        """Rows of ``kind`` in ``[begin, end)``, oldest first (the newest ``keep`` when given); True if cut."""
        rows: deque[list[Any]] = deque(maxlen=keep)
        columns: list[str] = []
        cursor = begin
        for _ in range(MAX_PAGES):
            result = await self.history(HistoryQuery(kind=kind, battery=battery, begin=cursor, end=end,
                                                     limit=PAGE_ROWS))
            if not result.ok:
                raise RuntimeError(result.error or "history request failed")
            columns = result.columns or columns
            rows.extend(result.rows)
            if not (result.truncated and result.rows):
                return list(rows), columns, False
            cursor = datetime.fromisoformat(str(result.rows[-1][0]).replace("Z", "+00:00")) + timedelta(
                microseconds=1)
        return list(rows), columns, True

    async def stored(self, battery: str, key: str, begin: datetime, end: datetime) -> Stored:
        """The stored commands (newest ``limit``) and their states in the window, cached for ``cache_s``."""
        cached = self._cache.get((battery, key))
        if cached is not None and time.monotonic() - cached.read_at <= self.cache_s:
            return cached
        rows, columns, cut = await self._pages("command", battery, begin, end, self.limit)
        commands = command_log.commands_from_history(HistoryResult(ok=True, columns=columns, rows=rows))
        states: list[BatteryState] = []
        if commands:
            since = min(c.issued_at for c in commands)
            state_rows, state_columns, states_cut = await self._pages("state", battery, since, end, None)
            states = command_log.states_from_history(HistoryResult(ok=True, columns=state_columns, rows=state_rows))
            cut = cut or states_cut
        note = (f"the window holds more than {MAX_PAGES * PAGE_ROWS:,} stored commands or states: outcomes are from "
                "the part read; choose a shorter window") if cut else None
        answer = Stored(commands, states, note, time.monotonic())
        self._cache[(battery, key)] = answer
        while len(self._cache) > 64:
            del self._cache[next(iter(self._cache))]
        return answer

    def forget(self, battery: str) -> None:
        """Drop the battery's cached answers (a command was just sent: read again)."""
        for key in [k for k in self._cache if k[0] == battery]:
            del self._cache[key]

    def rows(self, stored: Stored, *, live_commands: Sequence[Command], live_states: Sequence[BatteryState],
             begin: datetime, end: datetime, now: datetime,
             spec: BatterySpec | None) -> list[command_log.CommandRow]:
        """The table: stored and live commands of the window, newest first, with outcomes."""
        live = [c for c in live_commands if begin <= c.issued_at < end]
        commands = command_log.merge_commands(stored.commands, live)
        states = command_log.merge_states(stored.states, list(live_states))
        return command_log.command_rows(commands, states, now, spec=spec, limit=self.limit)


__all__ = ["MAX_PAGES", "PAGE_ROWS", "CommandHistory", "History", "Stored"]
