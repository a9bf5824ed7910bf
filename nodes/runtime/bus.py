"""The message bus: typed publish/subscribe over MQTT 5 with gmqtt.

One :class:`Bus` per process. It owns the gmqtt client and enforces the project's delivery rules so that no
node has to remember them:

* QoS 1 on both sides (gmqtt subscribes at QoS 0 unless told otherwise).
* Persistent sessions (``clean_session=False`` + ``session_expiry_interval``) so messages published while a
  node is away wait at the broker, and outgoing QoS 1 messages survive a broker restart.
* Acknowledge after handling: the client runs with ``optimistic_acknowledgement=False`` and every handler is
  awaited before the PUBACK is sent, so a message is only acknowledged once the node has dealt with it (the
  recorder awaits the database write). A process that dies before that gets the message again.
* Subscribe inside on-connect: on the first connection of the process (to receive retained state again) and on
  every reconnect whose session the broker lost (gmqtt does not resubscribe by itself).
* Last will ``node/{node}/status`` = offline (retained) and ``online`` on every connect.
* An undecodable payload is logged (cut to 512 bytes), counted and acknowledged: never raised, never redelivered
  in a loop. A handler that raises is logged with its traceback and counted; the node stays up.
* A telemetry, state or command whose own timestamp is implausible (before 2000, more than a day ahead:
  :mod:`nodes.contract.plausibility`, the gateway's rule too) is dropped, counted (``implausible``) and logged
  (once a minute per topic).
* A payload larger than its topic's bound (:mod:`nodes.runtime.payload_limits`: ``BESS_MQTT_MAX_PAYLOAD_BYTES``,
  never below the largest message the contract admits; ``BESS_MQTT_MAX_BULK_PAYLOAD_BYTES`` for figures and
  history answers) is logged (cut), counted as ``oversized`` and acknowledged without being decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import ssl
import struct
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import gmqtt
import msgspec
from gmqtt.storage import PersistentStorage

from nodes import __version__
from nodes.contract import plausibility
from nodes.contract.messages import NodeState, NodeStatus
from nodes.contract.topics import HISTORY_RESPONSE, STATUS, Topic, check_root
from nodes.runtime.gmqtt_log import closed_socket_filter
from nodes.runtime.payload_limits import payload_limit

log = logging.getLogger("bess.bus")

P = TypeVar("P", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)

PAYLOAD_LOG_LIMIT = 512


class BusUnavailable(RuntimeError):
    """The broker cannot be reached (or did not acknowledge in time)."""


class PublishRefused(BusUnavailable):
    """The broker answered a publish with a failure reason code (MQTT 5 PUBACK >= 0x80, e.g. 0x87 not authorised)."""


class BusRefused(BusUnavailable):
    """The broker refused the login (bad credentials, not authorised, banned): retrying cannot help."""


# CONNACK codes that mean "these credentials will never work" (MQTT 3.1.1: 4, 5; MQTT 5: 0x86, 0x87, 0x8A, 0x8C)
REFUSED_CODES = frozenset({4, 5, 0x86, 0x87, 0x8A, 0x8C})


class MqttSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to reach the broker. Every node config embeds these fields (``BESS_MQTT_*``)."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = msgspec.field(default=1883)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_tls_ca_file: str | None = None
    mqtt_tls_insecure: bool = False
    mqtt_keepalive_s: int = 30
    mqtt_session_expiry_s: int = 86_400
    mqtt_reconnect_delay_s: float = 1.0
    #: payloads above this are dropped undecoded (topics whose valid messages can be larger get their contract's
    #: largest size instead); the broker's message_size_limit must not be below the bulk bound
    mqtt_max_payload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    #: the bound for payloads the contract does not bound: Plotly figures and history answers
    mqtt_max_bulk_payload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024 * 1024
    topic_root: str = "bess/v1"
    node_id: str | None = None
    status_interval_s: float = 30.0


@dataclass(frozen=True)
class Delivery:
    """Metadata of one received message."""

    topic: str
    retain: bool
    dup: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


Handler = Callable[[dict[str, str], P, Delivery], Awaitable[None]]
InvalidHandler = Callable[[dict[str, str], str], Awaitable[None]]
"""Told ``(params, error)`` when a payload on a subscribed topic fails to decode (after it was logged and counted)."""


@dataclass
class _Subscription(Generic[P]):
    topic: Topic[P]
    handler: Handler[P]
    filter: str
    fixed: dict[str, str]
    share_group: str | None = None
    max_payload_bytes: int = 0
    on_invalid: InvalidHandler | None = None
    no_local: bool = False

    @property
    def broker_filter(self) -> str:
        return f"$share/{self.share_group}/{self.filter}" if self.share_group else self.filter


class _AckTrackingStorage(PersistentStorage):  # type: ignore[misc]
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
        return mid in self._messages

    def waiter(self, mid: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = future
        return future


def _first(properties: dict[str, Any], key: str) -> Any:
    value = properties.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


class Bus:
    """Typed MQTT publish/subscribe for one node process."""

    def __init__(
        self,
        node: str,
        settings: MqttSettings,
        *,
        receive_maximum: int = 1000,
        persistent: bool = True,
        client_id: str | None = None,
    ) -> None:
        self.node = settings.node_id or node
        self.settings = settings
        self.root = check_root(settings.topic_root)
        self.counters: Counter[str] = Counter()
        self.state: NodeState = "online"
        self.reason = ""
        self.details: dict[str, str] = {}
        self.since = datetime.now(UTC)
        self.connected = asyncio.Event()
        self._subscriptions: list[_Subscription[Any]] = []
        self._first_connect_done = False
        self._connections = 0
        self._stopping = False
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._storage = _AckTrackingStorage()
        self._status_task: asyncio.Task[None] | None = None
        self._extra_counters: Callable[[], dict[str, int]] | None = None
        #: the receiver's clock for the timestamp plausibility rule (tests move it)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._implausible_logged: dict[str, tuple[float, int]] = {}
        self._closed_socket = closed_socket_filter()
        will = gmqtt.Message(
            self.name(STATUS, node=self.node),
            STATUS.encode(NodeStatus(node=self.node, state="offline", version=__version__, reason="connection lost")),
            qos=1,
            retain=True,
        )
        # The root is part of the id so two deployments (or two tests) on one broker never share a session.
        self.client_id = client_id or f"{self.root.replace('/', '_')}-{self.node}"
        self._client = gmqtt.Client(
            self.client_id,
            clean_session=not persistent,
            optimistic_acknowledgement=False,
            will_message=will,
            persistent_storage=self._storage,
            session_expiry_interval=settings.mqtt_session_expiry_s if persistent else 0,
            receive_maximum=receive_maximum,
        )
        self._storage.on_clear = self._release_packet_ids
        self._watch_puback_reason_codes()
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": settings.mqtt_reconnect_delay_s})
        if settings.mqtt_username:
            self._client.set_auth_credentials(settings.mqtt_username, settings.mqtt_password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # -- topics -----------------------------------------------------------------------------------------------

    def name(self, topic: Topic[Any], **params: str) -> str:
        """The concrete topic name under this bus's root."""
        return topic.name(root=self.root, **params)

    def parse(self, topic: Topic[Any], name: str) -> dict[str, str] | None:
        """Parameters of a concrete topic name under this bus's root."""
        return topic.parse(name, root=self.root)

    # -- subscribe --------------------------------------------------------------------------------------------

    def subscribe(
        self,
        topic: Topic[P],
        handler: Handler[P],
        *,
        share_group: str | None = None,
        on_invalid: InvalidHandler | None = None,
        no_local: bool = False,
        **fixed: str,
    ) -> None:
        """Call ``handler(params, message, delivery)`` for every valid message on ``topic``.

        ``fixed`` pins parameters (``battery="b1"``); the others are wildcards. With ``share_group`` the
        subscription is an MQTT 5 shared subscription, so several instances split the stream. ``on_invalid``
        hears about payloads that fail to decode (e.g. the planner says which battery's spec it rejected).
        ``no_local`` (MQTT 5): the broker does not send this client's own publishes back.
        """
        limit = payload_limit(
            topic.payload,
            max_payload_bytes=self.settings.mqtt_max_payload_bytes,
            max_bulk_payload_bytes=self.settings.mqtt_max_bulk_payload_bytes,
        )
        sub = _Subscription(
            topic, handler, topic.filter(root=self.root, **fixed), fixed, share_group, limit, on_invalid, no_local
        )
        self._subscriptions.append(sub)
        if self.connected.is_set():
            self._send_subscribe([sub])

    def _send_subscribe(self, subs: list[_Subscription[Any]]) -> None:
        for sub in subs:
            self._client.subscribe(gmqtt.Subscription(sub.broker_filter, qos=1, no_local=sub.no_local))
            log.debug("subscribed %s", sub.broker_filter)

    # -- connection -------------------------------------------------------------------------------------------

    async def start(self, *, retry: bool = True) -> None:
        """Connect (retrying with backoff while the broker is unreachable) and wait for the first CONNACK."""
        delay = 0.2
        ssl_context: ssl.SSLContext | bool = False
        if self.settings.mqtt_tls:
            ssl_context = ssl.create_default_context(cafile=self.settings.mqtt_tls_ca_file)
            if self.settings.mqtt_tls_insecure:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        while True:
            try:
                await self._client.connect(
                    self.settings.mqtt_host,
                    self.settings.mqtt_port,
                    ssl=ssl_context,
                    keepalive=self.settings.mqtt_keepalive_s,
                )
                break
            except (OSError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
                if getattr(exc, "_code", None) in REFUSED_CODES:
                    raise BusRefused(
                        f"broker {self.settings.mqtt_host}:{self.settings.mqtt_port} refused the login of "
                        f"{self.settings.mqtt_username or 'an anonymous client'}: {exc}"
                    ) from exc
                if not retry:
                    raise BusUnavailable(f"cannot reach broker {self.settings.mqtt_host}:"
                                         f"{self.settings.mqtt_port}: {exc}") from exc
                log.warning("broker %s:%s unreachable (%s); retrying in %.1f s",
                            self.settings.mqtt_host, self.settings.mqtt_port, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await asyncio.wait_for(self.connected.wait(), timeout=30)
        self._status_task = asyncio.create_task(self._status_loop(), name="status")

    def _on_connect(self, client: gmqtt.Client, session_present: int, rc: int, properties: Any) -> None:
        # First connection of the process: subscribe even if the session survived, because retained state
        # (spec, prices, schedule) is only delivered on subscribe and this process has none of it in memory.
        if not self._first_connect_done or not session_present:
            self._send_subscribe(self._subscriptions)
        left_out = self._closed_socket.rearm()
        if self._first_connect_done:
            log.info("reconnected to broker (session present: %s)%s", bool(session_present),
                     f"; {left_out} more writes to the closed socket were not logged" if left_out else "")
            self.counters["reconnects"] += 1
        self._connections += 1
        self._first_connect_done = True
        self.connected.set()
        asyncio.get_running_loop().create_task(self.publish_status())

    @property
    def connections(self) -> int:
        """How many times this process has connected (1 after the first CONNACK): a connection epoch.

        A device that keeps its readings until they are stored (:mod:`nodes.simulator.outbox`) re-sends them
        when this changes: a broker that crashed may have forgotten what it had acknowledged.
        """
        return self._connections

    def _on_disconnect(self, client: gmqtt.Client, packet: Any, exc: Exception | None = None) -> None:
        self._closed_socket.rearm()  # one closed-socket line per disconnect, not one per write
        if not self._stopping:
            log.warning("disconnected from broker; gmqtt reconnects on its own")
        self.connected.clear()

    async def stop(self) -> None:
        """Publish ``offline`` (retained) and disconnect, keeping the persistent session at the broker."""
        self._stopping = True
        if self._status_task:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        if self.connected.is_set():
            with contextlib.suppress(BusUnavailable, TimeoutError):
                self.state, self.reason = "offline", "stopped"
                await self.publish_status(timeout=2.0)
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self.connected.clear()

    # -- status -----------------------------------------------------------------------------------------------

    def set_counters_source(self, source: Callable[[], dict[str, int]]) -> None:
        """Extra counters (e.g. points stored) merged into every status message."""
        self._extra_counters = source

    def set_state(self, state: NodeState, reason: str = "") -> None:
        """Change this node's state (online/degraded); published at once when it changed."""
        if (state, reason) == (self.state, self.reason):
            return
        if state != self.state:
            self.since = datetime.now(UTC)
            log.log(logging.WARNING if state != "online" else logging.INFO, "state %s %s", state, reason)
        self.state, self.reason = state, reason
        if self.connected.is_set():
            asyncio.get_running_loop().create_task(self.publish_status())

    def set_details(self, details: dict[str, str]) -> None:
        """Per-item notes (keyed by battery id) that do not change the state; published at once when changed."""
        if details == self.details:
            return
        self.details = dict(details)
        if self.connected.is_set():
            asyncio.get_running_loop().create_task(self.publish_status())

    def status(self) -> NodeStatus:
        """The status message as it would be published now."""
        counters = dict(self.counters)
        if self._extra_counters:
            counters.update(self._extra_counters())
        return NodeStatus(
            node=self.node,
            state=self.state,
            since=self.since,
            version=__version__,
            reason=self.reason,
            pid=os.getpid(),
            counters=counters,
            details=self.details,
        )

    async def publish_status(self, timeout: float = 5.0) -> None:
        """Publish the retained status message."""
        try:
            await self.publish(STATUS, self.status(), wait_ack=True, timeout=timeout, node=self.node)
        except BusUnavailable as exc:
            log.debug("status not published: %s", exc)

    async def _status_loop(self) -> None:
        # Periodic republish so counters stay visible to `mosquitto_sub -t 'bess/v1/node/+/status'`.
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            if self.connected.is_set():
                await self.publish_status()

    # -- publish ----------------------------------------------------------------------------------------------

    async def publish(
        self,
        topic: Topic[P],
        message: P,
        *,
        retain: bool | None = None,
        wait_ack: bool = False,
        timeout: float = 5.0,
        properties: dict[str, Any] | None = None,
        **params: str,
    ) -> None:
        """Publish ``message`` on ``topic`` (QoS and retain from the declaration).

        With ``wait_ack`` this returns only after the broker's PUBACK and raises :class:`BusUnavailable`
        when the broker is not connected or does not answer within ``timeout``: what the gateway needs to
        answer 202 truthfully. Without it, a message published while the connection is down is kept by gmqtt
        and sent after the reconnect (persistent session).
        """
        await self.publish_bytes(
            self.name(topic, **params),
            topic.encode(message),
            qos=topic.qos,
            retain=topic.retain if retain is None else retain,
            wait_ack=wait_ack,
            timeout=timeout,
            properties=properties,
        )

    async def publish_bytes(
        self,
        name: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait_ack: bool = False,
        timeout: float = 5.0,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Publish raw bytes on a concrete topic name (used for pre-encoded payloads)."""
        if wait_ack and not self.connected.is_set():
            raise BusUnavailable("not connected to the MQTT broker")
        if not self._first_connect_done:
            raise BusUnavailable("the bus has not connected yet")
        if qos > 0:
            await self._wait_for_packet_id(timeout)
        self._client.publish(name, payload, qos=qos, retain=retain, **(properties or {}))
        self.counters["published"] += 1
        if wait_ack and qos > 0:
            mid = self._storage.last_mid
            if mid is None or not self._storage.is_pending(mid):
                return  # already acknowledged (the PUBACK can beat us on a fast loopback)
            waiter = self._storage.waiter(mid)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError as exc:
                raise BusUnavailable(f"no PUBACK from the broker within {timeout:.1f} s") from exc

    def _watch_puback_reason_codes(self) -> None:
        # gmqtt 0.8 ignores the MQTT 5 PUBACK reason code ("TODO" in its handler), so a publish the broker's ACL
        # denies (0x87) would look acknowledged and the gateway would answer 202 for a message nobody received.
        # Read the code before gmqtt's own handler frees the packet id (it dispatches on this attribute).
        handler = self._client._package_handler
        original = handler._handle_puback_packet
        storage = self._storage

        def on_puback(cmd: int, packet: bytes) -> None:
            if len(packet) >= 3 and packet[2] >= 0x80:
                storage.refused[struct.unpack("!H", packet[:2])[0]] = packet[2]
            original(cmd, packet)

        handler._handle_puback_packet = on_puback

    def _release_packet_ids(self, mids: list[int]) -> None:
        # When the broker lost our session, gmqtt drops the unacknowledged messages but keeps their packet ids
        # allocated; without this, a few such reconnects would leave no id for any QoS 1 publish.
        ids = self._client._package_handler.id_generator
        for mid in mids:
            ids.free_id(mid)

    def _packet_ids_exhausted(self) -> bool:
        ids = self._client._package_handler.id_generator
        return bool(len(ids._used_ids) >= ids._max - 1)

    async def _wait_for_packet_id(self, timeout: float) -> None:
        """Wait for a free packet id instead of letting gmqtt raise OverflowError.

        gmqtt allows only the broker's CONNACK receive maximum of unacknowledged QoS>0 messages (mosquitto's
        default is 20, so 19 ids) and raises ``OverflowError`` beyond that; concurrent publishers (the gateway
        under load) must queue for an id instead. Raises :class:`BusUnavailable` after ``timeout``.
        """
        if not self._packet_ids_exhausted():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._packet_ids_exhausted():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BusUnavailable(f"no packet id freed (no PUBACK from the broker) within {timeout:.1f} s")
            self._storage.freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._storage.freed.wait(), remaining)

    # -- request / response (MQTT 5 response topic + correlation data) --------------------------------------

    def enable_requests(self) -> None:
        """Subscribe to this node's response topic; call before :meth:`start` to use :meth:`request`."""
        self.subscribe(HISTORY_RESPONSE, self._on_response, client=self.node)

    async def _on_response(self, params: dict[str, str], message: Any, delivery: Delivery) -> None:
        if delivery.correlation_data is None:
            return
        future = self._pending.pop(delivery.correlation_data, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def request(self, topic: Topic[P], message: P, *, timeout: float = 10.0, **params: str) -> Any:
        """Publish a request with a response topic and wait for the correlated answer (raises TimeoutError)."""
        correlation = uuid.uuid4().hex.encode()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            await self.publish_bytes(
                self.name(topic, **params),
                topic.encode(message),
                qos=topic.qos,
                wait_ack=True,
                timeout=timeout,
                properties={
                    "response_topic": self.name(HISTORY_RESPONSE, client=self.node),
                    "correlation_data": correlation,
                },
            )
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(correlation, None)

    async def respond(self, delivery: Delivery, topic: Topic[R], message: R) -> None:
        """Answer a request on its response topic with its correlation data (no-op without a response topic)."""
        if not delivery.response_topic:
            return
        params = self.parse(topic, delivery.response_topic)
        if params is None:
            log.warning("refusing to answer on foreign response topic %r", delivery.response_topic[:200])
            self.counters["bad_response_topic"] += 1
            return
        properties = {"correlation_data": delivery.correlation_data} if delivery.correlation_data else {}
        await self.publish_bytes(
            self.name(topic, **params), topic.encode(message), qos=topic.qos, properties=properties
        )

    # -- receive ----------------------------------------------------------------------------------------------

    async def _on_message(
        self, client: gmqtt.Client, name: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        # Every path returns 0: that is the PUBACK reason code "success". gmqtt sends it when this coroutine
        # returns, i.e. after the handler has finished (optimistic_acknowledgement=False).
        self.counters["received"] += 1
        for sub in self._subscriptions:
            params = sub.topic.parse(name, root=self.root)
            if params is None or any(params.get(k) != v for k, v in sub.fixed.items()):
                continue
            await self._dispatch(sub, name, params, payload, properties)
            return 0
        self.counters["unrouted"] += 1
        log.debug("message on %s matches no subscription", name)
        return 0

    def _drop_implausible(self, name: str, problem: str, payload: bytes) -> None:
        # a device with a wrong clock publishes every second: one line per topic a minute, with the count
        self.counters["implausible"] += 1
        now = time.monotonic()
        last, suppressed = self._implausible_logged.get(name, (-math.inf, 0))
        if now - last < 60.0:
            self._implausible_logged[name] = (last, suppressed + 1)
            return
        if len(self._implausible_logged) > 10_000:
            self._implausible_logged.clear()
        self._implausible_logged[name] = (now, 0)
        more = f" ({suppressed} more on this topic in the last minute)" if suppressed else ""
        log.warning("dropped message with an implausible timestamp on %s: %s%s; payload (%d bytes): %r", name,
                    problem, more, len(payload), payload[:PAYLOAD_LOG_LIMIT])

    async def _dispatch(
        self,
        sub: _Subscription[Any],
        name: str,
        params: dict[str, str],
        payload: bytes,
        properties: dict[str, Any],
    ) -> None:
        if not payload:
            # An empty retained payload is how MQTT clears a retained message: nothing to handle.
            self.counters["empty_payloads"] += 1
            return
        if len(payload) > sub.max_payload_bytes:
            # Not even decoded: a payload larger than any valid message on this topic could be is abuse or a bug
            # at the producer, and decoding it would cost every consumer the time and memory it was meant to.
            self.counters["oversized"] += 1
            log.warning(
                "dropped oversized payload on %s: %d bytes, more than the %d allowed on this topic; starts with %r",
                name,
                len(payload),
                sub.max_payload_bytes,
                payload[:PAYLOAD_LOG_LIMIT],
            )
            return
        try:
            message = sub.topic.decode(payload)
        except Exception as exc:
            # any failure to decode is bad input, not only msgspec's errors: deep nesting raises RecursionError
            # and invalid UTF-8 in a string UnicodeDecodeError; letting one escape would leave the message
            # unacknowledged and redelivered forever
            self.counters["decode_errors"] += 1
            log.warning(
                "dropped undecodable payload on %s: %s; payload (%d bytes): %r",
                name,
                exc,
                len(payload),
                payload[:PAYLOAD_LOG_LIMIT],
            )
            if sub.on_invalid is not None:
                try:
                    await sub.on_invalid(params, str(exc)[:PAYLOAD_LOG_LIMIT])
                except Exception:
                    self.counters["handler_errors"] += 1
                    log.exception("invalid-payload handler for %s failed", name)
            return
        problem = plausibility.message_problem(message, self.clock())
        if problem is not None:
            self._drop_implausible(name, problem, payload)
            return
        response_topic = _first(properties, "response_topic")
        correlation = _first(properties, "correlation_data")
        delivery = Delivery(
            topic=name,
            retain=bool(properties.get("retain")),
            dup=bool(properties.get("dup")),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
        )
        started = time.perf_counter()
        try:
            await sub.handler(params, message, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("handler for %s failed on message %r", name, payload[:PAYLOAD_LOG_LIMIT])
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > 5.0:
                # DEBUG: while a database is down every waiting message takes long; one line each would flood
                log.debug("handler for %s took %.1f s", name, elapsed)


__all__ = [
    "Bus", "BusRefused", "BusUnavailable", "Delivery", "Handler", "InvalidHandler", "MqttSettings", "PublishRefused",
]
