"""The planner's wiring on the in-memory bus: what arrives on its topics makes it publish schedules and commands.

Peers on one :class:`MemoryBroker` play the market (prices), the device (spec, telemetry, and the consumer of
commands), the gateway (control modes) and the recorder (the consumer of schedules); the planner gets exactly
what a broker would deliver, through its real subscriptions and the bus's receive rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import (
    BatterySpec,
    Command,
    ControlMode,
    PriceForecast,
    PriceSlot,
    ReplanRequest,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import COMMAND, CONTROL, PRICES, REPLAN_REQUEST, SCHEDULE, SPEC, STATUS, TELEMETRY
from nodes.planner.config import PlannerConfig
from nodes.planner.node import Planner
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250,
                      max_discharge_kw=250)


def forecast(first_price: float = 900.0) -> PriceForecast:
    # dear now, cheap later: the plan discharges in the first slot; 12 h of prices, more than the 6 h of
    # BESS_PLANNER_PRICES_STALE_AFTER_H, so they are fresh
    return PriceForecast(zone="de-lu", issued_at=T0, slots=[
        PriceSlot(start=T0 + i * H, end=T0 + (i + 1) * H, price_per_mwh=first_price if i == 0 else 5.0)
        for i in range(12)
    ])


class Rig:
    """A planner and its peers on one memory broker."""

    def __init__(self, **config: object) -> None:
        self.broker = MemoryBroker()
        self.clock = FakeClock(T0 + timedelta(minutes=10))
        self.bus = MemoryBus("planner", self.broker)
        self.planner = Planner(PlannerConfig(**config), self.bus, clock=self.clock)  # type: ignore[arg-type]
        self.market = MemoryBus("market", self.broker)
        self.device = MemoryBus("device", self.broker)
        self.gateway = MemoryBus("gateway", self.broker)
        self.recorder = MemoryBus("recorder", self.broker)
        self.schedules: list[Schedule] = []
        self.commands: list[Command] = []
        self.recorder.subscribe(SCHEDULE, self._on_schedule)
        self.device.subscribe(COMMAND, self._on_command, battery="b1")

    async def _on_schedule(self, params: dict[str, str], schedule: Schedule, delivery: Delivery) -> None:
        self.schedules.append(schedule)

    async def _on_command(self, params: dict[str, str], command: Command, delivery: Delivery) -> None:
        self.commands.append(command)

    async def start(self) -> None:
        """Prices, the battery's spec and a reading at SOC 900 kWh (all retained) before the planner starts."""
        await self.market.publish(PRICES, forecast(), zone="de-lu")
        await self.device.publish(SPEC, SPEC_B1, battery="b1")
        await self.device.publish(TELEMETRY, Telemetry(ts=self.clock.now, soc_kwh=900.0), battery="b1")
        await self.planner.setup()
        await self.broker.idle()

    async def step(self) -> None:
        await self.planner.step()
        await self.broker.idle()


async def test_retained_inputs_and_a_new_forecast_make_the_planner_publish_schedules() -> None:
    rig = Rig()
    await rig.start()
    await rig.step()
    [first] = rig.schedules
    assert first.zone == "de-lu"
    assert first.soc_initial_kwh == 900.0
    assert first.slots[0].discharge_kw > 0  # dear now: discharge
    assert rig.broker.retained_message(SCHEDULE, battery="b1") == first
    assert rig.commands == []  # the autopilot is off by default

    rig.clock.now += timedelta(seconds=5)
    await rig.market.publish(PRICES, forecast(first_price=1.0), zone="de-lu")  # now cheap: charge instead
    await rig.broker.idle()
    await rig.step()
    assert len(rig.schedules) == 2
    assert rig.schedules[-1].slots[0].charge_kw > 0


async def test_a_replan_request_plans_that_battery_again_and_an_unknown_one_is_ignored() -> None:
    rig = Rig()
    await rig.start()
    await rig.step()
    assert len(rig.schedules) == 1
    rig.clock.now += timedelta(seconds=5)
    await rig.step()
    assert len(rig.schedules) == 1, "nothing changed: no new plan without a request"
    hass = MemoryBus("hass", rig.broker)
    await hass.publish(REPLAN_REQUEST, ReplanRequest(reason="Home Assistant button"), battery="b1")
    await hass.publish(REPLAN_REQUEST, ReplanRequest(), battery="nope")
    await rig.broker.idle()
    await rig.step()
    assert len(rig.schedules) == 2
    assert rig.schedules[-1].created_at == rig.clock.now
    assert rig.bus.counters["replan_requests"] == 1
    assert rig.bus.counters["replan_requests_ignored"] == 1
    assert "nope" not in rig.planner.batteries


async def test_prices_of_another_zone_do_not_reach_the_planner() -> None:
    rig = Rig()
    await rig.start()
    await rig.market.publish(PRICES, PriceForecast(zone="fr", issued_at=T0, slots=forecast(1.0).slots), zone="fr")
    await rig.broker.idle()
    assert rig.planner.forecast is not None
    assert rig.planner.forecast.zone == "de-lu"


async def test_the_autopilot_commands_the_device_and_a_manual_control_mode_pauses_it() -> None:
    rig = Rig(planner_autopilot=True)
    await rig.start()
    await rig.step()
    [first] = rig.commands
    assert (first.action, first.source) == ("discharge", "planner")

    # an operator command through the gateway: manual for five minutes
    until = rig.clock.now + timedelta(minutes=5)
    await rig.gateway.publish(CONTROL, ControlMode(mode="manual", set_at=rig.clock.now, until=until,
                                                   source="gateway", reason="operator command"), battery="b1")
    await rig.broker.idle()
    for minutes in (1, 3, 4.9):  # including the moment the first lease would be renewed
        rig.clock.now = until - timedelta(minutes=5) + timedelta(minutes=minutes)
        await rig.step()
    assert rig.commands == [first], "no planner command while the manual mode holds"

    rig.clock.now = until
    await rig.step()
    assert len(rig.commands) == 2
    assert rig.commands[-1].issued_at == until


async def test_a_rejected_spec_is_a_note_in_the_published_status() -> None:
    rig = Rig()
    await rig.start()
    await rig.bus.start()
    # a spec the contract refuses (negative capacity): the bus drops it and tells the planner
    await rig.device.publish_bytes(rig.device.name(SPEC, battery="b1"), b'{"capacity_kwh": -1}', retain=True)
    await rig.broker.idle()
    await rig.step()
    status = rig.broker.retained_message(STATUS, node="planner")
    assert status is not None
    assert status.state == "online"
    assert status.details["b1"].startswith("not planned: spec for b1 rejected:")
    assert status.counters["decode_errors"] == 1
    assert status.counters["bad_specs"] == 1
    assert rig.schedules == []
