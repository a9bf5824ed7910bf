"""A bound on the history requests in flight, served by priority (no I/O: asyncio futures only).

The renderer asks the recorder for history on behalf of many batteries at once: live redraws of the batteries it
draws already, first draws of new ones, background KPI reads of whole days. A plain semaphore serves them first
come, so a burst of new batteries (each a first draw and a KPI read) queues battery-1's periodic refresh behind
hundreds of requests. Here a waiter of a lower ``priority`` number goes first; equal ones first come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncIterator
from itertools import count

LIVE = 0
"""A battery drawn already (its redraw), or one somebody views."""
NEW = 1
"""A first draw, or a background read (KPI days)."""


class PrioritySlots:
    """At most ``limit`` holders at once; the waiters are served by (priority, arrival)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = count()

    @property
    def waiting(self) -> int:
        """Waiters still in line."""
        return sum(1 for _, _, f in self._waiting if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Hold one slot for the block (waiting for it by ``priority``)."""
        if self.held < self.limit and not self.waiting:
            self.held += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # the slot was handed over just before the cancel: pass it on
                future.cancel()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot goes to this waiter: ``held`` stays
                return
        self.held -= 1


__all__ = ["LIVE", "NEW", "PrioritySlots"]
