"""The autopilot's command rate and leases across many slot boundaries, and its stop on stale telemetry.

The planner's own loop (:meth:`Planner.step`) runs on a fake clock that jumps to each instant the loop asks for,
plus up to a few seconds of delay (a busy machine). Before issue 16 the loop re-sent the slot's command every
50 ms for the last 150 s of every slot: about 3,000 commands an hour per battery on hourly prices.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from nodes.contract.messages import Telemetry
from nodes.contract.topics import COMMAND
from nodes.planner.config import PlannerConfig
from nodes.planner.node import Planner
from nodes.runtime.memory import MemoryBus
from tests.support.autopilot_sim import (
    BATTERY,
    DELIVERY,
    SPEC,
    T_DAY,
    FakeClock,
    SimResult,
    daily_prices,
    simulate,
)

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")


def _boundaries(result: SimResult) -> set[object]:
    return {slot.start for slot in result.slots} | {slot.end for slot in result.slots}


def _assert_handover_at_boundaries(result: SimResult, max_delay_s: float) -> None:
    """Every change of action or power is sent at a slot boundary (within the loop's delay), never late."""
    edges = sorted(_boundaries(result))  # type: ignore[type-var]
    for before, after in zip(result.commands, result.commands[1:], strict=False):
        if (before.action, before.power_kw) == (after.action, after.power_kw):
            continue
        nearest = max(e for e in edges if e <= after.issued_at)  # type: ignore[operator]
        assert (after.issued_at - nearest).total_seconds() <= max_delay_s, after  # type: ignore[operator]


@pytest.mark.parametrize("delay_s", [0.0, 3.0])
async def test_one_minute_slots_a_command_per_boundary_at_most_and_never_a_gap(delay_s: float) -> None:
    end = T_DAY + timedelta(minutes=40)
    result = await simulate(daily_prices(T_DAY, 4, 1), T_DAY, end, max_delay_s=delay_s)
    assert result.commands
    assert result.gaps() == []
    per_slot = result.per_slot()
    assert len(per_slot) == 40
    assert max(per_slot.values()) <= 2, per_slot
    assert result.passes <= 3 * 40, "the loop spins instead of sleeping until the next instant"
    _assert_handover_at_boundaries(result, delay_s + 1e-3)


async def test_fifteen_minute_slots_a_handful_of_commands_per_slot_and_never_a_gap() -> None:
    end = T_DAY + timedelta(hours=4)
    result = await simulate(daily_prices(T_DAY, 8, 15), T_DAY, end, max_delay_s=2.0)
    assert result.gaps() == []
    per_slot = result.per_slot()
    assert len(per_slot) == 16
    # a 300 s lease renewed 60 s before it ends: the slot's command plus at most three renewals
    assert max(per_slot.values()) <= 5, per_slot
    _assert_handover_at_boundaries(result, 2.0 + 1e-3)


async def test_hourly_prices_a_day_costs_at_most_sixteen_commands_an_hour() -> None:
    end = T_DAY + timedelta(hours=24)
    result = await simulate(daily_prices(T_DAY, 48, 60), T_DAY, end, max_delay_s=1.0)
    assert result.gaps() == []
    assert len({c.action for c in result.commands}) >= 2, "the plan should both charge and discharge"
    # 3,600 s / (300 s lease - 60 s margin) = 15 renewals, plus the changes at boundaries
    assert result.per_hour() <= 16, result.per_hour()
    _assert_handover_at_boundaries(result, 1.0 + 1e-3)


async def test_a_longer_lease_means_fewer_renewals() -> None:
    end = T_DAY + timedelta(hours=6)
    short = await simulate(daily_prices(T_DAY, 12, 60), T_DAY, end, planner_lease_s=120)
    long = await simulate(daily_prices(T_DAY, 12, 60), T_DAY, end, planner_lease_s=600)
    assert short.gaps() == long.gaps() == []
    assert long.per_hour() < short.per_hour() / 3


# -- stale telemetry ----------------------------------------------------------------------------------------


async def test_stale_telemetry_stops_the_autopilot_with_one_idle_until_a_fresh_reading() -> None:
    clock = FakeClock(T_DAY)
    bus = MemoryBus("planner")
    planner = Planner(PlannerConfig(planner_autopilot=True, planner_max_telemetry_age_s=300), bus, clock=clock)
    await planner.on_prices({"zone": "de-lu"}, daily_prices(T_DAY, 12, 15), DELIVERY)
    await planner.on_spec({"battery": BATTERY}, SPEC, DELIVERY)
    await planner.on_telemetry({"battery": BATTERY}, Telemetry(ts=T_DAY, soc_kwh=500), DELIVERY)
    wake = await planner.step()
    [first] = bus.sent(COMMAND)
    assert first.action != "idle"
    # the device goes silent: the loop wakes when its last reading turns stale, at the latest
    assert wake <= T_DAY + timedelta(seconds=300)
    passes = 0
    while clock.now < T_DAY + timedelta(hours=2):
        clock.now = max(wake, clock.now + timedelta(milliseconds=1))
        wake = await planner.step()
        passes += 1
    assert passes < 50
    commands = bus.sent(COMMAND)
    assert [c.action for c in commands[1:]].count("idle") == 1, "exactly one IDLE, then nothing"
    idle = next(c for c in commands[1:] if c.action == "idle")
    assert commands[-1] is idle, "no command from the stale plan after the stop"
    assert idle.issued_at <= T_DAY + timedelta(seconds=301)
    assert all(c.issued_at < T_DAY + timedelta(seconds=301) for c in commands)
    note = bus.details[BATTERY]
    assert "autopilot stopped" in note
    assert "s old" in note
    assert "sent IDLE" in note
    assert bus.state == "online"  # a per-battery problem, not the node's

    # a fresh reading: re-planned from it and commanded again at once
    await planner.on_telemetry({"battery": BATTERY}, Telemetry(ts=clock.now, soc_kwh=400), DELIVERY)
    assert planner.wake.is_set()
    await planner.step()
    resumed = bus.sent(COMMAND)[-1]
    assert resumed is not idle
    assert resumed.issued_at == clock.now
    assert "autopilot stopped" not in bus.details.get(BATTERY, "")


async def test_no_telemetry_at_all_sends_nothing() -> None:
    clock = FakeClock(T_DAY)
    bus = MemoryBus("planner")
    planner = Planner(PlannerConfig(planner_autopilot=True), bus, clock=clock)
    await planner.on_prices({"zone": "de-lu"}, daily_prices(T_DAY, 12, 60), DELIVERY)
    await planner.on_spec({"battery": BATTERY}, SPEC, DELIVERY)
    await planner.step()
    assert bus.sent(COMMAND) == []
    assert "no telemetry" in bus.details[BATTERY]


async def test_a_battery_known_only_from_old_http_backfills_gets_no_autopilot_note() -> None:
    clock = FakeClock(T_DAY)
    bus = MemoryBus("planner")
    planner = Planner(PlannerConfig(planner_autopilot=True), bus, clock=clock)
    await planner.on_prices({"zone": "de-lu"}, daily_prices(T_DAY, 12, 60), DELIVERY)
    old = Telemetry(ts=T_DAY - timedelta(days=300), soc_kwh=700, source="gateway")  # the seed's backfills
    await planner.on_telemetry({"battery": "my-bat"}, old, DELIVERY)
    await planner.step()
    assert bus.details == {"my-bat": "monitored, not planned: no spec received"}
    assert bus.sent(COMMAND) == []
