"""A minimal blocking MQTT 3.1.1 client for deploy's readiness probes, reading retained node status and test
round trips (:class:`MiniMqtt`, :func:`read_retained`); nodes use gmqtt through ``nodes.runtime``.

Standard library only: ``deploy/up``, ``deploy/status`` and ``deploy/down`` use it before (or without) the
virtualenv.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

#: The marker topics of :func:`read_retained` live here, outside any topic root (deploy/auth.py lets only the
#: read-only users write it).
PROBE_TOPIC_PREFIX = "bess-probe"


class MqttError(RuntimeError):
    """The broker refused or sent something we did not expect."""


class MqttRefused(MqttError):
    """The broker answered CONNECT with a refusal (``code`` 4: bad user name or password, 5: not authorised)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection, return code {code}")
        self.code = code


@dataclass(frozen=True)
class MqttMessage:
    """One PUBLISH received by :class:`MiniMqtt`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def _mqtt_str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class MiniMqtt:
    """A tiny blocking MQTT 3.1.1 client: connect, subscribe, publish at QoS 0/1, receive with a timeout.

    Enough for readiness probes, reading retained messages and test round trips; it sends no PINGREQ, so keep
    a connection shorter than ``keepalive`` seconds of silence. Incoming QoS 1 messages are acknowledged when
    read from the socket.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        keepalive: int = 60,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client_id = client_id or f"bess-probe-{uuid.uuid4().hex[:12]}"
        self._timeout = timeout
        self._buf = bytearray()
        self._inbox: deque[MqttMessage] = deque()
        self._packet_id = 0
        self._sock = socket.create_connection((host, port), timeout=timeout)
        try:
            flags = 0x02 if clean_session else 0x00
            login = b""
            if username is not None:
                flags |= 0x80
                login += _mqtt_str(username)
                if password is not None:
                    flags |= 0x40
                    login += _mqtt_str(password)
            header = _mqtt_str(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
            self._send(0x10, header + _mqtt_str(self.client_id) + login)
            kind, body = self._read_packet(time.monotonic() + timeout)
            if kind >> 4 != 2 or len(body) < 2:
                raise MqttError(f"expected CONNACK, got packet type {kind >> 4}")
            if body[1] != 0:
                raise MqttRefused(body[1])
            self.session_present = bool(body[0] & 1)
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send DISCONNECT (so no last will fires) and close the socket."""
        with contextlib.suppress(OSError):
            self._send(0xE0, b"")
        self._sock.close()

    def subscribe(self, filters: str | Sequence[str], qos: int = 0) -> list[int]:
        """Subscribe to one or more filters; return the granted QoS per filter (raises if one is refused)."""
        if qos not in (0, 1):
            raise ValueError("MiniMqtt supports QoS 0 and 1")
        names = [filters] if isinstance(filters, str) else list(filters)
        pid = self._next_id()
        payload = b"".join(_mqtt_str(name) + bytes([qos]) for name in names)
        self._send(0x82, pid.to_bytes(2, "big") + payload)
        body = self._wait_for(0x9, pid)
        granted = list(body[2:])
        if 0x80 in granted:
            raise MqttError(f"subscription refused: {names} -> {granted}")
        return granted

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False) -> None:
        """Publish; at QoS 1 return only after the broker's PUBACK."""
        if qos not in (0, 1):
            raise ValueError("MiniMqtt supports QoS 0 and 1")
        data = payload.encode() if isinstance(payload, str) else payload
        flags = (qos << 1) | (1 if retain else 0)
        if qos == 0:
            self._send(0x30 | flags, _mqtt_str(topic) + data)
            return
        pid = self._next_id()
        self._send(0x30 | flags, _mqtt_str(topic) + pid.to_bytes(2, "big") + data)
        self._wait_for(0x4, pid)

    def receive(self, timeout: float | None = None) -> MqttMessage | None:
        """The next message, or None if none arrives within ``timeout`` seconds (default: the client timeout)."""
        if self._inbox:
            return self._inbox.popleft()
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while True:
            try:
                kind, body = self._read_packet(deadline)
            except TimeoutError:
                return None
            self._dispatch(kind, body)
            if self._inbox:
                return self._inbox.popleft()

    def messages(self, timeout: float | None = None) -> Iterator[MqttMessage]:
        """Yield messages until none arrives for ``timeout`` seconds."""
        while (message := self.receive(timeout)) is not None:
            yield message

    # internals

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    def _send(self, first: int, body: bytes) -> None:
        self._sock.sendall(bytes([first]) + _remaining_length(len(body)) + body)

    def _wait_for(self, kind: int, pid: int) -> bytes:
        deadline = time.monotonic() + self._timeout
        while True:
            first, body = self._read_packet(deadline)
            if first >> 4 == kind and body[:2] == pid.to_bytes(2, "big"):
                return body
            self._dispatch(first, body)

    def _dispatch(self, first: int, body: bytes) -> None:
        if first >> 4 != 3:  # only PUBLISH matters here; PINGRESP and friends are dropped
            return
        qos = (first >> 1) & 3
        size = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + size].decode()
        rest = body[2 + size :]
        if qos:
            pid, rest = rest[:2], rest[2:]
            self._send(0x40, pid)  # PUBACK (we only ever subscribe at QoS <= 1)
        self._inbox.append(MqttMessage(topic, bytes(rest), qos, bool(first & 1)))

    def _read_packet(self, deadline: float) -> tuple[int, bytes]:
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no MQTT packet before the deadline")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)  # raises TimeoutError (an OSError) on timeout
            if not chunk:
                raise MqttError("the broker closed the connection")
            self._buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buf):
                return None
            byte = buf[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        if len(buf) < index + length:
            return None
        first, body = buf[0], bytes(buf[index : index + length])
        del buf[: index + length]
        return first, body


def mqtt_connack(
    host: str, port: int, timeout: float = 1.0, *, username: str | None = None, password: str | None = None
) -> int | None:
    """The CONNACK return code a CONNECT gets on ``host:port`` (0 = accepted, 5 = not authorised), or None if
    no MQTT broker answers there."""
    try:
        MiniMqtt(host, port, timeout=timeout, username=username, password=password).close()
    except MqttRefused as exc:
        return exc.code
    except (OSError, MqttError):
        return None
    return 0


def mqtt_ready(
    host: str, port: int, timeout: float = 1.0, *, username: str | None = None, password: str | None = None
) -> bool:
    """True if an MQTT broker answers a CONNECT (with these credentials, if given) with an accepting CONNACK."""
    return mqtt_connack(host, port, timeout, username=username, password=password) == 0


def read_retained(
    host: str,
    port: int,
    topic_filter: str,
    timeout: float = 5.0,
    *,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, bytes]:
    """Every retained message under ``topic_filter`` right now, as ``{topic: payload}``.

    Completeness without guessing a quiet period: after subscribing, the client publishes a marker to a topic
    it also subscribed; the broker sends retained messages before it handles that later PUBLISH, so once the
    marker comes back every retained message has arrived. Live messages in that window count too (latest wins).
    On a broker with an ACL the user must be allowed to read ``topic_filter`` and to read and write
    ``bess-probe/#`` (the ``monitor`` user of deploy/auth.py is).
    """
    marker = f"{PROBE_TOPIC_PREFIX}/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    with MiniMqtt(host, port, timeout=timeout, username=username, password=password) as client:
        client.subscribe([topic_filter, marker], qos=0)
        client.publish(marker, b".", qos=0)
        while True:
            message = client.receive(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise TimeoutError(f"retained read of {topic_filter!r} did not complete in {timeout} s")
            if message.topic == marker:
                return found
            found[message.topic] = message.payload
