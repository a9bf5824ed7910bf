"""Simulated batteries: devices on the bus, for demos and tests.

Consumes: ``battery/{battery}/set`` (Commands) and its own retained ``telemetry`` once at start (to resume the SOC
it had before a restart).
Produces: ``battery/{battery}/spec`` (retained, at start), ``battery/{battery}/telemetry`` every
``BESS_SIM_TELEMETRY_INTERVAL_S`` seconds, ``battery/{battery}/state`` on every change (mode, power, command,
lease, limits hit). Every lease is capped from the moment it arrives: ``BESS_MAX_LEASE_S`` (600 s) for the
autopilot, ``BESS_MAX_OPERATOR_LEASE_S`` (24 h) for everyone else; the state's ``limits_hit`` and ``reason`` say so.
Stored confirmations: with ``BESS_SIM_KEEP_UNCONFIRMED`` > 0 (default 10000 readings per battery) it consumes
``battery/{battery}/stored`` and keeps each reading until the recorder confirms it stored (at most
``BESS_SIM_KEEP_UNCONFIRMED_TOTAL``, 1,000,000, over all batteries: a fleet keeps fewer each), re-sending what it
kept after every reconnect (:mod:`nodes.simulator.outbox`): a broker crash that loses acknowledged readings
loses none of these. Counters: ``unconfirmed`` (kept now), ``resent``, ``unconfirmed_dropped`` (outbox full).
Lifecycle: the common node lifecycle (nodes.runtime.node); a tick loop advances every battery in real time,
with ``BESS_SIM_SPEED`` multiplying the energy moved per second so demos show SOC moving.
Several batteries run in one process: ``BESS_BATTERIES=a,b,c``, or a fleet of ``BESS_SIM_COUNT`` batteries
(``battery-0001`` ..), each with a spec of its own with ``BESS_SIM_SPECS=varied`` (:mod:`nodes.simulator.fleet`).
Ticks (:mod:`nodes.simulator.ticks`) fall on the interval's grid (at 1 s: every whole second) and every reading of
a tick carries its time, so ticks do not drift however long a 1,000-battery tick takes; a tick more than an
interval late is skipped and counted. Counters: ``readings`` (telemetry published), ``ticks``, ``ticks_skipped``,
``tick_late_ms_max``, ``tick_work_ms_max`` (the longest tick, publishing included).
BMS: with ``BESS_SIM_BMS`` (default on) every reading carries what a BMS reports (:mod:`nodes.simulator.cells`);
the lifetime counters resume from the retained reading like the SOC. Fault injection: ``BESS_SIM_FAULT``
(:mod:`nodes.simulator.faults`) makes a battery's power stuck, a cell hot or its telemetry stop for a while,
counted from the start of ``run``; each fault's start and end is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from nodes.contract.messages import BatterySpec, Command, StoredUpTo, Telemetry
from nodes.contract.topics import COMMAND, SPEC, STATE, STORED, TELEMETRY
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.node import Service
from nodes.simulator.battery import LeaseCaps, SimBattery
from nodes.simulator.cells import PackModel
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.outbox import Outbox
from nodes.simulator.ticks import Ticks

log = logging.getLogger("bess.simulator")

#: batteries handled between two yields to the event loop in a tick, so commands and PUBACKs are not held up by
#: a whole 1,000-battery tick
_YIELD_EVERY = 100


class Simulator(Service[SimulatorConfig]):
    """Runs ``BESS_BATTERIES`` simulated batteries."""

    name = "simulator"

    def __init__(self, config: SimulatorConfig, bus: MessageBus) -> None:
        super().__init__(config, bus)
        ids = config.battery_ids()
        caps = LeaseCaps(automatic_s=config.max_lease_s, operator_s=config.max_operator_lease_s)
        self.batteries: dict[str, SimBattery] = {}
        for b in ids:
            spec = config.spec_for(b)
            self.batteries[b] = SimBattery(spec, config.start_soc_kwh(b, spec), caps=caps, pack=self._pack(spec))
        self.faults = config.faults()
        self._faulty: dict[str, set[str]] = {b: set() for b in ids}
        """battery -> the fault kinds in force at the last tick (to log each start and end once)."""
        keep = config.keep_per_battery(len(ids))
        if 0 < keep < config.sim_keep_unconfirmed:
            log.info("keeping at most %d unconfirmed readings per battery (BESS_SIM_KEEP_UNCONFIRMED_TOTAL %d over "
                     "%d batteries)", keep, config.sim_keep_unconfirmed_total, len(ids))
        self.outboxes = {b: Outbox(keep) for b in ids} if keep else {}
        self.ticks = Ticks(config.sim_telemetry_interval_s)
        self.tally: Counter[str] = Counter()
        #: the wall clock in epoch seconds (a test drives it)
        self.wall: Callable[[], float] = time.time
        self._resumed: set[str] = set()
        #: monotonic clock (a test drives it) and, per battery, when its SOC was last brought up to date
        self.monotonic: Callable[[], float] = time.monotonic
        self._stepped: dict[str, float] = {}
        self._published_state: dict[str, tuple[object, ...]] = {}

    def _pack(self, spec: BatterySpec) -> PackModel | None:
        if not self.config.sim_bms:
            return None
        return PackModel(capacity_kwh=spec.capacity_kwh, max_power_kw=max(spec.max_charge_kw, spec.max_discharge_kw,
                                                                           1e-6))

    async def setup(self) -> None:
        bus = self.bus
        for battery in self.batteries:
            bus.subscribe(COMMAND, self.on_command, battery=battery)
            # no_local: not our own live readings back (1,000 a second for a fleet), only the retained one of a
            # previous run, which the broker still sends on subscribe (tested with mosquitto 2.0.11)
            bus.subscribe(TELEMETRY, self.on_own_telemetry, battery=battery, no_local=True)
            if self.outboxes:
                bus.subscribe(STORED, self.on_stored, battery=battery)
        bus.set_counters_source(self.counters)

    def counters(self) -> dict[str, int]:
        """Readings published and the tick schedule, and the outbox's counters when readings are kept."""
        ticks = self.ticks
        return {
            "readings": self.tally["readings"],
            "ticks": ticks.ticks,
            "ticks_skipped": ticks.skipped,
            "tick_late_ms_max": ticks.late_ms_max,
            "tick_work_ms_max": self.tally["tick_work_ms_max"],
            **(self.outbox_counters() if self.outboxes else {}),
        }

    def outbox_counters(self) -> dict[str, int]:
        """Readings kept until stored, re-sent and dropped (outbox full), summed over the batteries."""
        boxes = self.outboxes.values()
        return {
            "unconfirmed": sum(len(o.kept) for o in boxes),
            "resent": sum(o.resent for o in boxes),
            "unconfirmed_dropped": sum(o.overflowed for o in boxes),
        }

    async def on_stored(self, params: dict[str, str], mark: StoredUpTo, delivery: Delivery) -> None:
        """The recorder stored this battery's readings up to ``mark.ts``: drop them if the mark may be trusted."""
        outbox = self.outboxes.get(params["battery"])
        if outbox is not None:
            outbox.stored_up_to(mark.ts, self.bus.connections)

    async def on_command(self, params: dict[str, str], command: Command, delivery: Delivery) -> None:
        """Obey a command at once and report the new state."""
        battery = self.batteries[params["battery"]]
        now = datetime.now(UTC)
        # the time since the last tick ran at the old power: account for it before the new command takes over
        # (else the new power would be applied to that whole interval, and the SOC would disagree with the
        # integral of the reported power by one telemetry interval at every change)
        self._advance(params["battery"], now)
        battery.apply(command, now)
        held = battery.command
        log.info("%s: %s %.1f kW from %s (lease until %s%s)", params["battery"], command.action,
                 command.power_kw, command.source, command.valid_until.isoformat(),
                 f", capped to {held.valid_until.isoformat()}" if held and held.valid_until != command.valid_until
                 else "")
        await self._publish_state(params["battery"], now, force=True)

    async def on_own_telemetry(self, params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        """Resume the SOC from the retained telemetry of a previous run (only the device's own, only once)."""
        name = params["battery"]
        if name in self._resumed or not delivery.retain or message.source != "device":
            return
        self._resumed.add(name)
        battery = self.batteries[name]
        if self.config.sim_soc_initial_kwh is None:
            battery.soc_kwh = min(max(message.soc_kwh, battery.spec.soc_min_kwh), battery.spec.soc_max_kwh)
            log.info("%s: resumed at %.1f kWh", name, battery.soc_kwh)
        if battery.pack is not None:  # lifetime counters never go back
            battery.pack.charged_kwh_total = message.energy_charged_kwh_total or 0.0
            battery.pack.discharged_kwh_total = message.energy_discharged_kwh_total or 0.0

    async def run(self) -> None:
        bus = self.bus
        for name, battery in self.batteries.items():
            await bus.publish(SPEC, battery.spec, battery=name)
        started = self.monotonic()
        self._stepped = dict.fromkeys(self.batteries, started)
        while True:
            due = self.ticks.due(self.wall())
            wait = due - self.wall()
            if wait > 0:
                await asyncio.sleep(wait)
            wall = self.wall()
            at = self.ticks.take(max(wall, due))
            # the tick's moment on the monotonic clock: every battery is advanced to it, so the SOC of a reading
            # is the SOC at the reading's timestamp, whichever battery of the tick it is
            moment = self.monotonic() - max(0.0, wall - at)
            await self._tick(datetime.fromtimestamp(at, UTC), moment, moment - started)
            self.tally["tick_work_ms_max"] = max(self.tally["tick_work_ms_max"], round((self.wall() - at) * 1000))

    async def _tick(self, now: datetime, moment: float, elapsed_s: float) -> None:
        """One tick: every battery advanced to ``moment``, its faults applied, its reading and state published."""
        for i, (name, battery) in enumerate(self.batteries.items(), start=1):
            gap = self._apply_faults(name, battery, elapsed_s, now)
            self._advance(name, now, moment)
            if not gap:  # in a gap the battery works on, but nothing reaches the bus
                await self._publish_telemetry(name, battery.telemetry(now))
                await self._publish_state(name, now)
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _advance(self, name: str, now: datetime, moment: float | None = None) -> None:
        """Bring one battery's SOC up to ``moment`` (monotonic; default: now) at the power it has had since it was
        last advanced (a command handled during a tick may have advanced it past the tick's moment already)."""
        moment = self.monotonic() if moment is None else moment
        last = self._stepped.get(name)
        self._stepped[name] = moment if last is None else max(last, moment)
        dt_s = 0.0 if last is None else max(0.0, moment - last)
        self.batteries[name].step(dt_s * self.config.sim_speed, now)

    def _apply_faults(self, name: str, battery: SimBattery, elapsed_s: float, now: datetime) -> bool:
        """Put the faults in force at ``elapsed_s`` on the battery (log each start and end); True: a telemetry gap."""
        stuck = self.faults.active(name, elapsed_s, "stuck_power")
        hot = self.faults.active(name, elapsed_s, "hot_cell")
        gap = self.faults.active(name, elapsed_s, "telemetry_gap")
        active: set[str] = {f.kind for f in (stuck, hot, gap) if f is not None}
        for kind in sorted(active ^ self._faulty[name]):
            log.warning("%s: fault %s %s", name, kind, "begins" if kind in active else "ends")
        self._faulty[name] = active
        if stuck is None:
            battery.stuck_kw = None
        elif battery.stuck_kw is None:
            battery.stuck_kw = battery.power_kw if stuck.power_kw is None else stuck.power_kw
        battery.hot_cell_c = None if hot is None else hot.hot_cell_c
        battery.step(0.0, now)  # settle: a stuck power (or its end) applies now
        return gap is not None

    async def _publish_telemetry(self, name: str, reading: Telemetry) -> None:
        """Publish a reading (retained), after re-sending the kept ones (not retained) on a new connection."""
        outbox = self.outboxes.get(name)
        if outbox is None:
            await self.bus.publish(TELEMETRY, reading, battery=name)
            self.tally["readings"] += 1
            return
        overflowed = outbox.overflowed
        resend, reading = outbox.to_publish(reading, self.bus.connections)
        if resend:
            log.info("%s: re-sending %d readings not yet confirmed stored", name, len(resend))
        if outbox.overflowed > overflowed and outbox.overflowed % 1000 == 1:
            log.warning("%s: %d readings kept without a stored confirmation (is the recorder running?): dropping "
                        "the oldest (%d so far)", name, outbox.limit, outbox.overflowed)
        try:
            for old in resend:
                await self.bus.publish(TELEMETRY, old, retain=False, battery=name)
            await self.bus.publish(TELEMETRY, reading, battery=name)
            self.tally["readings"] += 1
        except BusUnavailable as exc:
            outbox.publish_failed()  # kept: re-sent with the next reading
            log.warning("%s: telemetry not published (%s); kept for the next try", name, exc)

    async def _publish_state(self, name: str, now: datetime, *, force: bool = False) -> None:
        battery = self.batteries[name]
        key = battery.state_key()
        if force or self._published_state.get(name) != key:
            self._published_state[name] = key
            await self.bus.publish(STATE, battery.state(now), battery=name)


__all__ = ["Simulator", "SimulatorConfig"]
