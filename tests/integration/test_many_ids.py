"""Many new battery ids at once (issue 14): 500 ids written over HTTP do not slow battery-1's live figures, and
the renderer asks the recorder for no history of an id nobody views; opening one such battery's page draws it.
The index answers one page of 100 rows with the totals of every battery."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from nodes.runtime.bus import Bus, MqttSettings
from nodes.runtime.dispatch import Delivery
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

IDS = 500


class Sniffer:
    """Arrival times of battery-1's SOC figure and the battery of every history request, from the broker."""

    def __init__(self, services: Services, topic_root: str, battery: str) -> None:
        self.figures: list[float] = []
        self.history: list[str | None] = []
        self.bus = Bus("sniffer", MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port,
                                               topic_root="sniffer/bess/v1"))
        self.bus.subscribe_foreign(f"{topic_root}/battery/{battery}/figure/soc", self._figure)
        self.bus.subscribe_foreign(f"{topic_root}/history/request", self._history)

    async def _figure(self, name: str, payload: bytes, delivery: Delivery) -> None:
        if payload and not delivery.retain:
            self.figures.append(time.monotonic())

    async def _history(self, name: str, payload: bytes, delivery: Delivery) -> None:
        self.history.append(json.loads(payload).get("battery"))

    def max_gap(self, begin: float, end: float) -> float:
        """The longest time without a figure in [begin, end], the open gap up to ``end`` included."""
        times = [begin, *(t for t in self.figures if begin <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))


async def write(http: aiohttp.ClientSession, gateway: str, ids: list[str]) -> list[int]:
    codes: list[int] = []
    queue = list(ids)

    async def worker() -> None:
        while queue:
            battery = queue.pop()
            body = {"SOC": 500, "target_discharge": 0, "target_charge": 100, "battery": battery,
                    "timestamp": datetime.now(UTC).isoformat()}
            async with http.post(f"{gateway}/write?ack=broker", json=body) as response:
                codes.append(response.status)

    await asyncio.gather(*(worker() for _ in range(16)))
    return codes


async def first_figure_event(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and '"kind":"figure"' in line:
                event: dict[str, Any] = json.loads(line[len("data: "):])
                return event
    raise AssertionError("the stream ended without a figure")


async def test_a_burst_of_ids_does_not_slow_battery_1_and_costs_no_history_until_viewed(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {**node_env, "BESS_BATTERIES": battery_id, "BESS_SIM_TELEMETRY_INTERVAL_S": "1",
           "BESS_RENDERER_INTERVAL_S": "0.5", "BESS_RENDERER_HISTORY_REFRESH_S": "5",
           "BESS_RENDERER_PUBLISH_MAX": "1"}  # battery-1 only: it has a spec
    sniffer = Sniffer(services, topic_root, battery_id)
    await sniffer.bus.start()
    try:
        run_node("recorder", env)
        gateway = run_node("gateway", env)
        run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        gateway.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        run_node("simulator", env)
        await wait_for_async(lambda: len(sniffer.figures) >= 3, timeout=30, what="battery-1's live figures")
        base_begin = time.monotonic()
        await asyncio.sleep(6)
        baseline_gap = sniffer.max_gap(base_begin, time.monotonic())

        ids = [f"burst-{i:04d}" for i in range(IDS)]
        gw = f"http://127.0.0.1:{env['BESS_GATEWAY_PORTS'].split(',')[0]}"
        dash = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
        async with aiohttp.ClientSession() as http:
            burst_begin = time.monotonic()
            codes = await write(http, gw, ids)
            assert codes.count(202) == IDS, codes
            await wait_for_async(lambda: time.monotonic() - burst_begin > 12, timeout=20)
            burst_gap = sniffer.max_gap(burst_begin, time.monotonic())
            assert burst_gap <= max(3.0, 2 * baseline_gap), (
                f"battery-1's figures: {burst_gap:.1f} s without an update after the burst "
                f"({baseline_gap:.1f} s before)")
            asked = {b for b in sniffer.history if b is not None}
            assert battery_id in asked, "battery-1's history is refreshed as before"
            assert not asked & set(ids), f"history asked for ids nobody views: {sorted(asked & set(ids))[:5]}"

            async with http.get(f"{dash}/api/fleet?per_page=1") as response:
                fleet = await response.json()
            assert fleet["totals"]["batteries"] == IDS + 1
            async with http.get(f"{dash}/") as response:
                page = await response.text()
            assert page.count('class="battery-row"') == 100
            assert len(page.encode()) < 250_000, "one page, not 501 rows"

            # somebody opens burst-0007's page on the live window: it is drawn for them
            event = await asyncio.wait_for(first_figure_event(http, f"{dash}/events?battery=burst-0007"), 30)
            assert event["battery"] == "burst-0007"
            assert "burst-0007" in sniffer.history, "its history is read once it is viewed"
    finally:
        await sniffer.bus.stop()
