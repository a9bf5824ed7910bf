"""The bus as a node sees it: typed publish/subscribe, request/response and status, whatever carries the bytes.

:class:`MessageBus` is what every node shell is given (``Service.__init__(config, bus)``). Two transports
implement it: :class:`nodes.runtime.bus.Bus` (MQTT 5 with gmqtt, one per process) and
:class:`nodes.runtime.memory.MemoryBus` (in-process, for unit tests of node shells). Both run the same receive
rules (:mod:`nodes.runtime.dispatch`), the same request/response (:mod:`nodes.runtime.requests`) and the same
status (:mod:`nodes.runtime.status`); a transport only moves bytes: :meth:`MessageBus._send`,
:meth:`MessageBus._subscribed`, :meth:`MessageBus.start`, :meth:`MessageBus.stop`.

Publishing: QoS and retain come from the topic's declaration; the message is encoded by the declaration's
encoder. A publish with ``wait_ack`` returns only after the broker acknowledged it and raises
:class:`BusUnavailable` when it cannot (not connected, no PUBACK in time, refused).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from nodes.contract.messages import NodeState, NodeStatus
from nodes.contract.topics import STATUS, Request, Topic, check_root
from nodes.runtime.config import MqttSettings
from nodes.runtime.dispatch import (
    AnySubscription,
    ClearedHandler,
    Delivery,
    ForeignSubscription,
    Handler,
    InvalidHandler,
    RawHandler,
    Router,
    Subscription,
)
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.payload_limits import payload_limit
from nodes.runtime.requests import Answerer, Requests
from nodes.runtime.status import Health

log = logging.getLogger("bess.bus")

P = TypeVar("P", bound=msgspec.Struct)
Q = TypeVar("Q", bound=msgspec.Struct)
A = TypeVar("A", bound=msgspec.Struct)


@dataclass(frozen=True)
class Outgoing:
    """One message as the bus hands it to its transport."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: MQTT 5 publish properties as gmqtt takes them (``response_topic``, ``correlation_data``), or None
    properties: dict[str, Any] | None = None
    #: the typed message ``payload`` encodes (None for :meth:`MessageBus.publish_bytes`)
    message: msgspec.Struct | None = None


