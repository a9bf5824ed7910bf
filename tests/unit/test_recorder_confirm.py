"""Stored confirmations of the recorder: receipts for response topics, device marks, on an in-memory bus."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import MAX_RECEIPT_IDS, StoredReceipt, StoredUpTo, Telemetry
from nodes.contract.topics import STORED, STORED_RESPONSE, TELEMETRY
from nodes.recorder import points
from nodes.recorder.config import RecorderConfig
from nodes.recorder.confirm import Confirmations, correlation_text
from nodes.recorder.node import Recorder
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.unit.test_recorder_batcher import FakeStore

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
ROOT = "bess/v1"


def reading(i: int, source: str = "device") -> Telemetry:
    return Telemetry(ts=T0 + timedelta(seconds=i), soc_kwh=float(i), source=source)


async def started(
    store: FakeStore, *, retained: Telemetry | None = None, **settings: Any
) -> tuple[Recorder, MemoryBus, MemoryBus]:
    """A recorder on a memory broker, and the peer that publishes to it (``retained``: a reading kept before)."""
    config = RecorderConfig(batch_max_delay_ms=20, recorder_confirm_interval_ms=10, node_id="recorder-a", **settings)
    broker = MemoryBroker()
    peer = MemoryBus("gateway", broker)
    if retained is not None:
        await peer.publish(TELEMETRY, retained, battery="b1")  # retained, as telemetry is declared
    bus = MemoryBus("recorder", broker, settings=config)
    recorder = Recorder(config, bus, store=store)  # type: ignore[arg-type]
    await recorder.setup()
    return recorder, bus, peer


async def deliver(peer: MemoryBus, message: Telemetry, battery: str = "b1", *, response_topic: str | None = None,
                  correlation: bytes | None = None) -> None:
    """Publish ``message`` with these MQTT 5 properties as they come, and wait until every handler is done."""
    properties = {"response_topic": response_topic, "correlation_data": correlation}
    await peer.publish_bytes(TELEMETRY.name(root=ROOT, battery=battery), TELEMETRY.encode(message),
                             properties={k: v for k, v in properties.items() if v is not None} or None)
    await peer.broker.idle()


def receipts(bus: MemoryBus) -> list[tuple[str, StoredReceipt]]:
    return [(sent.topic, receipt) for sent in bus.published if isinstance(receipt := sent.message, StoredReceipt)]


async def test_messages_with_a_response_topic_get_one_receipt_per_written_batch() -> None:
    store = FakeStore()
    recorder, bus, peer = await started(store)
    reply = STORED_RESPONSE.name(root=ROOT, client="gateway")
    await asyncio.wait_for(asyncio.gather(
        *(deliver(peer, reading(i, "gateway"), response_topic=reply, correlation=f"r-{i}".encode()) for i in range(3)),
        deliver(peer, reading(9, "gateway")),  # no response topic: stored, never confirmed
    ), 1)
    await asyncio.sleep(0)  # the receipt task runs after every handler of the batch
    assert len(store.writes) == 1
    assert receipts(bus) == [(reply, StoredReceipt(recorder="recorder-a", stored=["r-0", "r-1", "r-2"]))]
    assert recorder.counters()["receipts"] == 1
    assert recorder.batcher is not None
    await recorder.shutdown()


async def test_a_refused_point_is_receipted_as_rejected_with_the_reason() -> None:
    store = FakeStore()
    recorder, bus, peer = await started(store)
    bad = reading(1, "gateway")
    store.reject = {points.telemetry_line("b1", bad)}
    reply = STORED_RESPONSE.name(root=ROOT, client="gateway")
    await asyncio.wait_for(asyncio.gather(
        deliver(peer, reading(0, "gateway"), response_topic=reply, correlation=b"ok"),
        deliver(peer, bad, response_topic=reply, correlation=b"no"),
    ), 1)
    await asyncio.sleep(0)
    [(_, receipt)] = receipts(bus)
    assert (receipt.stored, receipt.rejected, receipt.reason) == (["ok"], ["no"], "bad")
    await recorder.shutdown()


@pytest.mark.parametrize(
    ("response_topic", "correlation"),
    [("bess/v1/history/response/gateway", b"x"), ("elsewhere/stored/gateway", b"x"),
     ("bess/v1/stored/gateway", None), ("bess/v1/stored/gateway", b"\xff\xfe"), ("bess/v1/stored/gateway", b"a" * 65)],
    ids=["another response topic", "foreign root", "no correlation", "binary correlation", "too long"],
)
async def test_unanswerable_confirmation_requests_are_counted_not_answered(
    response_topic: str, correlation: bytes | None
) -> None:
    recorder, bus, peer = await started(FakeStore())
    await asyncio.wait_for(deliver(peer, reading(0, "gateway"), response_topic=response_topic,
                                       correlation=correlation), 1)
    await asyncio.sleep(0)
    assert receipts(bus) == []
    assert recorder.counters()["unconfirmable"] == 1
    await recorder.shutdown()


async def test_device_marks_follow_the_devices_own_stream_only() -> None:
    # a retained reading, replayed to the recorder when it subscribes: not part of the stream
    recorder, bus, peer = await started(FakeStore(), retained=reading(99))
    await asyncio.wait_for(peer.broker.idle(), 1)
    runner = asyncio.create_task(recorder.run())
    await asyncio.wait_for(deliver(peer, reading(1)), 1)
    await asyncio.wait_for(deliver(peer, reading(50, "gateway")), 1)  # an HTTP backfill/forward write: not the device

    def marks() -> list[tuple[str, StoredUpTo]]:
        return [(sent.topic, mark) for sent in bus.published if isinstance(mark := sent.message, StoredUpTo)]

    for _ in range(100):
        if marks():
            break
        await asyncio.sleep(0.01)
    assert marks() == [(STORED.name(root=ROOT, battery="b1"), StoredUpTo(ts=T0 + timedelta(seconds=1),
                                                                         recorder="recorder-a"))]
    await asyncio.sleep(0.05)
    assert len(marks()) == 1  # nothing moved: nothing new is published
    runner.cancel()
    await recorder.shutdown()


async def test_no_device_marks_on_a_shared_subscription() -> None:
    recorder, bus, peer = await started(FakeStore(), recorder_share_group="recorder")
    assert recorder.device_marks is False
    runner = asyncio.create_task(recorder.run())
    await asyncio.wait_for(deliver(peer, reading(1)), 1)
    await asyncio.sleep(0.05)
    assert not any(isinstance(sent.message, StoredUpTo) for sent in bus.published)
    runner.cancel()
    await recorder.shutdown()


def test_receipts_are_chunked_and_marks_only_move_forward() -> None:
    confirm = Confirmations("r")
    for i in range(MAX_RECEIPT_IDS + 1):
        confirm.stored("gw", f"c{i}")
    confirm.rejected("gw", "bad", "type conflict")
    out = confirm.take_receipts()
    assert [len(r.stored) for _, r in out] == [MAX_RECEIPT_IDS, 1]
    assert [(r.rejected, r.reason) for _, r in out] == [(["bad"], "type conflict"), ([], "")]
    assert confirm.take_receipts() == []
    confirm.device_reading("b1", T0 + timedelta(seconds=5))
    confirm.device_reading("b1", T0)  # an older reading stored later (a re-send) does not move the mark back
    assert confirm.take_marks() == [("b1", StoredUpTo(ts=T0 + timedelta(seconds=5), recorder="r"))]
    assert confirm.take_marks() == []
    confirm.unsent_mark("b1")
    assert len(confirm.take_marks()) == 1


def test_correlation_text() -> None:
    assert correlation_text(b"3f2a-1.0") == "3f2a-1.0"
    assert correlation_text(b"") is None
    assert correlation_text(b"tab\there") is None
