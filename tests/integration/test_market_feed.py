"""The market node on ENTSO-E, against a local recorded-answer server and the real broker.

``BESS_MARKET_SOURCE=entsoe BESS_ENTSOE_TOKEN=...``: the node asks the (local) Transparency Platform for today
and tomorrow, publishes today's prices as a retained PriceForecast, never a made-up tomorrow, and a new retained
forecast with tomorrow as soon as the "market" publishes it. The token is sent, and never logged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.market_server import QUARTER, DayAheadMarket, RecordedAnswers, cet_days
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for

TOKEN = "f3b0c1de-9a8b-4c7d-8e6f-integration"
EIC = "10Y1001A1001A82H"


@pytest.fixture
def provider() -> Iterator[tuple[RecordedAnswers, DayAheadMarket]]:
    market = DayAheadMarket(TOKEN, EIC)
    with RecordedAnswers() as server:
        server.respond("GET", "/api", market.answer)
        yield server, market


def retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=2.0).get(topic)
    return None if payload is None else json.loads(payload)


def test_entsoe_feed_publishes_today_then_tomorrow_as_retained_prices(
    services: Services,
    topic_root: str,
    node_env: dict[str, str],
    run_node: Callable[..., NodeProcess],
    provider: tuple[RecordedAnswers, DayAheadMarket],
) -> None:
    server, market = provider
    env = {
        **node_env,
        "BESS_MARKET_SOURCE": "entsoe",
        "BESS_MARKET_ZONE": "de-lu",
        "BESS_ENTSOE_TOKEN": TOKEN,
        "BESS_ENTSOE_URL": server.url("/api"),
        # the local market "publishes" whenever the test says: ask for tomorrow from midnight on, every second
        "BESS_MARKET_DAYAHEAD_AT": "00:00",
        "BESS_MARKET_RETRY_S": "1",
        "BESS_LOG_LEVEL": "DEBUG",
        "BESS_STATUS_INTERVAL_S": "0.5",
    }
    node = run_node("market", env)
    node.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    topic = f"{topic_root}/market/de-lu/prices"

    first = wait_for(lambda: retained(services, topic), 20, 0.2, what="the first retained forecast")
    now = datetime.now(UTC)
    (today,) = cet_days(now, now + timedelta(seconds=1))
    assert first["zone"] == "de-lu"
    assert first.get("currency", "EUR") == "EUR"  # the contract omits its default
    assert first["source"] == "ENTSO-E A44 day-ahead"
    starts = [s["start"] for s in first["slots"]]
    assert starts[0] == today[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    # only what the market answered: today, and no made-up tomorrow
    assert first["slots"][-1]["end"] == today[1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(first["slots"]) == (today[1] - today[0]) // QUARTER
    assert {s["start"]: s["price_per_mwh"] for s in first["slots"]} == {k: market.expected[k] for k in starts}
    assert -500.0 in [s["price_per_mwh"] for s in first["slots"]]
    assert 4000.0 in [s["price_per_mwh"] for s in first["slots"]]

    requests_before = len(server.seen("/api"))
    market.tomorrow_published.set()

    def with_tomorrow() -> Any:
        forecast = retained(services, topic)
        return forecast if forecast and len(forecast["slots"]) > len(first["slots"]) else None

    second = wait_for(with_tomorrow, 20, 0.2, what="a retained forecast with tomorrow")
    days = cet_days(today[0], today[0] + timedelta(days=1, hours=25))[:2]
    assert second["slots"][-1]["end"] == days[1][1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(second["slots"]) == (days[1][1] - days[0][0]) // QUARTER
    assert {s["start"]: s["price_per_mwh"] for s in second["slots"]} == {
        s["start"]: market.expected[s["start"]] for s in second["slots"]
    }
    assert second["issued_at"] > first["issued_at"]
    assert len(server.seen("/api")) > requests_before

    seen = server.seen("/api")[0]
    assert seen.query["in_Domain"] == seen.query["out_Domain"] == EIC
    assert seen.query["securityToken"] == TOKEN
    # counted in the periodic status (a state change alone may come before the count: online from the start)
    wait_for(lambda: (node.status(services.mqtt_host, services.mqtt_port, topic_root) or {})
             .get("counters", {}).get("forecasts", 0) >= 2, 10, 0.2, what="the status counting both forecasts")
    assert TOKEN not in node.log_text()
    assert "securityToken=***" in node.log_text()


def test_entsoe_feed_with_a_wrong_token_reports_degraded(
    services: Services,
    topic_root: str,
    node_env: dict[str, str],
    run_node: Callable[..., NodeProcess],
    provider: tuple[RecordedAnswers, DayAheadMarket],
) -> None:
    server, _ = provider
    wrong = "wrong-token-0000"
    env = {
        **node_env,
        "BESS_MARKET_SOURCE": "entsoe",
        "BESS_ENTSOE_TOKEN": wrong,
        "BESS_ENTSOE_URL": server.url("/api"),
    }
    node = run_node("market", env)

    def degraded() -> Any:
        node.assert_alive()
        status = node.status(services.mqtt_host, services.mqtt_port, topic_root)
        return status if status and status.get("state") == "degraded" else None

    status = wait_for(degraded, 20, 0.2, what="the market node to report degraded")
    assert "refuses the request" in status["reason"]
    assert "HTTP 401" in status["reason"]
    assert wrong not in status["reason"]
    assert wrong not in node.log_text()
    assert retained(services, f"{topic_root}/market/de-lu/prices") is None  # nothing made up
