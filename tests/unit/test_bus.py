"""The bus's own rules on the in-memory transport (and the MQTT one where no broker is needed): one handler per
topic, typed request/response declared in the contract, retained messages, shared and no-local subscriptions,
status, and the receive rules every transport shares."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import (
    BatterySpec,
    HistoryQuery,
    HistoryResult,
    NodeStatus,
    StoredReceipt,
    Telemetry,
)
from nodes.contract.topics import (
    HISTORY,
    HISTORY_REQUEST,
    HISTORY_RESPONSE,
    SPEC,
    STATUS,
    STORED_RESPONSE,
    TELEMETRY,
    Request,
    TopicError,
)
from nodes.runtime import gmqtt_internals as internals
from nodes.runtime.bus import Bus, MqttSettings
from nodes.runtime.dispatch import Delivery, filters_overlap
from nodes.runtime.errors import BusUnavailable, SubscriptionOverlap
from nodes.runtime.memory import MemoryBroker, MemoryBus, topic_matches
from tests.support.waiting import wait_for_async

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
QUERY = HistoryQuery(kind="telemetry", battery="b1", begin=T0, end=T0 + timedelta(hours=1))


class Inbox:
    """A handler that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], Any, Delivery]] = []

    async def __call__(self, params: dict[str, str], message: Any, delivery: Delivery) -> None:
        self.got.append((params, message, delivery))

    @property
    def messages(self) -> list[Any]:
        return [m for _, m, _ in self.got]


# -- one handler per topic --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: MemoryBus("planner"), lambda: Bus("planner", MqttSettings())],
                         ids=["memory", "mqtt"])
async def test_a_second_subscription_that_could_match_the_same_topic_is_refused(make: Any) -> None:
    bus = make()
    bus.subscribe(TELEMETRY, Inbox(), battery="b1")
    bus.subscribe(TELEMETRY, Inbox(), battery="b2")  # other names: fine
    bus.subscribe(SPEC, Inbox())  # another topic: fine
    with pytest.raises(SubscriptionOverlap, match=r"battery/\+/telemetry overlaps .*battery/b1/telemetry"):
        bus.subscribe(TELEMETRY, Inbox())
    with pytest.raises(SubscriptionOverlap):
        bus.subscribe(TELEMETRY, Inbox(), battery="b1")  # the same subscription twice
    with pytest.raises(SubscriptionOverlap):
        bus.subscribe(SPEC, Inbox(), share_group="planners")  # shared or not, the same names
    # the refused ones left nothing behind: a reading still reaches its one handler
    assert len(bus._router.subscriptions) == 3


def test_filter_overlap() -> None:
    assert filters_overlap("r/battery/+/telemetry", "r/battery/b1/telemetry")
    assert filters_overlap("r/battery/+/telemetry", "r/battery/+/telemetry")
    assert filters_overlap("r/#", "r/battery/b1/telemetry")
    assert not filters_overlap("r/battery/b1/telemetry", "r/battery/b2/telemetry")
    assert not filters_overlap("r/battery/+/telemetry", "r/battery/+/figure/+")
    assert not filters_overlap("r/battery/+/stored", "r/stored/+")
    assert topic_matches("r/battery/+/telemetry", "r/battery/b1/telemetry")
    assert topic_matches("r/#", "r/battery/b1/telemetry")
    assert not topic_matches("r/battery/+/telemetry", "r/battery/b1/spec")
    assert not topic_matches("+/x", "$SYS/x")


# -- request / response ----------------------------------------------------------------------------------------


