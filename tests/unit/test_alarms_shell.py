"""The alarms node's wiring on the in-memory bus, on a fake clock: inputs from their topics raise and clear
retained alarms at the exact instants the rules say, the node wakes when a rule is due (no polling), and a
restart takes its book from the retained alarms."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.alarms.config import AlarmsConfig
from nodes.alarms.node import Alarms
from nodes.contract.messages import (
    Alarm,
    BatterySpec,
    Command,
    NodeStatus,
    PriceForecast,
    PriceSlot,
    Telemetry,
)
from nodes.contract.topics import ALARM, COMMAND, PRICES, SPEC, STATUS, TELEMETRY
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.autopilot_sim import FakeClock
from tests.support.waiting import wait_for_async

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(seconds: float, **fields: Any) -> Telemetry:
    values: dict[str, Any] = {"soc_kwh": 500.0, "power_kw": 0.0, "cell_temp_min_c": 22.0, "cell_temp_max_c": 26.0,
                              "cell_voltage_min_v": 3.28, "cell_voltage_max_v": 3.31, "bms_alarms": []}
    return Telemetry(ts=at(seconds), **(values | fields))


class Rig:
    """An alarms node and its peers (a device, the market, a watcher of the alarm topics) on one memory broker."""

    def __init__(self, *, batteries: tuple[str, ...] = ("b1",), alarms: dict[str, Any] | None = None,
                 broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self.clock = FakeClock(T0)
        config = AlarmsConfig(batteries=list(batteries), alarms=None if alarms is None else json.dumps(alarms),
                              alarms_restore_wait_s=0)
        self.node = Alarms(config, MemoryBus("alarms", self.broker), clock=self.clock)
        self.device = MemoryBus("device", self.broker)
        self.watcher = MemoryBus("watcher", self.broker)
        self.seen: list[tuple[str, Alarm, bool]] = []
        self.watcher.subscribe(ALARM, self._on_alarm)

    async def _on_alarm(self, params: dict[str, str], alarm: Alarm, delivery: Delivery) -> None:
        self.seen.append((params["battery"], alarm, delivery.retain))

    def published(self) -> list[tuple[str, str, float]]:
        """(rule, state, seconds after T0 of ``since``) of what the node published, in order."""
        return [(a.rule, a.state, (a.since - T0).total_seconds()) for a in self.node.bus.sent(ALARM)]

    async def start(self, *, with_prices: bool = True, begin: bool = True) -> None:
        """Spec and a healthy reading (retained), prices for a day, then the node subscribes and begins."""
        if with_prices:
            market = MemoryBus("market", self.broker)
            await market.publish(PRICES, PriceForecast(zone="de-lu", issued_at=T0, slots=[
                PriceSlot(start=T0, end=T0 + timedelta(days=1), price_per_mwh=50.0)]), zone="de-lu")
        await self.device.publish(SPEC, SPEC_B1, battery="b1")
        await self.device.publish(TELEMETRY, reading(0), battery="b1")
        await self.node.setup()
        await self.broker.idle()
        if begin:
            await self.node.begin()
            await self.broker.idle()

    async def send(self, seconds: float, **fields: Any) -> None:
        """The clock moves to T0 + ``seconds`` and the device reports."""
        self.clock.now = at(seconds)
        await self.device.publish(TELEMETRY, reading(seconds, **fields), battery="b1")
        await self.broker.idle()

    async def tick(self, seconds: float) -> None:
        """The clock moves to T0 + ``seconds``; the node judges what is due (what its run loop does then)."""
        self.clock.now = at(seconds)
        await self.node.judge_due()
        await self.broker.idle()


async def test_a_hot_cell_is_raised_after_its_delay_and_cleared_after_its_own_retained() -> None:
    rig = Rig()
    await rig.start()
    assert rig.published() == [], "a healthy battery has no alarm"
    await rig.send(1, cell_temp_max_c=58.0)
    assert rig.published() == [], "the rule waits raise_after_s (10 s) before raising"
    assert rig.node.next_due() == at(11), "and the node knows exactly when to look again"
    await rig.tick(10.9)
    assert rig.published() == []
    await rig.tick(11)
    assert rig.published() == [("cell_temp_high", "raised", 11)]
    raised = rig.broker.retained_message(ALARM, battery="b1", rule="cell_temp_high")
    assert raised is not None
    assert (raised.state, raised.severity, raised.value, raised.threshold, raised.unit) == (
        "raised", "critical", 58.0, 55.0, "°C")
    assert raised.message == "max cell temperature 58.0 °C above 55 °C"
    await rig.send(20, cell_temp_max_c=52.0)  # between 50 and 55: hold, no clearing yet
    await rig.send(30, cell_temp_max_c=45.0)  # below 50: the clear delay (60 s) starts
    assert rig.node.next_due() == at(90)
    await rig.send(60, cell_temp_max_c=44.0)
    await rig.tick(89.9)
    assert rig.published() == [("cell_temp_high", "raised", 11)]
    await rig.tick(90)
    assert rig.published() == [("cell_temp_high", "raised", 11), ("cell_temp_high", "cleared", 90)]
    cleared = rig.broker.retained_message(ALARM, battery="b1", rule="cell_temp_high")
    assert cleared is not None
    assert (cleared.state, cleared.raised_at) == ("cleared", at(11)), "the cleared message replaces the raised one"
    assert rig.node.bus.counters["alarms_raised"] == rig.node.bus.counters["alarms_cleared"] == 1
    assert rig.node.active_count() == 0


async def test_nothing_is_judged_before_the_retained_alarms_had_their_chance() -> None:
    rig = Rig(alarms={"defaults": {"cell_temp_high": {"raise_after_s": 0}}})
    await rig.start(begin=False)
    await rig.send(1, cell_temp_max_c=70.0)
    assert rig.published() == []
    await rig.node.begin()
    await rig.broker.idle()
    assert rig.published() == [("cell_temp_high", "raised", 1)]


async def test_a_restart_neither_raises_again_nor_forgets_a_raised_alarm() -> None:
    broker = MemoryBroker()
    before = Rig(broker=broker, alarms={"defaults": {"cell_temp_high": {"raise_after_s": 0, "clear_after_s": 5}}})
    await before.start()
    await before.send(1, cell_temp_max_c=70.0)
    assert before.published() == [("cell_temp_high", "raised", 1)]
    await before.node.bus.stop()  # the old process is gone; its retained alarm stays at the broker

    after = Rig(broker=broker, alarms={"defaults": {"cell_temp_high": {"raise_after_s": 0, "clear_after_s": 5}}})
    after.clock.now = at(30)
    await after.device.publish(TELEMETRY, reading(30, cell_temp_max_c=70.0), battery="b1")
    await after.node.setup()
    await broker.idle()
    await after.node.begin()
    await broker.idle()
    assert after.published() == [], "still hot: the restored alarm stands, it is not raised a second time"
    assert after.node.watches["b1"].book["cell_temp_high"].raised_at == at(1)
    await after.send(40, cell_temp_max_c=30.0)
    await after.tick(45)
    assert after.published() == [("cell_temp_high", "cleared", 45)]
    cleared = broker.retained_message(ALARM, battery="b1", rule="cell_temp_high")
    assert cleared is not None
    assert cleared.raised_at == at(1), "the clear names the raise of the previous run"


async def test_a_retained_alarm_of_a_rule_now_disabled_is_cleared_at_start() -> None:
    broker = MemoryBroker()
    old = MemoryBus("alarms-before", broker)
    await old.publish(ALARM, Alarm(rule="bms_alarm", state="raised", since=at(-100), severity="warning",
                                   message="BMS reports OVT"), battery="b1", rule="bms_alarm")
    rig = Rig(broker=broker, alarms={"defaults": {"bms_alarm": {"enabled": False}}})
    await rig.start()
    assert rig.published() == [("bms_alarm", "cleared", 0)]
    alarm = broker.retained_message(ALARM, battery="b1", rule="bms_alarm")
    assert alarm is not None
    assert "disabled" in alarm.message


async def test_a_command_not_followed_is_raised_naming_the_command() -> None:
    rig = Rig()
    await rig.start()
    gateway = MemoryBus("gateway", rig.broker)
    command = Command(command_id="c-42", action="discharge", power_kw=100, issued_at=at(1), valid_until=at(600),
                      source="gateway")
    rig.clock.now = at(1)
    await gateway.publish(COMMAND, command, battery="b1")
    await rig.broker.idle()
    await rig.send(2, power_kw=0.0)  # the battery does not move
    await rig.tick(61.9)
    assert rig.published() == []
    await rig.tick(62)
    assert rig.published() == [("command_not_followed", "raised", 62)]
    (alarm,) = rig.node.bus.sent(ALARM)
    assert "c-42" in alarm.message
    await rig.send(70, power_kw=100.0)
    await rig.tick(100)
    assert rig.published()[-1] == ("command_not_followed", "cleared", 100)


async def test_node_statuses_raise_for_every_battery_and_the_planner_note_is_a_plan_alarm() -> None:
    rig = Rig(batteries=("b1", "b2"))
    await rig.start()
    peer = MemoryBus("peer", rig.broker)
    rig.clock.now = at(5)
    await peer.publish(STATUS, NodeStatus(node="recorder", state="offline", since=at(5)), node="recorder")
    await peer.publish(STATUS, NodeStatus(node="planner", state="online", details={
        "b1": "not planned: infeasible: SOC limits leave no room",
        "b2": "not planned: no telemetry received",
    }), node="planner")
    await peer.publish(STATUS, NodeStatus(node="alarms", state="offline"), node="alarms")  # its own: not judged
    await rig.broker.idle()
    plan = [(b, a) for b, a, _ in rig.seen if a.rule == "plan_infeasible"]
    assert [b for b, _ in plan] == ["b1"], (
        "raised at once; a note about telemetry is the stale telemetry alarm's business, not a plan alarm")
    assert plan[0][1].message == "planner: not planned: infeasible: SOC limits leave no room"
    await rig.tick(35)
    offline = [(b, a) for b, a, _ in rig.seen if a.rule == "node_offline"]
    assert [(b, a.state) for b, a in offline] == [("b1", "raised"), ("b2", "raised")]
    assert offline[0][1].message == "offline: recorder (since 2025-01-16T10:00:05Z)", "not the alarms node itself"


async def test_a_battery_that_never_reports_is_stale_a_while_after_the_start_and_no_prices_are_an_alarm() -> None:
    rig = Rig(batteries=("b1", "quiet"))
    await rig.start(with_prices=False)
    assert rig.seen == [], "a device that has not reported yet may report in a moment: not stale at once"
    assert rig.node.next_due() == at(60), "when the missing prices have lasted their 60 s"
    await rig.send(60)  # b1 keeps reporting (judged on its reading); quiet is judged when due
    await rig.tick(60)
    assert {(b, a.rule) for b, a, _ in rig.seen} == {("b1", "prices_stale"), ("quiet", "prices_stale")}
    assert rig.seen[-1][1].message == "no price forecast received"
    await rig.tick(60.000001)
    assert [(b, a.rule) for b, a, _ in rig.seen[2:]] == [("quiet", "telemetry_stale")]
    assert rig.seen[-1][1].message == "no telemetry received since 2025-01-16T10:00:00Z (limit 60 s)"


async def test_the_run_loop_wakes_when_a_rule_is_due_without_new_input() -> None:
    """Real time: the hot reading is judged at once, and the raise 0.3 s later comes from the run loop's own
    wake-up (no further input arrives)."""
    broker = MemoryBroker()
    config = AlarmsConfig(batteries=["b1"], alarms_restore_wait_s=0,
                          alarms=json.dumps({"defaults": {"cell_temp_high": {"raise_after_s": 0.3},
                                                          "prices_stale": {"enabled": False}}}))
    node = Alarms(config, MemoryBus("alarms", broker))
    device = MemoryBus("device", broker)
    await node.setup()
    runner = asyncio.create_task(node.run())
    try:
        await wait_for_async(lambda: node.judging, 5, what="the node to begin")
        now = datetime.now(UTC)
        await device.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=500, power_kw=0, cell_temp_max_c=61.0),
                             battery="b1")
        await broker.idle()
        def hot() -> list[Alarm]:
            return [a for a in node.bus.sent(ALARM) if a.rule == "cell_temp_high"]

        assert hot() == []
        await wait_for_async(hot, 5, what="the raise from the run loop's wake-up")
        (alarm,) = hot()
        assert (alarm.since - now).total_seconds() >= 0.3
    finally:
        runner.cancel()


def test_bad_alarm_settings_stop_the_node_naming_the_field() -> None:
    config = AlarmsConfig(batteries=["b1"], alarms='{"batteries": {"b9": {}}}')
    assert config.problems() == ["BESS_ALARMS: batteries.b9: not a configured battery (BESS_BATTERIES: b1)"]
    assert AlarmsConfig(alarms_zone="DE").problems()[0].startswith("BESS_ALARMS_ZONE 'DE' is not a valid id")


async def test_a_node_removed_for_good_is_no_longer_watched_and_its_offline_alarm_clears() -> None:
    """deploy/up clears the retained status of a node it stops for good (the bridge without its profile)."""
    rig = Rig()
    await rig.start()
    peer = MemoryBus("peer", rig.broker)
    rig.clock.now = at(5)
    await peer.publish(STATUS, NodeStatus(node="recorder", state="online", since=at(5)), node="recorder")
    await peer.publish(STATUS, NodeStatus(node="bridge", state="offline", since=at(5)), node="bridge")
    await rig.broker.idle()
    await rig.tick(40)
    assert [(a.rule, a.state) for _, a, _ in rig.seen if a.rule == "node_offline"] == [("node_offline", "raised")]
    await peer.publish_bytes(peer.name(STATUS, node="bridge"), b"", retain=True)
    await rig.broker.idle()
    await rig.tick(60)
    states = [a.state for _, a, _ in rig.seen if a.rule == "node_offline"]
    assert states == ["raised", "cleared"], states
    assert "bridge" not in rig.node.nodes


async def test_a_status_that_only_updates_counters_judges_nothing_again_and_a_new_state_does() -> None:
    """Every node republishes its status every BESS_STATUS_INTERVAL_S with fresh counters: with 1,000 batteries
    re-judging all of them for each of those cost most of the node's CPU (bench/soak.py)."""
    rig = Rig(batteries=tuple(f"b{i}" for i in range(1, 51)))
    await rig.start()
    peer = MemoryBus("peer", rig.broker)
    await peer.publish(STATUS, NodeStatus(node="recorder", state="online", counters={"stored": 1}), node="recorder")
    await rig.broker.idle()
    judged = rig.node.bus.counters["evaluations"]
    for stored in range(2, 12):
        await peer.publish(STATUS, NodeStatus(node="recorder", state="online", counters={"stored": stored}),
                           node="recorder")
    await rig.broker.idle()
    assert rig.node.bus.counters["evaluations"] == judged
    assert rig.node.nodes["recorder"].counters == {"stored": 11}  # kept all the same
    await peer.publish(STATUS, NodeStatus(node="recorder", state="degraded", reason="store unavailable"),
                       node="recorder")
    await rig.broker.idle()
    assert rig.node.bus.counters["evaluations"] == judged + 50  # every battery judged on the change
