"""An in-memory bus and broker for unit tests of node shells (no network, no gmqtt, same interface and rules).

:class:`MemoryBus` is a :class:`nodes.runtime.core.MessageBus` like the MQTT :class:`nodes.runtime.bus.Bus`:
the same typed publish/subscribe, request/response, status, details and counters, and the same receive rules
(payload bounds, decode errors, plausibility, handler errors), because both run :mod:`nodes.runtime.dispatch`.
Several buses on one :class:`MemoryBroker` talk to each other as nodes on one mosquitto would::

    broker = MemoryBroker()
    planner = Planner(config, MemoryBus("planner", broker))
    market = MemoryBus("market", broker)
    await market.publish(PRICES, forecast, zone="de-lu")
    await broker.idle()                       # every handler the publish started has finished
    [schedule] = planner.bus.sent(SCHEDULE)   # typed: list[Schedule]

The broker keeps retained messages (offered to every new subscription, ``retain=True`` in its Delivery; an empty
payload clears one), deals a shared subscription's messages to one member at a time, honours no-local and
starts one task per delivered message (handlers run concurrently, as gmqtt runs them). A bus starts connected;
:meth:`MemoryBus.disconnect` / :meth:`MemoryBus.reconnect` play a broker outage (publishes with ``wait_ack``
raise :class:`BusUnavailable` meanwhile; the others are sent after the reconnect) and
:meth:`MemoryBus.fail_publishes` makes publishes raise, as a broker that stops acknowledging would.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec

from nodes.contract.topics import DEFAULT_ROOT, Topic
from nodes.runtime.config import MqttSettings
from nodes.runtime.core import MessageBus, Outgoing
from nodes.runtime.dispatch import AnySubscription, Delivery, topic_matches
from nodes.runtime.errors import BusUnavailable

P = TypeVar("P", bound=msgspec.Struct)


@dataclass(frozen=True)
class Sent(Outgoing):
    """One message a :class:`MemoryBus` published, as it went to the broker, and whether it awaited the PUBACK."""

    wait_ack: bool = False


class MemoryBroker:
    """Routes messages between the :class:`MemoryBus` instances attached to it."""

    def __init__(self) -> None:
        #: retained payloads by topic name, with their MQTT 5 properties
        self.retained: dict[str, tuple[bytes, dict[str, Any] | None]] = {}
        self.clients: list[MemoryBus] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}

    def attach(self, client: MemoryBus) -> None:
        """Connect ``client`` to this broker (done by the bus itself)."""
        self.clients.append(client)

    def retained_message(self, topic: Topic[P], root: str = DEFAULT_ROOT, **params: str) -> P | None:
        """The retained message on ``topic`` (decoded), or None."""
        kept = self.retained.get(topic.name(root=root, **params))
        return topic.decode(kept[0]) if kept is not None and kept[0] else None

    def route(self, sender: MemoryBus, name: str, payload: bytes, retain: bool,
              properties: dict[str, Any] | None) -> None:
        """Deliver one published message to every matching subscription (one member of each share group)."""
        if retain:
            if payload:
                self.retained[name] = (payload, properties)
            else:
                self.retained.pop(name, None)
        shared: dict[tuple[str, str], list[MemoryBus]] = {}
        for client in self.clients:
            if not client.connected.is_set():
                continue
            for sub in client.subscriptions:
                if not topic_matches(sub.filter, name) or (sub.no_local and client is sender):
                    continue
                if sub.share_group is not None:
                    shared.setdefault((sub.share_group, sub.filter), []).append(client)
                else:
                    self._deliver(client, name, payload, False, properties)
        for group, members in shared.items():
            turn = next(self._turns.setdefault(group, itertools.count()))
            self._deliver(members[turn % len(members)], name, payload, False, properties)

    def offer_retained(self, client: MemoryBus, sub: AnySubscription) -> None:
        """A new subscription gets the retained messages it matches (not a shared one: MQTT 5 sends none there)."""
        if sub.share_group is not None:
            return
        for name, (payload, properties) in list(self.retained.items()):
            if topic_matches(sub.filter, name):
                self._deliver(client, name, payload, True, properties)

    def _deliver(self, client: MemoryBus, name: str, payload: bytes, retain: bool,
                 properties: dict[str, Any] | None) -> None:
        props = properties or {}
        delivery = Delivery(topic=name, retain=retain, dup=False, response_topic=props.get("response_topic"),
                            correlation_data=props.get("correlation_data"))
        task = asyncio.get_running_loop().create_task(client._receive(name, payload, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every delivery (and every status publish of the clients) has been handled, recursively."""
        while True:
            pending = set(self._tasks)
            for client in self.clients:
                pending |= client._tasks
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)


