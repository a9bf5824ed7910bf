"""KPIs that agree across windows and survive a restart from stored days (issue 14, part B), against a real
broker, recorder and InfluxDB.

A battery reports every 2 s: the last 5 h (the common period of the 6 h and 24 h windows) and 4 h of a day three
days ago (inside the 7 d and 30 d windows). Each window's energy, revenue and cycles must equal an independent
numpy integral of the points it covers, so 6 h == 24 h and 7 d == 30 d. The renderer publishes the final days it
computes (battery/{battery}/kpi/day), the recorder stores them (kpi_15m, kpi_1d); after the raw rows of the old
day are deleted, a restarted renderer still gives the same 30 d KPIs: they come from the stored day, not from raw
rows. A back-dated reading for a stored day makes the renderer compute it again and republish it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np
import pytest

from deploy import stack
from nodes.contract import energy
from nodes.contract.messages import BatterySpec, PriceForecast, PriceSlot, Telemetry
from nodes.contract.topics import SPEC, TELEMETRY
from nodes.recorder.points import prices_lines, telemetry_line
from nodes.renderer.ledger import DAY_S
from nodes.runtime.bus import Bus, MqttSettings
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

BATTERY = "kpi-days"
STEP_S = 2
SPEC_ = BatterySpec(capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0, max_charge_kw=250.0,
                    max_discharge_kw=250.0)
KEYS = ("energy_charged_kwh", "energy_discharged_kwh", "realised_revenue", "full_cycles")


def readings(begin_s: int, end_s: int) -> list[Telemetry]:
    """Every 2 s on whole even seconds (so no interval crosses an hour or a bucket edge), power cycling at up
    to 250 kW with some noise, SOC following it."""
    rng = np.random.default_rng(begin_s)
    out, soc = [], 500.0
    for t in range(begin_s, end_s, STEP_S):
        power = float(250.0 * math.sin(2 * math.pi * t / 5400.0) + rng.normal(0, 5))
        out.append(Telemetry(ts=datetime.fromtimestamp(t, UTC), soc_kwh=soc, power_kw=power))
        soc = min(max(soc - power * STEP_S / 3600.0, 0.0), 1000.0)
    return out


def price(t_s: float) -> float:
    """The hourly price of the hour holding ``t_s`` (what the test stores as prices)."""
    hour = math.floor(t_s / 3600)
    return 80.0 + 60.0 * math.sin(2 * math.pi * hour / 24)


def price_lines(begin_s: int, hours: int) -> list[str]:
    start = math.floor(begin_s / 3600) * 3600
    slots = [PriceSlot(start=datetime.fromtimestamp(start + 3600 * h, UTC),
                       end=datetime.fromtimestamp(start + 3600 * (h + 1), UTC), price_per_mwh=price(start + 3600 * h))
             for h in range(hours)]
    return prices_lines("de-lu", PriceForecast(zone="de-lu", issued_at=datetime.fromtimestamp(begin_s, UTC),
                                               slots=slots))


def reference(*runs: list[Telemetry]) -> dict[str, float]:
    """The independent integral: each sample's power held for 2 s until the next one of its run, paid at the
    price of its hour (+ discharge = sale)."""
    charged = discharged = revenue = 0.0
    for run in runs:
        t = np.array([r.ts.timestamp() for r in run])
        p = np.array([r.power_kw for r in run])
        e = p[:-1] * np.diff(t) / 3600.0  # kWh, + out of the battery
        discharged += float(e[e > 0].sum())
        charged += float(-e[e < 0].sum())
        revenue += float(np.sum(e * np.array([price(x) for x in t[:-1]]) / 1000.0))
    return {"energy_charged_kwh": charged, "energy_discharged_kwh": discharged, "realised_revenue": revenue,
            "full_cycles": energy.full_cycles(discharged, SPEC_)}


async def kpis(http: aiohttp.ClientSession, base: str, **params: str) -> dict[str, Any]:
    """The KPIs of a window once computed (the first answers may say "computing")."""
    found: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal found
        async with http.get(f"{base}/api/figures/{BATTERY}", params=params) as response:
            answer = await response.json()
            assert response.status == 200, answer
        found = answer["figures"]["insights"]["layout"]["meta"]["insights"]
        return found["status"] == "ok"

    # ("online" is the broker connection: the dashboard listens a moment later, after a restart too)
    await wait_for_async(ready, timeout=90, what=f"the KPIs of {params} ({found})",
                         ignore=(aiohttp.ClientConnectionError,))
    return found


def assert_matches(got: dict[str, Any], want: dict[str, float], what: str) -> None:
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (what, key)


def stored_buckets(services: Services, db: str, day: int) -> int:
    q = (f"SELECT count(\"samples\") FROM \"kpi_15m\" WHERE \"battery\"='{BATTERY}' AND time >= {day * DAY_S}s "
         f"AND time < {(day + 1) * DAY_S}s")
    rows = stack.influx_rows(services.influx_url, db, q)
    return int(rows[0]["count"]) if rows else 0


async def test_kpis_agree_across_windows_and_come_back_from_stored_days_after_a_restart(
    run_node: Callable[..., NodeProcess],
    node_env: dict[str, str],
    services: Services,
    topic_root: str,
    influx_db: str,
) -> None:
    env = {**node_env, "BESS_RENDERER_INTERVAL_S": "0.2", "BESS_RENDERER_HISTORY_PAGE_ROWS": "2000",
           "BESS_RENDERER_FIGURE_CACHE_S": "0", "BESS_STATUS_INTERVAL_S": "1"}
    now_s = int(datetime.now(UTC).timestamp()) // STEP_S * STEP_S
    recent = readings(now_s - 5 * 3600, now_s - 60)  # the common period of every window
    old_day = math.floor(now_s / DAY_S) - 3
    old = readings(old_day * DAY_S + 8 * 3600, old_day * DAY_S + 12 * 3600)  # a final day, in 7 d and 30 d
    stack.influx_write(services.influx_url, influx_db, [telemetry_line(BATTERY, t) for t in old + recent[:-1]],
                       precision="u")
    stack.influx_write(services.influx_url, influx_db, price_lines(now_s - 31 * 86400, 32 * 24), precision="u")
    run_node("recorder", env)
    renderer = run_node("renderer", env)
    renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    bus = Bus("probe-kpi-days", MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port,
                                             topic_root=topic_root))
    await bus.start()
    try:
        await bus.publish(SPEC, SPEC_, retain=True, wait_ack=True, battery=BATTERY)
        await bus.publish(TELEMETRY, recent[-1], wait_ack=True, battery=BATTERY)  # live: the battery appears
    finally:
        await bus.stop()

    async with aiohttp.ClientSession() as http:
        got = {w: await kpis(http, base, window=w) for w in ("6h", "24h", "7d", "30d")}
        assert got["6h"]["energy_discharged_kwh"] > 100
        assert_matches(got["6h"], reference(recent), "6h")
        assert_matches(got["24h"], reference(recent), "24h")
        assert_matches(got["7d"], reference(recent, old), "7d")
        assert_matches(got["30d"], reference(recent, old), "30d")

        # the final days were published and stored: 96 buckets for the old day (and every other final day)
        wait_for(lambda: stored_buckets(services, influx_db, old_day) == 96, timeout=30,
                 what="the old day's 96 kpi_15m buckets")
        before = stored_buckets(services, influx_db, old_day - 20)
        assert before == 96  # a day without data is stored too (all zero): known to be empty, never read again

        # the raw rows of the old day are gone; a restarted renderer reads the stored day instead
        stack.influx_query(services.influx_url,
                           f"DELETE FROM \"telemetry\" WHERE \"battery\"='{BATTERY}' AND time >= "
                           f"{old_day * DAY_S}s AND time < {(old_day + 1) * DAY_S}s", influx_db, post=True)
        assert not stack.influx_rows(services.influx_url, influx_db,
                                     f"SELECT count(\"soc_kwh\") FROM \"telemetry\" WHERE \"battery\"='{BATTERY}' "
                                     f"AND time >= {old_day * DAY_S}s AND time < {(old_day + 1) * DAY_S}s")
        renderer.stop()
        renderer = run_node("renderer", env)
        renderer.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        again = await kpis(http, base, window="30d")
        for key in KEYS:
            assert again[key] == pytest.approx(got["30d"][key], rel=1e-12, abs=1e-12), key
        day_window = {"begin": datetime.fromtimestamp(old_day * DAY_S, UTC).isoformat(),
                      "end": datetime.fromtimestamp((old_day + 1) * DAY_S, UTC).isoformat()}
        assert_matches(await kpis(http, base, **day_window), reference(old), "the old day")

        def days_read() -> int:
            status = renderer.status(services.mqtt_host, services.mqtt_port, topic_root) or {}
            return int(status.get("counters", {}).get("kpi_days_read", 0))

        wait_for(lambda: days_read() >= 25, timeout=15, what="the renderer's count of stored days read")

        # back-dated readings for three stored (empty) final days: each is computed again and republished (the
        # middle one is checked: the first and last day a window reads are read in full anyway)
        late_days = (old_day - 4, old_day - 3, old_day - 2)
        late_day = late_days[1]
        late = [Telemetry(ts=datetime.fromtimestamp(d * DAY_S + 12 * 3600 + k * STEP_S, UTC), soc_kwh=500.0,
                          power_kw=100.0) for d in late_days for k in range(2)]
        bus = Bus("probe-kpi-late", MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port,
                                                 topic_root=topic_root))
        await bus.start()
        try:
            for reading in late:
                await bus.publish(TELEMETRY, reading, retain=False, wait_ack=True, battery=BATTERY)
        finally:
            await bus.stop()
        want = 100.0 * STEP_S / 3600

        async def republished() -> bool:
            await kpis(http, base, window="30d")  # a viewer's window: the renderer notices the changed day
            rows = stack.influx_rows(services.influx_url, influx_db,
                                     f"SELECT \"discharged_kwh\" FROM \"kpi_1d\" WHERE \"battery\"='{BATTERY}' "
                                     f"AND time = {late_day * DAY_S}s")
            return bool(rows) and rows[0]["discharged_kwh"] == pytest.approx(want, rel=1e-12)

        await wait_for_async(republished, timeout=60, what="the late day republished with the late reading")
        after = await kpis(http, base, window="30d")
        assert after["energy_discharged_kwh"] == pytest.approx(again["energy_discharged_kwh"] + 3 * want, rel=1e-12)
