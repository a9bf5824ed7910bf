"""The dashboard in headless Chromium against the running stack (simulated battery, price feed, planner).

Checks what a person would: every figure renders with data, a new telemetry message shows up on the page
without a reload, the status strip shows the nodes, each viewer has its own window (one viewer's choice does
not move another's), the index shows each battery's state, and a battery written only through ``POST /write``
(the seed's curl lines) draws its power (derived from SOC) and targets. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodes.contract.messages import ControlMode, Telemetry
from nodes.contract.topics import CONTROL, TELEMETRY
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
        "BESS_RENDERER_INTERVAL_S": "0.5",
    }
    simulator = run_node("simulator", env)
    for name in ("recorder", "market", "planner", "gateway"):
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
        await publish_telemetry(services, topic_root, battery_id, marker)
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

    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    seed = f"{battery_id}-seed"
    await write_like_the_seed(int(env["BESS_GATEWAY_PORTS"].split(",")[0]), seed)
    async with open_page() as week, open_page() as live:
        # two viewers: one on 7 d, one on the default 24 h
        await week.goto(f"{base}/battery/{battery_id}?window=7d")
        await live.goto(f"{base}/battery/{battery_id}")
        await week.wait_for(RENDERED_SOC + " && document.body.dataset.windowKey === 'window=7d'", timeout=60,
                            what="the 7 d viewer's figures")
        await live.wait_for(RENDERED_SOC, timeout=60, what="the default viewer's figures")
        assert await span_h(week) == 7 * 24 + 7 * 12  # 7 d back, half of it ahead for the plan
        assert await span_h(live) == 24 + 12
        # the 7 d viewer picks 6 h: its own page changes, its URL says so, the other viewer stays on 24 h
        await week.evaluate("document.querySelector('#window-presets [data-window=\"6h\"]').click()")
        await week.wait_for(f"({SPAN_H}) === 9", timeout=30, what="the 6 h view after the click")
        assert await week.evaluate("location.search") == "?window=6h"
        assert await week.evaluate(
            "document.querySelector('#window-presets [data-window=\"6h\"]').getAttribute('aria-pressed')"
        ) == "true"
        before = await last_update(live)
        await publish_telemetry(services, topic_root, battery_id, Telemetry(
            ts=datetime.now(UTC), soc_kwh=433.0, power_kw=-10.0))  # makes the renderer draw the default again
        await live.wait_for(f"document.getElementById('panel-soc').dataset.lastUpdate > '{before}'",
                            timeout=30, what="a live update on the default viewer")
        assert await span_h(live) == 24 + 12  # untouched by the other viewer's choice
        # the control mode (retained CONTROL topic) on the status strip
        now = datetime.now(UTC)
        await publish(services, topic_root, CONTROL, ControlMode(
            mode="manual", set_at=now, until=now + timedelta(minutes=5), source="gateway",
            reason="operator command"), battery=battery_id)
        control = await live.wait_for(
            "(() => { const c = document.getElementById('control');"
            " return c.dataset.control === 'manual' ? c.textContent : null; })()",
            timeout=20, what="the control mode on the status strip",
        )
        assert control == f"Control: manual until {(now + timedelta(minutes=5)):%H:%M} UTC (operator command)"
        # a reload keeps the viewer's window (it is in the URL, not on the server)
        await week.goto(f"{base}/battery/{battery_id}?window=6h")
        await week.wait_for(f"({SPAN_H}) === 9", timeout=30, what="6 h after a reload")

        # the seed-only battery: derived power, targets, energy from SOC changes
        await live.goto(f"{base}/battery/{seed}")
        await live.wait_for(
            "(() => { const p = JSON.parse(document.getElementById('panel-power')?.dataset.pointsByTrace || '{}');"
            " return (p['charge (derived from SOC)'] || 0) > 0 && (p['target charge (kW)'] || 0) > 0; })()",
            timeout=60, what="derived power and targets on the seed battery's power panel",
        )
        await live.wait_for(
            "(() => { const el = document.getElementById('panel-insights');"
            " return el && el.dataset.state === 'rendered' && el.dataset.empty === 'false'; })()",
            timeout=60, what="the seed battery's KPIs",
        )
        # the planner's note for this battery (its status details), on the page and in the plan panel
        notes = await live.wait_for(
            "(() => { const n = document.getElementById('notes'); return n && !n.hidden ? n.textContent : null; })()",
            timeout=30, what="the planner's note on the seed battery's page",
        )
        assert notes == "planner: monitored, not planned: no spec received"
        await live.wait_for(
            "(() => { const p = document.getElementById('plot-schedule');"
            " return p && p.textContent.includes('no plan: monitored, not planned'); })()",
            timeout=30, what="the plan panel saying why there is no plan",
        )
        await live.screenshot(ARTIFACTS / "dashboard-seed.png")
        await week.screenshot(ARTIFACTS / "dashboard-6h.png")

        # the index (the fleet table): every battery with its SOC, power, modes and telemetry age
        await live.goto(base + "/")
        card = await live.wait_for(
            f"(() => {{ const c = document.getElementById('battery-{battery_id}'); if (!c) return null;"
            " const f = (n) => c.querySelector('[data-field=\"' + n + '\"]').textContent;"
            " return f('soc').includes('kWh') && f('age').includes('ago') ? {soc: f('soc'), power: f('power'),"
            " age: f('age'), mode: c.querySelector('.chip-mode').textContent,"
            " control: c.querySelector('[data-field=\"control\"]').title} : null; })()",
            timeout=30, what="the simulated battery's state on the index",
        )
        assert card["mode"] in ("idle", "charging", "discharging")
        assert card["control"].startswith("Control: ")
        seed_card = await live.evaluate(
            f"document.querySelector('#battery-{seed} [data-field=\"power\"]').textContent"
        )
        assert seed_card == "not reported"
        note = await live.evaluate(f"document.querySelector('#battery-{seed} .row-note').textContent")
        assert note == "planner: monitored, not planned: no spec received"
        await live.screenshot(ARTIFACTS / "dashboard-index.png")


RENDERED_SOC = "document.getElementById('panel-soc')?.dataset.state === 'rendered'"
SPAN_H = (
    "(() => { const r = JSON.parse(document.getElementById('panel-soc')?.dataset.xRange || 'null');"
    " return r ? Math.round((Date.parse(r[1] + 'Z') - Date.parse(r[0] + 'Z')) / 3600000) : null; })()"
)


async def span_h(page: Any) -> int:
    """Hours shown on the SOC panel's time axis."""
    return int(await page.evaluate(SPAN_H))


async def publish(services: Services, topic_root: str, topic: Any, message: Any, **params: str) -> None:
    bus = Bus("probe-dashboard", MqttSettings(
        mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root
    ))
    await bus.start()
    try:
        await bus.publish(topic, message, wait_ack=True, retain=topic.retain, **params)
    finally:
        await bus.stop()


async def publish_telemetry(services: Services, topic_root: str, battery: str, message: Telemetry) -> None:
    await publish(services, topic_root, TELEMETRY, message, battery=battery)


async def last_update(page: Any) -> str:
    return str(await page.evaluate("document.getElementById('panel-soc').dataset.lastUpdate"))


async def write_like_the_seed(port: int, battery: str) -> None:
    """SOC and targets every 5 minutes through ``POST /write``, as the seed's curl lines do (no power)."""
    now = datetime.now(UTC)
    records = [
        {"SOC": 500 + 60 * math.sin(i / 4), "target_discharge": 50, "target_charge": 100,
         "timestamp": (now - timedelta(minutes=5 * (48 - i))).isoformat().replace("+00:00", "Z")}
        for i in range(49)
    ]
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{port}/write", params={"battery": battery}, json=records
    ) as response:
        assert response.status == 200, await response.text()  # stored: the recorder confirmed it
