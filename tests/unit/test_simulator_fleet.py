"""A simulated fleet: BESS_SIM_COUNT ids, specs that differ per battery but repeat from the id, ticks on the
interval's grid that do not drift, and a router that finds one of thousands of per-battery subscriptions by name."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from nodes.contract.messages import Telemetry
from nodes.contract.topics import COMMAND, STORED, TELEMETRY
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import SubscriptionOverlap
from nodes.runtime.memory import MemoryBroker, MemoryBus
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.fleet import fleet_ids, varied_spec
from nodes.simulator.node import Simulator
from nodes.simulator.ticks import Ticks
from tests.support.waiting import wait_for_async

# -- ids and specs --------------------------------------------------------------------------------------------


def test_sim_count_names_a_fleet_instead_of_bess_batteries() -> None:
    config = SimulatorConfig(batteries=["x"], sim_count=1000)
    ids = config.battery_ids()
    assert ids[0] == "battery-0001"
    assert ids[-1] == "battery-1000"
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)  # zero-padded: the ids sort in order
    assert fleet_ids(12_345)[-1] == "battery-12345"
    assert SimulatorConfig(batteries=["x", "y"]).battery_ids() == ["x", "y"]
    assert SimulatorConfig(sim_count=-1).problems() == ["BESS_SIM_COUNT must be between 0 and 100000"]


def test_varied_specs_differ_per_battery_are_valid_and_repeat_from_the_id() -> None:
    config = SimulatorConfig(sim_count=200, sim_specs="varied")
    specs = {b: config.spec_for(b) for b in config.battery_ids()}
    assert all(not s.problems() for s in specs.values())
    assert len({(s.capacity_kwh, s.max_charge_kw, s.roundtrip_efficiency) for s in specs.values()}) > 150
    assert len({s.capacity_kwh for s in specs.values()}) >= 5
    # the same id gives the same spec in another config (another process, another run): a fixed hash, not hash()
    assert varied_spec("battery-0007", config.spec()) == SimulatorConfig(sim_specs="varied").spec_for("battery-0007")
    again = Simulator(SimulatorConfig(sim_count=200, sim_specs="varied", sim_keep_unconfirmed=0), MemoryBus("s"))
    assert {b: s.spec for b, s in again.batteries.items()} == specs
    assert all(s.spec.soc_min_kwh <= s.soc_kwh <= s.spec.soc_max_kwh for s in again.batteries.values())
    # the default stays one spec for every battery, the BESS_SIM_* one
    same = SimulatorConfig(sim_count=3)
    assert all(same.spec_for(b) == same.spec() for b in same.battery_ids())


# -- ticks ----------------------------------------------------------------------------------------------------


def test_ticks_fall_on_the_grid_and_work_does_not_add_up_into_drift() -> None:
    ticks = Ticks(1.0)
    now = 1_000.37
    assert ticks.due(now) == 1_001.0
    times = []
    for _ in range(3600):
        now = max(now, ticks.due(now))  # sleep until due
        times.append(ticks.take(now))
        now += 0.4  # every tick's work takes 0.4 s: an interval-then-sleep loop would drift 24 minutes an hour
    assert times == [1_001.0 + k for k in range(3600)]
    assert (ticks.ticks, ticks.skipped, ticks.late_ms_max) == (3600, 0, 0)


def test_a_tick_more_than_an_interval_late_is_skipped_and_counted() -> None:
    ticks = Ticks(1.0)
    assert ticks.take(10.0) == 10.0
    assert ticks.take(11.3) == 11.0  # late, not by a whole interval: still tick 11
    assert ticks.take(14.5) == 14.0  # 12 and 13 are skipped: no readings made up for them
    assert (ticks.ticks, ticks.skipped, ticks.late_ms_max) == (3, 2, 500)
    with pytest.raises(ValueError, match="interval_s"):
        Ticks(0.0)


async def test_every_reading_of_a_tick_carries_the_tick_time_and_the_counters_count_them() -> None:
    broker = MemoryBroker()
    sim = Simulator(SimulatorConfig(sim_count=250, sim_telemetry_interval_s=0.05, sim_keep_unconfirmed=0),
                    MemoryBus("simulator", broker))
    stamps: Counter[datetime] = Counter()
    listener = MemoryBus("recorder", broker)

    async def reading(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        if not delivery.retain:
            stamps[message.ts] += 1

    listener.subscribe(TELEMETRY, reading)
    await sim.setup()
    runner = asyncio.create_task(sim.run())
    try:
        await wait_for_async(lambda: sim.ticks.ticks >= 4, timeout=10, what="four ticks")
    finally:
        runner.cancel()
    await broker.idle()
    full = [ts for ts, n in stamps.items() if n == 250]
    assert len(full) >= 3  # whole ticks: 250 readings with one timestamp each
    assert all(abs(ts.timestamp() / 0.05 - round(ts.timestamp() / 0.05)) < 1e-3 for ts in stamps)  # 50 ms grid
    counters = sim.counters()
    assert counters["readings"] == sum(stamps.values())
    assert counters["ticks"] >= 4
    assert sim.bus.status().counters["readings"] == counters["readings"]


async def test_a_command_handled_during_a_tick_does_not_step_a_battery_backwards() -> None:
    sim = Simulator(SimulatorConfig(batteries=["b1"], sim_keep_unconfirmed=0), MemoryBus("simulator"))
    clock = [100.0]
    sim.monotonic = lambda: clock[0]
    sim._stepped = {"b1": 100.0}
    sim.batteries["b1"].power_kw = 100.0
    before = sim.batteries["b1"].soc_kwh
    sim._advance("b1", datetime.now(UTC), moment=99.5)  # the tick's moment, before the command's advance
    assert sim.batteries["b1"].soc_kwh == before
    assert sim._stepped["b1"] == 100.0


# -- the router with thousands of per-battery subscriptions -----------------------------------------------------


async def _handler(params: dict[str, str], message: Any, delivery: Delivery) -> None:
    return None


def test_thousands_of_exact_subscriptions_are_found_by_name_and_overlaps_still_refused() -> None:
    bus = MemoryBus("simulator")
    started = time.perf_counter()
    for battery in fleet_ids(3000):
        bus.subscribe(COMMAND, _handler, battery=battery)
        bus.subscribe(TELEMETRY, _handler, battery=battery)
        bus.subscribe(STORED, _handler, battery=battery)
    router = bus._router
    found = router.match(TELEMETRY.name(root=bus.root, battery="battery-2999"))
    assert found is not None
    assert found[1] == {"battery": "battery-2999"}
    assert found[0].topic is TELEMETRY
    assert router.match(TELEMETRY.name(root=bus.root, battery="battery-9999")) is None
    assert time.perf_counter() - started < 5.0  # pairwise overlap checks of 9,000 filters would take minutes
    with pytest.raises(SubscriptionOverlap):
        bus.subscribe(COMMAND, _handler, battery="battery-0001")  # the same exact filter again
    with pytest.raises(SubscriptionOverlap):
        bus.subscribe(COMMAND, _handler)  # a wildcard one over the exact ones


def test_a_wildcard_subscription_still_matches_beside_exact_ones() -> None:
    bus = MemoryBus("x")
    bus.subscribe(COMMAND, _handler, battery="b1")
    bus.subscribe(TELEMETRY, _handler)
    router = bus._router
    found = router.match(TELEMETRY.name(root=bus.root, battery="anything"))
    assert found is not None
    assert found[0].topic is TELEMETRY
    assert router.match(COMMAND.name(root=bus.root, battery="b2")) is None


def test_a_large_fleet_keeps_fewer_unconfirmed_readings_per_battery_within_the_total() -> None:
    """10,000 readings for each of 1,000 batteries would be 5.4 GB in one process during a recorder outage."""
    sim = Simulator(SimulatorConfig(sim_count=1000), MemoryBus("simulator"))
    assert {box.limit for box in sim.outboxes.values()} == {1000}
    assert sum(box.limit for box in sim.outboxes.values()) <= SimulatorConfig().sim_keep_unconfirmed_total
    few = Simulator(SimulatorConfig(batteries=["a", "b"]), MemoryBus("simulator"))
    assert {box.limit for box in few.outboxes.values()} == {10_000}  # a small site keeps its full window
    assert SimulatorConfig(sim_count=10, sim_keep_unconfirmed=0).keep_per_battery(10) == 0
    assert SimulatorConfig(sim_keep_unconfirmed_total=0).problems() == [
        "BESS_SIM_KEEP_UNCONFIRMED_TOTAL must be between 1 and 100000000"]
