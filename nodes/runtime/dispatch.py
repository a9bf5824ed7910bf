"""From a received payload to a typed handler call, the same for every transport (MQTT and in-memory).

A :class:`Router` holds one bus's subscriptions. For each message it finds the subscription whose topic
declaration parses the name, then applies the project's receive rules so that no node has to remember them:

* An empty payload (how MQTT clears a retained message) is counted (``empty_payloads``) and skipped; a
  subscription's ``on_cleared`` is told the topic's parameters (a battery whose retained spec was cleared).
* A payload larger than its topic's bound (:mod:`nodes.runtime.payload_limits`) is logged (cut to 512 bytes),
  counted (``oversized``) and dropped without being decoded.
* An undecodable payload is logged (cut), counted (``decode_errors``), told to the subscription's ``on_invalid``
  and dropped: never raised, never redelivered in a loop.
* A telemetry, state or command whose own timestamp is implausible (:mod:`nodes.contract.plausibility`) is
  dropped, counted (``implausible``) and logged once a minute per topic.
* A handler that raises is logged with its traceback and counted (``handler_errors``); the node stays up.

Foreign subscriptions (:class:`ForeignSubscription`, :meth:`Router.add_foreign`) take topics outside the contract, a
device's own dialect that a bridge translates (``N/<portal id>/...`` of a Victron GX): the handler gets the topic
name and the raw bytes (an empty payload too: some devices say "gone" with one), after the size bound
(``mqtt_max_payload_bytes``); its errors are caught and counted like a typed handler's.

Overlapping subscriptions are refused when they are made (:class:`nodes.runtime.errors.SubscriptionOverlap`), so
every message has at most one handler: "which of two handlers" never has to be decided, and a broker that delivers
one copy per matching filter cannot make a node handle a message twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from nodes.contract import plausibility
from nodes.contract.topics import Topic
from nodes.runtime.errors import SubscriptionOverlap

log = logging.getLogger("bess.bus")

P = TypeVar("P", bound=msgspec.Struct)

PAYLOAD_LOG_LIMIT = 512


@dataclass(frozen=True)
class Delivery:
    """Metadata of one received message."""

    topic: str
    retain: bool
    dup: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


Handler = Callable[[dict[str, str], P, Delivery], Awaitable[None]]
RawHandler = Callable[[str, bytes, Delivery], Awaitable[None]]
"""Told ``(topic name, payload, delivery)`` for a message on a foreign subscription."""
InvalidHandler = Callable[[dict[str, str], str], Awaitable[None]]
"""Told ``(params, error)`` when a payload on a subscribed topic fails to decode (after it was logged and counted)."""
ClearedHandler = Callable[[dict[str, str]], Awaitable[None]]
"""Told ``params`` when an empty payload arrives on a subscribed topic (a retained message was cleared)."""


@dataclass
class Subscription(Generic[P]):
    """One handler for one topic declaration, with the parameters it pins."""

    topic: Topic[P]
    handler: Handler[P]
    filter: str
    fixed: dict[str, str]
    share_group: str | None = None
    max_payload_bytes: int = 0
    on_invalid: InvalidHandler | None = None
    no_local: bool = False
    on_cleared: ClearedHandler | None = None

    @property
    def broker_filter(self) -> str:
        """The filter as the broker gets it (``$share/<group>/...`` for a shared subscription)."""
        return f"$share/{self.share_group}/{self.filter}" if self.share_group else self.filter


@dataclass
class ForeignSubscription:
    """One handler for topics outside the contract (a device's own dialect): an MQTT filter, raw bytes."""

    filter: str
    handler: RawHandler
    max_payload_bytes: int
    share_group: None = None
    no_local: bool = False

    @property
    def broker_filter(self) -> str:
        """The filter as the broker gets it (never shared: one bridge owns one device)."""
        return self.filter


AnySubscription = Subscription[Any] | ForeignSubscription


def topic_matches(filter_: str, name: str) -> bool:
    """MQTT topic matching: ``+`` is one level, a trailing ``#`` any number (names starting with ``$`` excluded)."""
    if name.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    levels, parts = filter_.split("/"), name.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(levels) == len(parts)


def filter_problems(filter_: str) -> list[str]:
    """``[]`` for a valid MQTT subscription filter, else the one-line reason."""
    if not filter_ or len(filter_) > 1024 or "\0" in filter_:
        return [f"topic filter {filter_[:80]!r} must be 1-1024 characters without NUL"]
    levels = filter_.split("/")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            return [f"topic filter {filter_!r}: '+' must be a whole level and '#' the whole last level"]
    return []


def filters_overlap(a: str, b: str) -> bool:
    """True when some topic name matches both MQTT filters (``+`` one level, ``#`` the rest)."""
    left, right = a.split("/"), b.split("/")
    for x, y in zip(left, right, strict=False):
        if "#" in (x, y):
            return True
        if x != y and "+" not in (x, y):
            return False
    return len(left) == len(right)


class Router:
    """A bus's subscriptions and the receive rules applied to every message."""

    def __init__(self, root: str, counters: Counter[str], clock: Callable[[], datetime]) -> None:
        self.root = root
        self.counters = counters
        #: the receiver's clock for the timestamp plausibility rule
        self.clock = clock
        self.subscriptions: list[Subscription[Any]] = []
        self.foreign: list[ForeignSubscription] = []
        # A node with one subscription per battery (the simulator of a 1,000-battery fleet: three each) must not
        # scan them all for every message, nor compare every pair when subscribing: filters without wildcards are
        # looked up by name, and only the wildcard ones are scanned.
        self._exact: dict[str, AnySubscription] = {}
        self._wild: list[AnySubscription] = []
        self._implausible_logged: dict[str, tuple[float, int]] = {}

    def every_subscription(self) -> list[AnySubscription]:
        """Typed and foreign subscriptions alike: what the transport subscribes at the broker."""
        return [*self.subscriptions, *self.foreign]

    def add(self, sub: Subscription[Any]) -> None:
        """Register ``sub``; raises :class:`SubscriptionOverlap` if a topic could match it and another one."""
        self._refuse_overlap(sub)
        self.subscriptions.append(sub)
        self._index(sub)

    def add_foreign(self, sub: ForeignSubscription) -> None:
        """Register a foreign subscription; overlaps are refused as for typed ones, bad filters too."""
        problems = filter_problems(sub.filter)
        if problems:
            raise ValueError(problems[0])
        self._refuse_overlap(sub)
        self.foreign.append(sub)
        self._index(sub)

    @staticmethod
    def _is_exact(filter_: str) -> bool:
        return not any(level in ("+", "#") for level in filter_.split("/"))

    def _index(self, sub: AnySubscription) -> None:
        if self._is_exact(sub.filter):
            self._exact[sub.filter] = sub
        else:
            self._wild.append(sub)

    def _refuse_overlap(self, sub: AnySubscription) -> None:
        # two exact filters overlap only when equal; a wildcard one may overlap anything, so it is compared to all
        exact = self._exact.get(sub.filter)
        others = self._wild if self._is_exact(sub.filter) else self.every_subscription()
        for other in ([exact] if exact is not None else []) + list(others):
            if filters_overlap(sub.filter, other.filter):
                raise SubscriptionOverlap(
                    f"subscription {sub.broker_filter} overlaps {other.broker_filter} (one handler per topic: pin "
                    "parameters so the two cannot match the same name, or handle both in one handler)"
                )

    def match(self, name: str) -> tuple[Subscription[Any], dict[str, str]] | None:
        """The subscription that takes messages on ``name``, with the name's parameters."""
        exact = self._exact.get(name)
        if isinstance(exact, Subscription):
            params = exact.topic.parse(name, root=self.root)
            if params is not None and all(params.get(k) == v for k, v in exact.fixed.items()):
                return exact, params
        for sub in self._wild:
            if not isinstance(sub, Subscription):
                continue
            params = sub.topic.parse(name, root=self.root)
            if params is not None and all(params.get(k) == v for k, v in sub.fixed.items()):
                return sub, params
        return None

    async def deliver(self, name: str, payload: bytes, delivery: Delivery) -> None:
        """Decode ``payload`` for its subscription and await the handler; never raises for bad input."""
        self.counters["received"] += 1
        found = self.match(name)
        if found is None:
            foreign = next((f for f in self.foreign if topic_matches(f.filter, name)), None)
            if foreign is not None:
                await self._deliver_foreign(foreign, name, payload, delivery)
                return
            self.counters["unrouted"] += 1
            log.debug("message on %s matches no subscription", name)
            return
        sub, params = found
        if not payload:
            # An empty retained payload is how MQTT clears a retained message: nothing to handle.
            self.counters["empty_payloads"] += 1
            if sub.on_cleared is not None:
                try:
                    await sub.on_cleared(params)
                except Exception:
                    self.counters["handler_errors"] += 1
                    log.exception("cleared-message handler for %s failed", name)
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

    async def _deliver_foreign(self, sub: ForeignSubscription, name: str, payload: bytes,
                               delivery: Delivery) -> None:
        if len(payload) > sub.max_payload_bytes:
            self.counters["oversized"] += 1
            log.warning("dropped oversized payload on %s: %d bytes, more than the %d allowed; starts with %r",
                        name, len(payload), sub.max_payload_bytes, payload[:PAYLOAD_LOG_LIMIT])
            return
        try:
            await sub.handler(name, payload, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("handler for %s failed on message %r", name, payload[:PAYLOAD_LOG_LIMIT])

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


__all__ = [
    "PAYLOAD_LOG_LIMIT", "AnySubscription", "ClearedHandler", "Delivery", "ForeignSubscription", "Handler",
    "InvalidHandler", "RawHandler", "Router", "Subscription", "filter_problems", "filters_overlap", "topic_matches",
]
