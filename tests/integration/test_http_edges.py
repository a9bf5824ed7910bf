"""The gateway's HTTP edges on real loopback sockets (no broker needed): slowloris connections, the connection
limit, and aiohttp's own 400s as the project's JSON error without echoing the input.

Every test opens a bounded number of connections to 127.0.0.1 only and ends within seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.fleet import Fleet
from nodes.gateway.specs import SpecBook
from nodes.runtime.http_serve import HttpLimits, Listener
from nodes.runtime.memory import MemoryBus
from tests.support.waiting import wait_for_async

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Edge:
    """A gateway app behind a :class:`Listener` on one loopback port, recording its problems."""

    def __init__(self, limits: HttpLimits) -> None:
        fleet = Fleet()
        fleet.saw("battery-1")
        self.gateway = Gateway(MemoryBus("gateway"), SpecBook(), GatewaySettings(body_timeout_s=1.0), fleet=fleet)
        self.problems: list[str | None] = []
        self.listener = Listener(create_app(self.gateway, openapi=b"{}"), limits, name="gateway",
                                 setting="BESS_GATEWAY_MAX_CONNECTIONS", on_problem=self.problems.append)
        self.port = _free_port()

    async def request(self, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            writer.write(raw)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[Edge]:
    limits: HttpLimits = getattr(request, "param", HttpLimits(idle_timeout_s=0.5, max_connections=40))
    rig = Edge(limits)
    await rig.listener.start(HOST, [rig.port])
    yield rig
    await rig.listener.stop()


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_slowloris_connections_are_closed_and_the_limit_answers_503_and_degrades(edge: Edge) -> None:
    # 40 connections with a request head that never ends (issue 16: 20,200 of them starved the gateway)
    loris: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(40):
        reader, writer = await asyncio.open_connection(HOST, edge.port)
        writer.write(b"POST /write HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        loris.append((reader, writer))
    await wait_for_async(lambda: edge.listener.open == 40, timeout=5, what="40 open connections")
    # the 41st is answered at once, in JSON, and the status degrades
    status, headers, body = await edge.request(HEALTH, timeout=2)
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "5"
    assert "BESS_GATEWAY_MAX_CONNECTIONS" in json.loads(body)["error"]
    assert edge.problems
    assert edge.problems[-1] is not None
    assert "connection limit reached" in edge.problems[-1]
    assert edge.listener.refused == 1
    # trickling more header bytes does not keep them alive: the idle/header timeout closes every one
    for _, writer in loris:
        writer.write(b"a")
    for reader, _ in loris:
        assert await asyncio.wait_for(reader.read(), timeout=5) == b"", "the server closed the connection"
    for _, writer in loris:
        writer.close()
    await wait_for_async(lambda: edge.listener.open == 0, timeout=5, what="every slow connection closed")
    assert edge.problems[-1] is None, "back to online once connections are accepted again"
    status, _, body = await edge.request(HEALTH)
    assert status == 200
    assert json.loads(body)["mqtt"] == "connected"


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection(HOST, edge.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"}"), timeout=5)
    assert b"200 OK" in first
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server, not by us
    writer.close()


async def test_a_slow_body_gets_408(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection(HOST, edge.port)
    writer.write(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert head.startswith(b"HTTP/1.1 408")
    assert b"application/json" in head
    assert b"request body did not arrive" in await asyncio.wait_for(reader.readuntil(b"}"), timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) == b"", "and the connection is closed"
    writer.close()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "longer than 8190 bytes"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 10_000 + b"\r\n\r\n", "longer than 8190 bytes"),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: c\r\n" % i for i in range(200)) + b"\r\n", "headers"),
        (b"GIMME" + b"d" * 50 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", "not an HTTP request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: eeee\r\n\r\n", "malformed"),
    ],
    ids=["long-request-line", "long-header", "too-many-headers", "bad-method", "bad-content-length"],
)
async def test_aiohttp_parse_errors_are_json_and_never_echo_the_input(edge: Edge, raw: bytes, says: str) -> None:
    status, headers, body = await edge.request(raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    answer: dict[str, Any] = json.loads(body)
    assert set(answer) == {"error", "field"}
    assert says in answer["error"]
    assert len(body) < 300
    for echoed in (b"aaaa", b"bbbb", b"X-19", b"dddd", b"eeee"):
        assert echoed not in body


async def test_the_dashboard_uses_the_same_listener() -> None:
    from nodes.renderer import node as renderer_node

    assert renderer_node.Listener is Listener


async def test_the_gateway_status_follows_the_listener() -> None:
    from nodes.gateway.config import GatewayConfig
    from nodes.gateway.node import GatewayService

    bus = MemoryBus("gateway")
    service = GatewayService(GatewayConfig(), bus)
    service._on_listener_problem("connection limit reached: 1000 open")
    assert (bus.state, bus.reason) == ("degraded", "connection limit reached: 1000 open")
    service._on_listener_problem(None)
    assert bus.state == "online"