class MessageBus(abc.ABC):
    """Typed publish/subscribe, request/response and the status of one node."""

    def __init__(self, node: str, settings: MqttSettings) -> None:
        self.node = settings.node_id or node
        self.settings = settings
        self.root = check_root(settings.topic_root)
        self.health = Health(self.node)
        self.connected = asyncio.Event()
        self._router = Router(self.root, self.health.counters, lambda: datetime.now(UTC))
        self._requests = Requests(self)
        self._connections = 0
        self._tasks: set[asyncio.Task[Any]] = set()  # referenced until done (the loop keeps only weak ones)

    @property
    def clock(self) -> Callable[[], datetime]:
        """The receiver's clock for the timestamp plausibility rule (tests move it)."""
        return self._router.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime]) -> None:
        self._router.clock = clock

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
        on_cleared: ClearedHandler | None = None,
        **fixed: str,
    ) -> None:
        """Call ``handler(params, message, delivery)`` for every valid message on ``topic``.

        ``fixed`` pins parameters (``battery="b1"``); the others are wildcards. With ``share_group`` the
        subscription is an MQTT 5 shared subscription, so several instances split the stream. ``on_invalid``
        hears about payloads that fail to decode (e.g. the planner says which battery's spec it rejected).
        ``no_local`` (MQTT 5): the broker does not send this client's own publishes back. ``on_cleared`` hears
        about empty payloads (a retained message cleared) with the topic's parameters. A subscription that
        could match a topic name another one of this bus matches raises :class:`SubscriptionOverlap`.
        """
        limit = payload_limit(
            topic.payload,
            max_payload_bytes=self.settings.mqtt_max_payload_bytes,
            max_bulk_payload_bytes=self.settings.mqtt_max_bulk_payload_bytes,
        )
        sub = Subscription(
            topic, handler, topic.filter(root=self.root, **fixed), fixed, share_group, limit, on_invalid, no_local,
            on_cleared,
        )
        self._router.add(sub)
        self._subscribed(sub)

    def subscribe_foreign(self, filter_: str, handler: RawHandler) -> None:
        """Call ``handler(name, payload, delivery)`` for every message on ``filter_``, a topic filter outside the
        contract and outside this bus's root (a device's own dialect, read by a bridge).

        The payload is raw bytes (empty ones too); it is bounded by ``BESS_MQTT_MAX_PAYLOAD_BYTES``. The filter is
        used as given: a device's topics are its own, not this deployment's. Overlaps are refused as for
        :meth:`subscribe`.
        """
        sub = ForeignSubscription(filter_, handler, self.settings.mqtt_max_payload_bytes)
        self._router.add_foreign(sub)
        self._subscribed(sub)

    async def _receive(self, name: str, payload: bytes, delivery: Delivery) -> None:
        """A message from the transport: decoded, checked and handed to its subscription's handler."""
        await self._router.deliver(name, payload, delivery)

    # -- publish ----------------------------------------------------------------------------------------------

    async def publish(
        self,
        topic: Topic[P],
        message: P,
        *,
        retain: bool | None = None,
        wait_ack: bool = False,
        timeout: float = 5.0,
        reply_to: Topic[Any] | None = None,
        correlation: bytes | None = None,
        **params: str,
    ) -> None:
        """Publish ``message`` on ``topic`` (QoS and retain from the declaration).

        With ``wait_ack`` this returns only after the broker's PUBACK and raises :class:`BusUnavailable`
        when the broker is not connected or does not answer within ``timeout``: what the gateway needs to
        answer 202 truthfully. Without it, a message published while the connection is down is kept and sent
        after the reconnect (persistent session). ``reply_to`` (an answer topic of the contract, its
        ``{client}`` this node) and ``correlation`` become the MQTT 5 response topic and correlation data: who
        consumes the message answers there (history answers, stored confirmations).
        """
        properties: dict[str, Any] = {}
        if reply_to is not None:
            properties["response_topic"] = self.name(reply_to, client=self.node)
        if correlation is not None:
            properties["correlation_data"] = correlation
        out = Outgoing(self.name(topic, **params), topic.encode(message), topic.qos,
                       topic.retain if retain is None else retain, properties or None, message)
        await self._send(out, wait_ack=wait_ack, timeout=timeout)

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
        """Publish raw bytes on a concrete topic name (pre-encoded payloads, and tests sending bad ones).

        ``properties`` are MQTT 5 publish properties as gmqtt takes them (``response_topic``, ``correlation_data``).
        """
        await self._send(Outgoing(name, payload, qos, retain, properties), wait_ack=wait_ack, timeout=timeout)

    @abc.abstractmethod
    async def _send(self, out: Outgoing, *, wait_ack: bool, timeout: float) -> None:
        """Hand one message to the transport; with ``wait_ack`` return only once the broker acknowledged it."""

    @abc.abstractmethod
    def _subscribed(self, sub: AnySubscription) -> None:
        """Tell the transport about a new subscription (sent at once when connected)."""

    # -- request / response -----------------------------------------------------------------------------------

    def enable_requests(self, request: Request[Q, A]) -> None:
        """Subscribe this node's answer topic of ``request`` in setup (else the first :meth:`request` does)."""
        self._requests.enable(request)

    async def request(self, request: Request[Q, A], message: Q, *, timeout: float = 10.0) -> A:
        """Ask and wait for the correlated answer, typed by the declaration (raises TimeoutError, BusUnavailable)."""
        return await self._requests.request(request, message, timeout=timeout)

    def serve(self, request: Request[Q, A], answer: Answerer[Q, A], *, share_group: str | None = None) -> None:
        """Answer every request on ``request.ask`` with what ``answer(params, query, delivery)`` returns."""
        self._requests.serve(request, answer, share_group=share_group)

    async def respond(self, delivery: Delivery, request: Request[Q, A], message: A) -> None:
        """Answer one request by hand (what :meth:`serve` does for every request)."""
        await self._requests.respond(delivery, request, message)

    def reply_client(self, answer: Topic[Any], delivery: Delivery) -> str | None:
        """The client named by a message's response topic under the answer topic ``answer``, or None."""
        return self._requests.reply_client(answer, delivery)

    # -- status -----------------------------------------------------------------------------------------------

    @property
    def counters(self) -> Counter[str]:
        """This node's counters (the bus's own and the shell's), published in the status."""
        return self.health.counters

    @property
    def state(self) -> NodeState:
        """online / degraded (offline once stopped)."""
        return self.health.state

    @property
    def reason(self) -> str:
        """Why the node is not online ("" when it is)."""
        return self.health.reason

    @property
    def details(self) -> dict[str, str]:
        """Per-item notes of the status (keyed by battery id)."""
        return self.health.details

    @property
    def connections(self) -> int:
        """How many times this process has connected (1 after the first CONNACK): a connection epoch.

        A device that keeps its readings until they are stored (:mod:`nodes.simulator.outbox`) re-sends them
        when this changes: a broker that crashed may have forgotten what it had acknowledged.
        """
        return self._connections

    def set_counters_source(self, source: Callable[[], dict[str, int]]) -> None:
        """Extra counters (e.g. points stored) merged into every status message."""
        self.health.set_counters_source(source)

    def set_state(self, state: NodeState, reason: str = "") -> None:
        """Change this node's state (online/degraded); published at once when it changed."""
        if self.health.set_state(state, reason) and self.connected.is_set():
            self._spawn(self.publish_status())

    def set_details(self, details: dict[str, str]) -> None:
        """Per-item notes (keyed by battery id) that do not change the state; published at once when changed."""
        if self.health.set_details(details) and self.connected.is_set():
            self._spawn(self.publish_status())

    def status(self) -> NodeStatus:
        """The status message as it would be published now."""
        return self.health.status()

    async def publish_status(self, timeout: float = 5.0) -> None:
        """Publish the retained status message."""
        try:
            await self.publish(STATUS, self.status(), wait_ack=True, timeout=timeout, node=self.node)
        except BusUnavailable as exc:
            log.debug("status not published: %s", exc)

    async def _publish_offline(self) -> None:
        """The last status of a clean stop: offline (retained), as the last will says for an unclean one."""
        if self.connected.is_set():
            with contextlib.suppress(BusUnavailable, TimeoutError):
                self.health.state, self.health.reason = "offline", "stopped"
                await self.publish_status(timeout=2.0)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle --------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, *, retry: bool = True) -> None:
        """Connect (subscriptions made before are sent now) and publish ``online``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Publish ``offline`` (retained) and disconnect."""


__all__ = ["MessageBus", "Outgoing"]
