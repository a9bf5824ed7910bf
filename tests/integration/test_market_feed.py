"""The market node on ENTSO-E, against a local recorded-answer server and the real broker.

``BESS_MARKET_SOURCE=entsoe BESS_ENTSOE_TOKEN=...``: the node asks the (local) Transparency Platform for today
and tomorrow, publishes today's prices as a retained PriceForecast, never a made-up tomorrow, and a new retained
forecast with tomorrow as soon as the "market" publishes it. The token is sent, and never logged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.market.sources.zones import PUBLICATION_TZ
from tests.support.market_server import Answer, RecordedAnswers, Seen, a44_document
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for

TOKEN = "f3b0c1de-9a8b-4c7d-8e6f-integration"
EIC = "10Y1001A1001A82H"
Q = timedelta(minutes=15)


def cet_days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The CET delivery days in [start, end)."""
    days: list[tuple[datetime, datetime]] = []
    day = start.astimezone(PUBLICATION_TZ).date()
    while True:
        begin = datetime.combine(day, datetime.min.time(), tzinfo=PUBLICATION_TZ).astimezone(UTC)
        if begin >= end:
            return days
        day = day + timedelta(days=1)
        days.append((begin, datetime.combine(day, datetime.min.time(), tzinfo=PUBLICATION_TZ).astimezone(UTC)))


def day_prices(begin: datetime, end: datetime, offset: float) -> list[float]:
    # negative at night, the SDAC extremes somewhere in the day: easy to recognise on the wire
    count = (end - begin) // Q
    prices = [round(offset - 40.0 + (i % 48) * 2.25, 2) for i in range(count)]
    prices[count // 3] = -500.0
    prices[2 * count // 3] = 4000.0
    return prices


class Market:
    """What the local Transparency Platform knows: today always, tomorrow once ``publish_tomorrow`` is set."""

    def __init__(self) -> None:
        self.tomorrow_published = threading.Event()
        self.expected: dict[str, float] = {}

    def answer(self, seen: Seen) -> Answer:
        if seen.query.get("securityToken") != TOKEN:
            return Answer(401, b"Unauthorized")
        start = datetime.strptime(seen.query["periodStart"], "%Y%m%d%H%M").replace(tzinfo=UTC)
        end = datetime.strptime(seen.query["periodEnd"], "%Y%m%d%H%M").replace(tzinfo=UTC)
        days = cet_days(start, end)
        if not self.tomorrow_published.is_set():
            days = days[:1]
        periods = []
        for n, (begin, finish) in enumerate(days):
            prices = day_prices(begin, finish, 50.0 * n)
            periods.append((begin, finish, Q, prices))
            for i, price in enumerate(prices):
                self.expected[(begin + i * Q).strftime("%Y-%m-%dT%H:%M:%SZ")] = price
        return Answer(200, a44_document(EIC, datetime.now(UTC), periods), content_type="application/xml")


@pytest.fixture
def provider() -> Iterator[tuple[RecordedAnswers, Market]]:
    market = Market()
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
    provider: tuple[RecordedAnswers, Market],
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
    assert len(first["slots"]) == (today[1] - today[0]) // Q
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
    assert len(second["slots"]) == (days[1][1] - days[0][0]) // Q
    assert {s["start"]: s["price_per_mwh"] for s in second["slots"]} == {
        s["start"]: market.expected[s["start"]] for s in second["slots"]
    }
    assert second["issued_at"] > first["issued_at"]
    assert len(server.seen("/api")) > requests_before

    seen = server.seen("/api")[0]
    assert seen.query["in_Domain"] == seen.query["out_Domain"] == EIC
    assert seen.query["securityToken"] == TOKEN
    status = node.status(services.mqtt_host, services.mqtt_port, topic_root)
    assert status["counters"]["forecasts"] >= 2
    assert TOKEN not in node.log_text()
    assert "securityToken=***" in node.log_text()


def test_entsoe_feed_with_a_wrong_token_reports_degraded(
    services: Services,
    topic_root: str,
    node_env: dict[str, str],
    run_node: Callable[..., NodeProcess],
    provider: tuple[RecordedAnswers, Market],
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
