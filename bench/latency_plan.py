"""``bench/latency.py``'s planning path: new forecast -> schedule published -> the autopilot's first command.

For a fleet of N batteries (specs of :func:`bench.fleet.fleet_spec`, one fresh retained reading each) a planner
process (``python -m nodes.planner``, autopilot on, ``--solver``, ``--workers``) runs on a topic root of its own
(no other node there: this is the planner's own path). A subscriber in this process records, per battery, the
arrival of the first ``battery/{b}/schedule`` and the first ``battery/{b}/set`` after each forecast was published.

Three forecasts (96 quarter-hour slots from the current quarter hour, real de-lu prices when the shared files
are there): the first is the cold start (the pool's processes start, first plans) and is reported on its own;
the second (the same prices in reverse order) and the third (the first again) are "a new forecast" for a fleet
that is already being driven, and their samples are pooled for p50/p99. A battery gets a command only when its
setpoint changes (:mod:`nodes.planner.autopilot`), so the command line counts the batteries that got one; the
bench waits for all N schedules, then until neither a schedule nor a command has arrived for 1.5 s (the planner
sends a battery's command right after its schedule, so that silence means none is coming; it also keeps the next
forecast beyond the planner's minimum re-plan interval of 1 s, which would otherwise hold it back).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gmqtt

from bench.fleet import fleet_spec
from bench.ingest import _Window
from bench.latency_probes import summary
from bench.planner import horizon
from deploy import stack
from nodes.contract.messages import PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import COMMAND, PRICES, SCHEDULE, SPEC, STATUS, TELEMETRY
from tests.support.nodes import NodeProcess, start_node

ZONE = "de-lu"
QUIET_S = 1.5
"""Silence after the last schedule or command that ends a forecast's measurement; above the planner's
``BESS_PLANNER_MIN_REPLAN_INTERVAL_S`` (1 s), so the next forecast is never held back by it."""


@dataclass
class Arrivals:
    """First schedule and first command per battery since ``t0`` (wall clock)."""

    root: str
    t0: float = 0.0
    schedules: dict[str, float] = field(default_factory=dict)
    commands: dict[str, float] = field(default_factory=dict)
    last_arrival_s: float = 0.0
    """Monotonic time of the last schedule or command."""

    def reset(self, t0: float) -> None:
        self.t0 = t0
        self.schedules = {}
        self.commands = {}
        self.last_arrival_s = time.monotonic()

    def on_message(self, _client: object, topic: str, _payload: bytes, _qos: int, properties: dict[str, object]
                   ) -> int:
        if properties.get("retain") or self.t0 == 0.0:
            return 0
        now = time.time()
        schedule = SCHEDULE.parse(topic, root=self.root)
        if schedule is not None:
            self.schedules.setdefault(schedule["battery"], now)
        command = COMMAND.parse(topic, root=self.root)
        if command is not None:
            self.commands.setdefault(command["battery"], now)
        self.last_arrival_s = time.monotonic()
        return 0


def forecast(prices: list[float], start: datetime) -> PriceForecast:
    step = timedelta(minutes=15)
    slots = [PriceSlot(start=start + i * step, end=start + (i + 1) * step, price_per_mwh=p)
             for i, p in enumerate(prices)]
    return PriceForecast(zone=ZONE, issued_at=datetime.now(UTC), slots=slots, currency="EUR", source="bench")


@dataclass
class PlanResult:
    batteries: int
    cold_schedule_ms: list[float]
    schedule_ms: list[float]
    command_ms: list[float]
    commanded: int
    forecasts: int
    fleet_s: float

    def lines(self, solver: str, workers: int) -> list[str]:
        return [
            f"plan N={self.batteries} ({solver}, {workers} workers): first forecast (cold) -> schedule: "
            f"{summary(self.cold_schedule_ms)}",
            f"  new forecast -> schedule published:      {summary(self.schedule_ms)}; whole fleet in "
            f"{self.fleet_s:.2f} s (worst of {self.forecasts})",
            f"  new forecast -> first autopilot command: {summary(self.command_ms)} "
            f"({self.commanded} of {self.batteries * self.forecasts} battery-forecasts changed setpoint)",
        ]


async def _publish_fleet(port: int, root: str, names: list[str]) -> None:
    storage = _Window(500)
    client = gmqtt.Client(f"bench-lat-fleet-{uuid.uuid4().hex[:6]}", persistent_storage=storage)
    await client.connect(stack.HOST, port)
    now = datetime.now(UTC)
    for i, name in enumerate(names):
        spec = fleet_spec(i)
        soc = spec.soc_min_kwh + random.Random(-i).random() * (spec.soc_max_kwh - spec.soc_min_kwh)
        for topic, payload in ((SPEC.name(root=root, battery=name), SPEC.encode(spec)),
                               (TELEMETRY.name(root=root, battery=name),
                                TELEMETRY.encode(Telemetry(ts=now, soc_kwh=soc, power_kw=0.0)))):
            if not storage.room.is_set():
                await storage.room.wait()
            client.publish(topic, payload, qos=1, retain=True)
    await storage.wait_empty()
    await client.disconnect()


async def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def measure(port: int, batteries: int, solver: str, workers: int, logs: Path) -> PlanResult:
    """One fleet size; see the module docstring."""
    root = f"lat{uuid.uuid4().hex[:6]}/bess/v1"
    names = [f"plan-{i:04d}" for i in range(batteries)]
    await _publish_fleet(port, root, names)
    arrivals = Arrivals(root)
    sub = gmqtt.Client(f"bench-lat-plan-{uuid.uuid4().hex[:6]}", receive_maximum=65535)
    sub.on_message = arrivals.on_message
    await sub.connect(stack.HOST, port)
    sub.subscribe([gmqtt.Subscription(SCHEDULE.filter(root=root), qos=1),
                   gmqtt.Subscription(COMMAND.filter(root=root), qos=1)])
    env = {"BESS_MQTT_PORT": str(port), "BESS_TOPIC_ROOT": root, "BESS_PLANNER_AUTOPILOT": "1",
           "BESS_PLANNER_SOLVER": solver, "BESS_PLANNER_WORKERS": str(workers), "BESS_PLANNER_ZONE": ZONE,
           "BESS_LOG_LEVEL": "WARNING"}
    planner: NodeProcess = start_node("planner", env, log_dir=logs / f"planner-{batteries}")
    try:
        status_topic = STATUS.name(root=root, node="planner")
        await _wait(lambda: status_topic in stack.read_retained(stack.HOST, port, status_topic, 0.2), 30,
                    "the planner's status")
        now = datetime.now(UTC)
        start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        prices = [s.price_per_mwh for s in horizon(96, 15)]
        shapes = [prices, prices[::-1], prices]
        cold: list[float] = []
        scheduled: list[float] = []
        commanded: list[float] = []
        fleet_s = 0.0
        for k, shape in enumerate(shapes):
            message = forecast([p + 0.01 * k for p in shape], start)  # never the same forecast twice
            t0 = time.time()
            arrivals.reset(t0)
            sub.publish(PRICES.name(root=root, zone=ZONE), PRICES.encode(message), qos=1, retain=True)
            await _wait(lambda: len(arrivals.schedules) >= batteries, 300,
                        f"{batteries} schedules (planner log: {planner.log_path})")
            planner.assert_alive()
            await _wait(lambda: time.monotonic() - arrivals.last_arrival_s >= QUIET_S, 60,
                        "the autopilot's commands to settle")
            ms = [(t - t0) * 1000 for t in arrivals.schedules.values()]
            if k == 0:
                cold = ms
                continue
            scheduled += ms
            fleet_s = max(fleet_s, max(ms) / 1000)
            commanded += [(t - t0) * 1000 for t in arrivals.commands.values()]
        return PlanResult(batteries, cold, scheduled, commanded, len(commanded), len(shapes) - 1, fleet_s)
    finally:
        planner.stop()
        await sub.disconnect()


__all__ = ["PlanResult", "measure"]
