"""The control panel in headless Chromium against real nodes (simulator, planner, gateway, recorder, renderer) on
the real broker and influxd.

What an operator does and sees: a manual charge sent from the panel is the gateway's Command on the set topic with
``source: dashboard`` and the panel's lease, the panel shows it with its lease counting down, the command history
table lists it (and InfluxDB holds it); a command the gateway refuses shows the gateway's reason; the autopilot
pause holds (the planner, which renews its 4 s lease every 2 s otherwise, sends nothing) until resumed, and then
the planner commands again. A screenshot of the page goes to ``test-artifacts/`` and /tmp.
"""

from __future__ import annotations

import base64
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nodes.contract.messages import Command, Telemetry
from nodes.contract.topics import COMMAND, PRICES, TELEMETRY
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from tests.integration.test_control_loop import _discharge_now
from tests.integration.test_gateway import start_gateway
from tests.support.browser import chromium_path, open_page
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (deploy/test installs it)"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RESULT = """(() => { const r = document.getElementById('cp-result');
  return r.hidden ? null : {outcome: r.dataset.outcome, status: r.dataset.status, commandId: r.dataset.commandId,
                            requestId: r.dataset.requestId, text: r.textContent}; })()"""
ROWS = """Array.from(document.querySelectorAll('#ch-rows tr[data-command-id]')).map(r => ({
  id: r.dataset.commandId, source: r.dataset.source, outcome: r.dataset.outcome, end: r.dataset.end,
  text: r.textContent}))"""


async def click(page: Any, selector: str) -> None:
    await page.evaluate(f"document.querySelector({selector!r}).click()")


async def snapshot(page: Any, element_id: str, path: Path) -> None:
    """A screenshot of one element of the page (its bounding box)."""
    box = await page.evaluate(f"(() => {{ const r = document.getElementById({element_id!r}).getBoundingClientRect();"
                              " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })()")
    shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={**box, "scale": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240 - a one-off small file in a test
    shutil.copy(path, Path("/tmp") / f"i13-{path.name}")


async def result_after(page: Any, previous: str | None) -> dict[str, Any]:
    """The panel's answer to the action just taken (a new request id)."""
    return await page.wait_for(
        f"(() => {{ const r = {RESULT}; return r && r.requestId && r.requestId !== {previous or ''!r}"
        " ? r : null; })()",
        timeout=15, what="the panel's answer")