class MemoryBus(MessageBus):
    """A node's bus on a :class:`MemoryBroker` (its own broker unless one is given)."""

    def __init__(self, node: str = "node", broker: MemoryBroker | None = None, *,
                 settings: MqttSettings | None = None) -> None:
        super().__init__(node, settings or MqttSettings())
        self.broker = broker or MemoryBroker()
        #: every message this bus published, in order
        self.published: list[Sent] = []
        self._fail: tuple[BaseException, int] | None = None
        self._outbox: list[Outgoing] = []  # published while disconnected, sent at the reconnect
        self.broker.attach(self)
        self.connected.set()
        self._connections = 1

    @property
    def subscriptions(self) -> list[AnySubscription]:
        """This bus's subscriptions, typed and foreign (what the broker routes by)."""
        return self._router.every_subscription()

    # -- what a test looks at -----------------------------------------------------------------------------------

    def sent(self, topic: Topic[P], **fixed: str) -> list[P]:
        """The messages this bus published on ``topic`` (with the parameters ``fixed``), in order.

        The objects given to :meth:`publish` (so ``is`` tells two publishes apart); raw payloads are decoded.
        """
        out: list[P] = []
        for sent in self.published:
            params = self.parse(topic, sent.topic)
            if params is None or any(params.get(k) != v for k, v in fixed.items()):
                continue
            # a name of ``topic`` was only ever published with a message of its payload type
            out.append(cast(P, sent.message) if sent.message is not None else topic.decode(sent.payload))
        return out

    def fail_publishes(self, error: BaseException | None, *, after: int = 0) -> None:
        """Let ``after`` more publishes through, then raise ``error`` from every one (None: stop failing)."""
        self._fail = None if error is None else (error, len(self.published) + after)

    def disconnect(self) -> None:
        """The broker connection is lost (subscriptions stay, as in a persistent session)."""
        self.connected.clear()

    def reconnect(self) -> None:
        """The connection is back: a new connection epoch, what was published meanwhile is sent, status online."""
        self._connections += 1
        self.connected.set()
        outbox, self._outbox = self._outbox, []
        for out in outbox:
            self.broker.route(self, out.topic, out.payload, out.retain, out.properties)
        self._spawn(self.publish_status())

    # -- transport ----------------------------------------------------------------------------------------------

    async def _send(self, out: Outgoing, *, wait_ack: bool, timeout: float) -> None:
        if self._fail is not None and len(self.published) >= self._fail[1]:
            raise self._fail[0]
        if wait_ack and not self.connected.is_set():
            raise BusUnavailable("not connected to the MQTT broker")
        self.published.append(Sent(out.topic, out.payload, out.qos, out.retain, out.properties, out.message,
                                   wait_ack))
        self.counters["published"] += 1
        if not self.connected.is_set():
            self._outbox.append(out)
            return
        self.broker.route(self, out.topic, out.payload, out.retain, out.properties)

    def _subscribed(self, sub: AnySubscription) -> None:
        if self.connected.is_set():
            self.broker.offer_retained(self, sub)

    async def start(self, *, retry: bool = True) -> None:
        """Publish ``online`` (the bus is connected from the start)."""
        await self.publish_status()

    async def stop(self) -> None:
        """Publish ``offline`` (retained) and disconnect."""
        await self._publish_offline()
        self.disconnect()


__all__ = ["MemoryBroker", "MemoryBus", "Sent", "topic_matches"]
