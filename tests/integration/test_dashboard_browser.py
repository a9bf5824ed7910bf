"""The dashboard in headless Chromium against the running stack (simulated battery, price feed, planner).

Checks what a person would: every figure renders with data, a new telemetry message shows up on the page
without a reload, and the status strip shows the nodes. A screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nodes.contract.messages import Telemetry
from nodes.contract.topics import TELEMETRY
from nodes.runtime.bus import Bus, MqttSettings
from tests.support.browser import chromium_path, open_page
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (deploy/test installs it)"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FIGURES = ("soc", "power", "prices", "schedule", "insights")

PANELS = """(() => Object.fromEntries(Array.from(document.querySelectorAll('.panel')).map(
    p => [p.dataset.figure, {state: p.dataset.state, points: Number(p.dataset.points || 0),
                             empty: p.dataset.empty}])))()"""


async def test_dashboard_renders_live_figures(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "1",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_RENDER_INTERVAL_S": "0.5",
    }
    simulator = run_node("simulator", env)
    for name in ("recorder", "market", "planner"):
        run_node(name, env)
    renderer = run_node("renderer", env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    url = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}/battery/{battery_id}"

    async with open_page() as page:
        await page.goto(url)
        panels: dict[str, Any] = {}

        async def all_rendered() -> bool:
            nonlocal panels
            panels = await page.evaluate(PANELS) or {}
            return all(
                f in panels and panels[f]["state"] == "rendered" and panels[f]["points"] > 0 for f in FIGURES
            )

        await wait_for_async(all_rendered, timeout=60, what=f"every figure rendered with data ({panels})")
        assert set(panels) >= set(FIGURES)

        # a telemetry message published now must reach the open page without a reload (the simulator is
        # stopped first so its next reading cannot replace the marker before the page is looked at)
        simulator.stop()
        later = datetime.now(UTC) + timedelta(seconds=2)  # newer than anything the simulator sent
        marker = Telemetry(ts=later.replace(microsecond=123456), soc_kwh=432.1, power_kw=-12.5)
        bus = Bus(f"probe-{battery_id}", MqttSettings(
            mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root
        ))
        await bus.start()
        try:
            await bus.publish(TELEMETRY, marker, wait_ack=True, battery=battery_id)
        finally:
            await bus.stop()
        shown = await page.wait_for(
            f"(document.body.dataset.ts || '').startsWith('{marker.ts.strftime('%Y-%m-%dT%H:%M:%S.123456')}')"
            " ? document.body.dataset.ts : null",
            timeout=20,
            what="the new telemetry message on the page",
        )
        assert shown.startswith(marker.ts.strftime("%Y-%m-%dT%H:%M:%S"))
        nodes = await page.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('#nodes [data-node]'))"
            ".map(n => [n.dataset.node, n.dataset.state]))"
        )
        assert nodes.get("renderer") == "online"
        assert nodes.get("planner") in ("online", "degraded")
        shot = await page.screenshot(ARTIFACTS / "dashboard.png")
    assert shot.stat().st_size > 20_000
