"""The device bridge: a real battery that speaks its own MQTT dialect, translated by a profile (wiring only).

Consumes: the device's own topics (the profile's readings, e.g. ``N/<portal id>/system/0/Dc/Battery/Soc``; raw
foreign subscriptions of the bus) and ``battery/{battery}/set`` (Commands) for ``BESS_BRIDGE_BATTERY``.
Produces: ``battery/{battery}/spec`` (retained, at start), ``battery/{battery}/telemetry`` (source ``device``, the
battery's own feed) every ``BESS_BRIDGE_TELEMETRY_INTERVAL_S`` while the device is live, ``battery/{battery}/state``
on every change (mode, the command carried out, its lease, refusals; ``offline`` while the device is silent), the
device's write topics (:mod:`nodes.bridge.writes`) and its keep-alive (Victron's ``R/<portal id>/keepalive``).
Counters: ``device_messages``, ``invalid_readings``, ``device_writes``, ``refused``, ``leases_ended``,
``keepalives``. The node is ``degraded`` while the device is silent (no message for the profile's
``stale_after_s``) or before its first message.

Lifecycle: the common one (:mod:`nodes.runtime.node`). At start: the spec, then the device's idle write (the
bridge does not know what the device was last told), then the keep-alive. Every tick (:data:`TICK_S`): the
keep-alive when due (its first payload again after each reconnect), the lease check (the idle write when a lease
ends without a renewal), liveness, telemetry, the state. On SIGTERM/SIGINT: the idle write, awaited at the broker,
and the last state, before the node goes offline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nodes.bridge.config import BridgeConfig
from nodes.bridge.mapping import DeviceReadings, Mapper, telemetry
from nodes.bridge.writes import Controller, DeviceWrite
from nodes.contract.leases import LeaseCaps
from nodes.contract.messages import Command
from nodes.contract.topics import COMMAND, SPEC, STATE, TELEMETRY
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import PAYLOAD_LOG_LIMIT, Delivery
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.node import Service

log = logging.getLogger("bess.bridge")

#: How often the bridge looks at the clock: a lease ends within this of its valid_until.
TICK_S = 0.25
#: How long a stop waits for the broker to take the idle write.
STOP_WRITE_TIMEOUT_S = 3.0


class Bridge(Service[BridgeConfig]):
    """One real device as ``battery/<BESS_BRIDGE_BATTERY>``."""

    name = "bridge"

    def __init__(self, config: BridgeConfig, bus: MessageBus, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, bus)
        self.device = config.device()  # a ProfileError (ValueError) here is exit 2 in nodes.runtime.node.main
        self.battery = config.bridge_battery
        spec = self.device.spec
        self.mapper = Mapper(self.device.bound, spec.capacity_kwh)
        caps = LeaseCaps(automatic_s=config.max_lease_s, operator_s=config.max_operator_lease_s)
        self.controller = Controller(self.device.bound, spec, caps)
        self.held = DeviceReadings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stale_after = timedelta(seconds=self.device.profile.stale_after_s)
        self.counts: Counter[str] = Counter()
        self._state_key: tuple[object, ...] | None = None
        self._live: bool | None = None
        self._keepalive_epoch: int | None = None
        self._next_keepalive: datetime | None = None
        self._next_telemetry: datetime | None = None

    async def setup(self) -> None:
        for topic in self.mapper.topics:
            self.bus.subscribe_foreign(topic, self.on_device_message)
        self.bus.subscribe(COMMAND, self.on_command, battery=self.battery)
        self.bus.set_counters_source(self.counters)

    def counters(self) -> dict[str, int]:
        """The bridge's counters for its NodeStatus."""
        return {**self.counts, "refused": self.controller.refused, "leases_ended": self.controller.leases_ended}

    # -- from the device ------------------------------------------------------------------------------------

    async def on_device_message(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        """A value from the device: mapped into the held readings (a bad one is logged, counted, dropped)."""
        self.counts["device_messages"] += 1
        problems = self.mapper.read(topic, payload, self.clock(), self.held)
        if problems:
            self.counts["invalid_readings"] += 1
            log.warning("dropped unusable reading on %s: %s; payload (%d bytes): %r", topic, "; ".join(problems),
                        len(payload), payload[:PAYLOAD_LOG_LIMIT])

    # -- to the device --------------------------------------------------------------------------------------

    async def on_command(self, params: dict[str, str], command: Command, delivery: Delivery) -> None:
        """Carry out a command at once (or refuse it) and report the new state."""
        now = self.clock()
        writes = self.controller.apply(command, now)
        log.info("%s: %s %.1f kW from %s until %s: %s", self.battery, command.action, command.power_kw,
                 command.source, command.valid_until.isoformat(), self.controller.reason)
        if self.controller.limits and self.controller.reason.startswith("refused"):
            log.warning("%s: %s", self.battery, self.controller.reason)
        await self._write(writes)
        await self._publish_state(now, force=True)

    async def _write(self, writes: list[DeviceWrite], *, wait_ack: bool = False,
                     timeout: float = STOP_WRITE_TIMEOUT_S) -> bool:
        """Publish device writes (never retained); on a failure the controller re-sends them at the next tick."""
        for write in writes:
            try:
                await self.bus.publish_bytes(write.topic, write.payload, qos=1, retain=False, wait_ack=wait_ack,
                                             timeout=timeout)
            except BusUnavailable as exc:
                self.controller.not_sent()
                log.warning("%s: write to the device not sent (%s); re-sent at the next tick", self.battery, exc)
                return False
            self.counts["device_writes"] += 1
            log.debug("wrote %s %r", write.topic, write.payload)
        return True

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.begin(self.clock())
        while True:
            await self.step(self.clock())
            await asyncio.sleep(TICK_S)

    async def begin(self, now: datetime) -> None:
        """At start: the spec (retained), the device's idle write, the first state."""
        await self.bus.publish(SPEC, self.device.spec, battery=self.battery)
        await self._write(self.controller.start(now))
        await self._publish_state(now, force=True)

    async def step(self, now: datetime) -> None:
        """One tick: keep-alive, lease, liveness, telemetry, state."""
        await self._keepalive(now)
        await self._write(self.controller.tick(now))
        live = self.held.live(now, self.stale_after)
        if live != self._live:
            self._live = live
            self._report_liveness(live, now)
        if self._next_telemetry is None or now >= self._next_telemetry:
            self._next_telemetry = now + timedelta(seconds=self.config.bridge_telemetry_interval_s)
            reading = telemetry(self.held, now, self.controller.target())
            if live and reading is not None:
                try:
                    await self.bus.publish(TELEMETRY, reading, battery=self.battery)
                except BusUnavailable as exc:
                    log.warning("%s: telemetry not published: %s", self.battery, exc)
        await self._publish_state(now)

    async def _keepalive(self, now: datetime) -> None:
        keepalive = self.device.profile.keepalive
        if keepalive is None:
            return
        first = self._keepalive_epoch != self.bus.connections
        if not first and self._next_keepalive is not None and now < self._next_keepalive:
            return
        payload = keepalive.first_payload if first and keepalive.first_payload is not None else keepalive.payload
        try:
            await self.bus.publish_bytes(self.device.bound.topic(keepalive.topic), payload.encode(), qos=0)
        except BusUnavailable as exc:
            log.debug("keep-alive not sent: %s", exc)
            return
        self._keepalive_epoch = self.bus.connections
        self._next_keepalive = now + timedelta(seconds=keepalive.interval_s)
        self.counts["keepalives"] += 1

    def _silence(self, now: datetime) -> str:
        seen = self.held.last_message_at
        if seen is None:
            return f"no message from the device yet on {', '.join(self.mapper.topics)}"
        return (f"no message from the device for {(now - seen).total_seconds():.0f} s "
                f"(stale after {self.stale_after.total_seconds():g} s)")

    def _report_liveness(self, live: bool, now: datetime) -> None:
        if live:
            log.info("%s: the device reports (profile %s)", self.battery, self.device.profile.name)
            self.bus.set_state("online")
            self.bus.set_details({})
        else:
            reason = self._silence(now)
            log.warning("%s: %s", self.battery, reason)
            self.bus.set_state("degraded", f"{self.battery}: {reason}")
            self.bus.set_details({self.battery: reason[:500]})

    async def _publish_state(self, now: datetime, *, force: bool = False) -> None:
        live = self.held.live(now, self.stale_after)
        state = self.controller.state(now, live=live, measured_kw=self.held.power_kw,
                                      offline_reason="" if live else self._silence(now))
        key = (state.mode, state.command_id, tuple(state.limits_hit), state.reason if live else "offline")
        if not force and key == self._state_key:
            return
        self._state_key = key
        try:
            await self.bus.publish(STATE, state, battery=self.battery)
        except BusUnavailable as exc:
            self._state_key = None
            log.warning("%s: state not published: %s", self.battery, exc)

    async def shutdown(self) -> None:
        """The idle write, awaited at the broker, and the last state: no setpoint outlives the bridge."""
        now = self.clock()
        sent = await self._write(self.controller.stop(now), wait_ack=True)
        log.info("%s: idle write %s at stop", self.battery, "sent" if sent else "NOT sent (broker unreachable)")
        await self._publish_state(now, force=True)


__all__ = ["STOP_WRITE_TIMEOUT_S", "TICK_S", "Bridge", "BridgeConfig"]
