"""Reading a long stretch of history from the recorder page by page (I/O through the ``ask`` callable given).

The recorder answers at most ``limit`` rows per request (``truncated`` when more exist); the next page starts a
microsecond after the last row, so no row is read twice and none is skipped (times are microseconds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from nodes.contract.messages import HistoryKind, HistoryQuery, HistoryResult
from nodes.renderer.series import to_datetime

Ask = Callable[[HistoryQuery], Awaitable[HistoryResult]]
"""Sends one HistoryQuery and returns the recorder's answer (raising when it is not ``ok``)."""


async def pages(
    ask: Ask, kind: HistoryKind, begin_s: float, end_s: float, page_rows: int, **ids: str
) -> AsyncIterator[tuple[HistoryResult, float]]:
    """Raw rows of ``[begin_s, end_s)`` page by page, each with the time up to which rows are complete."""
    cursor = to_datetime(begin_s)
    end = to_datetime(end_s)
    while cursor < end:
        result = await ask(HistoryQuery(kind=kind, begin=cursor, end=end, limit=page_rows, **ids))  # type: ignore[arg-type]
        if not (result.truncated and result.rows):
            yield result, end_s
            return
        last = datetime.fromisoformat(str(result.rows[-1][0]).replace("Z", "+00:00"))
        yield result, last.timestamp()
        cursor = last + timedelta(microseconds=1)


__all__ = ["Ask", "pages"]
