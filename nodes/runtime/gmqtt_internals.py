"""Every use of gmqtt's private internals, in one place (gmqtt ``>=0.8,<0.9``, pinned in pyproject.toml).

The bus needs five things gmqtt 0.8 does not offer publicly:

* **PUBACK reason codes.** gmqtt ignores the MQTT 5 PUBACK reason code ("TODO" in
  ``MqttPackageHandler._handle_puback_packet``), so a publish the broker's ACL denies (0x87) would look
  acknowledged and the gateway would answer 202 for a message nobody received. :func:`watch_puback_reason_codes`
  wraps that handler to read the code before gmqtt frees the packet id.
* **Which message a PUBACK acknowledges.** gmqtt's ``publish`` does not return the packet id; it pushes the packet
  into the client's ``persistent_storage`` synchronously. :class:`AckTrackingStorage` subclasses
  ``gmqtt.storage.PersistentStorage`` (and reads its ``_messages``) to learn the id and resolve a future when the
  broker's PUBACK removes the message.
* **Packet ids.** gmqtt raises ``OverflowError`` when all ids are used (the broker's receive maximum, mosquitto's
  default is 20) and, when the broker lost the session, drops the unacknowledged messages but keeps their ids.
  :func:`packet_ids_exhausted` and :func:`release_packet_ids` read and free the id generator's ``_used_ids`` /
  ``_max``.
* **Its logging.** On broker loss gmqtt logs ``[TRYING WRITE TO CLOSED SOCKET]`` at WARNING for every packet it
  tries to write (``gmqtt.mqtt.protocol.BaseMQTTProtocol.write_data``): about 10,000 lines in one outage.
  :class:`ClosedSocketFilter` lets the first through per disconnect (reworded) and counts the rest.

* **One write per PUBACK.** gmqtt writes every PUBACK to the socket on its own (``BaseMQTTProtocol.write_data`` ->
  ``transport.write``: one ``send`` system call per message received). At 5,000 telemetry messages/s that was the
  renderer's largest single cost (2.8 of 17 s in a profile, bench/latency.py --profile), and every ``send``
  hands the GIL to the thread drawing figures, which then holds it for up to the 5 ms switch interval while the
  event loop waits with the next readings. :func:`coalesce_pubacks` collects the PUBACKs written during one turn
  of the event loop and writes them at its end as one buffer (any other packet flushes them first, so the order
  on the wire is unchanged).

Plus the CONNACK code of a refused login (``MQTTConnectError._code``, :func:`connect_refusal_code`).

:func:`check` verifies that every one of these internals is where this module expects it; the bus calls it once
per process and refuses to start with a clear message otherwise. ``tests/unit/test_gmqtt_internals.py`` exercises
each of them on gmqtt's real objects, so a gmqtt upgrade that moves one fails loudly there first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
from collections.abc import Callable
from importlib import metadata

import gmqtt
from gmqtt.mqtt import handler as gmqtt_handler
from gmqtt.mqtt import protocol as gmqtt_protocol
from gmqtt.mqtt import utils as gmqtt_utils
from gmqtt.storage import PersistentStorage

from nodes.runtime.errors import BusUnavailable, PublishRefused

#: the gmqtt releases these internals were read in (pyproject.toml pins the same range)
SUPPORTED_VERSIONS = "0.8"
PROTOCOL_LOGGER = "gmqtt.mqtt.protocol"
CLOSED_SOCKET = "[TRYING WRITE TO CLOSED SOCKET]"
REWORDED = ("gmqtt: write to a closed socket (the broker connection is down); further writes are not logged until "
            "the connection is back")


class GmqttChanged(RuntimeError):
    """The installed gmqtt no longer has an internal the bus relies on (see :func:`check`)."""


def problems() -> list[str]:
    """What is missing or different in the installed gmqtt, one line each (empty: everything is in place)."""
    found: list[str] = []
    version = metadata.version("gmqtt")
    if version.split(".")[:2] != SUPPORTED_VERSIONS.split("."):
        found.append(f"gmqtt {version} is installed; these internals were read in gmqtt {SUPPORTED_VERSIONS}.x")
    package_handler = gmqtt_handler.MqttPackageHandler
    if not callable(getattr(package_handler, "_handle_puback_packet", None)):
        found.append("MqttPackageHandler._handle_puback_packet is gone (PUBACK reason codes)")
    elif "id_generator.free_id" not in inspect.getsource(package_handler._handle_puback_packet):
        found.append("MqttPackageHandler._handle_puback_packet no longer frees the packet id itself")
    if "self.id_generator" not in inspect.getsource(package_handler.__init__):
        found.append("MqttPackageHandler has no id_generator (packet ids)")
    generator = gmqtt_utils.IdGenerator(max=10)
    if not (isinstance(getattr(generator, "_used_ids", None), set) and isinstance(getattr(generator, "_max", None), int)
            and callable(getattr(generator, "free_id", None))):
        found.append("IdGenerator has no _used_ids set, _max int or free_id (packet ids)")
    storage = PersistentStorage()
    if not isinstance(getattr(storage, "_messages", None), dict):
        found.append("PersistentStorage has no _messages dict (outbound QoS 1 store)")
    for method in ("push_message", "remove_message_by_mid", "clear"):
        if not callable(getattr(storage, method, None)):
            found.append(f"PersistentStorage.{method} is gone (outbound QoS 1 store)")
    if "_package_handler" not in inspect.getsource(gmqtt.Client.__init__):
        found.append("Client.__init__ no longer makes _package_handler")
    if "self._code" not in inspect.getsource(gmqtt_handler.MQTTConnectError.__init__):
        found.append("MQTTConnectError has no _code (refused logins)")
    if gmqtt_protocol.logger.name != PROTOCOL_LOGGER:
        found.append(f"gmqtt's protocol logger is {gmqtt_protocol.logger.name!r}, not {PROTOCOL_LOGGER!r}")
    write_data = getattr(gmqtt_protocol.BaseMQTTProtocol.write_data, "__wrapped__",
                         gmqtt_protocol.BaseMQTTProtocol.write_data)
    if CLOSED_SOCKET not in inspect.getsource(write_data):
        found.append(f"BaseMQTTProtocol.write_data no longer logs {CLOSED_SOCKET!r}")
    if "self.write_data(pkg)" not in inspect.getsource(gmqtt_protocol.MQTTProtocol.send_command_with_mid):
        found.append("MQTTProtocol.send_command_with_mid no longer writes through write_data (PUBACKs)")
    return found


_checked = False


def check() -> None:
    """Raise :class:`GmqttChanged` naming every internal that moved; cheap after the first call."""
    global _checked
    if _checked:
        return
    found = problems()
    if found:
        raise GmqttChanged("the installed gmqtt differs from what nodes/runtime/gmqtt_internals.py expects: "
                           + "; ".join(found))
    _checked = True


# -- outbound acknowledgements --------------------------------------------------------------------------------


class AckTrackingStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's outbound QoS 1 store, plus futures resolved when the broker's PUBACK removes a message.

    gmqtt's ``publish`` does not return the packet id; it pushes the packet here synchronously, so the id of
    the message just published is ``last_mid`` right after the call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_mid: int | None = None
        self.refused: dict[int, int] = {}  # mid -> PUBACK reason code >= 0x80
        self.freed = asyncio.Event()
        self.on_clear: Callable[[list[int]], None] | None = None
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.freed.set()  # gmqtt freed the packet id just before calling us (PUBACK)
        waiter = self._waiters.pop(mid, None)
        code = self.refused.pop(mid, None)
        if waiter is not None and not waiter.done():
            if code is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(PublishRefused(f"the broker refused the publish: reason code {code:#04x}"))

    def clear(self) -> None:
        mids = list(self._messages)
        super().clear()
        if self.on_clear is not None:
            self.on_clear(mids)
        self.freed.set()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(BusUnavailable("the broker lost the session before acknowledging"))
        self._waiters.clear()

    def is_pending(self, mid: int) -> bool:
        """True while the message with packet id ``mid`` waits for its PUBACK."""
        return mid in self._messages

    def waiter(self, mid: int) -> asyncio.Future[None]:
        """A future resolved by the PUBACK of ``mid`` (an exception when refused or when the session is lost)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = future
        return future


