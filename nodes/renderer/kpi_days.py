"""The renderer's stored KPI days: read them back (``kind="kpi"``) and publish newly final ones (I/O through
the callables given; the conversions are :mod:`nodes.renderer.kpi_store`, the bookkeeping
:class:`nodes.renderer.kpis.KpiBook`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nodes.contract.messages import KpiDay
from nodes.renderer import kpi_store
from nodes.renderer.kpis import KpiBook, runs
from nodes.renderer.ledger import BUCKETS_PER_DAY, DayChunk
from nodes.renderer.pages import Ask, pages

Publish = Callable[[str, KpiDay], Awaitable[None]]
"""Publishes one day of one battery on ``battery/{battery}/kpi/day``."""


async def read_stored(
    ask: Ask, battery: str, days: list[int], page_rows: int, *, fine: frozenset[int] = frozenset()
) -> list[DayChunk]:
    """The stored copies of ``days`` that are complete: their totals (``kind="kpi_day"``, one row a day), and for
    the days in ``fine`` (those a window cuts) their 96 buckets (``kind="kpi"``); one paged read per run of
    consecutive days. Buckets come after totals, so a day read both ways ends up with its buckets."""
    found: list[DayChunk] = []
    for run in runs(days):
        begin_s, end_s = kpi_store.day_range(run)
        async for result, _ in pages(ask, "kpi_day", begin_s, end_s, max(page_rows, 2), battery=battery):
            found.extend(kpi_store.totals_from_result(result))
    for run in runs([d for d in days if d in fine]):
        begin_s, end_s = kpi_store.day_range(run)
        parts = [result async for result, _ in pages(ask, "kpi", begin_s, end_s, max(page_rows, BUCKETS_PER_DAY),
                                                     battery=battery)]
        for result in parts[1:]:  # a day split over two pages is incomplete in each: join the rows first
            parts[0].rows.extend(result.rows)
        if parts:
            found.extend(kpi_store.chunks_from_result(parts[0]))
    return found


async def publish_new(publish: Publish, battery: str, book: KpiBook) -> int:
    """Publish the days the book computed final since the last call; the number published. A day whose
    publish fails is kept for the next call."""
    sent = 0
    chunks = book.take_unpublished()
    for i, chunk in enumerate(chunks):
        try:
            await publish(battery, kpi_store.day_message(chunk))
        except BaseException:
            book.unpublished.update(c.day for c in chunks[i:])
            raise
        sent += 1
    return sent


__all__ = ["Publish", "publish_new", "read_stored"]
