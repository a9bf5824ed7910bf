"""Every gmqtt internal the bus relies on (:mod:`nodes.runtime.gmqtt_internals`), exercised on gmqtt's real objects.

A gmqtt upgrade that moves one of them fails here, loudly and by name, before a node misbehaves: the PUBACK
handler whose reason code the bus reads, the packet-id generator it frees and watches, the outbound store whose
PUBACKs it awaits, the CONNACK code of a refused login, and the ``[TRYING WRITE TO CLOSED SOCKET]`` line (one line
per disconnect, not per write: issue 16, item 10; before, about 10,000 such lines when the broker died).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import types
from importlib import metadata

import gmqtt
import pytest
from gmqtt.mqtt import protocol
from gmqtt.mqtt.constants import MQTTCommands
from gmqtt.mqtt.handler import MQTTConnectError

from nodes.runtime import gmqtt_internals as internals
from nodes.runtime.bus import Bus, BusUnavailable, MqttSettings, PublishRefused
from nodes.runtime.gmqtt_internals import CLOSED_SOCKET, PROTOCOL_LOGGER, closed_socket_filter


class _Closed(asyncio.Transport):
    def is_closing(self) -> bool:
        return True


class _Connection:
    _last_data_out = 0.0


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == PROTOCOL_LOGGER and "closed socket" in r.getMessage().lower()]


async def test_ten_thousand_writes_to_a_dead_broker_make_one_line_per_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert protocol.logger.name == PROTOCOL_LOGGER
    assert CLOSED_SOCKET in inspect.getsource(protocol.BaseMQTTProtocol.write_data)
    bus = Bus("planner", MqttSettings())  # installs the filter
    proto = protocol.BaseMQTTProtocol()
    proto._transport = _Closed()
    proto._connection = _Connection()
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        bus._on_disconnect(None, None)  # type: ignore[arg-type]
        for _ in range(10_000):
            proto.write_data(b"\x30\x00")
        assert len(_lines(caplog)) == 1
        assert "further writes are not logged" in _lines(caplog)[0].getMessage()
        assert closed_socket_filter().suppressed == 9_999
        # the broker is back, then dies again: one more line
        bus._first_connect_done = True
        with caplog.at_level(logging.INFO, logger="bess.bus"):
            bus._on_connect(None, 1, 0, {})  # type: ignore[arg-type]
        assert any("9999 more writes to the closed socket" in r.getMessage() for r in caplog.records)
        bus._on_disconnect(None, None)  # type: ignore[arg-type]
        for _ in range(1_000):
            proto.write_data(b"\x30\x00")
    assert len(_lines(caplog)) == 2


def test_other_gmqtt_warnings_pass() -> None:
    record = logging.LogRecord(PROTOCOL_LOGGER, logging.WARNING, "p", 1, "[EXC: CONN LOST]", (), None)
    assert closed_socket_filter().filter(record)


# -- the internals, one by one -------------------------------------------------------------------------------


def test_the_installed_gmqtt_has_every_internal_the_bus_uses() -> None:
    assert internals.problems() == []
    assert metadata.version("gmqtt").startswith(internals.SUPPORTED_VERSIONS + ".")


def test_a_changed_internal_is_named_and_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(gmqtt.mqtt.handler.MqttPackageHandler, "_handle_puback_packet")
    assert any("_handle_puback_packet" in p for p in internals.problems())
    monkeypatch.setattr(internals, "_checked", False)
    with pytest.raises(internals.GmqttChanged, match="_handle_puback_packet"):
        Bus("planner", MqttSettings())


def _puback(mid: int, reason: int | None = None) -> bytes:
    return struct.pack("!H", mid) + (bytes([reason]) if reason is not None else b"")


async def test_a_refused_puback_fails_the_waiting_publish_and_frees_the_id() -> None:
    bus = Bus("planner", MqttSettings())
    client, storage = bus._client, bus._storage
    ids = client._package_handler.id_generator
    mids = [ids.next_id() for _ in range(2)]
    for mid in mids:
        storage.push_message(mid, b"packet")
    accepted, refused = storage.waiter(mids[0]), storage.waiter(mids[1])
    # gmqtt dispatches a PUBACK to this attribute; the bus's wrapper reads the reason code first
    client._package_handler._handle_puback_packet(0x40, _puback(mids[0]))
    client._package_handler._handle_puback_packet(0x40, _puback(mids[1], 0x87))
    assert accepted.done()
    assert accepted.exception() is None
    with pytest.raises(PublishRefused, match="0x87"):
        refused.result()
    assert not storage.is_pending(mids[0])
    assert not storage.is_pending(mids[1])
    assert mids[0] not in ids._used_ids
    assert mids[1] not in ids._used_ids


async def test_packet_ids_run_out_at_the_receive_maximum_and_a_lost_session_frees_them() -> None:
    bus = Bus("planner", MqttSettings())
    client, storage = bus._client, bus._storage
    # the broker's CONNACK says receive maximum 5 (mosquitto's default is 20): gmqtt sizes its id pool by it
    client._package_handler._connack_properties = {"receive_maximum": [5]}
    client._package_handler._apply_receive_maximum()
    ids = client._package_handler.id_generator
    taken = []
    while not internals.packet_ids_exhausted(client):
        mid = ids.next_id()
        storage.push_message(mid, b"packet")
        taken.append(mid)
    assert len(taken) == 4  # gmqtt keeps one id back: the next next_id() would raise OverflowError
    with pytest.raises(OverflowError):
        ids.next_id()
    waiter = storage.waiter(taken[0])
    storage.clear()  # what gmqtt does when the broker lost the session: the messages go, the ids must too
    assert not internals.packet_ids_exhausted(client)
    assert ids._used_ids == set()
    with pytest.raises(BusUnavailable, match="lost the session"):
        waiter.result()


def test_the_connack_code_of_a_refused_login_is_read() -> None:
    assert internals.connect_refusal_code(MQTTConnectError(0x86)) == 0x86
    assert internals.connect_refusal_code(OSError("connection refused")) is None
    assert issubclass(MQTTConnectError, internals.CONNECT_ERRORS)


def test_publish_pushes_the_packet_into_the_storage_synchronously() -> None:
    # the bus learns a publish's packet id from the storage right after gmqtt's publish() returns
    assert "self._persistent_storage.push_message(mid" in inspect.getsource(gmqtt.Client.publish)


# -- PUBACKs of one loop turn in one write -------------------------------------------------------------------


class _Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))


def _protocol() -> tuple[protocol.MQTTProtocol, _Recording]:
    """gmqtt's real protocol object with a recording transport (as after connection_made, MQTT 5)."""
    proto = protocol.MQTTProtocol.__new__(protocol.MQTTProtocol)
    transport = _Recording()
    proto._transport = transport
    proto._connection = _Connection()
    proto._connection_state = types.SimpleNamespace(protocol_version=5)
    return proto, transport


