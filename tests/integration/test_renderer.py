"""The renderer against a real broker, recorder and InfluxDB: exact KPIs per window, the seed's own data,
windows per viewer, status spoofing, control mode and the dashboard token (issue 9)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import numpy as np
import pytest

from deploy import stack
from nodes.contract.messages import BatterySpec, ControlMode, NodeStatus, PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import CONTROL, SPEC, STATUS, TELEMETRY
from nodes.recorder.points import prices_lines, telemetry_line
from nodes.runtime.bus import Bus, MqttSettings
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

WINDOWS = ("6h", "24h", "7d", "30d")


def cycling(end: datetime, hours: float, step_s: float) -> list[Telemetry]:
    """A battery cycling at up to 250 kW (SOC follows with a 0.9 round trip), every ``step_s``."""
    n = int(hours * 3600 / step_s)
    begin = end - timedelta(hours=hours)
    soc, eta, out = 500.0, math.sqrt(0.9), []
    for i in range(n):
        power = 250.0 * math.sin(2 * math.pi * i * step_s / (3 * 3600))
        out.append(Telemetry(ts=begin + timedelta(seconds=i * step_s), soc_kwh=soc, power_kw=power))
        dt_h = step_s / 3600
        soc -= power * dt_h / eta if power > 0 else power * dt_h * eta
    return out


def hourly_price_lines(zone: str, begin: datetime, hours: int) -> list[str]:
    start = begin.replace(minute=0, second=0, microsecond=0)
    slots = [
        PriceSlot(start=start + timedelta(hours=h), end=start + timedelta(hours=h + 1),
                  price_per_mwh=80.0 + 60.0 * math.sin(2 * math.pi * h / 24))
        for h in range(hours)
    ]
    return prices_lines(zone, PriceForecast(zone=zone, issued_at=begin, slots=slots))


async def probe(services: Services, topic_root: str, name: str) -> Bus:
    bus = Bus(name, MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root))
    await bus.start()
    return bus


async def get_json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.get(url, **kwargs) as response:
        return response.status, await response.json()


async def window_insights(http: aiohttp.ClientSession, base: str, battery: str, window: str) -> dict[str, Any]:
    """The KPIs of a window once computed (the first answers may say "computing")."""
    found: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal found
        status, answer = await get_json(http, f"{base}/api/figures/{battery}", params={"window": window})
        assert status == 200, answer
        found = answer["figures"]["insights"]["layout"]["meta"]["insights"]
        return found["status"] == "ok"

    await wait_for_async(ready, timeout=60, what=f"the KPIs of the {window} window ({found})")
    return found


@pytest.fixture
def renderer_env(node_env: dict[str, str]) -> dict[str, str]:
    return {
        **node_env,
        "BESS_RENDERER_INTERVAL_S": "0.2",
        "BESS_RENDERER_HISTORY_PAGE_ROWS": "500",  # several pages per read: the paging is part of what is tested
        "BESS_RENDERER_FIGURE_CACHE_S": "0",
    }


async def test_kpis_agree_across_windows_and_the_seed_battery_is_drawn(
    run_node: Callable[..., NodeProcess],
    renderer_env: dict[str, str],
    services: Services,
    topic_root: str,
    influx_db: str,
) -> None:
    now = datetime.now(UTC)
    # battery "kpi": 5 h of 30 s device data, straight into the database, so every window covers all of it
    readings = cycling(now - timedelta(minutes=1), 5, 30.0)
    stack.influx_write(services.influx_url, influx_db, [telemetry_line("kpi", t) for t in readings[:-1]],
                       precision="u")
    stack.influx_write(services.influx_url, influx_db, hourly_price_lines("de-lu", now - timedelta(days=31), 32 * 24),
                       precision="u")
    for name in ("recorder", "gateway"):
        run_node(name, renderer_env)
    renderer = run_node("renderer", renderer_env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    gateway_port = renderer_env["BESS_GATEWAY_PORTS"].split(",")[0]
    base = f"http://127.0.0.1:{renderer_env['BESS_DASHBOARD_PORT']}"

    bus = await probe(services, topic_root, "probe-kpi")
    try:
        # the newest reading live: it makes the renderer draw the battery (history alone does not announce it)
        await bus.publish(SPEC, BatterySpec(capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0,
                                            max_charge_kw=250.0, max_discharge_kw=250.0),
                          retain=True, wait_ack=True, battery="kpi")
        await bus.publish(TELEMETRY, readings[-1], wait_ack=True, battery="kpi")
    finally:
        await bus.stop()

    async with aiohttp.ClientSession() as http:
        # the seed's way: only POST /write (SOC and targets, no power), every 5 minutes, the SOC cycling
        records = [
            {"SOC": 500 + (10 * i if i <= 6 else 10 * (12 - i)), "target_discharge": 50, "target_charge": 100,
             "timestamp": (now - timedelta(minutes=5 * (13 - i))).isoformat().replace("+00:00", "Z")}
            for i in range(13)
        ]
        async with http.post(f"http://127.0.0.1:{gateway_port}/write", params={"battery": "seed"},
                             json=records) as response:
            assert response.status == 200, await response.text()  # stored: the recorder confirmed it

        results = {w: await window_insights(http, base, "kpi", w) for w in WINDOWS}
        reference = results["6h"]
        assert reference["energy_discharged_kwh"] > 50
        assert reference["samples"] == 600
        for window, ins in results.items():
            for key in ("energy_charged_kwh", "energy_discharged_kwh", "realised_revenue", "full_cycles",
                        "efficiency_loss_kwh", "samples"):
                assert ins[key] == pytest.approx(reference[key], rel=1e-9, abs=1e-9), (window, key)
        assert reference["efficiency_loss_kwh"] >= 0

        # 24 h of 30 s data is drawn as bucket means (1-min buckets, the rollups' grid, on InfluxDB's grid):
        # each bar covers its bucket, and none reaches back before the first reading
        _status, day = await get_json(http, f"{base}/api/figures/kpi", params={"window": "24h"})
        bars = [t for t in day["figures"]["power"]["data"] if t["type"] == "bar"]
        starts = sorted(x for t in bars for x in t["x"])
        first = readings[0].ts.replace(tzinfo=None).isoformat(timespec="milliseconds")
        assert starts[0] >= first[:19]
        assert {w for t in bars for w in t["width"]} - {60_000.0} != set()  # the clipped first/last buckets
        assert max(w for t in bars for w in t["width"]) == 60_000.0

        # the seed-only battery: energy from the SOC changes, drawn as derived power, with its targets
        seed = await window_insights(http, base, "seed", "24h")
        assert seed["energy_charged_kwh"] == pytest.approx(60.0)
        assert seed["energy_discharged_kwh"] == pytest.approx(60.0)
        assert seed["power_source"] == "derived from SOC"
        _status, answer = await get_json(http, f"{base}/api/figures/seed", params={"window": "24h"})
        power = answer["figures"]["power"]
        names = {t["name"] for t in power["data"]}
        assert {"charge (derived from SOC)", "discharge (derived from SOC)", "target charge (kW)"} <= names
        bars = [t for t in power["data"] if t["type"] == "bar"]
        assert all(w == 300_000.0 for t in bars for w in t["width"])  # 5 minutes, not milliseconds
        lo, hi = (np.datetime64(v) for v in power["layout"]["xaxis"]["range"])
        assert hi - lo >= np.timedelta64(24, "h")  # the window, never a collapsed axis


async def test_windows_belong_to_viewers_and_statuses_to_their_topics(
    run_node: Callable[..., NodeProcess],
    renderer_env: dict[str, str],
    services: Services,
    topic_root: str,
) -> None:
    for name in ("recorder",):
        run_node(name, renderer_env)
    renderer = run_node("renderer", renderer_env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    base = f"http://127.0.0.1:{renderer_env['BESS_DASHBOARD_PORT']}"
    now = datetime.now(UTC)
    bus = await probe(services, topic_root, "probe-views")
    try:
        await bus.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=400.0, power_kw=-20.0), wait_ack=True, battery="v1")
        # the market's user, on its own status topic, claiming to be the recorder
        await bus.publish(STATUS, NodeStatus(node="recorder", state="offline", reason="spoofed"), retain=True,
                          wait_ack=True, node="market")
        await bus.publish(CONTROL, ControlMode(mode="manual", set_at=now, until=now + timedelta(minutes=5),
                                               source="gateway", reason="operator command"),
                          retain=True, wait_ack=True, battery="v1")
    finally:
        await bus.stop()

    async with aiohttp.ClientSession() as http:
        async def seen() -> Any:
            _s, answer = await get_json(http, f"{base}/api/status")
            return answer if "market" in answer["nodes"] and "v1" in answer["control"] else None

        status = await wait_for_async(seen, timeout=20, what="the market's status and v1's control mode")
        assert status["nodes"]["market"]["state"] == "offline"
        assert status["nodes"]["recorder"]["state"] == "online"  # not overwritten by the market's claim
        assert status["control"]["v1"]["text"].startswith("Control: manual until")

        past = {"begin": (now - timedelta(days=3)).isoformat(), "end": (now - timedelta(days=2)).isoformat()}
        _s, week = await get_json(http, f"{base}/api/figures/v1", params={"window": "7d"})
        _s, old = await get_json(http, f"{base}/api/figures/v1", params=past)
        _s, default = await get_json(http, f"{base}/api/figures/v1")
        week_range = week["figures"]["soc"]["layout"]["xaxis"]["range"]
        old_range = old["figures"]["soc"]["layout"]["xaxis"]["range"]
        assert week_range != old_range
        assert np.datetime64(old_range[1]) - np.datetime64(old_range[0]) == np.timedelta64(86400 * 1000, "ms")
        # asking for other windows changed nothing for the default viewer
        default_range = default["figures"]["soc"]["layout"]["xaxis"]["range"]
        lo, hi = (np.datetime64(v) for v in default_range)
        assert hi - lo == np.timedelta64(36 * 3600 * 1000, "ms")  # 24 h back plus 12 h of plan ahead


async def test_dashboard_token_defaults_to_the_gateway_token(
    run_node: Callable[..., NodeProcess],
    renderer_env: dict[str, str],
    services: Services,
    topic_root: str,
) -> None:
    env = {**renderer_env, "BESS_GATEWAY_TOKEN": "one-token-for-both"}
    renderer = run_node("renderer", env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    async with aiohttp.ClientSession() as http:
        status, answer = await get_json(http, f"{base}/api/status")
        assert status == 401
        assert answer["field"] == "Authorization"
        async with http.post(f"{base}/api/figures/x", json={}) as response:
            assert response.status == 401
        status, _answer = await get_json(http, f"{base}/api/status",
                                         headers={"Authorization": "Bearer one-token-for-both"})
        assert status == 200
    assert "one-token-for-both" not in renderer.log_text()  # never in the logs


async def test_an_aud_price_series_plans_stores_and_draws_in_aud_end_to_end(
    run_node: Callable[..., NodeProcess],
    renderer_env: dict[str, str],
    services: Services,
    topic_root: str,
    influx_db: str,
) -> None:
    """AEMO-style AUD prices through POST /prices: the planner plans in AUD, the recorder stores AUD, the
    dashboard draws A$ (issue 11 part B)."""
    env = {**renderer_env, "BESS_PLANNER_ZONE": "nsw1", "BESS_RENDERER_ZONE": "nsw1"}
    for name in ("recorder", "gateway", "planner"):
        run_node(name, env)
    renderer = run_node("renderer", env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    gateway_port = env["BESS_GATEWAY_PORTS"].split(",")[0]
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    prices = {
        "zone": "nsw1", "issued_at": now.isoformat().replace("+00:00", "Z"), "currency": "AUD", "source": "aemo",
        "slots": [
            {"start": (now + timedelta(hours=h)).isoformat().replace("+00:00", "Z"),
             "end": (now + timedelta(hours=h + 1)).isoformat().replace("+00:00", "Z"),
             "price_per_mwh": 300.0 if h in (0, 1) else 20.0}
            for h in range(8)
        ],
    }
    bus = await probe(services, topic_root, "probe-aud")
    try:
        await bus.publish(SPEC, BatterySpec(capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0,
                                            max_charge_kw=250.0, max_discharge_kw=250.0),
                          retain=True, wait_ack=True, battery="aud")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{gateway_port}/prices", json=prices) as response:
                assert response.status == 202, await response.text()
            await bus.publish(TELEMETRY, Telemetry(ts=datetime.now(UTC), soc_kwh=800.0, power_kw=0.0),
                              wait_ack=True, battery="aud")

            def stored() -> bool:
                rows = stack.influx_query(services.influx_url, 'SELECT "currency" FROM "prices" WHERE "zone"=\'nsw1\'',
                                          influx_db, epoch="u")["results"][0].get("series") or []
                plans = stack.influx_query(services.influx_url, 'SELECT "currency" FROM "plan"', influx_db,
                                           epoch="u")["results"][0].get("series") or []
                return (sum(len(s["values"]) for s in rows) == 8 and bool(plans)
                        and {v[1] for s in rows + plans for v in s["values"]} == {"AUD"})

            await wait_for_async(stored, timeout=60, what="AUD prices and an AUD plan in InfluxDB")

            answer: dict[str, Any] = {}

            async def drawn() -> bool:
                nonlocal answer
                status, answer = await get_json(http, f"{base}/api/figures/aud", params={"window": "6h"})
                return status == 200 and "A$" in answer["figures"]["schedule"]["layout"]["title"]["text"]

            await wait_for_async(drawn, timeout=60, what="the AUD plan on the dashboard")
            figures = answer["figures"]
            assert figures["prices"]["layout"]["yaxis"]["title"]["text"] == "price (A$/MWh)"
            assert any("A$/MWh" in t.get("hovertemplate", "") for t in figures["prices"]["data"])
            assert figures["schedule"]["layout"]["yaxis"]["title"]["text"] == "price (A$/MWh)"
            assert "€" not in figures["schedule"]["layout"]["title"]["text"]
            insights = await window_insights(http, base, "aud", "6h")
            assert insights["currency"] == "AUD"
    finally:
        await bus.stop()
