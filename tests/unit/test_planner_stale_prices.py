"""When prices go stale: the planner's loop on a fake clock on the in-memory bus, phase by phase.

A short horizon is ``degraded`` but planned on; a gap is never bridged; when the prices end the plan runs out
and the autopilot sends one IDLE; a forecast that does not cover now leaves the last plan held; fresh prices
re-plan at once and bring the node back ``online``. The loop is driven the way :meth:`Planner.run` drives it:
each pass says when to run next and the clock jumps there; the battery reports the planned SOC before each pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import BatterySpec, Command, PriceForecast, PriceSlot, Schedule, Telemetry
from nodes.contract.topics import COMMAND, SCHEDULE
from nodes.planner.config import PlannerConfig
from nodes.planner.coverage import cover, hhmm
from nodes.planner.inputs import horizon, planned_soc_at
from nodes.planner.node import Planner
from nodes.runtime.config import load
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBus
from tests.support.autopilot_sim import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)
DELIVERY = Delivery(topic="t", retain=False, dup=False)
B = "battery-1"
SETTING = "BESS_PLANNER_PRICES_STALE_AFTER_H=6"


def at(hour: float) -> datetime:
    """T0's day at ``hour`` o'clock (UTC)."""
    return T0.replace(hour=0) + timedelta(hours=hour)


def prices(start: datetime, values: Sequence[float]) -> list[PriceSlot]:
    return [PriceSlot(start=start + i * H, end=start + (i + 1) * H, price_per_mwh=v) for i, v in enumerate(values)]


def forecast(*runs: list[PriceSlot]) -> PriceForecast:
    return PriceForecast(zone="de-lu", issued_at=T0, slots=[slot for run in runs for slot in run])


# dear first, then cheap, and paid to charge in the last hour: the battery is still moving when the prices end
# (each re-plan must end at or above the SOC it starts from, so a last hour that pays is a charging one)
FOUR_HOURS = prices(at(10), [900.0, 5.0, 5.0, -20.0])


class Loop:
    """The planner with the autopilot on, its clock and what it sent."""

    def __init__(self, start: datetime, **config: Any) -> None:
        self.clock = FakeClock(start)
        self.bus = MemoryBus("planner")
        self.planner = Planner(PlannerConfig(planner_autopilot=True, **config), self.bus, clock=self.clock)
        self.soc = 500.0
        #: (time, state, reason) of every pass
        self.states: list[tuple[datetime, str, str]] = []

    async def start(self, first: PriceForecast) -> None:
        await self.planner.on_prices({"zone": "de-lu"}, first, DELIVERY)
        await self.planner.on_spec({"battery": B}, SPEC, DELIVERY)

    async def publish_prices(self, fresh: PriceForecast) -> None:
        await self.planner.on_prices({"zone": "de-lu"}, fresh, DELIVERY)

    async def run_until(self, end: datetime) -> None:
        """Every pass the loop asks for in [now, end); the clock stops at ``end``."""
        passes = 0
        while self.clock.now < end:
            passes += 1
            assert passes < 10_000, "the loop spins"
            schedule = self.planner.batteries[B].schedule if B in self.planner.batteries else None
            planned = planned_soc_at(schedule, self.clock.now) if schedule is not None else None
            self.soc = planned if planned is not None else self.soc
            await self.planner.on_telemetry({"battery": B}, Telemetry(ts=self.clock.now, soc_kwh=self.soc), DELIVERY)
            wake_at = await self.planner.step()
            self.planner.wake.clear()
            self.states.append((self.clock.now, self.bus.state, self.bus.reason))
            self.clock.now = min(max(wake_at, self.clock.now), end)

    @property
    def schedules(self) -> list[Schedule]:
        return self.bus.sent(SCHEDULE)

    @property
    def commands(self) -> list[Command]:
        return self.bus.sent(COMMAND)


def changes(commands: Sequence[Command]) -> list[tuple[datetime, str]]:
    """When the setpoint changed (lease renewals, which repeat it, left out)."""
    found: list[tuple[datetime, str]] = []
    held: tuple[str, float] | None = None
    for command in commands:
        if (command.action, command.power_kw) != held:
            found.append((command.issued_at, command.action))
        held = (command.action, command.power_kw)
    return found


def _action(schedule: Schedule, moment: datetime) -> str:
    [slot] = [s for s in schedule.slots if s.start <= moment < s.end]
    return "discharge" if slot.discharge_kw > 0 else "charge" if slot.charge_kw > 0 else "idle"


# -- phase 1: a short horizon is degraded, and planned on -------------------------------------------------


async def test_a_short_horizon_is_degraded_but_planned_on_its_real_slots() -> None:
    loop = Loop(at(10) + timedelta(minutes=10))
    await loop.start(forecast(FOUR_HOURS))
    await loop.run_until(at(10.25))
    plan = loop.schedules[-1]
    assert (plan.slots[0].start, plan.slots[-1].end) == (at(10) + timedelta(minutes=10), at(14))
    assert loop.bus.state == "degraded"
    assert loop.bus.reason == (
        f"prices for zone de-lu known only until 2025-01-16T14:00Z, 3.8 h ahead ({SETTING}): planning on the "
        "known prices only, batteries idle from 2025-01-16T14:00Z unless new prices arrive")
    assert loop.bus.details == {B: f"plan {plan.plan_id} covers the known prices until 2025-01-16T14:00Z, then idle"}
    assert changes(loop.commands) == [(at(10) + timedelta(minutes=10), "discharge")]  # the autopilot follows it


async def test_a_gap_is_never_bridged_the_plan_ends_before_it_and_resumes_after_it() -> None:
    # before: the horizon held both runs, the optimiser refused non-contiguous slots and nothing was planned
    gap = forecast(prices(at(10), [900.0, -20.0]), prices(at(13), [5.0, 900.0] * 5))
    loop = Loop(at(10) + timedelta(minutes=10))
    await loop.start(gap)
    await loop.run_until(at(10.25))
    assert loop.schedules, loop.bus.details
    assert loop.schedules[-1].slots[-1].end == at(12)
    assert loop.bus.reason.startswith(
        "prices for zone de-lu known only until 2025-01-16T12:00Z, 1.8 h ahead, the next known price starts at "
        f"2025-01-16T13:00Z ({SETTING}): planning on the known prices only")
    await loop.run_until(at(13) + timedelta(seconds=30))
    assert not any(s.start < at(13) and s.end > at(12) for plan in loop.schedules for s in plan.slots)
    assert changes(loop.commands) == [(at(10) + timedelta(minutes=10), "discharge"), (at(11), "charge"),
                                      (at(12), "idle"), (at(13), "charge")]
    assert not [c for c in loop.commands if at(12) < c.issued_at < at(13)]  # one IDLE, then silence
    assert loop.schedules[-1].slots[0].start == at(13)  # the loop woke at the next known price and planned
    assert loop.bus.state == "online"  # 13:00..23:00 covers the next 6 h


# -- phase 2: the prices end: the plan runs out, one IDLE ----------------------------------------------------


async def test_when_the_prices_end_the_plan_runs_out_and_the_autopilot_sends_one_idle() -> None:
    loop = Loop(at(10) + timedelta(minutes=10))
    await loop.start(forecast(FOUR_HOURS))
    await loop.run_until(at(17))
    before = [c for c in loop.commands if c.issued_at < at(14)]
    after = [c for c in loop.commands if c.issued_at >= at(14)]
    assert changes(before)[-1] == (at(13), "charge")  # paid to charge in the last hour: moving to the end
    assert all(c.valid_until <= at(14) + timedelta(seconds=5) for c in before)  # no lease reaches past the prices
    [idle] = after
    assert (idle.action, idle.issued_at, idle.source) == ("idle", at(14), "planner")
    last = loop.schedules[-1]
    assert idle.text == f"plan {last.plan_id} ended at 2025-01-16T14:00Z: no prices after it"
    assert loop.bus.state == "degraded"
    assert loop.bus.reason == (f"no prices for zone de-lu after 2025-01-16T14:00Z ({SETTING}): nothing to plan on, "
                               "batteries idle until new prices arrive")
    assert loop.bus.details == {B: (
        f"plan {last.plan_id} ended at 2025-01-16T14:00Z with the known prices; no plan until new prices arrive; "
        f"autopilot: plan {last.plan_id} ended at 2025-01-16T14:00Z: sent IDLE at 2025-01-16T14:00Z; idle until "
        "a new plan")}
    assert loop.bus.counters["autopilot_plan_end_stops"] == 1
    assert all(plan.created_at < at(14) for plan in loop.schedules)  # nothing planned without prices


async def test_a_forecast_that_does_not_cover_now_holds_the_last_plan_then_idles_until_its_prices() -> None:
    loop = Loop(at(10) + timedelta(minutes=10), planner_prices_stale_after_h=2)
    await loop.start(forecast(prices(at(10), [900.0, 5.0, 5.0, 900.0, 5.0, -20.0])))  # to 16:00
    await loop.run_until(at(11.5))
    held = loop.schedules[-1]
    plans_before = len(loop.schedules)
    # a new forecast that starts later (e.g. only tomorrow's prices posted): nothing of it covers now
    await loop.publish_prices(forecast(prices(at(18), [900.0, 5.0] * 5)))
    await loop.run_until(at(11.5) + timedelta(seconds=2))
    assert loop.bus.state == "degraded"
    assert loop.bus.reason == (
        "no prices for zone de-lu covering now, the next known price starts at 2025-01-16T18:00Z "
        f"(BESS_PLANNER_PRICES_STALE_AFTER_H=2): holding plan {held.plan_id} until 2025-01-16T16:00Z, then idle "
        "until 2025-01-16T18:00Z")
    assert loop.bus.details[B] == f"holding plan {held.plan_id} until 2025-01-16T16:00Z, then idle until " \
                                  "2025-01-16T18:00Z"

    await loop.run_until(at(18) + timedelta(seconds=30))
    assert [p.created_at for p in loop.schedules[plans_before:]] == [at(18)], "no plan on the held prices"
    during = [c for c in loop.commands if at(11.5) <= c.issued_at < at(16)]
    assert during, "the held plan is followed"
    assert all(c.action == _action(held, c.issued_at) and c.plan_id == held.plan_id for c in during)
    [idle] = [c for c in loop.commands if at(16) <= c.issued_at < at(18)]
    assert (idle.action, idle.issued_at) == ("idle", at(16))
    resumed = loop.commands[-1]
    assert (resumed.issued_at, resumed.action, resumed.plan_id) == (at(18), "discharge", loop.schedules[-1].plan_id)
    assert loop.bus.state == "online"


# -- phase 3: fresh prices: re-planned at once, online ------------------------------------------------------


async def test_fresh_prices_are_planned_at_once_and_the_node_is_online_again() -> None:
    loop = Loop(at(10) + timedelta(minutes=10))
    await loop.start(forecast(FOUR_HOURS))
    await loop.run_until(at(15.5))
    assert changes(loop.commands)[-1] == (at(14), "idle")
    assert loop.bus.state == "degraded"
    await loop.publish_prices(forecast(prices(at(15), [900.0] + [5.0] * 23)))
    assert loop.planner.wake.is_set(), "a new forecast wakes the loop at once"
    await loop.run_until(at(15.5) + timedelta(milliseconds=1))  # one pass, at the moment the prices arrived
    plan = loop.schedules[-1]
    assert (plan.created_at, plan.slots[0].start, plan.slots[-1].end) == (at(15.5), at(15.5), at(15) + 24 * H)
    assert (loop.bus.state, loop.bus.reason, loop.bus.details) == ("online", "", {})
    command = loop.commands[-1]
    assert (command.action, command.issued_at, command.plan_id) == ("discharge", at(15.5), plan.plan_id)


async def test_prices_that_arrive_at_the_end_of_the_plan_replace_it_without_an_idle_in_between() -> None:
    loop = Loop(at(10) + timedelta(minutes=10))
    await loop.start(forecast(FOUR_HOURS))
    await loop.run_until(at(14))  # the clock stops at the plan's end, the pass there not yet run
    await loop.publish_prices(forecast(prices(at(14), [900.0] + [5.0] * 23)))
    await loop.run_until(at(14) + timedelta(seconds=1))
    assert [c.action for c in loop.commands if c.issued_at >= at(14)] == ["discharge"]
    assert loop.bus.state == "online"


async def test_the_loop_wakes_when_fresh_prices_turn_stale() -> None:
    loop = Loop(at(10) + timedelta(minutes=10), planner_prices_stale_after_h=5.9)
    await loop.start(forecast(prices(at(10), [50.0] * 10)))  # to 20:00: stale from 14:06
    await loop.run_until(at(14.5))
    stale_at = at(20) - timedelta(hours=5.9)
    assert stale_at == at(14.1)
    assert (stale_at, "degraded") in [(when, state) for when, state, _ in loop.states]
    assert all(state == "online" for when, state, _ in loop.states if when < stale_at)
    assert loop.planner.next_wake(at(14) + timedelta(minutes=1)) <= stale_at


# -- the pure rules ---------------------------------------------------------------------------------------


def test_the_horizon_is_the_unbroken_run_that_covers_now() -> None:
    gap = forecast(prices(at(10), [1.0, 2.0]), prices(at(13), [3.0]))
    assert [(s.start, s.end) for s in horizon(gap, at(10.5))] == [(at(10.5), at(11)), (at(11), at(12))]
    assert horizon(gap, at(12.5)) == []  # inside the gap: nothing covers now
    assert horizon(forecast(prices(at(18), [1.0])), at(10)) == []  # starts later
    state = cover(gap, "de-lu", at(12.5), timedelta(hours=6))
    assert (state.slots, state.known_until, state.next_start) == ([], None, at(13))
    assert state.problem == f"no prices for zone de-lu after 2025-01-16T12:00Z, the next known price starts at " \
                            f"2025-01-16T13:00Z ({SETTING})"
    fresh = cover(forecast(prices(at(10), [1.0] * 8)), "de-lu", at(10), timedelta(hours=6))
    assert (fresh.problem, fresh.stale_at) == (None, at(12))
    assert cover(None, "de-lu", at(10), timedelta(hours=6)).problem == "no price forecast for zone de-lu yet"
    assert hhmm(datetime(2025, 1, 16, 16, 0, 30, tzinfo=UTC)) == "2025-01-16T16:00:30Z"


def test_the_setting() -> None:
    assert PlannerConfig().planner_prices_stale_after_h == 6.0
    assert load(PlannerConfig, {"BESS_PLANNER_PRICES_STALE_AFTER_H": "3.5"}).prices_stale_after == timedelta(hours=3.5)
    for bad in ("0", "-1", "nan", "inf", "169"):
        problems = load(PlannerConfig, {"BESS_PLANNER_PRICES_STALE_AFTER_H": bad}).problems()
        assert any(p.startswith("BESS_PLANNER_PRICES_STALE_AFTER_H must be > 0") for p in problems), bad