async def test_the_pubacks_of_one_loop_turn_go_out_in_one_write() -> None:
    Bus("renderer", MqttSettings())  # a node's bus turns coalescing on
    proto, transport = _protocol()
    for mid in (1, 2, 3):  # what gmqtt does for three QoS 1 messages handled in one turn
        proto.send_command_with_mid(MQTTCommands.PUBACK, mid, False)
    assert transport.writes == []  # before: one write (one send system call) per PUBACK
    await asyncio.sleep(0)  # the end of the turn
    assert len(transport.writes) == 1
    assert transport.writes[0] == b"".join(
        bytes(protocol.package.CommandWithMidPacket.build_package(MQTTCommands.PUBACK, mid, False, proto_ver=5))
        for mid in (1, 2, 3))
    assert transport.writes[0][0] == internals.PUBACK_HEADER


async def test_another_packet_flushes_the_waiting_pubacks_first_so_the_order_on_the_wire_holds() -> None:
    Bus("recorder", MqttSettings())
    internals.coalesce_pubacks()  # idempotent: a second call must not wrap twice
    assert not hasattr(protocol.BaseMQTTProtocol.write_data.__wrapped__, "__wrapped__")
    proto, transport = _protocol()
    proto.send_command_with_mid(MQTTCommands.PUBACK, 7, False)
    proto.send_simple_command_packet(MQTTCommands.PINGREQ)
    assert [w[0] for w in transport.writes] == [internals.PUBACK_HEADER, MQTTCommands.PINGREQ]
    await asyncio.sleep(0)
    assert len(transport.writes) == 2  # nothing left to flush at the end of the turn
