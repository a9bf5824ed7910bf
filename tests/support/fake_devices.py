"""Simulated real devices on a real broker, each in its own MQTT dialect, for the bridge's integration tests.

* :class:`FakeVictronGx`: a Victron GX as dbus-flashmq makes it speak: it publishes nothing until it gets a
  keep-alive on ``R/<portal id>/keepalive``, then every value as ``N/<portal id>/<service>/<instance>/<path>``
  with ``{"value": x}`` (not retained); it records what arrives on ``W/<portal id>/...``.
* :class:`FakeSolarAssistant`: SolarAssistant's plain scalars on ``solar_assistant/<device>/<metric>/state``,
  published every ``interval_s``; it records ``.../set`` writes and answers on
  ``solar_assistant/set/response_message/state`` as SolarAssistant does.

Both are plain MQTT clients of the test broker (:class:`DeviceClient`): like a real device they publish nothing under
this project's topic root (no status, no last will), so they can log in as a device's own broker user in secure mode,
whose ACL holds only its dialect's topics (``settings.mqtt_username`` / ``mqtt_password``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import gmqtt

from nodes.bridge.acl import covers
from nodes.runtime.bus import MqttSettings

#: ``handler(topic, payload, retained)`` of a device subscription
Handler = Callable[[str, bytes, bool], Awaitable[None]]


class DeviceClient:
    """A device's own MQTT connection (clean session, QoS 1): its subscriptions and publishes, nothing else."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.settings = settings
        self.handlers: list[tuple[str, Handler]] = []
        self.connected = asyncio.Event()
        self._client = gmqtt.Client(client_id, clean_session=True)
        if settings.mqtt_username:
            self._client.set_auth_credentials(settings.mqtt_username, settings.mqtt_password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = lambda *args: self.connected.clear()

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Call ``handler`` for every message on ``topic_filter`` (subscribed at every connect)."""
        self.handlers.append((topic_filter, handler))

    async def start(self) -> None:
        """Connect and wait for the CONNACK."""
        await self._client.connect(self.settings.mqtt_host, self.settings.mqtt_port)
        await asyncio.wait_for(self.connected.wait(), timeout=15)

    async def stop(self) -> None:
        """Disconnect."""
        with contextlib.suppress(Exception):
            await self._client.disconnect()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, not retained (as dbus-flashmq and SolarAssistant do)."""
        self._client.publish(topic, payload, qos=1)

    def _on_connect(self, client: gmqtt.Client, flags: int, rc: int, properties: Any) -> None:
        for topic_filter, _ in self.handlers:
            client.subscribe(gmqtt.Subscription(topic_filter, qos=1))
        self.connected.set()

    async def _on_message(self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        for topic_filter, handler in self.handlers:
            if covers(topic_filter, topic):
                await handler(topic, payload, bool(properties.get("retain")))
        return 0


@dataclass
class FakeVictronGx:
    """A GX device with one battery monitor behind ``system/0``."""

    settings: MqttSettings
    portal_id: str
    soc_percent: float = 60.0
    #: Victron's sign: + charging
    power_w: float = 0.0
    keepalives: list[bytes] = field(default_factory=list)
    writes: list[tuple[str, object]] = field(default_factory=list)
    _bus: DeviceClient | None = None

    async def start(self) -> None:
        """Connect and listen for keep-alives and writes."""
        self._bus = DeviceClient(self.settings, self.settings.mqtt_username or f"gx-{self.portal_id}")
        self._bus.subscribe(f"R/{self.portal_id}/keepalive", self._on_keepalive)
        self._bus.subscribe(f"W/{self.portal_id}/#", self._on_write)
        await self._bus.start()

    async def stop(self) -> None:
        """Disconnect."""
        if self._bus is not None:
            await self._bus.stop()

    async def _on_keepalive(self, name: str, payload: bytes, retained: bool) -> None:
        self.keepalives.append(payload)
        if not payload.strip():  # an empty keep-alive asks for every value (dbus-flashmq's full publish)
            await self.publish_all()

    async def _on_write(self, name: str, payload: bytes, retained: bool) -> None:
        assert not retained, "dbus-flashmq's rule: write requests are never retained"
        self.writes.append((name, json.loads(payload)))

    async def publish_all(self) -> None:
        """Every value, as dbus-flashmq publishes them after a keep-alive."""
        assert self._bus is not None
        for path, value in (("Dc/Battery/Soc", self.soc_percent), ("Dc/Battery/Power", self.power_w),
                            ("Dc/Battery/Voltage", 52.1)):
            await self._bus.publish(f"N/{self.portal_id}/system/0/{path}", json.dumps({"value": value}).encode())
        await self._bus.publish(f"N/{self.portal_id}/full_publish_completed", b'{"value": 1702459522}')


@dataclass
class FakeSolarAssistant:
    """A SolarAssistant unit: ``device`` (``total`` on a real one) publishes the values, ``inverter`` takes the
    settings (a test names both uniquely: the ``solar_assistant/`` tree is shared by every test on the broker)."""

    settings: MqttSettings
    device: str = "total"
    inverter: str = "inverter_1"
    soc_percent: float = 55.0
    #: SolarAssistant's sign (as the profile assumes it): + charging
    power_w: float = 0.0
    interval_s: float = 0.5
    writes: list[tuple[str, str]] = field(default_factory=list)
    _bus: DeviceClient | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, listen for setting writes and publish the values every ``interval_s``."""
        self._bus = DeviceClient(self.settings, self.settings.mqtt_username or f"sa-{self.device}")
        self._bus.subscribe(f"solar_assistant/{self.inverter}/+/set", self._on_set)
        await self._bus.start()
        self._task = asyncio.create_task(self._publish_loop())

    async def stop(self) -> None:
        """Stop publishing and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._bus is not None:
            await self._bus.stop()

    async def _on_set(self, name: str, payload: bytes, retained: bool) -> None:
        assert self._bus is not None
        self.writes.append((name, payload.decode()))
        await self._bus.publish("solar_assistant/set/response_message/state", b"Saved")

    async def _publish_loop(self) -> None:
        assert self._bus is not None
        while True:
            for metric, value in (("battery_state_of_charge", self.soc_percent), ("battery_power", self.power_w)):
                await self._bus.publish(f"solar_assistant/{self.device}/{metric}/state", f"{value:g}".encode())
            await asyncio.sleep(self.interval_s)


__all__ = ["DeviceClient", "FakeSolarAssistant", "FakeVictronGx"]
