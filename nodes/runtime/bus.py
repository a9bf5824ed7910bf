"""The MQTT 5 transport of the bus, with gmqtt: one :class:`Bus` per node process.

It owns the gmqtt client and enforces the project's delivery rules so that no node has to remember them
(the receive rules, status and request/response are shared with the in-memory bus: :mod:`nodes.runtime.core`):

* QoS 1 on both sides (gmqtt subscribes at QoS 0 unless told otherwise).
* Persistent sessions (``clean_session=False`` + ``session_expiry_interval``) so messages published while a
  node is away wait at the broker, and outgoing QoS 1 messages survive a broker restart.
* Acknowledge after handling: the client runs with ``optimistic_acknowledgement=False`` and every handler is
  awaited before the PUBACK is sent, so a message is only acknowledged once the node has dealt with it (the
  recorder awaits the database write). A process that dies before that gets the message again.
* Subscribe inside on-connect: on the first connection of the process (to receive retained state again) and on
  every reconnect whose session the broker lost (gmqtt does not resubscribe by itself).
* Last will ``node/{node}/status`` = offline (retained) and ``online`` on every connect.
* A publish waits for a free packet id instead of failing when the broker's receive maximum is in flight; a
  publish with ``wait_ack`` learns the PUBACK's reason code (0x87 not authorised raises :class:`PublishRefused`).

What gmqtt does not offer publicly (PUBACK reason codes, packet ids, its closed-socket log line) is reached in
:mod:`nodes.runtime.gmqtt_internals`, the only module that touches gmqtt's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import gmqtt

from nodes import __version__
from nodes.contract.messages import NodeStatus
from nodes.contract.topics import STATUS
from nodes.runtime import gmqtt_internals as internals
from nodes.runtime.config import MqttSettings
from nodes.runtime.core import MessageBus, Outgoing
from nodes.runtime.dispatch import AnySubscription, Delivery, Handler, InvalidHandler
from nodes.runtime.errors import BusRefused, BusUnavailable, PublishRefused, SubscriptionOverlap

log = logging.getLogger("bess.bus")

# CONNACK codes that mean "these credentials will never work" (MQTT 3.1.1: 4, 5; MQTT 5: 0x86, 0x87, 0x8A, 0x8C)
REFUSED_CODES = frozenset({4, 5, 0x86, 0x87, 0x8A, 0x8C})
#: topic filters per SUBSCRIBE packet (about 60 bytes each: a packet stays far below any broker's size limit)
SUBSCRIBE_CHUNK = 200


def _first(properties: dict[str, Any], key: str) -> Any:
    value = properties.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


class Bus(MessageBus):
    """Typed MQTT publish/subscribe for one node process."""

    def __init__(
        self,
        node: str,
        settings: MqttSettings,
        *,
        receive_maximum: int | None = None,
        persistent: bool = True,
        client_id: str | None = None,
    ) -> None:
        internals.check()  # refuse to start on a gmqtt whose internals moved, with the list of what moved
        internals.coalesce_pubacks()  # one socket write per loop turn for the PUBACKs, not one per message
        super().__init__(node, settings)
        self._first_connect_done = False
        self._stopping = False
        self._storage = internals.AckTrackingStorage()
        self._status_task: asyncio.Task[None] | None = None
        self._closed_socket = internals.closed_socket_filter()
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
            receive_maximum=settings.receive_maximum if receive_maximum is None else receive_maximum,
        )
        self._storage.on_clear = self._release_packet_ids
        internals.watch_puback_reason_codes(self._client, self._storage)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": settings.mqtt_reconnect_delay_s})
        if settings.mqtt_username:
            self._client.set_auth_credentials(settings.mqtt_username, settings.mqtt_password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # -- subscribe --------------------------------------------------------------------------------------------

    def _subscribed(self, sub: AnySubscription) -> None:
        if self.connected.is_set():
            self._send_subscribe([sub])

    def _send_subscribe(self, subs: list[AnySubscription]) -> None:
        # Several filters per SUBSCRIBE packet: each packet takes a packet id until its SUBACK, and gmqtt has only
        # the broker's receive maximum of them, so a simulator of 1,000 batteries (3,000 filters) sent one packet
        # each ran out of ids (OverflowError in on_connect) and never came online.
        for start in range(0, len(subs), SUBSCRIBE_CHUNK):
            chunk = subs[start : start + SUBSCRIBE_CHUNK]
            self._client.subscribe([gmqtt.Subscription(sub.broker_filter, qos=1, no_local=sub.no_local)
                                    for sub in chunk])
            log.debug("subscribed %s", ", ".join(sub.broker_filter for sub in chunk))

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
            except internals.CONNECT_ERRORS as exc:
                if internals.connect_refusal_code(exc) in REFUSED_CODES:
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
            self._send_subscribe(self._router.every_subscription())
        left_out = self._closed_socket.rearm()
        if self._first_connect_done:
            log.info("reconnected to broker (session present: %s)%s", bool(session_present),
                     f"; {left_out} more writes to the closed socket were not logged" if left_out else "")
            self.counters["reconnects"] += 1
        self._connections += 1
        self._first_connect_done = True
        self.connected.set()
        self._spawn(self.publish_status())

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
        await self._publish_offline()
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self.connected.clear()

    async def _status_loop(self) -> None:
        # Periodic republish so counters stay visible to `mosquitto_sub -t 'bess/v1/node/+/status'`.
        while True:
            await asyncio.sleep(self.settings.status_interval_s)
            if self.connected.is_set():
                await self.publish_status()

    # -- publish ----------------------------------------------------------------------------------------------

    async def _send(self, out: Outgoing, *, wait_ack: bool, timeout: float) -> None:
        if wait_ack and not self.connected.is_set():
            raise BusUnavailable("not connected to the MQTT broker")
        if not self._first_connect_done:
            raise BusUnavailable("the bus has not connected yet")
        if out.qos > 0:
            await self._wait_for_packet_id(timeout)
        self._client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain, **(out.properties or {}))
        self.counters["published"] += 1
        if wait_ack and out.qos > 0:
            mid = self._storage.last_mid
            if mid is None or not self._storage.is_pending(mid):
                return  # already acknowledged (the PUBACK can beat us on a fast loopback)
            waiter = self._storage.waiter(mid)
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see _wait_for_packet_id
                    await waiter
            except TimeoutError as exc:
                raise BusUnavailable(f"no PUBACK from the broker within {timeout:.1f} s") from exc

    def _release_packet_ids(self, mids: list[int]) -> None:
        # When the broker lost our session, gmqtt drops the unacknowledged messages but keeps their packet ids
        # allocated; without this, a few such reconnects would leave no id for any QoS 1 publish.
        internals.release_packet_ids(self._client, mids)

    async def _wait_for_packet_id(self, timeout: float) -> None:
        """Wait for a free packet id instead of letting gmqtt raise OverflowError.

        gmqtt allows only the broker's CONNACK receive maximum of unacknowledged QoS>0 messages (mosquitto's
        default is 20, so 19 ids) and raises ``OverflowError`` beyond that; concurrent publishers (the gateway
        under load) must queue for an id instead. Raises :class:`BusUnavailable` after ``timeout``.
        """
        if not internals.packet_ids_exhausted(self._client):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while internals.packet_ids_exhausted(self._client):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BusUnavailable(f"no packet id freed (no PUBACK from the broker) within {timeout:.1f} s")
            self._storage.freed.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that comes in the moment
            # the wait completes, and a stopped node then kept publishing (a 1,000-battery simulator needed SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._storage.freed.wait()

    # -- receive ----------------------------------------------------------------------------------------------

    async def _on_message(
        self, client: gmqtt.Client, name: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        # Every path returns 0: that is the PUBACK reason code "success". gmqtt sends it when this coroutine
        # returns, i.e. after the handler has finished (optimistic_acknowledgement=False).
        response_topic = _first(properties, "response_topic")
        correlation = _first(properties, "correlation_data")
        delivery = Delivery(
            topic=name,
            retain=bool(properties.get("retain")),
            dup=bool(properties.get("dup")),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
        )
        await self._receive(name, payload, delivery)
        return 0


__all__ = [
    # the transport-agnostic names are re-exported so `from nodes.runtime.bus import ...` keeps working
    "Bus", "BusRefused", "BusUnavailable", "Delivery", "Handler", "InvalidHandler", "MessageBus", "MqttSettings",
    "PublishRefused", "SubscriptionOverlap",
]
