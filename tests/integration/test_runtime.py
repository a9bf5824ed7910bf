"""The node runtime against a real mosquitto: last will, status, decode-error policy, resubscribe."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from nodes.contract.messages import Telemetry
from nodes.contract.topics import STATUS, TELEMETRY
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration


def _status(services: Services, topic_root: str, node: str) -> dict[str, Any] | None:
    topic = STATUS.name(root=topic_root, node=node)
    payload = services.read_retained(topic, timeout=1.0).get(topic)
    return None if payload is None else json.loads(payload)


def _state_is(services: Services, topic_root: str, node: str, state: str) -> Callable[[], Any]:
    def check() -> Any:
        status = _status(services, topic_root, node)
        return status if status and status["state"] == state else None

    return check


@pytest.fixture
async def bus_pair(services: Services, topic_root: str) -> AsyncIterator[tuple[Bus, Bus]]:
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    suffix = topic_root.split("/", maxsplit=1)[0]
    publisher = Bus(f"pub-{suffix}", settings)
    subscriber = Bus(f"sub-{suffix}", settings)
    yield publisher, subscriber
    await publisher.stop()
    await subscriber.stop()


async def test_undecodable_payloads_are_counted_and_dropped(bus_pair: tuple[Bus, Bus], battery_id: str) -> None:
    publisher, subscriber = bus_pair
    received: list[Telemetry] = []

    async def handle(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        received.append(message)

    subscriber.subscribe(TELEMETRY, handle, battery=battery_id)
    await subscriber.start()
    await publisher.start()
    topic = publisher.name(TELEMETRY, battery=battery_id)
    for bad in (b"not json", b'{"soc_kwh": 1}', b'{"ts": "2025-01-16T10:00:00", "soc_kwh": 1}', b"\xff" * 5000):
        await publisher.publish_bytes(topic, bad, retain=False, wait_ack=True)
    good = Telemetry(ts=datetime.now(UTC), soc_kwh=42.0)
    await publisher.publish(TELEMETRY, good, retain=False, wait_ack=True, battery=battery_id)
    await wait_for_async(lambda: received, timeout=10, what="the valid message after four bad ones")
    assert received == [good]
    assert subscriber.counters["decode_errors"] == 4
    assert subscriber.status().counters["decode_errors"] == 4


async def test_an_oversized_payload_is_counted_dropped_and_acknowledged(
    services: Services, topic_root: str, battery_id: str
) -> None:
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    suffix = topic_root.split("/", maxsplit=1)[0]
    publisher = Bus(f"pub-{suffix}", settings)
    received: list[Telemetry] = []

    async def handle(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        received.append(message)

    def subscriber() -> Bus:  # the same name, so the same client id and persistent session each time
        bus = Bus(f"sub-{suffix}", settings)
        bus.subscribe(TELEMETRY, handle, battery=battery_id)
        return bus

    first = subscriber()
    await first.start()
    await publisher.start()
    try:
        topic = publisher.name(TELEMETRY, battery=battery_id)
        # schema-valid (an unknown field is ignored), so without the bound it would be decoded and handled
        big = json.dumps({"ts": "2025-01-16T10:00:00Z", "soc_kwh": 1.0, "firmware_blob": "x" * (300 * 1024)})
        assert len(big) > 256 * 1024  # the default BESS_MQTT_MAX_PAYLOAD_BYTES
        await publisher.publish_bytes(topic, big.encode(), wait_ack=True)
        good = Telemetry(ts=datetime.now(UTC), soc_kwh=42.0)
        await publisher.publish(TELEMETRY, good, retain=False, wait_ack=True, battery=battery_id)
        await wait_for_async(lambda: received, timeout=10, what="the valid message after the oversized one")
        assert received == [good]
        assert (first.counters["oversized"], first.counters["decode_errors"]) == (1, 0)
        assert first.status().counters["oversized"] == 1
        await first.stop()

        # acknowledged: the broker does not deliver it again to the persistent session
        second = subscriber()
        await second.start()
        try:
            marker = Telemetry(ts=datetime.now(UTC), soc_kwh=43.0)
            await publisher.publish(TELEMETRY, marker, retain=False, wait_ack=True, battery=battery_id)
            await wait_for_async(lambda: len(received) == 2, timeout=10, what="the marker after reconnecting")
            assert received == [good, marker]
            assert second.counters["oversized"] == 0
        finally:
            await second.stop()
    finally:
        await first.stop()
        await publisher.stop()


async def test_a_failing_handler_is_contained(bus_pair: tuple[Bus, Bus], battery_id: str) -> None:
    publisher, subscriber = bus_pair
    seen: list[float] = []

    async def handle(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        seen.append(message.soc_kwh)
        if message.soc_kwh == 1.0:
            raise RuntimeError("bug in a handler")

    subscriber.subscribe(TELEMETRY, handle, battery=battery_id)
    await subscriber.start()
    await publisher.start()
    for soc in (1.0, 2.0):
        message = Telemetry(ts=datetime.now(UTC), soc_kwh=soc)
        await publisher.publish(TELEMETRY, message, retain=False, wait_ack=True, battery=battery_id)
    await wait_for_async(lambda: len(seen) == 2, timeout=10, what="both messages handled")
    assert subscriber.counters["handler_errors"] == 1


async def test_resubscribes_after_broker_restart(
    bus_pair: tuple[Bus, Bus], services: Services, battery_id: str
) -> None:
    publisher, subscriber = bus_pair
    received: list[float] = []

    async def handle(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        received.append(message.soc_kwh)

    subscriber.subscribe(TELEMETRY, handle, battery=battery_id)
    await subscriber.start()
    await publisher.start()
    await asyncio.to_thread(services.restart_broker, hard=True)  # SIGKILL: sessions since the last autosave lost
    await wait_for_async(
        lambda: subscriber.connected.is_set() and publisher.connected.is_set() and subscriber.counters["reconnects"],
        timeout=30,
        what="both buses reconnected",
    )
    message = Telemetry(ts=datetime.now(UTC), soc_kwh=7.0)
    await wait_for_async(
        lambda: _publish_ok(publisher, message, battery_id), timeout=15, what="publish after restart"
    )
    await wait_for_async(lambda: 7.0 in received, timeout=15, what="message after the broker restart")


async def _publish_ok(bus: Bus, message: Telemetry, battery: str) -> bool:
    try:
        await bus.publish(TELEMETRY, message, retain=False, wait_ack=True, timeout=2, battery=battery)
    except Exception:
        return False
    return True


def test_node_status_online_offline_by_last_will_and_back(run_node: Any, services: Services, topic_root: str) -> None:
    node = run_node("market")
    online = wait_for(_state_is(services, topic_root, "market", "online"), timeout=20, what="market online")
    assert online["pid"] == node.pid
    node.kill_now()  # no goodbye: the broker publishes the last will
    offline = wait_for(_state_is(services, topic_root, "market", "offline"), timeout=20, what="last will")
    assert offline["reason"] == "connection lost"
    again = run_node("market")
    back = wait_for(_state_is(services, topic_root, "market", "online"), timeout=20, what="online again")
    assert back["pid"] == again.pid


def test_sigterm_publishes_offline_and_exits_cleanly(run_node: Any, services: Services, topic_root: str) -> None:
    node = run_node("simulator")
    wait_for(_state_is(services, topic_root, "simulator", "online"), timeout=20, what="simulator online")
    assert node.stop() == 0
    status = wait_for(_state_is(services, topic_root, "simulator", "offline"), timeout=10, what="offline")
    assert status["reason"] == "stopped"


@pytest.mark.parametrize(
    ("variable", "value"), [("BESS_MQTT_PORT", "not-a-port"), ("BESS_BATTERIES", "Bad/Id"), ("BESS_SIM_SPEED", "-1")]
)
def test_invalid_config_exits_2_with_one_line(variable: str, value: str, node_env: dict[str, str]) -> None:
    env = {**node_env, variable: value, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "nodes.simulator"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
