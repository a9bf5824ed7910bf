"""Control precedence at the gateway (on the in-memory bus): an operator command pauses the autopilot for its
lease and says so, POST /control and GET /control, the idle lock, 404 for batteries never seen, and the read
token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import Command, ControlMode
from nodes.contract.topics import HISTORY_REQUEST
from nodes.gateway.app import create_app
from nodes.gateway.fleet import Fleet
from nodes.gateway.specs import SpecBook
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.recorder_double import RecorderDouble
from tests.unit.test_gateway_app import NOW, SEED, SPEC, make_gateway, result

MINUTE = timedelta(minutes=1)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
async def client(fleet: Fleet, clock: Clock) -> AsyncIterator[tuple[TestClient[Any, Any], MemoryBus]]:
    broker = MemoryBroker()
    bus = MemoryBus("gateway", broker)
    RecorderDouble(broker)
    specs = SpecBook()
    specs.update("with-spec", SPEC)
    gateway = make_gateway(bus, specs, fleet=fleet, clock=clock)
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as c:
        yield c, bus


def controls(bus: MemoryBus) -> list[ControlMode]:
    return [p.message for p in bus.published if isinstance(p.message, ControlMode)]


def commands(bus: MemoryBus) -> list[Command]:
    return [p.message for p in bus.published if isinstance(p.message, Command)]


# -- an operator command pauses the autopilot ---------------------------------------------------------------


async def test_a_manual_mode_without_end_is_kept_by_an_operator_command(
    client: tuple[TestClient[Any, Any], MemoryBus], fleet: Fleet
) -> None:
    c, bus = client
    fleet.set_control("battery-1", ControlMode(mode="manual", set_at=NOW - MINUTE, source="operator"))
    response = await c.post("/mqtt/publish", json={"command": "CHARGE 20kW"})
    body = await response.json()
    assert response.status == 202
    assert (body["control"]["mode"], body["control"]["autopilot_paused_until"]) == ("manual", None)
    assert "until changed with POST /control" in body["control"]["note"]
    assert controls(bus) == [], "the longer manual mode stays; a 5-minute one would shorten it"
    assert len(commands(bus)) == 1


async def test_a_shorter_manual_mode_is_extended_to_the_new_lease(
    client: tuple[TestClient[Any, Any], MemoryBus], clock: Clock
) -> None:
    c, bus = client
    assert (await c.post("/mqtt/publish", json={"command": "IDLE", "valid_for_s": 60})).status == 202
    clock.now = NOW + MINUTE / 2
    body = await (await c.post("/mqtt/publish", json={"command": "DISCHARGE 10kW", "valid_for_s": 600})).json()
    assert body["control"]["until"] == "2025-01-16T12:10:30Z"
    assert [m.until for m in controls(bus)] == [NOW + MINUTE, NOW + MINUTE / 2 + 10 * MINUTE]


async def test_idle_mode_lets_only_idle_commands_through(client: tuple[TestClient[Any, Any], MemoryBus]) -> None:
    c, bus = client
    response = await c.post("/control", json={"mode": "idle", "reason": "maintenance"})
    body = await response.json()
    assert response.status == 202
    assert body["control"]["mode"] == "idle"
    assert body["command"]["action"] == "idle"  # the battery is stopped at once, not at the next lease end
    assert [cmd.action for cmd in commands(bus)] == ["idle"]
    refused = await c.post("/mqtt/publish", json={"command": "DISCHARGE 50kW"})
    error = await refused.json()
    assert (refused.status, error["field"]) == (409, "command")
    assert "control mode idle" in error["error"]
    assert "maintenance" in error["error"]
    stop = await c.post("/mqtt/publish", json={"command": "STOP"})
    assert stop.status == 202
    assert (await stop.json())["control"]["mode"] == "idle"
    assert [cmd.action for cmd in commands(bus)] == ["idle", "idle"]
    assert [m.mode for m in controls(bus)] == ["idle"], "a STOP must not unlock the idle mode"


# -- POST /control and GET /control --------------------------------------------------------------------------


async def test_post_control_sets_the_mode_and_get_control_reads_it(
    client: tuple[TestClient[Any, Any], MemoryBus], clock: Clock
) -> None:
    c, bus = client
    before = await (await c.get("/control")).json()
    assert (before["battery"], before["mode"], before["control"]) == ("battery-1", None, None)
    assert "configured default" in before["note"]

    response = await c.post("/control?battery=battery-1", json={"mode": "manual", "for_s": 600, "reason": "test"})
    body = await response.json()
    assert response.status == 202
    assert body["topic"] == "bess/v1/battery/battery-1/control"
    assert body["control"] == {"mode": "manual", "set_at": "2025-01-16T12:00:00Z", "until": "2025-01-16T12:10:00Z",
                               "source": "gateway", "reason": "test"}
    assert body["command"] is None
    [published] = bus.published
    assert (published.topic, published.retain, published.wait_ack) == (
        "bess/v1/battery/battery-1/control", True, True)  # retained by the topic's declaration

    now = await (await c.get("/control?battery=battery-1")).json()
    assert (now["mode"], now["until"]) == ("manual", "2025-01-16T12:10:00Z")
    clock.now = NOW + 10 * MINUTE
    expired = await (await c.get("/control")).json()
    assert (expired["mode"], expired["until"], expired["control"]["mode"]) == (None, None, "manual")

    resumed = await c.post("/control", json={"mode": "autopilot"})
    assert resumed.status == 202
    assert controls(bus)[-1] == ControlMode(mode="autopilot", set_at=clock.now, source="gateway",
                                            reason="POST /control autopilot")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"mode": "auto"}, "mode"), ({"mode": "manual", "for_s": 0}, "for_s"), ({"mode": "idle", "x": 1}, "x"),
     ({}, "mode")],
)
async def test_post_control_refuses_bad_bodies(
    client: tuple[TestClient[Any, Any], MemoryBus], body: dict[str, Any], field: str
) -> None:
    c, bus = client
    response = await c.post("/control", json=body)
    assert (response.status, (await response.json())["field"]) == (422, field)
    assert bus.published == []


# -- unknown batteries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("/mqtt/publish", {"command": "DISCHARGE 50kW", "battery": "no-such-battery"}),
     ("/control", {"mode": "manual", "battery": "no-such-battery"})],
)
async def test_unknown_battery_is_404_unless_forced(
    client: tuple[TestClient[Any, Any], MemoryBus], path: str, body: dict[str, Any]
) -> None:
    c, bus = client
    response = await c.post(path, json=body)
    error = await response.json()
    assert (response.status, error["field"]) == (404, "battery")
    assert "unknown battery 'no-such-battery'" in error["error"]
    assert '"force": true' in error["error"]
    assert bus.published == []
    assert (await c.get("/control?battery=no-such-battery")).status == 404
    assert (await c.post(path, json={**body, "force": True})).status == 202
    assert bus.published


async def test_a_battery_is_known_from_its_spec_or_an_http_write(
    client: tuple[TestClient[Any, Any], MemoryBus], fleet: Fleet
) -> None:
    c, _ = client
    assert (await c.post("/mqtt/publish", json={"command": "IDLE", "battery": "with-spec"})).status == 202
    assert (await c.post("/mqtt/publish", json={"command": "IDLE", "battery": "fresh"})).status == 404
    assert (await c.post("/write?battery=fresh", json=SEED)).status == 200
    assert (await c.post("/mqtt/publish", json={"command": "IDLE", "battery": "fresh"})).status == 202
    assert (await c.post("/write", json=[{**SEED, "battery": "in-a-batch"}])).status == 200
    assert fleet.known("in-a-batch")


def test_fleet_is_bounded() -> None:
    fleet = Fleet(max_batteries=3)
    for n in range(10):
        fleet.saw(f"b{n}")
    assert fleet.count() == 3
    assert not fleet.known("b9")


# -- read token -------------------------------------------------------------------------------------------------


async def test_a_separate_read_token_reads_but_does_not_write() -> None:
    broker = MemoryBroker()
    bus = MemoryBus("gateway", broker)
    RecorderDouble(broker).answer = result()
    gateway = make_gateway(bus, SpecBook(), token="w-token", read_token="r-token")
    read = "/read?begin=2025-01-16T09:00:00Z"
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as c:
        for path in (read, "/control"):
            assert (await c.get(path)).status == 401
            assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
            assert (await c.get(path, headers={"Authorization": "Bearer r-token"})).status == 200
            assert (await c.get(path, headers={"Authorization": "Bearer w-token"})).status == 200
        refused = await c.post("/write", json=SEED, headers={"Authorization": "Bearer r-token"})
        assert refused.status == 401
        assert (await c.post("/control", json={"mode": "manual"},
                             headers={"Authorization": "Bearer r-token"})).status == 401
        assert (await c.get("/health")).status == 200
    # the reads asked the recorder (history requests); nothing was written
    assert [p for p in bus.published if bus.parse(HISTORY_REQUEST, p.topic) is None] == []


async def test_reads_are_open_without_any_token() -> None:
    broker = MemoryBroker()
    bus = MemoryBus("gateway", broker)
    RecorderDouble(broker).answer = result()
    async with TestClient(TestServer(create_app(make_gateway(bus, SpecBook()), openapi=b"{}"))) as c:
        assert (await c.get("/read?begin=2025-01-16T09:00:00Z")).status == 200


def test_iso_is_utc_with_z() -> None:
    from nodes.gateway.control import iso

    assert iso(datetime(2025, 1, 16, 13, tzinfo=UTC).astimezone()) == "2025-01-16T13:00:00Z"
