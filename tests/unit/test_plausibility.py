"""One timestamp plausibility rule for every way in (issue 16, item 8): the gateway refuses, the bus drops.

Before: the gateway refused more than one day ahead, while telemetry over MQTT was stored with any future
timestamp (year 2200, now + 10 years).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract import plausibility
from nodes.contract.messages import BatteryState, Command, PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import COMMAND, TELEMETRY
from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.specs import SpecBook
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from nodes.runtime.memory import MemoryBus

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        (NOW, True),
        (datetime(2000, 1, 1, tzinfo=UTC), True),
        (NOW + timedelta(days=1), True),
        (NOW + timedelta(days=1, seconds=1), False),
        (datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), False),
        (datetime(2200, 1, 1, tzinfo=UTC), False),
        (NOW + timedelta(days=3653), False),
    ],
)
def test_the_rule(ts: datetime, ok: bool) -> None:
    assert (plausibility.timestamp_problem(ts, NOW) is None) is ok
    telemetry = Telemetry(ts=ts, soc_kwh=1)
    assert (plausibility.message_problem(telemetry, NOW) is None) is ok
    state = BatteryState(ts=ts, mode="idle")
    assert (plausibility.message_problem(state, NOW) is None) is ok
    command = Command(command_id="c", action="idle", issued_at=ts, valid_until=ts + timedelta(minutes=5))
    assert (plausibility.message_problem(command, NOW) is None) is ok


def test_forecasts_are_not_measurements() -> None:
    ahead = NOW + timedelta(days=30)
    prices = PriceForecast(zone="z", issued_at=ahead, slots=[PriceSlot(start=ahead, end=ahead + timedelta(hours=1),
                                                                        price_per_mwh=1)])
    assert plausibility.message_problem(prices, NOW) is None


async def test_the_bus_drops_counts_and_logs_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus("recorder", MqttSettings())
    bus.clock = lambda: NOW
    handled: list[Any] = []

    async def handler(params: dict[str, str], message: Any, delivery: Delivery) -> None:
        handled.append(message)

    bus.subscribe(TELEMETRY, handler)
    bus.subscribe(COMMAND, handler)
    future = TELEMETRY.encode(Telemetry(ts=datetime(2200, 1, 1, tzinfo=UTC), soc_kwh=700))
    name = bus.name(TELEMETRY, battery="b1")
    with caplog.at_level(logging.WARNING, logger="bess.bus"):
        for _ in range(100):
            assert await bus._on_message(None, name, future, 1, {}) == 0  # type: ignore[arg-type]
    assert handled == []
    assert bus.counters["implausible"] == 100
    lines = [r for r in caplog.records if "implausible timestamp" in r.getMessage()]
    assert len(lines) == 1, "one line per topic a minute, not one per message"
    assert "2200-01-01" in lines[0].getMessage()
    # a plausible reading passes
    await bus._on_message(None, name, TELEMETRY.encode(Telemetry(ts=NOW, soc_kwh=1)), 1, {})  # type: ignore[arg-type]
    command = Command(command_id="c", action="idle", issued_at=NOW + timedelta(days=400),
                      valid_until=NOW + timedelta(days=401))
    await bus._on_message(None, bus.name(COMMAND, battery="b1"), COMMAND.encode(command), 1, {})  # type: ignore[arg-type]
    assert len(handled) == 1
    assert bus.counters["implausible"] == 101


async def test_the_gateway_refuses_with_the_same_rule_and_counts() -> None:
    gateway = Gateway(MemoryBus("gateway"), SpecBook(), GatewaySettings(), clock=lambda: NOW)
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as client:
        response = await client.post("/write", json={"SOC": 1, "target_discharge": 0, "target_charge": 0,
                                                     "timestamp": "2200-01-01T00:00:00Z"})
        assert response.status == 422
        body = await response.json()
        assert body == {"field": "timestamp", "error": plausibility.timestamp_problem(
            datetime(2200, 1, 1, tzinfo=UTC), NOW)}
    assert gateway.counters["implausible"] == 1