def watch_puback_reason_codes(client: gmqtt.Client, storage: AckTrackingStorage) -> None:
    """Record a PUBACK's failure reason code in ``storage.refused`` before gmqtt's own handler frees the id."""
    handler = client._package_handler
    original = handler._handle_puback_packet  # gmqtt dispatches on this attribute by packet type

    def on_puback(cmd: int, packet: bytes) -> None:
        if len(packet) >= 3 and packet[2] >= 0x80:
            storage.refused[struct.unpack("!H", packet[:2])[0]] = packet[2]
        original(cmd, packet)

    handler._handle_puback_packet = on_puback


def release_packet_ids(client: gmqtt.Client, mids: list[int]) -> None:
    """Free the packet ids of messages gmqtt dropped (the broker lost the session) but kept allocated."""
    ids = client._package_handler.id_generator
    for mid in mids:
        ids.free_id(mid)


def packet_ids_exhausted(client: gmqtt.Client) -> bool:
    """True when gmqtt's next QoS>0 publish would raise ``OverflowError`` (every id awaits its PUBACK)."""
    ids = client._package_handler.id_generator
    return bool(len(ids._used_ids) >= ids._max - 1)


# -- inbound acknowledgements -----------------------------------------------------------------------------------

PUBACK_HEADER = 0x40
"""The first byte of a PUBACK packet (type 4, no flags)."""
_PUBACK_BYTE = bytes([PUBACK_HEADER])
_PENDING = "_bess_pending_pubacks"