async def test_a_request_declared_in_the_contract_returns_its_typed_answer() -> None:
    broker = MemoryBroker()
    recorder, renderer = MemoryBus("recorder", broker), MemoryBus("renderer", broker)
    asked: list[tuple[HistoryQuery, Delivery]] = []

    async def answer(params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        asked.append((query, delivery))
        return HistoryResult(ok=True, columns=["time"], rows=[["2025-01-16T10:00:00Z"]])

    recorder.serve(HISTORY, answer)
    result = await renderer.request(HISTORY, QUERY, timeout=1)
    assert result == HistoryResult(ok=True, columns=["time"], rows=[["2025-01-16T10:00:00Z"]])
    assert result.rows == [["2025-01-16T10:00:00Z"]]  # typed: a HistoryResult, no cast at the caller
    [(query, delivery)] = asked
    assert query == QUERY
    assert delivery.response_topic == "bess/v1/history/response/renderer"
    assert delivery.correlation_data
    [sent] = [s for s in recorder.published if s.topic == delivery.response_topic]
    assert sent.properties == {"correlation_data": delivery.correlation_data}  # echoed


async def test_concurrent_requests_get_their_own_answers() -> None:
    broker = MemoryBroker()
    recorder, gateway = MemoryBus("recorder", broker), MemoryBus("gateway", broker)

    async def answer(params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        await asyncio.sleep(0.01 * (10 - query.limit))  # later questions answered first
        return HistoryResult(ok=True, columns=["limit"], rows=[[query.limit]])

    recorder.serve(HISTORY, answer)
    results = await asyncio.gather(
        *(gateway.request(HISTORY, HistoryQuery(kind="telemetry", begin=T0, end=T0, limit=n), timeout=2)
          for n in range(1, 6))
    )
    assert [r.rows for r in results] == [[[n]] for n in range(1, 6)]


async def test_no_answer_is_a_timeout_and_a_broker_down_is_unavailable() -> None:
    bus = MemoryBus("gateway")
    with pytest.raises(TimeoutError):
        await bus.request(HISTORY, QUERY, timeout=0.05)
    bus.disconnect()
    with pytest.raises(BusUnavailable):
        await bus.request(HISTORY, QUERY, timeout=0.05)


async def test_an_answer_to_a_foreign_response_topic_is_refused_and_counted() -> None:
    broker = MemoryBroker()
    recorder, rogue = MemoryBus("recorder", broker), MemoryBus("rogue", broker)
    recorder.serve(HISTORY, lambda p, q, d: _ok())
    for response_topic in ("bess/v1/battery/b1/set", "elsewhere/history/response/x"):
        await rogue.publish_bytes(rogue.name(HISTORY_REQUEST), HISTORY_REQUEST.encode(QUERY),
                                  properties={"response_topic": response_topic, "correlation_data": b"c"})
    await broker.idle()
    assert recorder.counters["bad_response_topic"] == 2
    assert [s.topic for s in recorder.published] == []


async def _ok() -> HistoryResult:
    return HistoryResult(ok=True)


async def test_stored_confirmations_use_the_same_reply_addressing() -> None:
    broker = MemoryBroker()
    gateway, recorder = MemoryBus("gateway", broker), MemoryBus("recorder", broker)
    receipts, records = Inbox(), Inbox()
    gateway.subscribe(STORED_RESPONSE, receipts, client=gateway.node)

    async def store(params: dict[str, str], reading: Telemetry, delivery: Delivery) -> None:
        await records(params, reading, delivery)
        client = recorder.reply_client(STORED_RESPONSE, delivery)
        assert client is not None
        assert delivery.correlation_data is not None
        await recorder.publish(STORED_RESPONSE, StoredReceipt(recorder="recorder",
                                                              stored=[delivery.correlation_data.decode()]),
                               client=client)

    recorder.subscribe(TELEMETRY, store)
    await gateway.publish(TELEMETRY, Telemetry(ts=T0, soc_kwh=1), reply_to=STORED_RESPONSE, correlation=b"r-1",
                          battery="b1")
    await broker.idle()
    [(_, _, delivery)] = records.got
    assert delivery.response_topic == "bess/v1/stored/gateway"
    assert recorder.reply_client(HISTORY_RESPONSE, delivery) is None  # not an answer topic of that declaration
    assert receipts.messages == [StoredReceipt(recorder="recorder", stored=["r-1"])]


def test_a_request_declaration_needs_a_client_answer_topic() -> None:
    with pytest.raises(TopicError, match="client"):
        Request(ask=HISTORY_REQUEST, answer=TELEMETRY)
    with pytest.raises(TopicError, match="no parameters"):
        Request(ask=SPEC, answer=HISTORY_RESPONSE)


# -- the memory broker ---------------------------------------------------------------------------------------


async def test_retained_messages_reach_a_late_subscriber_as_retained_and_an_empty_payload_clears_them() -> None:
    broker = MemoryBroker()
    device = MemoryBus("device", broker)
    spec = BatterySpec(capacity_kwh=10, soc_min_kwh=1, soc_max_kwh=9, max_charge_kw=5, max_discharge_kw=5)
    await device.publish(SPEC, spec, battery="b1")
    assert broker.retained_message(SPEC, battery="b1") == spec
    late, inbox = MemoryBus("planner", broker), Inbox()
    late.subscribe(SPEC, inbox)
    await broker.idle()
    [(params, message, delivery)] = inbox.got
    assert (params, message, delivery.retain) == ({"battery": "b1"}, spec, True)
    await device.publish(SPEC, spec, battery="b1")  # live: not flagged retained (MQTT 5 without retain-as-published)
    await device.publish_bytes(device.name(SPEC, battery="b1"), b"", retain=True)  # clears it
    await broker.idle()
    assert [d.retain for _, _, d in inbox.got] == [True, False]
    assert late.counters["empty_payloads"] == 1
    assert broker.retained_message(SPEC, battery="b1") is None


async def test_a_cleared_retained_message_is_told_to_on_cleared_with_its_params_and_never_to_the_handler() -> None:
    broker = MemoryBroker()
    device, watcher = MemoryBus("device", broker), MemoryBus("watcher", broker)
    inbox = Inbox()
    cleared: list[dict[str, str]] = []

    async def on_cleared(params: dict[str, str]) -> None:
        cleared.append(params)

    async def broken(params: dict[str, str]) -> None:
        raise RuntimeError("a bug in a cleared handler")

    watcher.subscribe(SPEC, inbox, on_cleared=on_cleared)
    watcher.subscribe(TELEMETRY, inbox, on_cleared=broken)
    await device.publish_bytes(device.name(SPEC, battery="b7"), b"", retain=True)
    await device.publish_bytes(device.name(TELEMETRY, battery="b7"), b"", retain=True)
    await broker.idle()
    assert cleared == [{"battery": "b7"}]
    assert inbox.got == []
    assert watcher.counters["empty_payloads"] == 2
    assert watcher.counters["handler_errors"] == 1, "a failing cleared handler is counted, the node stays up"


async def test_a_shared_subscription_deals_each_message_to_one_member_and_no_local_skips_the_sender() -> None:
    broker = MemoryBroker()
    a, b, device = MemoryBus("recorder-a", broker), MemoryBus("recorder-b", broker), MemoryBus("device", broker)
    inbox_a, inbox_b, own = Inbox(), Inbox(), Inbox()
    a.subscribe(TELEMETRY, inbox_a, share_group="recorder")
    b.subscribe(TELEMETRY, inbox_b, share_group="recorder")
    device.subscribe(TELEMETRY, own, no_local=True)
    for i in range(4):
        await device.publish(TELEMETRY, Telemetry(ts=T0 + timedelta(seconds=i), soc_kwh=i), battery="b1")
    await broker.idle()
    assert len(inbox_a.got) + len(inbox_b.got) == 4
    assert inbox_a.got
    assert inbox_b.got
    assert own.got == []


async def test_the_receive_rules_are_the_real_ones() -> None:
    broker = MemoryBroker()
    planner, rogue = MemoryBus("planner", broker), MemoryBus("rogue", broker)
    specs, invalid = Inbox(), []

    async def on_invalid(params: dict[str, str], error: str) -> None:
        invalid.append((params, error))

    planner.subscribe(SPEC, specs, on_invalid=on_invalid)
    name = planner.name(SPEC, battery="b1")
    await rogue.publish_bytes(name, b"{not json")
    await rogue.publish_bytes(name, b" " * (planner.settings.mqtt_max_payload_bytes + 1))
    await rogue.publish_bytes(planner.name(TELEMETRY, battery="b1"), b"{}")  # nobody subscribed
    await broker.idle()
    assert specs.got == []
    assert planner.counters["decode_errors"] == 1
    assert planner.counters["oversized"] == 1
    assert [p for p, _ in invalid] == [{"battery": "b1"}]


async def test_a_broker_outage_on_the_memory_bus() -> None:
    broker = MemoryBroker()
    device, planner, inbox = MemoryBus("device", broker), MemoryBus("planner", broker), Inbox()
    planner.subscribe(TELEMETRY, inbox)
    assert device.connections == 1
    device.disconnect()
    with pytest.raises(BusUnavailable):
        await device.publish(TELEMETRY, Telemetry(ts=T0, soc_kwh=1), wait_ack=True, battery="b1")
    await device.publish(TELEMETRY, Telemetry(ts=T0, soc_kwh=2), battery="b1")  # kept, sent after the reconnect
    await broker.idle()
    assert inbox.got == []
    device.reconnect()
    await broker.idle()
    assert [m.soc_kwh for m in inbox.messages] == [2]
    assert device.connections == 2
    device.fail_publishes(BusUnavailable("no PUBACK"), after=1)
    await device.publish(TELEMETRY, Telemetry(ts=T0, soc_kwh=3), battery="b1")
    with pytest.raises(BusUnavailable, match="no PUBACK"):
        await device.publish(TELEMETRY, Telemetry(ts=T0, soc_kwh=4), battery="b1")


async def test_status_is_published_retained_with_state_details_and_counters() -> None:
    broker = MemoryBroker()
    bus = MemoryBus("planner", broker)
    bus.set_counters_source(lambda: {"plans": 3})
    await bus.start()
    bus.set_state("degraded", "no price forecast")
    bus.set_details({"b1": "not planned: no spec received"})
    bus.counters["commands"] += 1
    await broker.idle()
    status = broker.retained_message(STATUS, node="planner")
    assert status is not None
    assert (status.state, status.reason, status.details) == ("degraded", "no price forecast",
                                                             {"b1": "not planned: no spec received"})
    assert status.counters["plans"] == 3
    await bus.stop()
    assert broker.retained_message(STATUS, node="planner") == NodeStatus(
        node="planner", state="offline", since=status.since, version=status.version, reason="stopped",
        pid=status.pid, counters={**status.counters, "published": status.counters["published"] + 1},
        details=status.details,
    )


# -- foreign subscriptions (a device's own dialect) -------------------------------------------------------------


async def test_a_foreign_subscription_gets_raw_bytes_outside_the_root_and_its_failures_are_counted() -> None:
    broker = MemoryBroker()
    bridge, device = MemoryBus("bridge", broker), MemoryBus("device", broker)
    got: list[tuple[str, bytes]] = []

    async def handler(name: str, payload: bytes, delivery: Delivery) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        got.append((name, payload))

    bridge.subscribe_foreign("N/abc/+/0/Dc/Battery/Soc", handler)
    for payload in (b'{"value": 55}', b"", b"boom", b"x" * (bridge.settings.mqtt_max_payload_bytes + 1)):
        await device.publish_bytes("N/abc/system/0/Dc/Battery/Soc", payload)
    await broker.idle()
    # the empty payload is the device's "gone", handed on; the bug is caught; the oversized one never decoded
    assert got == [("N/abc/system/0/Dc/Battery/Soc", b'{"value": 55}'), ("N/abc/system/0/Dc/Battery/Soc", b"")]
    assert (bridge.counters["handler_errors"], bridge.counters["oversized"]) == (1, 1)
    with pytest.raises(SubscriptionOverlap):
        bridge.subscribe_foreign("N/abc/#", handler)
    with pytest.raises(ValueError, match="whole level"):
        bridge.subscribe_foreign("N/ab+c", handler)


async def test_a_publish_cancelled_as_a_packet_id_frees_stays_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11's ``asyncio.wait_for`` returns instead of raising when it is cancelled in the moment its inner
    wait completes: a simulator stopped while its tick waited for packet ids (1,000 publishes a second) kept
    ticking and needed a SIGKILL. The wait must stay cancelled."""
    bus = Bus("simulator", MqttSettings())
    exhausted = [True]
    monkeypatch.setattr(internals, "packet_ids_exhausted", lambda client: exhausted[0])
    waiting = asyncio.create_task(bus._wait_for_packet_id(5.0))
    await asyncio.sleep(0)  # it waits for a PUBACK to free an id
    exhausted[0] = False
    bus._storage.freed.set()  # an id is freed, and before the waiter runs again ...
    assert waiting.cancel()  # ... the node is stopped
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_run_loop_that_swallows_its_cancellation_is_cancelled_again_and_the_node_stops() -> None:
    """Whatever swallows a cancellation inside a node's run loop (3.11's wait_for), the node still stops cleanly:
    its shutdown runs and it says offline."""
    from nodes.runtime.node import Service, serve

    class Stubborn(Service[MqttSettings]):
        name = "stubborn"
        cancels = 0
        stopped = False
        running = False

        async def run(self) -> None:
            Stubborn.running = True
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    Stubborn.cancels += 1
                    if Stubborn.cancels > 1:
                        raise  # the second cancellation is taken

        async def shutdown(self) -> None:
            Stubborn.stopped = True

    broker = MemoryBroker()
    node = Stubborn(MqttSettings(), MemoryBus("stubborn", broker))
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(node, stop=stop))
    await wait_for_async(lambda: Stubborn.running, timeout=5, what="the run loop")
    stop.set()
    done, _ = await asyncio.wait({serving}, timeout=5)  # not wait_for: its timeout would cancel serve again
    assert done, "serve() still waits for the run loop"
    assert (Stubborn.cancels, Stubborn.stopped, node.bus.state) == (2, True, "offline")
