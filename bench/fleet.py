"""Fleet planning: time to re-plan a whole fleet after a new forecast, through the Planner node, and per-plan p50/p99.

Run: ``.venv/bin/python -m bench.fleet [--batteries 1000] [--solvers cbc,highs] [--workers 1,2]``. The fleet (seeded
specs: 50 kWh to 2 MWh, C-rates 0.25 to 1, efficiency 0.80 to 0.95, SOC anywhere in range) publishes its specs and
telemetry on the in-memory bus; the Planner node (its own handlers, :meth:`Planner.step` and solver pool) gets a
price forecast (96 quarter-hour slots, or 24 hourly slots, of real de-lu prices when the shared files are there);
the bench times the pass that re-plans every battery, then a second forecast (the steady state: the pool is warm).
"per plan" is one battery's plan in its worker (model build, solve, publishable schedule), "fleet" the whole pass
including publishing every Schedule, "lag" the event loop's worst stall during it (a message on the bus waits that
long). Sequential CBC (1 worker: one thread, in turn; the planner before issue 14) is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import time
import warnings
from datetime import UTC, datetime

from bench.planner import horizon, quiet_fd1
from nodes.contract.messages import BatterySpec, PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import PRICES, SCHEDULE, SPEC, TELEMETRY
from nodes.planner.config import PlannerConfig
from nodes.planner.node import Planner
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock


def fleet_spec(i: int) -> BatterySpec:
    rng = random.Random(i)
    capacity = rng.choice([50.0, 100.0, 215.0, 500.0, 1000.0, 2000.0])
    return BatterySpec(
        capacity_kwh=capacity, soc_min_kwh=capacity * rng.choice([0.0, 0.05, 0.1]),
        soc_max_kwh=capacity * rng.choice([0.9, 0.95, 1.0]), max_charge_kw=capacity * rng.choice([0.25, 0.5, 1.0]),
        max_discharge_kw=capacity * rng.choice([0.25, 0.5, 1.0]), roundtrip_efficiency=rng.uniform(0.80, 0.95),
        cycle_cost_per_mwh=rng.choice([0.0, 5.0, 20.0]),
    )


def shifted(slots: list[PriceSlot], start: datetime, bump: float) -> list[PriceSlot]:
    """The same price shape from ``start`` (the planner plans from now), every price plus ``bump``."""
    offset = start - slots[0].start
    return [PriceSlot(start=s.start + offset, end=s.end + offset, price_per_mwh=s.price_per_mwh + bump)
            for s in slots]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class LoopLag:
    """The longest the event loop was busy (a 5 ms ticker's worst delay) while the fleet was planned: how long a
    message on the bus would have waited to be handled."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - before - 0.005) * 1000.0)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def replan(batteries: int, slots: list[PriceSlot], solver: str, workers: int
                 ) -> tuple[float, float, list[float], float]:
    """(cold first pass s, warm second pass s, per-plan ms and worst loop lag ms of the warm pass)."""
    start = slots[0].start
    clock = FakeClock(start)
    broker = MemoryBroker()
    bus = MemoryBus("planner", broker)
    planner = Planner(PlannerConfig(planner_solver=solver, planner_workers=workers, planner_min_replan_interval_s=0),
                      bus, clock=clock)
    await planner.setup()
    await planner.solvers.start()  # as Planner.run does
    fleet = MemoryBus("fleet", broker)
    for i in range(batteries):
        spec = fleet_spec(i)
        name = f"battery-{i + 1}"
        soc = spec.soc_min_kwh + random.Random(-i).random() * (spec.soc_max_kwh - spec.soc_min_kwh)
        await fleet.publish(SPEC, spec, battery=name)
        await fleet.publish(TELEMETRY, Telemetry(ts=start, soc_kwh=soc, power_kw=0.0), battery=name)
    await broker.idle()
    passes: list[float] = []
    for bump in (0.0, 1.0):  # the second forecast differs, as a new one would
        forecast = PriceForecast(zone="de-lu", issued_at=start, slots=shifted(slots, start, bump))
        await fleet.publish(PRICES, forecast, zone="de-lu")
        await broker.idle()
        planner.plan_ms.clear()
        before = len(bus.sent(SCHEDULE))
        started = time.perf_counter()
        with LoopLag() as lag:
            await planner.step()
        passes.append(time.perf_counter() - started)
        planned = len(bus.sent(SCHEDULE)) - before
        if planned != batteries:
            raise SystemExit(f"{planned} of {batteries} batteries planned ({solver}, {workers} workers): "
                             f"{planner.bus.status().details}")
    planner.solvers.close()
    return passes[0], passes[1], list(planner.plan_ms), lag.worst_ms


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batteries", type=int, default=1000)
    parser.add_argument("--solvers", default="cbc,highs")
    parser.add_argument("--workers", default="1,2", help="pool sizes to compare; the first is the baseline")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # PuLP 3.3's notice about PuLP 4.0
    logging.disable(logging.INFO)  # a log line per plan would be measured too
    now = datetime(2026, 6, 1, tzinfo=UTC)
    workers = [int(w) for w in args.workers.split(",")]
    print(f"{args.batteries} batteries; fleet = the pass re-planning all of them after a new forecast (warm pool; "
          "cold = the first pass); per plan = one battery in its worker")
    header = ("slots", "solver", "workers", "fleet s", "cold s", "plans/s", "p50 ms", "p99 ms", "lag ms", "vs 1st")
    print(" ".join(f"{h:>8}" for h in header))
    for n, minutes in ((96, 15), (24, 60)):
        slots = shifted(horizon(n, minutes), now, 0.0)
        baseline: float | None = None
        for solver in args.solvers.split(","):
            for count in workers:
                with quiet_fd1():
                    cold, warm, per_plan, lag_ms = await replan(args.batteries, slots, solver, count)
                baseline = baseline or warm
                p50, p99 = statistics.median(per_plan), pct(per_plan, 0.99)
                print(f"{n:>8} {solver:>8} {count:>8} {warm:>8.2f} {cold:>8.2f} {args.batteries / warm:>8.0f} "
                      f"{p50:>8.1f} {p99:>8.1f} {lag_ms:>8.0f} {baseline / warm:>7.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
