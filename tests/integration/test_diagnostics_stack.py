"""Diagnostics of a simulated battery at 88 % round-trip efficiency, through the real broker, recorder, InfluxDB
and renderer: the dashboard's diagnostics panel (``GET /api/diagnostics``) reports 88 % +/- 1 point and how many
cycles it used, and its CSV export says the same.

Why the battery runs on a fast simulated clock here rather than as ``python -m nodes.simulator``: a few full cycles
of the simulator node take minutes of real time, and its readings are stamped in real time. The battery is the
simulator's own (:class:`~nodes.simulator.battery.SimBattery`, configured through :class:`SimulatorConfig` from
``BESS_SIM_ROUNDTRIP_EFFICIENCY=0.88`` like the node), stepped 10 s per reading over the last 14 hours and commanded
by an operator at its SOC limits; its spec, every reading and every Command go over MQTT, the recorder stores them
in InfluxDB, and the renderer reads them back from the recorder.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from nodes.contract.messages import Command, Telemetry
from nodes.contract.topics import COMMAND, SPEC, TELEMETRY
from nodes.runtime.bus import Bus, MqttSettings
from nodes.runtime.config import load
from nodes.simulator.battery import SimBattery
from nodes.simulator.config import SimulatorConfig
from tests.support.cycles import cycle
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

STEP_S = 10.0
HOURS = 14.0


async def test_a_simulated_battery_at_88_percent_is_diagnosed_at_88_percent_with_its_cycle_count(
    run_node: Callable[..., NodeProcess], node_env: dict[str, str], services: Services, topic_root: str,
    battery_id: str,
) -> None:
    sim = load(SimulatorConfig, {"BESS_SIM_ROUNDTRIP_EFFICIENCY": "0.88", "BESS_SIM_CAPACITY_KWH": "100",
                                 "BESS_SIM_SOC_MIN_KWH": "10", "BESS_SIM_SOC_MAX_KWH": "90",
                                 "BESS_SIM_MAX_CHARGE_KW": "50", "BESS_SIM_MAX_DISCHARGE_KW": "50",
                                 "BESS_SIM_BMS": "false"})
    spec = sim.spec()
    assert spec.roundtrip_efficiency == 0.88
    end = datetime.now(UTC) - timedelta(minutes=1)
    readings, commands = cycle(SimBattery(spec, 50.0), end - timedelta(hours=HOURS), end, STEP_S)
    env = {**node_env, "BESS_RENDERER_DIAGNOSTICS_REFRESH_S": "1", "BESS_RENDERER_HISTORY_PAGE_ROWS": "2000"}
    run_node("recorder", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)

    device = Bus("sim-88", MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port,
                                        topic_root=topic_root))
    await device.start()
    try:
        await device.publish(SPEC, spec, wait_ack=True, battery=battery_id)
        pending = sorted([(c.issued_at, 0, c) for c in commands] + [(r.ts, 1, r) for r in readings],
                         key=lambda item: (item[0], item[1]))
        for i, (_, kind, message) in enumerate(pending):
            last = i == len(pending) - 1
            if kind == 0:
                assert isinstance(message, Command)
                await device.publish(COMMAND, message, wait_ack=last, battery=battery_id)
            else:
                assert isinstance(message, Telemetry)
                # in order, acknowledged every 500 so the broker's queue to the recorder stays short
                await device.publish(TELEMETRY, message, retain=False, wait_ack=last or i % 500 == 0,
                                     battery=battery_id)
    finally:
        await device.stop()

    base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
    panel: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:

        async def everything_diagnosed() -> bool:
            nonlocal panel
            async with http.get(f"{base}/api/diagnostics/{battery_id}", params={"window": "24h"}) as response:
                if response.status == 404:
                    return False  # the renderer has not heard of the battery yet
                assert response.status == 200, await response.text()
                panel = await response.json()
            return panel["status"] == "ready" and panel["readings"] == len(readings) and panel["commands"] == len(
                commands)

        await wait_for_async(everything_diagnosed, timeout=90, interval=1.0,
                             what="the diagnostics of every stored reading and command")
        rows = {row["key"]: row for row in panel["rows"]}
        efficiency = rows["efficiency"]
        assert efficiency["value"] == pytest.approx(88.0, abs=1.0)
        assert efficiency["spec_value"] == pytest.approx(88.0)
        assert efficiency["sample"] >= 3, "a few full cycles: 14 h at 45/40 kW over an 80 kWh range"
        assert efficiency["sample_unit"] == "closed SOC cycles"
        assert f"vs spec 88 % over {efficiency['sample']} cycles" in efficiency["summary"]
        assert efficiency["method"].startswith("Closed SOC cycles")
        assert rows["tracking"]["sample"] == len(commands), "judged against the Commands the recorder stored"
        # the 24 h window begins 10 h before the first reading: that silence is the one gap
        assert rows["gaps"]["sample"] == 1
        assert rows["gaps"]["value"] == pytest.approx(24 - HOURS - 1 / 60, abs=0.05)

        async with http.get(f"{base}/battery/{battery_id}/export.csv",
                            params={"series": "diagnostics", "window": "24h"}) as response:
            assert response.status == 200
            exported = list(csv.DictReader(io.StringIO(await response.text())))
        first = exported[0]
        assert first["diagnostic"] == "round-trip efficiency"
        assert float(first["value"]) == pytest.approx(efficiency["value"])
        assert int(first["sample"]) == efficiency["sample"]
