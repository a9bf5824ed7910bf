"""The per-battery command rate bound (:mod:`nodes.runtime.command_rate`) and the gateway's 429 beyond it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.config import GatewayConfig
from nodes.gateway.fleet import Fleet
from nodes.gateway.specs import SpecBook
from nodes.planner.config import PlannerConfig
from nodes.runtime.command_rate import CommandRateLimit
from nodes.runtime.config import ConfigError, load
from nodes.runtime.memory import MemoryBus
from tests.unit.test_gateway_app import NOW


def test_a_burst_then_the_refill_rate() -> None:
    limit = CommandRateLimit(rate_per_min=6, burst=3)
    assert [limit.allow("b1", "charge", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = limit.check("b1", "charge", 0.0)
    assert refused.retry_after_s == pytest.approx(10.0)
    assert "BESS_COMMAND_RATE_PER_MIN" in refused.why
    assert not limit.allow("b1", "charge", 9.9).allowed
    assert limit.allow("b1", "charge", 10.0).allowed
    # per battery: another battery has its own bucket
    assert limit.allow("b2", "discharge", 10.0).allowed


def test_a_stop_passes_beyond_the_bound_once_per_refill_interval() -> None:
    limit = CommandRateLimit(rate_per_min=6, burst=2)
    for _ in range(2):
        limit.allow("b1", "discharge", 0.0)
    assert not limit.check("b1", "discharge", 0.0).allowed
    assert limit.allow("b1", "idle", 0.0).allowed, "a burst of commands never locks out a stop"
    assert not limit.allow("b1", "idle", 1.0).allowed, "a flood of stops is bounded too"
    assert limit.allow("b1", "idle", 10.5).allowed


def test_hourly_budget_over_a_simulated_hour_of_hammering() -> None:
    limit = CommandRateLimit()  # the defaults: burst 10, 6 a minute
    sent = sum(limit.allow("b1", "charge", t * 0.05).allowed for t in range(72_000))  # every 50 ms for an hour
    assert sent == pytest.approx(10 + 360, abs=1)


def test_the_settings_are_the_same_for_every_producer_and_checked() -> None:
    environ = {"BESS_COMMAND_RATE_PER_MIN": "2", "BESS_COMMAND_BURST": "4"}
    gateway, planner = load(GatewayConfig, environ), load(PlannerConfig, environ)
    assert (gateway.command_rate_per_min, gateway.command_burst) == (2.0, 4)
    assert (planner.command_rate_per_min, planner.command_burst) == (2.0, 4)
    assert load(GatewayConfig, {"BESS_COMMAND_RATE_PER_MIN": "0"}).problems()
    assert load(PlannerConfig, {"BESS_COMMAND_BURST": "0"}).problems()
    with pytest.raises(ConfigError):
        load(GatewayConfig, {"BESS_COMMAND_BURST": "many"})


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_gateway_answers_429_with_retry_after_beyond_the_bound() -> None:
    bus, ticks, fleet = MemoryBus("gateway"), Ticks(), Fleet()
    fleet.saw("battery-1")
    ids = iter(f"c-{n:04d}" for n in range(100))
    gateway = Gateway(bus, SpecBook(), GatewaySettings(command_rate_per_min=6, command_burst=3), fleet=fleet,
                      clock=lambda: NOW, new_command_id=lambda: next(ids), monotonic=ticks)
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as client:
        statuses = []
        for _ in range(4):
            response = await client.post("/mqtt/publish", json={"command": "DISCHARGE 50kW"})
            statuses.append(response.status)
        assert statuses == [202, 202, 202, 429]
        body: dict[str, Any] = await response.json()
        assert body["field"] == "command"
        assert "retry in 10 s" in body["error"]
        assert response.headers["Retry-After"] == "10"
        assert response.content_type == "application/json"
        commands = [p for p in bus.published if p.topic.endswith("/set")]
        assert len(commands) == 3, "nothing published for the refused command (not even the control mode)"
        published = len(bus.published)
        # a stop still passes, once
        stop = await client.post("/mqtt/publish", json={"command": "STOP"})
        assert stop.status == 202
        again = await client.post("/control", json={"mode": "idle"})
        assert again.status == 429
        assert len(bus.published) == published + 1  # the stop (manual mode already in force), nothing for the 429
        # another battery is not affected; the refilled bucket lets the next command through
        other = await client.post("/mqtt/publish", json={"command": "CHARGE 10kW", "battery": "b2", "force": True})
        assert other.status == 202
        ticks.now += 10
        assert (await client.post("/mqtt/publish", json={"command": "DISCHARGE 50kW"})).status == 202
        assert gateway.counters["commands_rate_limited"] == 2
