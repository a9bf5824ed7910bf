"""The dashboard's control API against real nodes (renderer, gateway, simulator, planner) on the real broker, with
a dashboard token: unauthenticated and cross-origin actions are refused with the JSON error shape and send
nothing; a signed-in browser session with its anti-CSRF token commands the battery (the gateway's Command, source
dashboard); re-plan now is answered with the planner's next schedule."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from nodes.contract.messages import Command
from nodes.contract.topics import COMMAND
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from tests.integration.test_gateway import start_gateway
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

TOKEN = "dashboard-secret-7"


async def test_only_a_signed_in_same_origin_session_with_its_csrf_token_commands_the_battery(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {**node_env, "BESS_BATTERIES": battery_id, "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
           "BESS_DASHBOARD_TOKEN": TOKEN, "BESS_PLANNER_AUTOPILOT": "false"}
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    probe = Bus(f"probe-{battery_id}", settings, persistent=False)
    commands: list[Command] = []

    async def on_command(params: dict[str, str], message: Command, delivery: Delivery) -> None:
        commands.append(message)

    probe.subscribe(COMMAND, on_command, battery=battery_id)
    await probe.start()
    try:
        run_node("simulator", env)
        run_node("market", env)
        run_node("planner", env)
        start_gateway(run_node, services, env)
        run_node("renderer", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
        base = f"http://127.0.0.1:{env['BESS_DASHBOARD_PORT']}"
        action = f"{base}/api/control/{battery_id}/command"
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            async def listening() -> bool:  # "online" is the broker connection; the web server starts just after
                try:
                    async with browser.get(f"{base}/api/status") as response:
                        return response.status in (200, 401)
                except aiohttp.ClientConnectorError:
                    return False

            await wait_for_async(listening, 20, 0.1, what="the dashboard listening")
            async with browser.post(action, json={"action": "idle"}) as response:
                body = await response.json()
                assert response.status == 401
                assert body == {"error": body["error"], "field": "Authorization"}

            async with browser.post(f"{base}/login", data={"token": TOKEN, "next": f"/battery/{battery_id}"},
                                    allow_redirects=False) as login:
                assert login.status == 303
            async with browser.get(f"{base}/api/control/{battery_id}") as response:
                panel = await response.json()
            assert panel["enabled"] is True
            headers = {panel["csrf_header"]: panel["csrf_token"]}

            async with browser.post(action, json={"action": "idle"}, headers=headers | {
                    "Origin": "http://evil.example"}) as response:
                body = await response.json()
                assert (response.status, body["field"]) == (403, "Origin")
            async with browser.post(action, json={"action": "idle"}) as response:
                assert (response.status, (await response.json())["field"]) == (403, "X-CSRF-Token")

            async def known() -> bool:  # the gateway has the simulator's spec (else: its 404, unknown battery)
                async with browser.post(action, headers=headers | {"Origin": base},
                                        json={"action": "discharge", "power_kw": 30, "lease_s": 120}) as answer:
                    accepted.update(await answer.json(), status=answer.status)
                    return answer.status == 202

            accepted: dict[str, Any] = {}
            await wait_for_async(known, 20, 0.5, what="a command accepted through the dashboard")
            assert accepted["command"]["source"] == "dashboard"
            command_id = accepted["command"]["command_id"]
            mine = await wait_for_async(lambda: next((c for c in commands if c.command_id == command_id), None), 10,
                                        what="the command on the set topic")
            assert (mine.action, mine.power_kw, mine.source) == ("discharge", 30.0, "dashboard")
            assert [c for c in commands if c.command_id != command_id] == [], "the refused requests sent nothing"

            async with browser.post(f"{base}/api/control/{battery_id}/replan", headers=headers, json={}) as answer:
                replanned = await answer.json()
            assert answer.status == 202, replanned
            assert replanned["outcome"] == "planned", replanned
            assert replanned["schedule"]["plan_id"]
    finally:
        await probe.stop()