async def test_a_manual_command_from_the_panel_and_an_autopilot_pause_that_holds_until_resumed(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_SOC_INITIAL_KWH": "600",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_PLANNER_LEASE_S": "4",  # unpaused, the planner renews its command every ~3 s
        "BESS_RENDERER_INTERVAL_S": "0.5",
    }
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    probe = Bus(f"probe-{battery_id}", settings, persistent=False)
    commands: list[Command] = []
    readings: list[Telemetry] = []

    async def on_command(params: dict[str, str], message: Command, delivery: Delivery) -> None:
        commands.append(message)

    async def on_telemetry(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        if not delivery.retain:
            readings.append(message)

    probe.subscribe(COMMAND, on_command, battery=battery_id)
    probe.subscribe(TELEMETRY, on_telemetry, battery=battery_id)
    await probe.start()
    try:
        run_node("recorder", env)
        run_node("simulator", env)
        run_node("planner", env)
        start_gateway(run_node, services, env)
        run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        await probe.publish(PRICES, _discharge_now(datetime.now(UTC).replace(microsecond=0)), wait_ack=True,
                            zone="de-lu")
        await wait_for_async(lambda: any(c.source == "planner" for c in commands), 30, what="a planner command")

        async with open_page(width=1400, height=2200) as page:
            await page.goto(f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}/battery/{battery_id}")
            await page.wait_for("document.getElementById('control-panel')?.dataset.enabled === 'true' && "
                                "!document.getElementById('cp-limits').textContent.startsWith('limits: waiting')",
                                timeout=30, what="the panel enabled with the battery's limits")
            await page.evaluate("window.confirm = () => true")  # 'hold idle' asks first

            # -- a manual charge of 20 kW for 10 minutes ------------------------------------------------------
            await click(page, '#cp-action [data-action="charge"]')
            await page.evaluate("document.getElementById('cp-power').value = '20';"
                                "document.getElementById('cp-lease').value = '10'")
            await click(page, "#cp-send")
            sent = await result_after(page, None)
            assert (sent["outcome"], sent["status"]) == ("accepted", "202"), sent
            command_id = sent["commandId"]
            mine = await wait_for_async(lambda: next((c for c in commands if c.command_id == command_id), None), 10,
                                        what="the panel's command on the set topic")
            assert (mine.action, mine.power_kw, mine.source, mine.text) == ("charge", 20.0, "dashboard",
                                                                           "CHARGE 20 kW")
            assert mine.valid_until - mine.issued_at == timedelta(minutes=10), "the panel's lease"
            assert "CHARGE 20 kW" in sent["text"]
            running = await page.wait_for(
                f"(() => {{ const r = document.getElementById('cp-running'); return r.dataset.commandId === "
                f"{command_id!r} && Number(r.dataset.remainingS) > 0 ? {{source: r.dataset.source, "
                f"left: Number(r.dataset.remainingS), text: r.textContent}} : null; }})()", timeout=10,
                what="the running command with its lease countdown")
            assert running["source"] == "dashboard"
            assert 500 < running["left"] <= 600
            await page.wait_for("document.getElementById('cp-mode').dataset.mode === 'manual'", timeout=10,
                                what="the autopilot paused for the command's lease")
            rows = await page.wait_for(
                f"(() => {{ const rows = {ROWS}; return rows.some(r => r.id === {command_id!r}) ? rows : null; }})()",
                timeout=20, what="the command in the history table")
            row = next(r for r in rows if r["id"] == command_id)
            assert (row["source"], row["end"]) == ("dashboard", "running")
            assert "CHARGE 20 kW" in row["text"]
            await page.wait_for(
                f"{ROWS}.some(r => r.id === {command_id!r} && r.outcome === 'followed')", timeout=20,
                what="the battery's state confirming the command (outcome followed)")
            stored = await wait_for_async(lambda: services.influx_rows(
                env["BESS_INFLUX_DB"], f"SELECT * FROM command WHERE command_id = '{command_id}'"), timeout=10,
                what="the command stored by the recorder")
            assert stored[0]["source"] == "dashboard"
            shot = await page.screenshot(ARTIFACTS / "control-panel.png")
            shutil.copy(shot, Path("/tmp/i13-control-panel.png"))
            for part in ("control-panel", "command-history"):  # each at full size, to look at closely
                await snapshot(page, part, ARTIFACTS / f"{part}-only.png")

            # -- a refused one: held idle, a charge is the gateway's 409 with its reason ---------------------
            await click(page, "#cp-hold-idle")
            held = await result_after(page, sent["requestId"])
            assert held["outcome"] == "accepted", held
            await click(page, "#cp-send")
            refused = await result_after(page, held["requestId"])
            assert (refused["outcome"], refused["status"]) == ("refused", "409"), refused
            assert "control mode idle" in refused["text"]

            # -- resume: the planner commands again -------------------------------------------------------------
            mark = len(commands)
            await click(page, "#cp-resume")
            resumed = await result_after(page, refused["requestId"])
            assert resumed["outcome"] == "accepted"
            await wait_for_async(lambda: any(c.source == "planner" for c in commands[mark:]), 15,
                                 what="a planner command after resume")
            await page.wait_for("document.getElementById('cp-mode').dataset.mode === 'autopilot'", timeout=10,
                                what="the panel showing the autopilot on")

            # -- pause until resumed: no planner command while it holds ---------------------------------------
            await page.evaluate("document.getElementById('cp-pause-for').value = ''")
            await click(page, "#cp-pause")
            paused = await result_after(page, resumed["requestId"])
            assert paused["outcome"] == "accepted", paused
            await page.wait_for("document.getElementById('cp-mode').dataset.mode === 'manual'", timeout=10,
                                what="the panel showing the autopilot paused")
            # a planner command already on its way when the pause was published may still land: count from 1 s on
            first = len(readings)
            await wait_for_async(lambda: len(readings) - first >= 2, 10, what="1 s of device telemetry")
            paused_at, seen = len(commands), len(readings)
            # 20 readings at 0.5 s: 10 s in which an unpaused autopilot would have renewed its 4 s lease 3 times
            await wait_for_async(lambda: len(readings) - seen >= 20, 30, what="10 s of device telemetry")
            assert [c for c in commands[paused_at:] if c.source == "planner"] == [], "the pause did not hold"

            await click(page, "#cp-resume")
            await result_after(page, paused["requestId"])
            await wait_for_async(lambda: any(c.source == "planner" for c in commands[paused_at:]), 15,
                                 what="the planner commanding again after resume")
            sources = await page.wait_for(
                f"(() => {{ const rows = {ROWS}; return rows.length && rows[0].source === 'planner'"
                " ? rows : null; })()",
                timeout=20, what="the planner's command at the top of the history")
            assert {r["source"] for r in sources} >= {"planner", "dashboard"}
    finally:
        await probe.stop()
