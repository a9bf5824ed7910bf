"""The device bridge in secure mode, against a real mosquitto with the credentials and ACL deploy/up makes for it:
the topics come from ``python -m nodes.bridge acl`` (deploy/bridge_access.py, as ``up`` asks), the ACL from
deploy/auth.py. A simulated Victron GX and a SolarAssistant unit log in as the device's own user, the bridge
process as ``bridge``: the device publishes its readings and the bridge turns them into the battery's telemetry,
the bridge's keep-alive and writes reach the device, and another user (the gateway) sees nothing of the device's
topics; anonymous clients are refused.

Denials are proved by what arrives, as in test_broker_auth.py: mosquitto grants a denied subscription and then
delivers nothing, so a watcher subscribes to the device topics first and its own status topic last, the allowed
traffic happens (and is seen to arrive where it is allowed), then the watcher publishes on its status topic: once
that comes back, anything the broker had let through to it would have arrived before.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deploy import auth, bridge_access, stack
from deploy.settings import UpConfig
from nodes.contract.messages import Command
from nodes.contract.topics import COMMAND, TELEMETRY
from nodes.runtime.bus import MqttSettings
from tests.integration.test_broker_auth import receive_until
from tests.support.fake_devices import FakeSolarAssistant, FakeVictronGx
from tests.support.nodes import NodeProcess
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
BATTERY = "home"
PORTAL = "c0619ab1b2c3"
SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5",
            "BESS_BRIDGE_TELEMETRY_INTERVAL_S": "0.5"}


@dataclass
class SecureBridge:
    """A broker with deploy's credentials and ACL for a bridge of battery ``home``, and the bridge's settings."""

    broker: stack.Mosquitto
    credentials: auth.Credentials
    access: auth.BridgeAccess
    root: str
    env: dict[str, str]

    def topic(self, path: str) -> str:
        return f"{self.root}/{path}"

    def settings(self, user: str) -> MqttSettings:
        return MqttSettings(mqtt_host=self.broker.host, mqtt_port=self.broker.port, topic_root=self.root,
                            mqtt_username=user, mqtt_password=self.credentials.password(user))

    def client(self, user: str) -> stack.MiniMqtt:
        return stack.MiniMqtt(self.broker.host, self.broker.port, username=user,
                              password=self.credentials.password(user), timeout=5.0)

    def retained(self, path: str) -> Any:
        """A retained message of ours, read as the monitor (decoded JSON), or None."""
        user, password = self.credentials.login(auth.MONITOR_USER)
        topic = self.topic(path)
        payload = stack.read_retained(self.broker.host, self.broker.port, topic, timeout=3.0, username=user,
                                      password=password).get(topic)
        return json.loads(payload) if payload else None


@pytest.fixture
def secure_bridge(tmp_path: Path, topic_root: str, request: pytest.FixtureRequest) -> Iterator[SecureBridge]:
    profile_env: dict[str, str] = request.param
    env = {"BESS_TOPIC_ROOT": topic_root, "BESS_BRIDGE_BATTERY": BATTERY, **SPEC_ENV, **profile_env,
           bridge_access.DEVICE_USER_SETTING: "the-device"}
    cfg = UpConfig.from_env(REPO, {"BESS_VAR_DIR": str(tmp_path / "var"), "BESS_MQTT_AUTH": "1"})
    access = bridge_access.ask_bridge(cfg, {**os_env(), **env})  # what deploy/up asks, the same way
    credentials = auth.ensure_credentials(tmp_path / "var", topic_root, ["battery-1"], bridge=access)
    broker = stack.start_mosquitto(tmp_path / "mosquitto", password_file=credentials.password_file,
                                   acl_file=credentials.acl_file, probe_login=credentials.login(auth.PROBE_USER),
                                   die_with_parent=True)
    try:
        env |= {"BESS_MQTT_HOST": broker.host, "BESS_MQTT_PORT": str(broker.port), **credentials.node_env("bridge")}
        yield SecureBridge(broker, credentials, access, topic_root, env)
    finally:
        broker.stop()


def os_env() -> dict[str, str]:
    """This process's environment without our settings (as a user runs deploy/up)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("BESS_")}


