"""The alarm banner in headless Chromium: three simulated batteries, a hot cell injected on one; its battery page
and the index show the alarm within seconds (severity, since) and drop it when the fault ends, the alarm history
table lists it, and the battery panel draws the BMS values. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium_path, open_page
from tests.support.services import Services

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (deploy/test installs it)"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BANNER = """(() => { const b = document.getElementById('alarm-banner');
  return {hidden: b.hidden, count: Number(b.dataset.count), severity: b.dataset.severity,
          items: Array.from(b.querySelectorAll('.alarm')).map(a => ({battery: a.dataset.battery, rule: a.dataset.rule,
            severity: a.dataset.severity, since: a.dataset.since, text: a.textContent}))}; })()"""


async def test_the_banner_appears_for_a_hot_cell_and_disappears_when_it_clears(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    batteries = [f"{battery_id}-a", f"{battery_id}-b", f"{battery_id}-c"]
    hot = batteries[1]
    env = {
        **node_env,
        "BESS_BATTERIES": ",".join(batteries),
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_FAULT": json.dumps({hot: {"kind": "hot_cell", "at_s": 6, "for_s": 12}}),
        "BESS_ALARMS": json.dumps({"defaults": {"cell_temp_high": {"raise_after_s": 1, "clear_after_s": 2},
                                                "prices_stale": {"enabled": False}}}),
        "BESS_ALARMS_RESTORE_WAIT_S": "0.5",
        "BESS_RENDERER_INTERVAL_S": "0.5",
    }
    run_node("recorder", env)
    run_node("alarms", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("simulator", env)
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"

    async with open_page() as page, open_page() as index:
        await page.goto(f"{base}/battery/{hot}")
        await index.goto(f"{base}/")
        await page.wait_for("!!document.body && document.body.dataset.connected === 'true'", timeout=20,
                            what="the event stream")
        assert (await page.evaluate(BANNER))["hidden"] is True, "no alarm before the fault"
        shown = await page.wait_for(
            f"(() => {{ const b = {BANNER}; return !b.hidden && b.items.some(i => i.rule === 'cell_temp_high')"
            " ? b : null; })()", timeout=30, what="the hot cell alarm in the banner")
        (item,) = shown["items"]
        assert (item["battery"], item["severity"], shown["severity"]) == (hot, "critical", "critical")
        assert "max cell temperature 58.0 °C above 55 °C" in item["text"]
        assert "since " in item["text"]
        on_index = await index.wait_for(
            f"(() => {{ const b = {BANNER}; return b.count === 1 ? b : null; }})()", timeout=20,
            what="the alarm on the index banner")
        assert on_index["items"][0]["battery"] == hot
        chips = await index.evaluate(
            "Object.fromEntries(Array.from(document.querySelectorAll('.battery-row')).map(c => [c.dataset.battery,"
            " c.querySelector('[data-field=\"alarms\"] .chip-alarm').dataset.count]))")
        assert chips == {hot: "1", batteries[0]: "0", batteries[2]: "0"}
        await page.screenshot(ARTIFACTS / "alarm-banner.png")

        await page.wait_for(f"{BANNER}.hidden", timeout=40, what="the banner to clear after the fault")
        await index.wait_for(f"{BANNER}.count === 0", timeout=20, what="the index banner to clear")
        history = await page.wait_for(
            "(() => { const p = document.getElementById('panel-alarms');"
            " return p.dataset.state === 'rendered' && Number(p.dataset.points) >= 1 ? p.dataset.points : null; })()",
            timeout=30, what="the alarm history table")
        assert int(history) == 1, "one alarm: raised, then cleared (one row)"
        cells = await page.evaluate(
            "(() => { const p = document.getElementById('panel-cells');"
            " return {hidden: p.hidden, state: p.dataset.state, points: Number(p.dataset.points)}; })()")
        assert cells["hidden"] is False
        assert cells["state"] == "rendered"
        assert cells["points"] > 0
