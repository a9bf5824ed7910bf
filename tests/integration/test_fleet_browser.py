"""The fleet view in headless Chromium: three simulated batteries, a hot cell on one. The index's fleet table has a
row per battery, sorts on a header click, shows the hot battery's alarm in its row, and its totals row agrees with
the server's (``GET /api/fleet``); the time-zone toggle (``BESS_DISPLAY_TZ``) changes the times shown; the battery
page's diagnostics panel and CSV links follow the viewer's window. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodes.contract.messages import Telemetry
from nodes.contract.topics import TELEMETRY
from nodes.runtime.bus import Bus, MqttSettings
from tests.support.browser import chromium_path, open_page
from tests.support.services import Services

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (deploy/test installs it)"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ZONE = "America/New_York"
ORDER = "Array.from(document.querySelectorAll('#fleet tbody .battery-row')).map(r => r.dataset.battery)"


async def click_header(page: Any, key: str) -> list[str]:
    await page.evaluate(f"document.querySelector('#fleet th[data-sort-key=\"{key}\"] button').click()")
    order: list[str] = await page.evaluate(ORDER)
    return order


async def test_the_fleet_table_sorts_shows_alarms_and_totals_and_the_zone_toggle_changes_times(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    batteries = [f"{battery_id}-a", f"{battery_id}-b", f"{battery_id}-c"]
    hot = batteries[1]
    env = {
        **node_env,
        "BESS_BATTERIES": ",".join(batteries),
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_FAULT": json.dumps({hot: {"kind": "hot_cell", "at_s": 1}}),
        "BESS_ALARMS": json.dumps({"defaults": {"cell_temp_high": {"raise_after_s": 1, "clear_after_s": 2},
                                                "prices_stale": {"enabled": False}}}),
        "BESS_ALARMS_RESTORE_WAIT_S": "0.5",
        "BESS_RENDERER_INTERVAL_S": "0.5",
        "BESS_DISPLAY_TZ": ZONE,
    }
    run_node("recorder", env)
    run_node("alarms", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("simulator", env)
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"

    async with open_page() as index, open_page() as page:
        await index.goto(f"{base}/")
        await index.wait_for(
            "document.querySelectorAll('#fleet tbody .battery-row').length === 3 && Array.from(document"
            ".querySelectorAll('#fleet tbody .battery-row [data-field=\"soc\"]')).every(c => c.dataset.capacityKwh"
            " && c.dataset.socKwh) && document.body.dataset.connected === 'true'",
            timeout=30, what="a row with SOC and spec for every battery")
        row = await index.wait_for(
            f"(() => {{ const c = document.querySelector('#battery-{hot} [data-field=\"alarms\"] .chip-alarm');"
            " return c && c.dataset.count === '1' ? {severity: c.dataset.severity, text: c.textContent,"
            f" tip: c.parentElement.title}} : null; }})()", timeout=30, what="the hot cell's alarm in its row")
        assert row["severity"] == "critical"
        assert row["text"] == "1 alarm"
        assert "max cell temperature" in row["tip"]
        bar = await index.evaluate(
            f"document.querySelector('#battery-{batteries[0]} .socbar .fill').style.width")
        assert bar == "52.5%", "a simulated battery starts in the middle of its range: 525 of 1000 kWh"

        # sorting: by id both ways, then by alarms (the hot battery first when descending)
        assert await click_header(index, "battery") == batteries
        assert await click_header(index, "battery") == list(reversed(batteries))
        assert await index.evaluate(
            "document.querySelector('#fleet th[data-sort-key=\"battery\"]').getAttribute('aria-sort')") == "descending"
        assert (await click_header(index, "alarms"))[-1] == hot, "ascending: no alarm first"
        assert (await click_header(index, "alarms"))[0] == hot, "descending: the alarm first"
        assert "sort=alarms&dir=desc" in await index.evaluate("location.search"), "a sorted view can be bookmarked"

        # the totals row (recomputed every second) sums what the rows show, by the server's rules
        shown = await index.wait_for(
            "(() => { const rows = Array.from(document.querySelectorAll('#fleet tbody .battery-row'));"
            " const t = (k) => document.querySelector('#fleet-totals [data-total=\"' + k + '\"]');"
            " return t('alarms').dataset.value !== '1' ? null : {energy: Number(t('energy').dataset.value), alarms: 1,"
            " rows: rows.reduce((s, r) => s + Number(r.querySelector('[data-field=\"soc\"]').dataset.socKwh), 0),"
            " text: t('energy').textContent}; })()", timeout=5, what="the totals row with the alarm")
        assert shown["energy"] == pytest.approx(shown["rows"])
        assert shown["alarms"] == 1
        async with aiohttp.ClientSession() as http, http.get(f"{base}/api/fleet") as response:
            server = (await response.json())["totals"]
        assert server["counted"] == 3
        assert shown["energy"] == pytest.approx(server["energy_kwh"], rel=0.05), "the same rule, a moment apart"
        assert shown["text"] == "1,575.0 kWh · 53 %", "3 x 525 kWh, the share of the fleet's 3,000 kWh"
        await index.screenshot(ARTIFACTS / "fleet-index.png")

        # the zone toggle: the banner's "since" and every other time move by the zone's offset
        since_zone = await index.evaluate("document.querySelector('#alarm-banner .since').textContent")
        assert await index.evaluate("document.body.dataset.tz") == ZONE, "BESS_DISPLAY_TZ is the default"
        assert " EST " in since_zone or " EDT " in since_zone
        await index.evaluate("document.querySelector('#tz-toggle [data-tz=\"UTC\"]').click()")
        since_utc = await index.evaluate("document.querySelector('#alarm-banner .since').textContent")
        assert " UTC " in since_utc
        hour = lambda text: int(text.split(" ")[2][:2])  # noqa: E731 - "since 2025-01-16 07:00:00 EST (...)"
        assert (hour(since_utc) - hour(since_zone)) % 24 in (4, 5), (since_zone, since_utc)
        assert await index.evaluate("localStorage.getItem('bess.tz')") == "UTC", "the choice is remembered"

        # the battery page: readout time in the chosen zone, the time axis shifted, diagnostics, CSV links
        await page.goto(f"{base}/battery/{hot}?window=6h")
        await page.wait_for("document.getElementById('panel-soc')?.dataset.state === 'rendered' && "
                            "document.getElementById('readout')?.dataset.ts", timeout=30, what="the SOC panel")
        zone_text = await page.evaluate("document.getElementById('readout').textContent")
        assert zone_text.endswith((" EST", " EDT")), "a browser of its own: the default zone"
        zone_range = await page.evaluate("document.querySelector('#plot-soc').layout.xaxis.range[0]")
        assert ZONE in await page.evaluate("document.querySelector('#plot-soc').layout.xaxis.title.text")
        await page.evaluate("document.querySelector('#tz-toggle [data-tz=\"UTC\"]').click()")
        utc_text = await page.evaluate("document.getElementById('readout').textContent")
        assert utc_text.endswith(" UTC"), utc_text
        utc_range = await page.evaluate("document.querySelector('#plot-soc').layout.xaxis.range[0]")
        shift_h = await page.evaluate(f"(Date.parse('{utc_range}Z') - Date.parse('{zone_range}Z')) / 3600000")
        assert shift_h in (4, 5), "the time axis showed New York time, now UTC"
        assert "UTC" in await page.evaluate("document.querySelector('#plot-soc').layout.xaxis.title.text")
        href = await page.evaluate("document.querySelector('#panel-soc .panel-csv').getAttribute('href')")
        assert href == f"/battery/{hot}/export.csv?window=6h&series=soc"
        async with aiohttp.ClientSession() as http, http.get(base + href) as response:
            assert response.status == 200
            body = await response.text()
        assert body.startswith("time_utc,bucket_s,soc_kwh\r\n")
        assert body.count("\r\n") > 2, "readings of the window"
        panel = await page.wait_for(
            "(() => { const p = document.getElementById('panel-diagnostics');"
            " return p.dataset.status === 'ready' ? {rows: Number(p.dataset.rows),"
            " readings: Number(p.dataset.readings), text: p.textContent} : null; })()",
            timeout=30, what="the diagnostics panel")
        assert panel["rows"] == 7
        assert panel["readings"] > 0
        assert "not enough data: need" in panel["text"], "a fresh battery: the panel says what it needs"
        assert "1 gap, " in panel["text"], "the window before the first reading is the one gap"
        await page.screenshot(ARTIFACTS / "fleet-battery-page.png")


async def test_a_fleet_of_many_pages_keeps_the_whole_fleets_totals_and_sorts_on_the_server(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str
) -> None:
    n = 150
    env = {**node_env, "BESS_RENDERER_INTERVAL_S": "0.5"}
    run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    bus = Bus("feeder", MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port,
                                     topic_root=topic_root))
    await bus.start()
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    try:
        now = datetime.now(UTC)
        for i in range(n):
            await bus.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=float(i), power_kw=1.0), battery=f"m-{i:03d}")
        async with open_page() as index:
            await index.goto(f"{base}/")
            totals = "(document.querySelector('#fleet-totals [data-total=\"batteries\"]')?.textContent || '')"
            await index.wait_for(f"document.body?.dataset.connected === 'true' && {totals}.includes('{n} batteries')",
                                 timeout=30, what="the totals of every battery on page 1")
            assert await index.evaluate("document.querySelectorAll('#fleet tbody .battery-row').length") == 100
            power = await index.wait_for(
                "(() => { const v = document.querySelector('#fleet-totals [data-total=\"power\"]')?.dataset.value;"
                " return v ? Number(v) : 0; })()", timeout=30, what="the fleet's power")
            assert power == pytest.approx(n * 1.0), "the server's totals: every battery, not the 100 on the page"
            # a reading of a battery on page 2 does not add a row to page 1
            await bus.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=7.0, power_kw=2.0), battery="m-149")
            await bus.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=8.0, power_kw=3.0), battery="m-000")
            await index.wait_for("Number(document.querySelector('#battery-m-000 [data-field=\"power\"]')"
                                 "?.dataset.value) === 3", timeout=30, what="page 1's own row live")
            assert await index.evaluate("document.getElementById('battery-m-149')") is None
            # a header click sorts every battery on the server: the highest SOC first
            click_soc = "document.querySelector('#fleet th[data-sort-key=\"soc\"] button').click()"
            await index.evaluate(click_soc)
            await index.wait_for("location.search.includes('dir=asc') && document.querySelector('#fleet tbody "
                                 ".battery-row')?.dataset.battery === 'm-001' && document.body.dataset.connected "
                                 "=== 'true'", timeout=30, what="every battery sorted by SOC: the lowest first")
            await index.evaluate(click_soc)
            await index.wait_for("location.search.includes('sort=soc') && location.search.includes('dir=desc') && "
                                 "document.querySelector('#fleet tbody .battery-row')?.dataset.battery === 'm-148'",
                                 timeout=30, what="page 1 of the fleet sorted by SOC, descending")
            await index.evaluate("document.querySelector('#fleet-pager a[rel=\"next\"]').click()")
            await index.wait_for("document.querySelectorAll('#fleet tbody .battery-row').length === 50",
                                 timeout=30, what="page 2: the other 50")
            await index.screenshot(ARTIFACTS / "fleet-index-paged.png")
    finally:
        await bus.stop()
