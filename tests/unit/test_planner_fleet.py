"""A fleet in the planner node, on the in-memory bus: pooled plans equal sequential ones, batteries with a plan are
re-planned before new ids, and thousands of unplannable ids keep the status small and published once per pass."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatterySpec, PriceForecast, PriceSlot, Schedule, Telemetry
from nodes.contract.topics import COMMAND, PRICES, SCHEDULE, SPEC, STATUS, TELEMETRY
from nodes.planner.config import PlannerConfig
from nodes.planner.node import MAX_DETAILS, Planner
from nodes.planner.policy import MORE_KEY
from nodes.planner.solvers import PlanJob, PlanOutcome, Solvers
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
Q = timedelta(minutes=15)
PRICES_96 = [80.0 + (40.0 if 32 <= i < 48 else 0.0) - (70.0 if 8 <= i < 16 else 0.0) for i in range(96)]


def forecast(bump: float = 0.0) -> PriceForecast:
    return PriceForecast(zone="de-lu", issued_at=T0, slots=[
        PriceSlot(start=T0 + i * Q, end=T0 + (i + 1) * Q, price_per_mwh=p + bump) for i, p in enumerate(PRICES_96)])


def spec(i: int) -> BatterySpec:
    capacity = 100.0 * (1 + i % 5)
    return BatterySpec(capacity_kwh=capacity, soc_min_kwh=0.1 * capacity, soc_max_kwh=0.9 * capacity,
                       max_charge_kw=capacity * (0.25 + 0.25 * (i % 3)), max_discharge_kw=capacity * 0.5,
                       roundtrip_efficiency=0.85 + 0.01 * (i % 10))


class Rig:
    """The planner node and a fleet publishing to it through one in-memory broker."""

    def __init__(self, **config: object) -> None:
        self.clock = FakeClock(T0)
        self.broker = MemoryBroker()
        self.bus = MemoryBus("planner", self.broker)
        self.planner = Planner(PlannerConfig(planner_min_replan_interval_s=0, **config),  # type: ignore[arg-type]
                               self.bus, clock=self.clock)
        self.fleet = MemoryBus("fleet", self.broker)

    async def join(self, names: list[str], *, with_spec: bool = True) -> None:
        for i, name in enumerate(names):
            if with_spec:
                await self.fleet.publish(SPEC, spec(i), battery=name)
            await self.fleet.publish(TELEMETRY, Telemetry(ts=self.clock.now, soc_kwh=50.0), battery=name)
        await self.broker.idle()

    async def prices(self, bump: float = 0.0) -> None:
        await self.fleet.publish(PRICES, forecast(bump), zone="de-lu")
        await self.broker.idle()

    def schedules(self) -> list[tuple[str, Schedule]]:
        """(battery, schedule) in publish order."""
        out = []
        for sent in self.bus.published:
            params = self.bus.parse(SCHEDULE, sent.topic)
            if params is not None:
                assert isinstance(sent.message, Schedule)
                out.append((params["battery"], sent.message))
        return out

    def statuses(self) -> int:
        return sum(1 for sent in self.bus.published if self.bus.parse(STATUS, sent.topic) is not None)


async def test_the_pool_plans_the_fleet_exactly_as_one_worker_does() -> None:
    names = [f"b-{i}" for i in range(6)]
    results: list[dict[str, list[tuple[float, float]]]] = []
    for workers in (1, 2):
        rig = Rig(planner_workers=workers, planner_solver="highs")
        await rig.planner.setup()
        await rig.join(names)
        await rig.prices()
        await rig.planner.step()
        assert rig.planner.solvers.started == (workers > 1)  # the batch really went through the process pool
        rig.planner.solvers.close()
        results.append({name: [(s.charge_kw, s.discharge_kw) for s in schedule.slots]
                        for name, schedule in rig.schedules()})
        assert len(rig.planner.plan_ms) == len(names)
    assert sorted(results[0]) == sorted(names)
    assert results[0] == results[1]


async def test_batteries_with_a_plan_are_replanned_before_a_burst_of_new_ids() -> None:
    rig = Rig(planner_workers=1)
    await rig.planner.setup()
    existing = ["z-1", "z-2", "z-3"]  # sorted after every new id: the order must not come from the names
    await rig.join(existing)
    await rig.prices()
    await rig.planner.step()
    assert [name for name, _ in rig.schedules()] == existing
    newcomers = [f"a-{i:03d}" for i in range(40)]
    await rig.join(newcomers)
    before = len(rig.schedules())
    await rig.prices(bump=5.0)
    await rig.planner.step()
    order = [name for name, _ in rig.schedules()[before:]]
    assert sorted(order) == sorted(existing + newcomers)
    assert order[:3] == existing


async def test_thousands_of_unplanned_ids_keep_the_status_small_and_cost_one_status_per_pass() -> None:
    rig = Rig(planner_workers=1)
    await rig.planner.setup()
    await rig.join(["battery-1"])
    await rig.join([f"x-{i}" for i in range(2000)], with_spec=False)  # telemetry only: monitored, not planned
    await rig.prices()
    statuses_before = rig.statuses()
    await rig.planner.step()
    await rig.broker.idle()
    status = rig.bus.status()
    assert [name for name, _ in rig.schedules()] == ["battery-1"]
    assert status.state == "online"  # a battery's own problem is a note, never the node's reason
    assert len(status.reason) < 200
    assert len(status.details) == MAX_DETAILS + 1
    assert status.details[MORE_KEY].startswith(f"{2000 - MAX_DETAILS} more batteries")
    assert rig.planner.bus.counters["batteries_not_planned"] == 2000
    # one status for the batch's notes and at most one more after its plan, not one per battery
    assert rig.statuses() - statuses_before <= 3


def test_workers_default_to_the_cores_and_are_bounded() -> None:
    assert PlannerConfig().workers == max(os.cpu_count() or 1, 1)
    assert PlannerConfig(planner_workers=1).workers == 1
    assert any("BESS_PLANNER_WORKERS" in p for p in PlannerConfig(planner_workers=0).problems())
    assert not PlannerConfig(planner_workers=2).problems()


async def test_a_spec_rejected_while_the_batch_solves_discards_that_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(planner_workers=1)
    await rig.planner.setup()
    await rig.join(["b-1", "b-2"])
    await rig.prices()
    real_run = Solvers.run

    async def run_and_reject(self: Solvers, jobs: Sequence[PlanJob]) -> AsyncIterator[PlanOutcome]:
        await rig.planner.on_invalid_spec({"battery": "b-2"}, "capacity_kwh: expected a number")
        async for outcome in real_run(self, jobs):
            yield outcome

    monkeypatch.setattr(Solvers, "run", run_and_reject)
    await rig.planner.step()
    assert [name for name, _ in rig.schedules()] == ["b-1"]
    assert rig.planner.batteries["b-2"].schedule is None
    assert rig.planner.bus.counters["plans_discarded"] == 1
    await rig.planner.step()  # the rejection marked it: the next pass says why it is not planned
    assert "rejected" in rig.bus.status().details["b-2"]
    assert rig.planner.batteries["b-2"].schedule is None


async def test_each_battery_gets_its_command_as_soon_as_its_own_plan_is_published() -> None:
    """A fleet's batch takes seconds (1,000 batteries: ~5 s); a battery's new setpoint must not wait for the
    others' plans (bench/latency.py measured forecast -> first command at the end of the whole pass before)."""
    rig = Rig(planner_workers=1, planner_autopilot=True)
    await rig.planner.setup()
    await rig.join(["b-1", "b-2", "b-3"])
    await rig.prices()
    await rig.planner.step()
    order = []
    for sent in rig.bus.published:
        for kind, topic in (("schedule", SCHEDULE), ("set", COMMAND)):
            params = rig.bus.parse(topic, sent.topic)
            if params is not None:
                order.append(f"{kind} {params['battery']}")
    assert order == ["schedule b-1", "set b-1", "schedule b-2", "set b-2", "schedule b-3", "set b-3"]
