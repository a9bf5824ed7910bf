"""Request/response over MQTT 5 (response topic + correlation data), typed by the contract's :class:`Request`.

Asking: ``await bus.request(HISTORY, query)`` subscribes the answer topic with ``client`` = this node (once: in
setup with ``bus.enable_requests(HISTORY)``, else at the first request), publishes the query with that response
topic and fresh correlation data, and returns the correlated answer, already decoded as the declaration's answer
type (a ``HistoryResult``): no ``Any``, no ``isinstance`` at the caller. ``TimeoutError`` when no answer comes
in time; :class:`BusUnavailable` when the broker did not take the query.

Answering: ``bus.serve(HISTORY, answer)`` subscribes the ask topic; ``answer(params, query, delivery)`` returns
the answer, which is published on the asker's response topic with its correlation data. A response topic that is
not the declaration's answer topic under this bus's root is refused (logged, counted ``bad_response_topic``): a
client cannot make a node publish on a topic of its choosing.

The same addressing serves answers that are not one-to-one: a publisher that wants stored confirmations gives a
data message ``reply_to=STORED_RESPONSE`` and correlation data (:meth:`MessageBus.publish`), and the recorder finds
the client to confirm to with :meth:`Requests.reply_client` (one receipt may quote many correlation ids, so those
are collected by :mod:`nodes.gateway.receipts`, not awaited here).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from nodes.contract.topics import Request, Topic
from nodes.runtime.dispatch import Delivery

if TYPE_CHECKING:
    from nodes.runtime.core import MessageBus

log = logging.getLogger("bess.bus")

Q = TypeVar("Q", bound=msgspec.Struct)
A = TypeVar("A", bound=msgspec.Struct)

Answerer = Callable[[dict[str, str], Q, Delivery], Awaitable[A]]
"""Computes the answer to one request: ``(params, query, delivery) -> answer``."""


class _Pending(Generic[A]):
    """Requests waiting for an answer on one answer topic, by correlation data."""

    def __init__(self) -> None:
        self.futures: dict[bytes, asyncio.Future[A]] = {}

    async def on_answer(self, params: dict[str, str], message: A, delivery: Delivery) -> None:
        if delivery.correlation_data is None:
            return
        future = self.futures.pop(delivery.correlation_data, None)
        if future is not None and not future.done():
            future.set_result(message)


class Requests:
    """The asking and the answering side of one bus's request/response pairs."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._pending: dict[str, _Pending[Any]] = {}  # by answer topic path

    def enable(self, request: Request[Q, A]) -> None:
        """Subscribe this node's answer topic of ``request`` now (idempotent)."""
        self._pending_for(request)

    def _pending_for(self, request: Request[Q, A]) -> _Pending[A]:
        pending = self._pending.get(request.answer.path)
        if pending is None:
            pending = _Pending[A]()
            self._pending[request.answer.path] = pending
            self.bus.subscribe(request.answer, pending.on_answer, client=self.bus.node)
        return cast(_Pending[A], pending)

    async def request(self, request: Request[Q, A], message: Q, *, timeout: float) -> A:
        """Publish ``message`` on the ask topic and wait for its answer (raises TimeoutError)."""
        pending = self._pending_for(request)
        correlation = uuid.uuid4().hex.encode()
        future: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        pending.futures[correlation] = future
        try:
            await self.bus.publish(request.ask, message, wait_ack=True, timeout=timeout, reply_to=request.answer,
                                   correlation=correlation)
            return await asyncio.wait_for(future, timeout)
        finally:
            pending.futures.pop(correlation, None)

    def serve(self, request: Request[Q, A], answer: Answerer[Q, A], *, share_group: str | None = None) -> None:
        """Answer every request on the ask topic with what ``answer`` returns."""

        async def on_request(params: dict[str, str], message: Q, delivery: Delivery) -> None:
            await self.respond(delivery, request, await answer(params, message, delivery))

        self.bus.subscribe(request.ask, on_request, share_group=share_group)

    def reply_client(self, answer: Topic[Any], delivery: Delivery) -> str | None:
        """The client a message's response topic names under ``answer``, or None (no or a foreign topic)."""
        if not delivery.response_topic:
            return None
        params = self.bus.parse(answer, delivery.response_topic)
        return None if params is None else params["client"]

    async def respond(self, delivery: Delivery, request: Request[Q, A], message: A) -> None:
        """Answer a request on its response topic with its correlation data (no-op without a response topic)."""
        if not delivery.response_topic:
            return
        client = self.reply_client(request.answer, delivery)
        if client is None:
            log.warning("refusing to answer on foreign response topic %r", delivery.response_topic[:200])
            self.bus.counters["bad_response_topic"] += 1
            return
        await self.bus.publish(request.answer, message, correlation=delivery.correlation_data, client=client)


__all__ = ["Answerer", "Requests"]
