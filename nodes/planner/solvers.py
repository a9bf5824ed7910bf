"""Where the planner's plans are solved: one at a time in a worker thread, or many in a bounded process pool.

A plan is CPU work in Python (PuLP builds the model) and in the solver; threads would share one core through the
GIL, so a batch of plans (a new forecast for a fleet) goes to ``BESS_PLANNER_WORKERS`` processes. The event loop
only waits on futures, so the bus keeps acknowledging messages while the fleet is planned. A single plan (a
drift, a re-plan request) runs in a worker thread: it gains nothing from a process and a pool is started only
when a batch needs one. Workers are started with ``spawn`` (never ``fork`` from a process with an event loop and
threads) and kept for the node's life.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from nodes.contract.messages import BatterySpec, PriceSlot, Schedule
from nodes.planner.model import PlanError, PlanOptions, plan

PARENT_POLL_S = 1.0
"""How often a pool worker checks that the planner that started it still runs."""


@dataclass(frozen=True, slots=True)
class PlanJob:
    """One battery's plan, everything :func:`plan` needs (picklable: it crosses to a worker process)."""

    name: str
    slots: Sequence[PriceSlot]
    spec: BatterySpec
    soc_kwh: float
    options: PlanOptions
    created_at: datetime
    plan_id: str
    zone: str
    currency: str


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """A solved job: the schedule, or why there is none; ``elapsed_ms`` is the whole plan (build, solve, publish)."""

    name: str
    schedule: Schedule | None
    error: str | None
    elapsed_ms: float


def solve(job: PlanJob) -> PlanOutcome:
    """Run one job (in whichever thread or process calls it)."""
    started = time.perf_counter()
    try:
        schedule = plan(job.slots, job.spec, job.soc_kwh, options=job.options, created_at=job.created_at,
                        plan_id=job.plan_id, zone=job.zone, currency=job.currency)
    except PlanError as exc:
        return PlanOutcome(job.name, None, str(exc), (time.perf_counter() - started) * 1000.0)
    return PlanOutcome(job.name, schedule, None, (time.perf_counter() - started) * 1000.0)


def _warm() -> None:
    """Nothing: submitted once per worker so the pool's processes start (and import the model) at once."""


def _watch_parent(parent: int) -> None:
    """A worker's initializer: exit when the planner is gone. A planner killed hard (SIGKILL, OOM) runs no
    shutdown, and a pool worker holds both ends of its queue's pipe, so it would wait forever as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Solvers:
    """Runs batches of plan jobs: in a thread when ``workers`` is 1 or the batch has one job, else in the pool."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: Executor | None = None

    @property
    def started(self) -> bool:
        """Whether the process pool is running."""
        return self._pool is not None

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_watch_parent, initargs=(os.getpid(),))
        return self._pool

    async def start(self) -> None:
        """Start the pool's processes now (a node with a pool does so at start, not in its first re-plan)."""
        if self.workers > 1:
            loop = asyncio.get_running_loop()
            pool = self._executor()
            await asyncio.gather(*(loop.run_in_executor(pool, _warm) for _ in range(self.workers)))

    async def run(self, jobs: Sequence[PlanJob]) -> AsyncIterator[PlanOutcome]:
        """The outcomes as they complete; jobs start in the order given (at most ``workers`` at a time)."""
        if self.workers == 1 or len(jobs) == 1:
            for job in jobs:
                yield await asyncio.to_thread(solve, job)
            return
        loop = asyncio.get_running_loop()
        pool = self._executor()
        pending = [loop.run_in_executor(pool, solve, job) for job in jobs]
        try:
            for next_done in asyncio.as_completed(pending):
                yield await next_done
        finally:
            for future in pending:
                future.cancel()  # a cancelled pass does not leave the pool busy with plans nobody awaits

    def close(self) -> None:
        """Stop the pool's processes (queued jobs are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


__all__ = ["PlanJob", "PlanOutcome", "Solvers", "solve"]