async def waiting(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """:func:`wait_for` in a thread: the fake device lives on this test's event loop and must keep answering."""
    return await asyncio.to_thread(wait_for, predicate, timeout, 0.1, what=what)


def command(action: str, power_kw: float) -> bytes:
    now = datetime.now(UTC)
    return COMMAND.encode(Command(command_id=f"c-{time.monotonic_ns()}", action=action,  # type: ignore[arg-type]
                                  power_kw=power_kw, issued_at=now, valid_until=now + timedelta(minutes=5),
                                  source="operator"))


def soc_of_telemetry(b: SecureBridge) -> Callable[[], float | None]:
    def read() -> float | None:
        reading = b.retained(f"battery/{BATTERY}/telemetry")
        return None if reading is None else float(TELEMETRY.decode(json.dumps(reading).encode()).soc_kwh)
    return read


VICTRON = {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": PORTAL}
SOLARASSISTANT = {"BESS_BRIDGE_PROFILE": "solarassistant", "BESS_BRIDGE_DEVICE": "total",
                  "BESS_BRIDGE_VARS": "inverter=inverter_1"}


@pytest.mark.parametrize("secure_bridge", [VICTRON], indirect=True, ids=["victron"])
async def test_a_victron_gx_and_the_bridge_work_with_their_own_users_and_nobody_else_sees_the_device(
    secure_bridge: SecureBridge, run_node: Any
) -> None:
    b = secure_bridge
    assert b.access.device_publish == (f"N/{PORTAL}/#",)
    assert stack.mqtt_connack(b.broker.host, b.broker.port) == 5, "anonymous clients are refused"
    setpoint = f"W/{PORTAL}/settings/0/Settings/CGwacs/AcPowerSetPoint"
    gx = FakeVictronGx(b.settings("the-device"), PORTAL, soc_percent=60.0, power_w=-2000.0)
    await gx.start()
    bridge: NodeProcess | None = None
    try:
        bridge = run_node("bridge", b.env)
        # the bridge's keep-alive and idle write reach the device; the device's full publish reaches the bridge,
        # which publishes it as the battery's telemetry (60 % of 10 kWh) under its own user
        await waiting(lambda: gx.keepalives and (setpoint, {"value": 0}) in gx.writes, 30,
                      "the bridge's keep-alive and idle write at the GX")
        assert await waiting(lambda: soc_of_telemetry(b)() == 6.0 or None, 30, "telemetry from the GX's values")
        assert b.retained(f"battery/{BATTERY}/telemetry")["power_kw"] == 2.0, "Victron's + charging, flipped"

        with b.client("gateway") as gateway:
            # the gateway watches the device's topics (granted by mosquitto, delivering nothing), its own status last
            sentinel = b.topic("node/gateway/status")
            gateway.subscribe([f"N/{PORTAL}/#", f"W/{PORTAL}/#", f"R/{PORTAL}/#", "N/#", "W/#", sentinel], qos=1)
            # a command the gateway may send: the bridge writes the device's setpoint (-3 kW: export)
            gateway.publish(b.topic(f"battery/{BATTERY}/set"), command("discharge", 3.0), qos=1)
            await waiting(lambda: (setpoint, {"value": -3000}) in gx.writes, 15, "the setpoint write at the GX")
            # the device publishes new values: they reach the bridge (telemetry follows), not the gateway
            gx.soc_percent = 70.0
            await gx.publish_all()
            await waiting(lambda: soc_of_telemetry(b)() == 7.0 or None, 15, "telemetry from the new values")
            gateway.publish(sentinel, b'{"marker": true}', qos=1)
            assert await asyncio.to_thread(receive_until, gateway, sentinel) == [sentinel]
        assert bridge.poll() is None
        assert "WARNING" not in bridge.log_text().split("the device reports", 1)[-1], bridge.log_tail()
        assert await asyncio.to_thread(bridge.stop) == 0
        assert gx.writes[-1] == (setpoint, {"value": 0}), "the idle write at stop passed the ACL too"
    finally:
        await gx.stop()


@pytest.mark.parametrize("secure_bridge", [SOLARASSISTANT], indirect=True, ids=["solarassistant"])
async def test_a_solarassistant_unit_and_the_bridge_work_with_their_own_users_and_nobody_else_sees_the_device(
    secure_bridge: SecureBridge, run_node: Any
) -> None:
    b = secure_bridge
    assert b.access.device_publish == ("solar_assistant/+/+/state",)
    sa = FakeSolarAssistant(b.settings("the-device"), device="total", inverter="inverter_1", soc_percent=55.0)
    await sa.start()
    try:
        bridge = run_node("bridge", b.env)
        assert await waiting(lambda: soc_of_telemetry(b)() == 5.5 or None, 30, "telemetry from the unit's values")
        await waiting(lambda: ("solar_assistant/inverter_1/work_mode_priority/set", "Load first") in sa.writes, 15,
                      "the bridge's idle write (Load first) at the unit")
        with b.client("gateway") as gateway:
            sentinel = b.topic("node/gateway/status")
            gateway.subscribe(["solar_assistant/#", sentinel], qos=1)
            gateway.publish(b.topic(f"battery/{BATTERY}/set"), command("discharge", 2.0), qos=1)
            expected = [("solar_assistant/inverter_1/work_mode_priority/set", "Grid first"),
                        ("solar_assistant/inverter_1/grid_first_discharge_rate/set", "40")]
            await waiting(lambda: all(w in sa.writes for w in expected) or None, 15, "grid first at 40 %")
            sa.soc_percent = 65.0  # published every 0.5 s, with the unit's answers to the writes
            await waiting(lambda: soc_of_telemetry(b)() == 6.5 or None, 15, "telemetry from the new values")
            gateway.publish(sentinel, b'{"marker": true}', qos=1)
            assert await asyncio.to_thread(receive_until, gateway, sentinel) == [sentinel]
        assert bridge.poll() is None
    finally:
        await sa.stop()
