"""The at-least-once batcher: a message is acknowledged only after its points are in the store.

Handlers call ``await batcher.add(lines)``. The call returns when the batch holding those lines has been
written (or its bad lines definitively rejected as malformed). The bus sends the MQTT PUBACK only when the
handler returns, so:

* a process that dies (SIGKILL, OOM, power) before the write leaves its messages unacknowledged, and the
  broker redelivers them to the next instance (persistent session). Points carry the message's own timestamp,
  so a redelivered message rewrites the same point: nothing lost, nothing doubled.
* while the store is down, handlers simply keep waiting. The broker stops sending once ``receive_maximum``
  messages are unacknowledged and keeps the rest in the session queue: that window is the bounded buffer, and
  memory stays flat however long the outage lasts.

Batching: a batch is written when it holds ``max_points`` lines or ``max_delay_s`` after its first line,
whichever comes first; a line someone waits for (``add(..., urgent=True)``: a message whose publisher asked for
a stored confirmation) brings its batch's deadline forward to ``urgent_delay_s`` after it. One write is in flight
at a time; the next batch fills meanwhile (so under load urgent lines are written in groups, not one by one). All
handlers of a batch await one shared future (one per batch, not one per message).

A point the store refuses never holds up the others: lines the store rejects (malformed, a type conflict) are
counted as ``rejected``, logged and acknowledged while the rest of the batch is stored. When the store refuses
a batch as a whole (``StoreRefused``: 413, a body too large) or rejects lines without saying which, the batch
is split in halves, recursively, until each refused line stands alone: that line is rejected, every other one
is written (rewriting a point the server already stored changes nothing). Only an unavailable store is retried.

Store unavailable: retry with jittered exponential backoff (``backoff_min_s`` .. ``backoff_max_s``), report
``degraded`` with the reason through ``on_state`` (log the first error, then one line per ``log_window_s``),
and report ``online`` again after the next successful write.

Shutdown (:meth:`close`): stop taking new lines (their handlers are parked and never acknowledge), write what
is pending within the time limit, and abandon the rest unacknowledged: the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from nodes.contract.messages import NodeState
from nodes.recorder.store import Rejection, Store, StoreRefused, StoreUnavailable, WriteOutcome

log = logging.getLogger("bess.recorder.batcher")

StateCallback = Callable[[NodeState, str], None]


class _Batch:
    """Lines waiting for one write, and the future every handler of those lines awaits."""

    __slots__ = ("deadline", "done", "lines", "rejected")

    def __init__(self, deadline: float) -> None:
        self.lines: list[str] = []
        self.deadline = deadline
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: line -> the store's reason, for the lines it refused (None: it refused none)
        self.rejected: dict[str, str] | None = None


class Batcher:
    """Collects line protocol from many handlers and writes it in batches, acknowledging only what is stored."""

    def __init__(
        self,
        store: Store,
        *,
        max_points: int = 5000,
        max_delay_s: float = 0.2,
        urgent_delay_s: float = 0.0,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 5.0,
        log_window_s: float = 60.0,
        on_state: StateCallback | None = None,
    ) -> None:
        if max_points < 1 or max_delay_s < 0 or urgent_delay_s < 0:
            raise ValueError("max_points must be >= 1, max_delay_s and urgent_delay_s >= 0")
        self.store = store
        self.max_points = max_points
        self.max_delay_s = max_delay_s
        self.urgent_delay_s = urgent_delay_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.log_window_s = log_window_s
        self.on_state = on_state
        # counters (exported in the node status)
        self.stored = 0
        self.rejected = 0
        self.retries = 0
        self.batches = 0
        self.splits = 0  # batches split to isolate lines the store refused
        self.in_flight = 0
        self._current: _Batch | None = None
        self._writing: _Batch | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._close_deadline = 0.0
        self._parked: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._failure_logged_at = 0.0
        self._rejections_logged_at: float | None = None
        self._rejected_lines: dict[str, str] = {}  # of the batch being written

    # -- the handler side ---------------------------------------------------------------------------------------

    async def add(self, lines: list[str], *, urgent: bool = False) -> str | None:
        """Queue ``lines`` and return once they are written (or refused by the store for good).

        Returns None when the store took every one of ``lines``, else its reason for refusing one of them.
        ``urgent``: someone waits for this answer, so the batch is written within ``urgent_delay_s``.
        After :meth:`close` has begun this never returns: the caller's message stays unacknowledged and is
        redelivered to the next instance. (Waiters share one future per batch and do not shield it: the only
        thing that cancels a handler is the end of the process, and a cancelled waiter can only cause more
        redeliveries, never an acknowledgement of something unwritten.)
        """
        if self._closing:
            await self._park()
        if not lines:
            return None
        batch = self._current
        if batch is None:
            batch = self._current = _Batch(asyncio.get_running_loop().time() + self.max_delay_s)
            self._wake.set()
        batch.lines.extend(lines)
        if len(batch.lines) >= self.max_points:
            self._wake.set()
        if urgent:
            deadline = asyncio.get_running_loop().time() + self.urgent_delay_s
            if deadline < batch.deadline:
                batch.deadline = deadline
                self._wake.set()
        await batch.done
        rejected = batch.rejected
        if rejected:
            for line in lines:
                reason = rejected.get(line)
                if reason is not None:
                    return reason
        return None

    async def sync(self, timeout: float) -> bool:
        """Write everything accepted so far now, without waiting for the batch delay; True once it is stored.

        A history request calls this first, so a read that follows a write (the seed's curl lines, one after
        the other) sees it: the broker delivers the gateway's telemetry before its later request, and batches
        are written in order, so the newest batch being done means all earlier ones are.
        """
        batch = self._current or self._writing
        if batch is None:
            return True
        if batch is self._current:
            batch.deadline = asyncio.get_running_loop().time()
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(batch.done), timeout)
        except TimeoutError:
            return False
        return True

    async def _park(self) -> None:
        if self._parked is None:
            self._parked = asyncio.get_running_loop().create_future()
        await self._parked

    @property
    def pending(self) -> int:
        """Lines accepted but not yet written (waiting or in flight)."""
        return self.in_flight + (len(self._current.lines) if self._current else 0)

    def counters(self) -> dict[str, int]:
        """Counters for the node status."""
        return {
            "stored": self.stored,
            "rejected": self.rejected,
            "retries": self.retries,
            "batches": self.batches,
            "splits": self.splits,
            "pending": self.pending,
        }

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher task (inside the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="recorder.batcher")
            self._task.add_done_callback(self._flusher_done)

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Should not happen (every write error is caught); without a flusher nothing is ever acknowledged.
            log.error("batch flusher died; no message will be acknowledged", exc_info=task.exception())
            self._set_state("degraded", f"batch flusher died: {task.exception()!r}")

    async def close(self, timeout: float = 10.0) -> bool:
        """Write what is pending within ``timeout`` seconds; True if nothing had to be abandoned."""
        loop = asyncio.get_running_loop()
        self._closing = True
        self._close_deadline = loop.time() + timeout
        self._wake.set()
        if self._task is None:
            return self._current is None
        with contextlib.suppress(TimeoutError):
            # The grace second covers a write already in flight when the deadline passes.
            await asyncio.wait_for(asyncio.shield(self._task), timeout + 1.0)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = self.pending
        if left:
            log.warning("shutdown: %d points not written; their messages stay unacknowledged for redelivery", left)
        return left == 0

    # -- the flusher --------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._current
            if batch is None:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            remaining = batch.deadline - loop.time()
            if remaining > 0 and len(batch.lines) < self.max_points and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                continue
            self._current = None  # new lines go to the next batch while this one is written
            self._writing = batch
            self.in_flight = len(batch.lines)
            self._rejected_lines = {}
            if not await self._write(batch.lines):
                return  # shutdown deadline passed: the batch stays unacknowledged
            batch.rejected = self._rejected_lines or None
            self._writing = None
            self.in_flight = 0
            self.batches += 1
            if not batch.done.done():
                batch.done.set_result(None)

    async def _write(self, lines: list[str]) -> bool:
        for start in range(0, len(lines), self.max_points):
            if not await self._write_chunk(lines[start : start + self.max_points]):
                return False
        return True

    async def _write_chunk(self, chunk: list[str]) -> bool:
        """Store ``chunk``, isolating the lines the store refuses; False only if the shutdown deadline passed."""
        result = await self._attempt(chunk)
        if result is None:
            return False
        if isinstance(result, WriteOutcome) and all(r.line is not None for r in result.rejected):
            self._succeeded(result, len(chunk), asyncio.get_running_loop().time())
            return True
        # Refused as a whole, or lines rejected without saying which: split until the refused lines stand alone.
        if len(chunk) == 1:
            reason = str(result) if isinstance(result, StoreRefused) else result.rejected[0].reason
            refused = WriteOutcome(written=0, rejected=(Rejection(reason=reason, line=chunk[0]),))
            self._succeeded(refused, 1, asyncio.get_running_loop().time())
            return True
        self.splits += 1
        middle = len(chunk) // 2
        return await self._write_chunk(chunk[:middle]) and await self._write_chunk(chunk[middle:])

    async def _attempt(self, chunk: list[str]) -> WriteOutcome | StoreRefused | None:
        """One write of ``chunk``, retried while the store is unavailable; None once the shutdown deadline passed."""
        loop = asyncio.get_running_loop()
        delay = self.backoff_min_s
        while True:
            try:
                return await self.store.write(chunk)
            except StoreRefused as exc:
                self._recovered(loop.time())  # the server answered: it is up
                return exc
            except Exception as exc:  # StoreUnavailable, or a bug: either way keep the data and retry
                self._failed(exc, loop.time())
                pause = random.uniform(delay / 2, delay)
                if self._closing:
                    left = self._close_deadline - loop.time()
                    if left <= 0:
                        return None
                    pause = min(pause, left)
                self.retries += 1
                await asyncio.sleep(pause)
                delay = min(delay * 2, self.backoff_max_s)

    # -- reporting ----------------------------------------------------------------------------------------------

    def _set_state(self, state: NodeState, reason: str) -> None:
        if self.on_state is not None:
            self.on_state(state, reason)

    def _failed(self, exc: Exception, now: float) -> None:
        if self._failing_since is None:
            self._failing_since = now
            self._failure_logged_at = now
            unexpected = not isinstance(exc, StoreUnavailable)
            log.warning(
                "store write failed%s: %s; retrying, messages stay unacknowledged",
                " unexpectedly" if unexpected else "",
                exc,
                exc_info=unexpected,
            )
            self._set_state("degraded", f"store unavailable: {exc}"[:300])
        elif now - self._failure_logged_at >= self.log_window_s:
            self._failure_logged_at = now
            log.warning(
                "store still failing after %.0f s (%d retries so far): %s", now - self._failing_since, self.retries, exc
            )

    def _recovered(self, now: float) -> None:
        if self._failing_since is not None:
            log.info("store back after %.1f s; %d retries so far", now - self._failing_since, self.retries)
            self._failing_since = None
            self._set_state("online", "")

    def _succeeded(self, outcome: WriteOutcome, size: int, now: float) -> None:
        self._recovered(now)
        self.stored += outcome.written
        if outcome.rejected:
            self.rejected += len(outcome.rejected)
            for rejection in outcome.rejected:
                if rejection.line is not None:
                    self._rejected_lines[rejection.line] = rejection.reason
            if self._rejections_logged_at is None or now - self._rejections_logged_at >= self.log_window_s:
                self._rejections_logged_at = now
                first = outcome.rejected[0]
                # one line per log window: a device that sends nothing but refused points must not flood the log
                log.warning(
                    "store rejected %d of %d lines (acknowledged, not retried; rejected so far: %d): %s; "
                    "line (%d bytes): %r",
                    len(outcome.rejected),
                    size,
                    self.rejected,
                    first.reason[:300],
                    len(first.line or ""),
                    (first.line or "")[:300],
                )


__all__ = ["Batcher", "StateCallback"]
