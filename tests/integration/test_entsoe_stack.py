"""Issue 11's "done when": ``BESS_MARKET_SOURCE=entsoe BESS_ENTSOE_TOKEN=... deploy/up`` runs on ENTSO-E prices.

The stack's nodes as deploy/up starts them (``python -m nodes.<name>``, every node with the same environment,
token included), on the real broker and InfluxDB; only the Transparency Platform is a local stand-in
(:class:`tests.support.market_server.DayAheadMarket`: an A44 document for today and tomorrow of the test's own
clock). Followed through: the document -> the retained ``market/de-lu/prices`` (its slots, its currency) -> the
planner's Schedule for the simulated battery, on exactly those slots -> the recorder's points -> the dashboard's
figures. The token reaches the provider and nothing else: no log line, status or stored point holds it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from deploy import stack
from tests.support.market_server import QUARTER, DayAheadMarket, RecordedAnswers, cet_days
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

TOKEN = "5e1f0c2a-7d3b-4e8f-9a6c-stack-e2e"
EIC = "10Y1001A1001A82H"  # de-lu
NODES = ("recorder", "market", "simulator", "planner", "renderer")


def z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=2.0).get(topic)
    return None if payload is None else json.loads(payload)


def influx_rows(services: Services, db: str, query: str) -> list[dict[str, Any]]:
    """The rows of one InfluxQL statement as dicts (``time`` as RFC 3339 with Z, like the messages)."""
    answer = stack.influx_query(services.influx_url, query, db, epoch="s")["results"][0]
    rows: list[dict[str, Any]] = []
    for series in answer.get("series") or []:
        rows += [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]
    return [row | {"time": z(datetime.fromtimestamp(row["time"], UTC))} for row in rows]


@dataclass
class Stack:
    """The running stack: its environment, its nodes, the local Transparency Platform and what it served."""

    env: dict[str, str]
    nodes: dict[str, NodeProcess]
    server: RecordedAnswers
    market: DayAheadMarket


@pytest.fixture
def entsoe_stack(
    services: Services, topic_root: str, node_env: dict[str, str], battery_id: str, run_node: Callable[..., NodeProcess]
) -> Iterator[Stack]:
    """recorder, market (entsoe), simulator, planner and renderer, all online, with one environment."""
    market = DayAheadMarket(TOKEN, EIC, tomorrow=True)  # the auction of today is in: today and tomorrow known
    with RecordedAnswers() as server:
        server.respond("GET", "/api", market.answer)
        env = {
            **node_env,
            "BESS_MARKET_SOURCE": "entsoe",
            "BESS_MARKET_ZONE": "de-lu",
            "BESS_ENTSOE_TOKEN": TOKEN,
            "BESS_ENTSOE_URL": server.url("/api"),
            "BESS_BATTERIES": battery_id,
            "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
            "BESS_RENDERER_INTERVAL_S": "0.2",
            "BESS_RENDERER_FIGURE_CACHE_S": "0",
            "BESS_LOG_LEVEL": "DEBUG",  # the most a node ever logs: the token must not be in it either
        }
        nodes = {name: run_node(name, env) for name in NODES}
        for node in nodes.values():
            node.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        yield Stack(env, nodes, server, market)


async def test_entsoe_prices_flow_to_the_plan_the_store_and_the_dashboard(
    services: Services, topic_root: str, influx_db: str, battery_id: str, entsoe_stack: Stack
) -> None:
    env, nodes, server, market = entsoe_stack.env, entsoe_stack.nodes, entsoe_stack.server, entsoe_stack.market

    # 1. the feed: exactly the document's slots (today and tomorrow, CET days, quarter-hours) and currency
    prices_topic = f"{topic_root}/market/de-lu/prices"
    forecast = wait_for(lambda: retained(services, prices_topic), 20, 0.2, what="the retained ENTSO-E forecast")
    issued = parse(forecast["issued_at"])
    today, tomorrow = cet_days(issued, issued + timedelta(days=2))[:2]
    slots = forecast["slots"]
    assert forecast["zone"] == "de-lu"
    assert forecast.get("currency", "EUR") == "EUR"  # the document's currency_Unit.name (the contract omits EUR)
    assert forecast["source"] == "ENTSO-E A44 day-ahead"
    assert slots[0]["start"] == z(today[0])
    assert slots[-1]["end"] == z(tomorrow[1])
    assert len(slots) == (tomorrow[1] - today[0]) // QUARTER
    assert all(parse(s["end"]) - parse(s["start"]) == QUARTER for s in slots)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(slots))
    served = {s["start"]: s["price_per_mwh"] for s in slots}
    assert served == {start: market.expected[start] for start in served}
    assert {-500.0, 4000.0} <= set(served.values())
    by_end = {s["end"]: s for s in slots}

    # 2. the plan: the simulated battery planned on exactly those slots, in their currency
    schedule_topic = f"{topic_root}/battery/{battery_id}/schedule"
    schedule = wait_for(lambda: retained(services, schedule_topic), 60, 0.2, what="a retained schedule")
    plan = schedule["slots"]
    assert schedule.get("currency", "EUR") == "EUR"
    assert schedule["zone"] == "de-lu"
    assert plan[-1]["end"] == slots[-1]["end"]  # the whole known horizon, and nothing beyond it
    assert len(plan) == sum(1 for s in slots if parse(s["end"]) > parse(plan[0]["start"]))
    for i, slot in enumerate(plan):
        source = by_end[slot["end"]]  # every slot of the plan ends where a slot of the document ends
        assert slot["price_per_mwh"] == source["price_per_mwh"]
        if i:
            assert slot["start"] == source["start"]
        else:  # the current slot starts at the moment of planning
            assert source["start"] <= slot["start"] < source["end"]
    dear = max(plan, key=lambda s: s["price_per_mwh"])
    assert dear["price_per_mwh"] == 4000.0
    assert dear["discharge_kw"] > 0  # a plan that read the prices

    # 3. the recorder: every slot stored with its price and currency, and the plan with its prices
    def stored() -> list[dict[str, Any]]:
        rows = influx_rows(services, influx_db, "SELECT \"price_per_mwh\",\"end\",\"currency\",\"source\" "
                           "FROM \"prices\" WHERE \"zone\"='de-lu'")
        return rows if len(rows) == len(slots) else []

    rows = wait_for(stored, 30, 0.2, what="the forecast's slots in InfluxDB")
    assert {r["time"]: r["price_per_mwh"] for r in rows} == served
    assert {r["currency"] for r in rows} == {"EUR"}
    assert {r["source"] for r in rows} == {"ENTSO-E A44 day-ahead"}
    planned = wait_for(
        lambda: influx_rows(services, influx_db, "SELECT \"price_per_mwh\",\"currency\" FROM \"schedule\" "
                            f"WHERE \"battery\"='{battery_id}' AND \"plan_id\"='{schedule['plan_id']}'"),
        30, 0.2, what="the plan's slots in InfluxDB",
    )
    assert sorted(r["price_per_mwh"] for r in planned) == sorted(s["price_per_mwh"] for s in plan)
    assert {r["currency"] for r in planned} == {"EUR"}

    # 4. the dashboard: the prices figure draws the document's prices, the plan figure the plan's
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    figures: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        async def drawn() -> bool:
            nonlocal figures
            async with http.get(f"{base}/api/figures/{battery_id}") as response:
                if response.status != 200:
                    return False
                figures = (await response.json())["figures"]
            traces = figures["prices"]["data"] + figures["schedule"]["data"]
            return bool(sum(t.get("name") == "price" for t in traces) == 2)

        await wait_for_async(drawn, timeout=60, what="the prices and the plan on the dashboard")
    price_line = next(t for t in figures["prices"]["data"] if t.get("name") == "price")
    drawn_at = {x[:19]: y for x, y in zip(price_line["x"], price_line["y"], strict=True) if y is not None}
    lo, hi = figures["prices"]["layout"]["xaxis"]["range"]
    shown = [s for s in slots if lo[:19] <= s["start"][:19] < hi[:19]]
    assert len(shown) >= 12 * 4  # the default view reaches 12 h ahead: at least 48 quarter-hours
    for slot in shown:
        assert drawn_at[slot["start"][:19]] == slot["price_per_mwh"], slot
    assert figures["prices"]["layout"]["yaxis"]["title"]["text"] == "price (€/MWh)"
    plan_line = next(t for t in figures["schedule"]["data"] if t.get("name") == "price")
    plan_at = {x[:19]: y for x, y in zip(plan_line["x"], plan_line["y"], strict=True) if y is not None}
    assert [plan_at[s["start"][:19]] for s in plan[1:]] == [s["price_per_mwh"] for s in plan[1:]]
    assert "€" in figures["schedule"]["layout"]["title"]["text"]

    # 5. the token: sent to the provider, never logged, published or stored
    assert {seen.query["securityToken"] for seen in server.seen("/api")} == {TOKEN}
    for name, node in nodes.items():
        node.assert_alive()
        assert TOKEN not in node.log_text(), f"the ENTSO-E token is in the log of {name}"
        status = node.status(services.mqtt_host, services.mqtt_port, topic_root)
        assert TOKEN not in json.dumps(status), name
    assert "securityToken=***" in nodes["market"].log_text()  # the request is logged, its token masked
    everything = stack.read_retained(services.mqtt_host, services.mqtt_port, f"{topic_root}/#")
    assert len(everything) >= len(NODES) + 2  # the statuses, the prices, the plan, the figures...
    assert not any(TOKEN.encode() in payload for payload in everything.values())
