"""The device side of stored confirmations: keep readings, re-send after a reconnect, trust only what proves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import StoredUpTo, Telemetry
from nodes.contract.topics import STORED, TELEMETRY
from nodes.runtime.memory import MemoryBus
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.node import Simulator
from nodes.simulator.outbox import Outbox

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)


def r(i: int) -> Telemetry:
    return Telemetry(ts=T0 + timedelta(seconds=i), soc_kwh=float(i))


def ts(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def kept(box: Outbox) -> list[int]:
    return [int(t.soc_kwh) for t in box.kept]


def test_readings_are_kept_until_a_confirmation_covers_them() -> None:
    box = Outbox(100)
    for i in range(5):
        assert box.to_publish(r(i), epoch=1) == ([], r(i))
    assert box.stored_up_to(ts(2), epoch=1) == 3
    assert kept(box) == [3, 4]
    assert box.stored_up_to(ts(1), epoch=1) == 0  # an older mark drops nothing more
    assert box.stored_up_to(ts(4), epoch=1) == 2
    assert kept(box) == []


def test_after_a_reconnect_everything_kept_is_resent_first_and_old_marks_are_not_trusted() -> None:
    box = Outbox(100)
    for i in range(4):
        box.to_publish(r(i), epoch=1)
    box.stored_up_to(ts(0), epoch=1)
    # the broker crashed: readings 1..3 were acknowledged but maybe lost. A mark arriving on the new connection
    # before the re-send (the recorder stored a copy gmqtt re-sent on its own) proves nothing about 1 and 2.
    assert box.stored_up_to(ts(3), epoch=2) == 0
    resend, new = box.to_publish(r(4), epoch=2)
    assert ([int(t.soc_kwh) for t in resend], int(new.soc_kwh)) == ([1, 2, 3], 4)
    # still only a mark for a reading from before the re-send: reading 3's auto re-sent copy, ahead of 1 and 2
    assert box.stored_up_to(ts(3), epoch=2) == 0
    assert kept(box) == [1, 2, 3, 4]
    # a mark covering the first reading published after the re-send: the re-sends before it are stored too
    assert box.stored_up_to(ts(4), epoch=2) == 4
    assert kept(box) == []
    assert (box.resent, box.ignored, box.confirmed) == (3, 2, 5)


def test_a_mark_from_the_previous_connection_is_ignored() -> None:
    box = Outbox(100)
    box.to_publish(r(0), epoch=1)
    box.to_publish(r(1), epoch=2)
    assert box.stored_up_to(ts(1), epoch=1) == 0  # it arrived before we noticed: it says nothing of epoch 2
    assert box.stored_up_to(ts(1), epoch=2) == 2


def test_a_failed_publish_resends_everything_at_the_next_one() -> None:
    box = Outbox(100)
    box.to_publish(r(0), epoch=1)
    box.to_publish(r(1), epoch=1)
    box.publish_failed()
    resend, _ = box.to_publish(r(2), epoch=1)
    assert [int(t.soc_kwh) for t in resend] == [0, 1]
    assert box.stored_up_to(ts(1), epoch=1) == 0  # below the first reading published after that re-send
    assert box.stored_up_to(ts(2), epoch=1) == 3


def test_the_outbox_is_bounded_and_counts_what_it_dropped() -> None:
    box = Outbox(3)
    for i in range(5):
        box.to_publish(r(i), epoch=1)
    assert kept(box) == [2, 3, 4]
    assert box.overflowed == 2
    with pytest.raises(ValueError, match="limit"):
        Outbox(0)


async def test_the_simulator_resends_its_kept_readings_not_retained_after_a_reconnect() -> None:
    bus = MemoryBus("simulator")
    simulator = Simulator(SimulatorConfig(batteries=["b1"], sim_keep_unconfirmed=100), bus)
    await simulator.setup()
    assert any(sub.topic is STORED for sub in bus.subscriptions)
    await simulator._publish_telemetry("b1", r(0))
    await simulator._publish_telemetry("b1", r(1))
    bus.disconnect()  # the broker went away and came back
    bus.reconnect()
    await simulator._publish_telemetry("b1", r(2))
    # retained as telemetry is declared, except the re-sent ones
    readings = [sent for sent in bus.published if bus.parse(TELEMETRY, sent.topic)]
    assert [(int(TELEMETRY.decode(sent.payload).soc_kwh), sent.retain) for sent in readings] == [
        (0, True), (1, True), (0, False), (1, False), (2, True)]
    await simulator.on_stored({"battery": "b1"}, StoredUpTo(ts=ts(2), recorder="r"), None)  # type: ignore[arg-type]
    counters = bus.status().counters  # the simulator's counters are merged into its status
    assert {key: counters[key] for key in ("unconfirmed", "resent", "unconfirmed_dropped")} == {
        "unconfirmed": 0, "resent": 2, "unconfirmed_dropped": 0}