def _flush_pubacks(protocol: gmqtt_protocol.BaseMQTTProtocol, write: Callable[..., None]) -> None:
    pending = protocol.__dict__.pop(_PENDING, None)
    if pending:
        write(protocol, bytes(pending))  # gmqtt's own write: a closed transport is logged (once) and skipped


def coalesce_pubacks() -> None:
    """Make gmqtt write the PUBACKs of one event-loop turn as one buffer (see the module docstring); idempotent.

    A PUBACK waits at most until the end of the current turn (``loop.call_soon``) or the next other packet,
    which flushes the waiting ones first. If the connection drops before the flush, the broker redelivers those
    messages as it would any unacknowledged one (at least once; every consumer is idempotent on redelivery).
    """
    cls = gmqtt_protocol.BaseMQTTProtocol
    if hasattr(cls.write_data, "__wrapped__"):
        return
    original = cls.write_data

    def write_data(self: gmqtt_protocol.BaseMQTTProtocol, data: bytes) -> None:
        if data[:1] == _PUBACK_BYTE:
            pending = self.__dict__.get(_PENDING)
            if pending is None:
                pending = self.__dict__[_PENDING] = bytearray()
                asyncio.get_running_loop().call_soon(_flush_pubacks, self, original)
            pending += data
            return
        if self.__dict__.get(_PENDING):
            _flush_pubacks(self, original)
        original(self, data)

    write_data.__wrapped__ = original  # type: ignore[attr-defined]
    cls.write_data = write_data


#: what ``Client.connect`` raises when the broker cannot be reached or refuses the connection
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, gmqtt_handler.MQTTConnectError)


def connect_refusal_code(exc: BaseException) -> int | None:
    """The CONNACK reason code of a failed connect, when gmqtt says it (``MQTTConnectError._code``)."""
    code = getattr(exc, "_code", None)
    return code if isinstance(code, int) else None


# -- logging --------------------------------------------------------------------------------------------------


class ClosedSocketFilter(logging.Filter):
    """One ``[TRYING WRITE TO CLOSED SOCKET]`` line per disconnect; the others are counted, not logged."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != CLOSED_SOCKET:
            return True
        if not self.armed:
            self.suppressed += 1
            return False
        self.armed = False
        record.msg, record.args = REWORDED, ()
        return True

    def rearm(self) -> int:
        """Start a new episode (the next closed-socket write is logged again); returns how many were left out."""
        suppressed, self.suppressed, self.armed = self.suppressed, 0, True
        return suppressed


_FILTER = ClosedSocketFilter()


def closed_socket_filter() -> ClosedSocketFilter:
    """The process's filter, installed on gmqtt's protocol logger (once, however often this is called)."""
    logger = logging.getLogger(PROTOCOL_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return _FILTER


__all__ = [
    "CLOSED_SOCKET",
    "CONNECT_ERRORS",
    "PROTOCOL_LOGGER",
    "PUBACK_HEADER",
    "AckTrackingStorage",
    "ClosedSocketFilter",
    "GmqttChanged",
    "check",
    "closed_socket_filter",
    "coalesce_pubacks",
    "connect_refusal_code",
    "packet_ids_exhausted",
    "problems",
    "release_packet_ids",
    "watch_puback_reason_codes",
]
