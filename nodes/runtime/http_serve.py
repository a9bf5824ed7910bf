"""Serving an aiohttp app so that no client can starve it, and every error it sends is the project's JSON.

Used by the gateway and the dashboard. It owns everything below the routes:

* **Idle and header timeout** (``idle_timeout_s``): a connection that has not sent a complete request head
  within this time of opening, or of its last response, is closed (aiohttp's keep-alive timer, which it arms at
  connection start and keeps running while the head is incomplete; slowloris connections end here).
* **A connection limit** (``max_connections``, over all ports, never above half the process's file limit): a
  connection beyond it gets an immediate ``503`` JSON answer with ``Retry-After`` and is closed, so the open
  file limit is never reached and the connections already open keep working. While the limit holds, or the
  operating system refuses to accept (``Too many open files``), :attr:`Listener.problem` says why and
  ``on_problem`` is told, so the node's status goes ``degraded``.
* **JSON errors for aiohttp's own answers** (:class:`JsonErrorHandler`): a malformed or oversized request line
  or header (aiohttp's ``400``, ``text/plain``, echoing the input) becomes ``{"error": ..., "field": null}``
  naming the limit, without a byte of the input.

aiohttp internals touched (``RequestHandler`` and its ``handle_error``, the runner's ``server`` as the handlers'
manager) are only here; ``tests/integration/test_http_edges.py`` fails when an aiohttp upgrade changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("bess.http")

MAX_LINE_BYTES = 8190
"""Longest request line and header line accepted (aiohttp's default; beyond it: 400)."""
MAX_HEADERS = 128


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one listener (its node's ``BESS_*`` settings fill them)."""

    idle_timeout_s: float = 15.0
    max_connections: int = 1000
    max_line_bytes: int = MAX_LINE_BYTES
    max_headers: int = MAX_HEADERS


def effective_max_connections(requested: int) -> int:
    """``requested``, but at most half of this process's open-file limit (the rest: broker, files, logs)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return requested
    return max(1, min(requested, soft // 2))


def _json_body(error: str) -> bytes:
    return json.dumps({"error": error, "field": None}).encode()


def _parse_error_text(exc: BaseException | None, limits: HttpLimits) -> str:
    # Never the exception's message: aiohttp puts the offending input in it.
    if isinstance(exc, http_exceptions.LineTooLong):
        return (f"request line or a header line is longer than {limits.max_line_bytes} bytes; nothing was "
                "processed")
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "not an HTTP request (unknown method); nothing was processed"
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in str(exc):
        return f"more than {limits.max_headers} headers; nothing was processed"
    return "malformed HTTP request (request line or headers); nothing was processed"


class JsonErrorHandler(RequestHandler):
    """aiohttp's request handler, answering its own errors (parse errors, timeouts) in the project's JSON."""

    __slots__ = ("limits",)

    def __init__(self, manager: web.Server, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.limits = limits

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The project's JSON error instead of aiohttp's text/plain page; the input is never echoed."""
        if status == 400:
            text = _parse_error_text(exc, self.limits)
            log.info("refused a malformed request: %s (%s)", text, type(exc).__name__ if exc else "no detail")
        elif status == 504:
            text = "the request took too long"
        else:
            text = "internal error: the log has the details"
            if exc is not None:
                log.error("error handling a request", exc_info=exc)
        response = web.Response(status=status, body=_json_body(text), content_type="application/json")
        response.force_close()
        return response


class _Refuser(asyncio.Protocol):
    """Answers a connection beyond the limit with a 503 and closes it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
        ).encode()
        transport.write(head + self.body)
        transport.close()


class _Counted(asyncio.Protocol):
    """Delegates to aiohttp's handler and tells the listener when the connection ends."""

    def __init__(self, inner: RequestHandler, on_lost: Callable[[], None]) -> None:
        self.inner = inner
        self.on_lost: Callable[[], None] | None = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # close the transport (aiohttp's handler returns nothing either)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            on_lost, self.on_lost = self.on_lost, None
            if on_lost is not None:
                on_lost()


ACCEPT_FAILED = "socket.accept() out of system resource"
"""How asyncio reports an accept() refused by the operating system (EMFILE, ENFILE, ENOBUFS, ENOMEM)."""


class ListenError(OSError):
    """A port that cannot be bound (in use, not permitted)."""

    def __init__(self, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.port = port


class Listener:
    """An aiohttp app on several ports with :class:`HttpLimits`; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        app: web.Application,
        limits: HttpLimits,
        *,
        name: str,
        setting: str = "the connection limit",
        on_problem: Callable[[str | None], None] | None = None,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self.app = app
        self.limits = limits
        self.name = name
        self.setting = setting
        self.max_connections = effective_max_connections(limits.max_connections)
        self.on_problem = on_problem
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
        self.servers: list[asyncio.Server] = []
        self.open = 0
        #: connections answered 503 because the limit was reached
        self.refused = 0
        self.accept_errors = 0
        self.problem: str | None = None
        self._refusal = _json_body(
            f"{name} has {self.max_connections} connections open, its limit ({setting}): retry later"
        )
        self._accept_failed_at: float | None = None
        self._previous_handler: Any = None

    async def start(self, host: str, ports: list[int], ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on every port (:class:`ListenError` when a port cannot be bound; nothing stays open then)."""
        await self.runner.setup()
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        for port in ports:
            try:
                self.servers.append(
                    await loop.create_server(self._protocol, host, port, ssl=ssl_context, reuse_address=True)
                )
            except OSError as exc:
                await self.stop()
                raise ListenError(port, exc) from exc

    def _protocol(self) -> asyncio.Protocol:
        if self.open >= self.max_connections:
            self.refused += 1
            self._set_problem(
                f"connection limit reached: {self.open} open, limit {self.max_connections} "
                f"({self.setting}); new connections get 503"
            )
            return _Refuser(self._refusal)
        self.open += 1
        loop = asyncio.get_running_loop()
        handler = JsonErrorHandler(
            self.runner.server,  # type: ignore[arg-type]
            limits=self.limits,
            loop=loop,
            keepalive_timeout=self.limits.idle_timeout_s,
            max_line_size=self.limits.max_line_bytes,
            max_field_size=self.limits.max_line_bytes,
            max_headers=self.limits.max_headers,
            # after an early answer (413, 408) aiohttp reads what is left of the body for this long before it
            # closes; its 10 s default is 10 s more for a slow client to hold the connection
            lingering_time=1.0,
            access_log=None,
        )
        return _Counted(handler, self._lost)

    def _lost(self) -> None:
        self.open -= 1
        self._refresh()

    def _refresh(self) -> None:
        # back to normal below 90 % of the limit (no flapping at the edge), and when accept() works again
        recovering = self._accept_failed_at is None or asyncio.get_running_loop().time() - self._accept_failed_at > 5
        if recovering:
            self._accept_failed_at = None
        if self.problem is not None and self.open < 0.9 * self.max_connections and recovering:
            self._set_problem(None)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(ACCEPT_FAILED):
            self.accept_errors += 1
            self._accept_failed_at = loop.time()
            error = context.get("exception")
            self._set_problem(f"cannot accept connections: {error or 'out of system resources'} "
                              f"({self.open} open)")
            if self.accept_errors > 1:
                return  # one log line per episode; asyncio retries every second
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _set_problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        if problem is None:
            log.info("%s accepts connections again (%d open)", self.name, self.open)
            self.accept_errors = 0
        elif self.problem is None:
            log.warning("%s: %s", self.name, problem)
        self.problem = problem
        if self.on_problem is not None:
            self.on_problem(problem)

    def counters(self) -> dict[str, int]:
        """For the node's status."""
        return {"http_connections": self.open, "http_refused": self.refused, "http_accept_errors": self.accept_errors}

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the shutdown timeout), close everything."""
        for server in self.servers:
            server.close()
        await self.runner.cleanup()
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=2.0)
        self.servers.clear()
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() == self._loop_exception:
            loop.set_exception_handler(self._previous_handler)


__all__ = ["MAX_LINE_BYTES", "HttpLimits", "JsonErrorHandler", "ListenError", "Listener", "effective_max_connections"]
