"""Simulated real devices on a real broker, each in its own MQTT dialect, for the bridge's integration tests.

* :class:`FakeVictronGx`: a Victron GX as dbus-flashmq makes it speak: it publishes nothing until it gets a
  keep-alive on ``R/<portal id>/keepalive``, then every value as ``N/<portal id>/<service>/<instance>/<path>``
  with ``{"value": x}`` (not retained); it records what arrives on ``W/<portal id>/...``.
* :class:`FakeSolarAssistant`: SolarAssistant's plain scalars on ``solar_assistant/<device>/<metric>/state``,
  published every ``interval_s``; it records ``.../set`` writes and answers on
  ``solar_assistant/set/response_message/state`` as SolarAssistant does.

Both are clients of the test broker through the project's own bus (its foreign subscriptions), under the test's
topic root only for their own status (a device does not care about this project's tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from nodes.runtime.bus import Bus, Delivery, MqttSettings


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
    _bus: Bus | None = None

    async def start(self) -> None:
        """Connect and listen for keep-alives and writes."""
        self._bus = Bus(f"gx-{self.portal_id}", self.settings, persistent=False)
        self._bus.subscribe_foreign(f"R/{self.portal_id}/keepalive", self._on_keepalive)
        self._bus.subscribe_foreign(f"W/{self.portal_id}/#", self._on_write)
        await self._bus.start()

    async def stop(self) -> None:
        """Disconnect."""
        if self._bus is not None:
            await self._bus.stop()

    async def _on_keepalive(self, name: str, payload: bytes, delivery: Delivery) -> None:
        self.keepalives.append(payload)
        if not payload.strip():  # an empty keep-alive asks for every value (dbus-flashmq's full publish)
            await self.publish_all()

    async def _on_write(self, name: str, payload: bytes, delivery: Delivery) -> None:
        assert not delivery.retain, "dbus-flashmq's rule: write requests are never retained"
        self.writes.append((name, json.loads(payload)))

    async def publish_all(self) -> None:
        """Every value, as dbus-flashmq publishes them after a keep-alive."""
        assert self._bus is not None
        for path, value in (("Dc/Battery/Soc", self.soc_percent), ("Dc/Battery/Power", self.power_w),
                            ("Dc/Battery/Voltage", 52.1)):
            await self._bus.publish_bytes(f"N/{self.portal_id}/system/0/{path}", json.dumps({"value": value}).encode())
        await self._bus.publish_bytes(f"N/{self.portal_id}/full_publish_completed", b'{"value": 1702459522}')


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
    _bus: Bus | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, listen for setting writes and publish the values every ``interval_s``."""
        self._bus = Bus(f"sa-{self.device}", self.settings, persistent=False)
        self._bus.subscribe_foreign(f"solar_assistant/{self.inverter}/+/set", self._on_set)
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

    async def _on_set(self, name: str, payload: bytes, delivery: Delivery) -> None:
        assert self._bus is not None
        self.writes.append((name, payload.decode()))
        await self._bus.publish_bytes("solar_assistant/set/response_message/state", b"Saved")

    async def _publish_loop(self) -> None:
        assert self._bus is not None
        while True:
            for metric, value in (("battery_state_of_charge", self.soc_percent), ("battery_power", self.power_w)):
                await self._bus.publish_bytes(f"solar_assistant/{self.device}/{metric}/state", f"{value:g}".encode())
            await asyncio.sleep(self.interval_s)


__all__ = ["FakeSolarAssistant", "FakeVictronGx"]
