"""The planner node's decisions on an in-memory bus with a fake clock: control precedence (manual pauses the
autopilot, expiry resumes it at once), per-battery notes instead of a degraded node, rejected specs, and which
telemetry the planner trusts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from nodes.contract.messages import (
    BatterySpec,
    ControlMode,
    NodeStatus,
    PriceForecast,
    PriceSlot,
    Telemetry,
)
from nodes.contract.topics import COMMAND, SCHEDULE
from nodes.planner import policy
from nodes.planner.config import PlannerConfig
from nodes.planner.node import MAX_DETAILS, Planner
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBus
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)
DELIVERY = Delivery(topic="t", retain=False, dup=False)
B = {"battery": "battery-1"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def forecast(start: datetime = T0, hours: int = 24) -> PriceForecast:
    # dear now, cheap later: the plan discharges in the first slot; a day of prices, so they are not stale
    return PriceForecast(
        zone="de-lu",
        issued_at=start,
        slots=[PriceSlot(start=start + i * H, end=start + (i + 1) * H, price_per_mwh=900.0 if i == 0 else 5.0)
               for i in range(hours)],
    )


def make_planner(clock: Clock, **config: Any) -> tuple[Planner, MemoryBus]:
    bus = MemoryBus("planner")
    return Planner(PlannerConfig(planner_autopilot=True, **config), bus, clock=clock), bus


async def ready(planner: Planner, clock: Clock, battery: str = "battery-1", soc: float = 900.0) -> None:
    """Prices, a spec and a device reading for ``battery``, then one planning pass."""
    await planner.on_prices({"zone": "de-lu"}, forecast(), DELIVERY)
    await planner.on_spec({"battery": battery}, SPEC, DELIVERY)
    await planner.on_telemetry({"battery": battery}, Telemetry(ts=clock.now, soc_kwh=soc), DELIVERY)
    assert await planner.plan_battery(battery, clock.now) is not None


# -- control precedence -----------------------------------------------------------------------------------


async def test_manual_mode_pauses_the_autopilot_and_its_end_resumes_it_at_once() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    await planner.autopilot("battery-1", clock.now)
    [first] = bus.sent(COMMAND)
    assert (first.action, first.source) == ("discharge", "planner")

    # an operator command through the gateway: manual until its lease ends
    until = clock.now + timedelta(minutes=5)
    manual = ControlMode(mode="manual", set_at=clock.now, until=until, source="gateway",
                         reason="operator command c-1 (DISCHARGE 50kW)")
    await planner.on_control(B, manual, DELIVERY)
    for minutes in (0, 1, 3, 4.9):  # including the moment the first lease would be renewed
        clock.now = T0 + timedelta(minutes=10 + minutes)
        await planner.autopilot("battery-1", clock.now)
    assert bus.sent(COMMAND) == [first], "no planner command while the operator's lease runs"
    # the planner keeps planning: the schedule stays visible
    assert await planner.plan_battery("battery-1", clock.now) is not None
    assert len(bus.sent(SCHEDULE)) == 2
    # the loop wakes when the manual mode ends, not at the next slot boundary
    assert planner.next_wake(clock.now) == until

    clock.now = until
    await planner.autopilot("battery-1", clock.now)
    resumed = bus.sent(COMMAND)[-1]
    assert resumed is not first
    assert (resumed.action, resumed.issued_at) == ("discharge", until)


async def test_control_autopilot_commands_even_when_the_default_is_off() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock, planner_autopilot_off=["battery-1"])
    await ready(planner, clock)
    await planner.autopilot("battery-1", clock.now)
    assert bus.sent(COMMAND) == []
    await planner.on_control(B, ControlMode(mode="autopilot", set_at=clock.now), DELIVERY)
    await planner.autopilot("battery-1", clock.now)
    assert [c.action for c in bus.sent(COMMAND)] == ["discharge"]


@pytest.mark.parametrize("mode", ["manual", "idle"])
async def test_manual_or_idle_without_end_holds_the_autopilot(mode: str) -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    await planner.on_control(B, ControlMode(mode=mode, set_at=clock.now), DELIVERY)  # type: ignore[arg-type]
    for hours in (0, 1, 2):
        clock.now = T0 + timedelta(minutes=10) + hours * H
        await planner.autopilot("battery-1", clock.now)
    assert bus.sent(COMMAND) == []


async def test_an_expired_control_mode_is_the_default() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    old = ControlMode(mode="manual", set_at=T0 - H, until=T0 - timedelta(minutes=1))  # retained, already over
    await planner.on_control(B, old, DELIVERY)
    await planner.autopilot("battery-1", clock.now)
    assert len(bus.sent(COMMAND)) == 1


# -- per-battery notes, not a degraded node --------------------------------------------------------------


async def test_a_battery_with_only_http_writes_is_monitored_not_planned_and_the_node_stays_online() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    await planner.on_telemetry({"battery": "my-bat"}, Telemetry(ts=clock.now, soc_kwh=500, source="gateway"),
                               DELIVERY)
    assert await planner.plan_battery("my-bat", clock.now) is None
    assert (bus.state, bus.reason) == ("online", "")
    assert bus.details == {"my-bat": "monitored, not planned: no spec received"}
    assert bus.counters["batteries_not_planned"] == 1
    # the other battery is still planned and commanded
    assert await planner.plan_battery("battery-1", clock.now) is not None
    await planner.autopilot("battery-1", clock.now)
    assert len(bus.sent(COMMAND)) == 1


async def test_no_prices_is_a_node_wide_problem() -> None:
    clock = Clock(T0)
    planner, bus = make_planner(clock)
    await planner.on_spec(B, SPEC, DELIVERY)
    await planner.on_telemetry(B, Telemetry(ts=clock.now, soc_kwh=500), DELIVERY)
    assert await planner.plan_battery("battery-1", clock.now) is None
    assert (bus.state, bus.reason) == ("degraded", "no price forecast for zone de-lu yet")
    assert bus.details == {}
    await planner.on_prices({"zone": "de-lu"}, forecast(T0 - 10 * H, hours=6), DELIVERY)  # ended hours ago
    await planner.plan_battery("battery-1", clock.now)
    assert bus.state == "degraded"
    assert bus.reason.startswith("no prices for zone de-lu after 2025-01-16T06:00Z")


async def test_a_fleet_of_2000_unplanned_batteries_keeps_the_status_small() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await planner.on_prices({"zone": "de-lu"}, forecast(), DELIVERY)
    for n in range(2000):
        name = f"written-only-battery-{n:04d}"
        await planner.on_telemetry({"battery": name}, Telemetry(ts=clock.now, soc_kwh=1, source="gateway"),
                                   DELIVERY)
        await planner.plan_battery(name, clock.now)
    assert bus.state == "online"
    assert len(bus.details) == MAX_DETAILS + 1
    assert "1950 more batteries" in bus.details[policy.MORE_KEY]
    assert bus.counters["batteries_not_planned"] == 2000
    encoded = msgspec.json.encode(bus.status())
    assert len(encoded) < 6000
    msgspec.json.decode(encoded, type=NodeStatus)  # within the contract's bounds


# -- rejected specs ---------------------------------------------------------------------------------------


async def test_a_rejected_spec_says_what_is_wrong_and_a_valid_one_recovers() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    await planner.autopilot("battery-1", clock.now)
    assert len(bus.sent(COMMAND)) == 1
    bad = msgspec.structs.replace(SPEC, soc_min_kwh=900, soc_max_kwh=200)
    await planner.on_spec(B, bad, DELIVERY)
    assert await planner.plan_battery("battery-1", clock.now) is None
    assert bus.details == {
        "battery-1": "not planned: spec for battery-1 rejected: soc_min_kwh is above soc_max_kwh"
    }
    assert bus.state == "online"
    clock.now += timedelta(minutes=3)  # past the first lease's renewal point: still no command from a bad spec
    await planner.autopilot("battery-1", clock.now)
    assert len(bus.sent(COMMAND)) == 1

    await planner.on_spec(B, SPEC, DELIVERY)
    assert await planner.plan_battery("battery-1", clock.now) is not None
    assert bus.details == {}
    await planner.autopilot("battery-1", clock.now)
    assert len(bus.sent(COMMAND)) == 2


async def test_an_undecodable_spec_is_reported_with_the_decode_error() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock)
    await planner.on_invalid_spec(B, "Expected `float` >= 0.0 - at `$.soc_min_kwh`")
    await planner.plan_battery("battery-1", clock.now)
    assert bus.details["battery-1"] == (
        "not planned: spec for battery-1 rejected: Expected `float` >= 0.0 - at `$.soc_min_kwh`"
    )


# -- trusted telemetry ------------------------------------------------------------------------------------


async def test_an_http_write_cannot_steer_a_battery_with_its_own_feed() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, bus = make_planner(clock)
    await ready(planner, clock, soc=200.0)
    planner.dirty.clear()
    # POST /write {"SOC": 950} timestamped now: the gateway marks it source "gateway"
    await planner.on_telemetry(B, Telemetry(ts=clock.now, soc_kwh=950.0, source="gateway"), DELIVERY)
    assert planner.dirty == set(), "no re-plan from an HTTP write"
    telemetry = planner.telemetry_of(planner.batteries["battery-1"], clock.now)
    assert telemetry is not None
    assert telemetry.soc_kwh == 200.0
    assert bus.counters["telemetry_ignored"] == 1
    schedule = await planner.plan_battery("battery-1", clock.now)
    assert schedule is not None
    assert schedule.soc_initial_kwh == 200.0


async def test_http_writes_count_for_a_battery_without_a_live_device_feed() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    planner, _ = make_planner(clock)
    await planner.on_prices({"zone": "de-lu"}, forecast(), DELIVERY)
    await planner.on_spec(B, SPEC, DELIVERY)
    # no device ever: the HTTP writes are the battery's telemetry
    await planner.on_telemetry(B, Telemetry(ts=clock.now, soc_kwh=600.0, source="gateway"), DELIVERY)
    # a backfill of an old record does not replace the newer one
    await planner.on_telemetry(B, Telemetry(ts=T0 - 24 * H, soc_kwh=100.0, source="gateway"), DELIVERY)
    schedule = await planner.plan_battery("battery-1", clock.now)
    assert schedule is not None
    assert schedule.soc_initial_kwh == 600.0
    # a device that went silent longer than the window no longer outranks HTTP writes
    await planner.on_telemetry({"battery": "b2"}, Telemetry(ts=clock.now - timedelta(minutes=11), soc_kwh=300),
                               DELIVERY)
    await planner.on_telemetry({"battery": "b2"}, Telemetry(ts=clock.now, soc_kwh=400, source="gateway"), DELIVERY)
    telemetry = planner.telemetry_of(planner.batteries["b2"], clock.now)
    assert telemetry is not None
    assert telemetry.soc_kwh == 400


def test_policy_trusted_telemetry_rules() -> None:
    window = timedelta(minutes=10)
    device = Telemetry(ts=T0, soc_kwh=1)
    http = Telemetry(ts=T0 + timedelta(minutes=1), soc_kwh=2, source="gateway")
    assert policy.trusted_telemetry(device, http, T0 + timedelta(minutes=5), window) is device
    assert policy.trusted_telemetry(device, http, T0 + timedelta(minutes=11), window) is http
    assert policy.trusted_telemetry(None, http, T0, window) is http
    assert policy.trusted_telemetry(device, None, T0 + 2 * H, window) is device


async def test_node_main_loop_wakes_for_the_control_end() -> None:
    """The real loop with the real clock: a manual mode ending 0.3 s from now is acted on within a second."""
    planner, bus = make_planner(Clock(T0))
    planner.clock = lambda: datetime.now(UTC)
    now = datetime.now(UTC)
    await planner.on_prices({"zone": "de-lu"}, forecast(now.replace(minute=0, second=0, microsecond=0)), DELIVERY)
    await planner.on_spec(B, SPEC, DELIVERY)
    await planner.on_control(B, ControlMode(mode="manual", set_at=now, until=now + timedelta(seconds=0.3)),
                             DELIVERY)
    await planner.on_telemetry(B, Telemetry(ts=now, soc_kwh=900.0), DELIVERY)
    loop = asyncio.create_task(planner.run())
    try:
        await wait_for_async(lambda: bus.sent(COMMAND), timeout=10,
                             what="the autopilot to resume when the manual mode ends")
    finally:
        loop.cancel()
    assert bus.sent(COMMAND)[0].issued_at >= now + timedelta(seconds=0.3)
