"""The homeassistant node: Home Assistant MQTT discovery for the fleet's batteries, and the values only it can derive.

Which batteries become devices: those that announced a spec (a real device, the bridge and the simulator do; an id
that only ever got telemetry, e.g. from ``POST /write``, does not), or exactly the ones ``BESS_HA_BATTERIES``
lists; at most ``BESS_HA_MAX_BATTERIES`` (200), the first come; beyond it the node reports ``degraded`` saying how
many have no device (a client inventing thousands of ids must not flood Home Assistant with retained configs).

Consumes: ``battery/+/spec`` and ``battery/+/telemetry`` (which batteries exist; the spec's capacity, power limits,
manufacturer and model), ``battery/+/schedule`` (the plan), ``market/+/prices`` (the price now),
``battery/+/control`` (the control mode), ``node/+/status`` (one connectivity sensor per node) and
``<prefix>/status`` (Home Assistant's birth message, ``BESS_HA_DISCOVERY_PREFIX``).
Produces: a retained discovery config per entity on ``<prefix>/<component>/<battery>/<key>/config``
(:mod:`nodes.homeassistant.entities`; the nodes' connectivity sensors under ``<prefix>/binary_sensor/bess/``) and
the derived, retained ``battery/{battery}/outlook`` (:mod:`nodes.homeassistant.outlook`). Each battery's alarm
sensors read the alarms node's retained ``battery/{battery}/alarm/{rule}`` directly (one per rule enabled in
``BESS_ALARMS``; a disabled rule's config is cleared once). Home Assistant's
controls publish on ``battery/{battery}/request/{mode,power,replan}``, which the gateway and the planner consume:
this node never commands a battery itself.

A config is published when it changes (a new battery, a spec or currency change) and every config again when Home
Assistant announces itself ``online``. When a battery's retained spec and telemetry have both been cleared (it is
gone for good), every config of it is cleared (an empty retained payload: Home Assistant removes the entity) and
so is its outlook. The outlook is recomputed when its inputs change and at every slot or mode boundary, and
published when it says something new.
Lifecycle: the common node lifecycle (nodes.runtime.node); configs stay retained when the node stops (its last
will makes the derived entities unavailable, the others keep following their own topics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from nodes import __version__
from nodes.contract.discovery import HA_STATUS, HaStatus
from nodes.contract.messages import (
    BatteryOutlook,
    BatterySpec,
    ControlMode,
    NodeStatus,
    PriceForecast,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import CONTROL, OUTLOOK, PRICES, SCHEDULE, SPEC, STATUS, TELEMETRY
from nodes.homeassistant import outlook as derive
from nodes.homeassistant.config import HomeAssistantConfig, enabled_alarm_rules, parse_alarm_settings
from nodes.homeassistant.discovery import Wiring
from nodes.homeassistant.entities import (
    ALARM_RULE_IDS,
    BATTERY_ENTITIES,
    BatteryFacts,
    EntityConfig,
    battery_entities,
    node_entity,
)
from nodes.planner import policy
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.node import Service

log = logging.getLogger("bess.homeassistant")

MAX_PENDING = 100_000
"""Ids remembered at most that are not devices (no spec, not listed, or beyond the cap): they are only counted."""
MAX_NODES = 200
"""Node connectivity sensors at most."""
IDLE_WAKE_S = 3600.0
"""With no boundary ahead, the loop still runs this often (cheap: nothing is published unless it changed)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatteryView:
    """What the node knows of one battery."""

    spec: BatterySpec | None = None
    schedule: Schedule | None = None
    control: ControlMode | None = None
    has_spec: bool = False
    has_telemetry: bool = False


class HomeAssistantNode(Service[HomeAssistantConfig]):
    """Discovery configs and outlooks for every battery it hears about."""

    name = "homeassistant"

    def __init__(self, config: HomeAssistantConfig, bus: MessageBus, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, bus)
        self.clock = clock or _now
        self.wiring = Wiring(root=bus.root, prefix=config.ha_discovery_prefix,
                             device_node=config.ha_device_node or None, dashboard_url=config.dashboard_url,
                             version=__version__, device_nodes=config.device_nodes)
        self.config_topic = self.wiring.config_topic
        self.batteries: dict[str, BatteryView] = {}
        self.forecasts: dict[str, PriceForecast] = {}
        self.nodes: set[str] = set()
        #: the config last published per (component, device, key): a config is sent again only when it changed
        self.sent: dict[tuple[str, str, str], bytes] = {}
        self.outlooks: dict[str, BatteryOutlook] = {}
        self.republish_all = False
        self.wake = asyncio.Event()
        #: a pass and a removal never interleave (a pass must not re-publish a config a removal just cleared)
        self.lock = asyncio.Lock()
        self._full_logged = False
        #: batteries heard of that are no device: telemetry only (no spec, not in BESS_HA_BATTERIES) / beyond the cap
        self.telemetry_only: set[str] = set()
        self.over_cap: set[str] = set()
        #: BESS_ALARMS (checked at start-up): a rule disabled for a battery gets no alarm sensor
        self.alarm_config = parse_alarm_settings(config.alarms)
        #: alarm sensors cleared because their rule is disabled (once per battery and rule: a stale retained
        #: config from a run with the rule on must not stay in Home Assistant as a sensor that never changes)
        self.alarms_cleared: set[tuple[str, str]] = set()

    async def setup(self) -> None:
        bus = self.bus
        bus.subscribe(SPEC, self.on_spec, on_cleared=self.on_spec_cleared)
        bus.subscribe(TELEMETRY, self.on_telemetry, on_cleared=self.on_telemetry_cleared)
        bus.subscribe(SCHEDULE, self.on_schedule)
        bus.subscribe(PRICES, self.on_prices)
        bus.subscribe(CONTROL, self.on_control)
        bus.subscribe(STATUS, self.on_status)
        bus.subscribe(HA_STATUS.under(self.config.ha_discovery_prefix), self.on_ha_status)
        bus.set_counters_source(lambda: {"batteries": len(self.batteries), "configs": len(self.sent),
                                         "batteries_without_spec": len(self.telemetry_only),
                                         "batteries_over_cap": len(self.over_cap)})

    # -- inputs -----------------------------------------------------------------------------------------------

    def _view(self, battery: str, *, spec: bool) -> BatteryView | None:
        """The battery's view, made when it may be a device: listed in ``BESS_HA_BATTERIES``, or (without that
        list) once it announced a spec, and while fewer than ``BESS_HA_MAX_BATTERIES`` are."""
        view = self.batteries.get(battery)
        if view is not None:
            return view
        listed = self.config.ha_batteries
        if (battery not in listed) if listed else not spec:
            if len(self.telemetry_only) < MAX_PENDING:
                self.telemetry_only.add(battery)
            return None
        if len(self.batteries) >= self.config.ha_max_batteries:
            if len(self.over_cap) < MAX_PENDING:
                self.over_cap.add(battery)
            reason = (f"{len(self.over_cap):,} more batteries have no Home Assistant device: at most "
                      f"{self.config.ha_max_batteries} (BESS_HA_MAX_BATTERIES)")
            self.bus.set_state("degraded", reason)
            if not self._full_logged:
                self._full_logged = True
                log.warning("%s", reason)
            return None
        view = self.batteries[battery] = BatteryView(has_telemetry=battery in self.telemetry_only)
        self.telemetry_only.discard(battery)
        log.info("%s: new battery, publishing its Home Assistant entities", battery)
        self.wake.set()
        return view

    async def on_spec(self, params: dict[str, str], spec: BatterySpec, delivery: Delivery) -> None:
        """A battery's spec: its capacity, power range, manufacturer and model go into its configs."""
        view = self._view(params["battery"], spec=True)
        if view is not None:
            view.spec, view.has_spec = spec, True
            self.wake.set()

    async def on_telemetry(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        """Telemetry only tells that a battery exists (its values go to Home Assistant directly)."""
        view = self._view(params["battery"], spec=False)
        if view is not None:
            view.has_telemetry = True

    async def on_spec_cleared(self, params: dict[str, str]) -> None:
        """The retained spec was cleared: with the telemetry cleared too, the battery is gone."""
        view = self.batteries.get(params["battery"])
        if view is not None:
            view.has_spec = False
            await self._forget_if_gone(params["battery"], view)

    async def on_telemetry_cleared(self, params: dict[str, str]) -> None:
        """The retained telemetry was cleared: with the spec cleared too, the battery is gone."""
        self.telemetry_only.discard(params["battery"])
        view = self.batteries.get(params["battery"])
        if view is not None:
            view.has_telemetry = False
            await self._forget_if_gone(params["battery"], view)

    async def on_schedule(self, params: dict[str, str], schedule: Schedule, delivery: Delivery) -> None:
        """A new plan: the outlook and, if its currency changed, the money sensors."""
        view = self.batteries.get(params["battery"])
        if view is not None:
            view.schedule = schedule
            self.wake.set()

    async def on_prices(self, params: dict[str, str], forecast: PriceForecast, delivery: Delivery) -> None:
        """A zone's prices: the price now of every battery planned on that zone."""
        self.forecasts[params["zone"]] = forecast
        self.wake.set()

    async def on_control(self, params: dict[str, str], control: ControlMode, delivery: Delivery) -> None:
        """Who commands the battery: the select's state (in the outlook)."""
        view = self.batteries.get(params["battery"])
        if view is not None:
            view.control = control
            self.wake.set()

    async def on_status(self, params: dict[str, str], status: NodeStatus, delivery: Delivery) -> None:
        """A node seen: it gets its connectivity sensor."""
        node = params["node"]
        if node not in self.nodes and len(self.nodes) < MAX_NODES:
            self.nodes.add(node)
            self.wake.set()

    async def on_ha_status(self, params: dict[str, str], status: HaStatus, delivery: Delivery) -> None:
        """Home Assistant (re)started: publish every config again."""
        if status.state == "online":
            log.info("Home Assistant announced itself online: publishing every discovery config again")
            self.bus.counters["ha_births"] += 1
            self.republish_all = True
            self.wake.set()

    # -- outputs ----------------------------------------------------------------------------------------------

    def _forecast_for(self, view: BatteryView) -> PriceForecast | None:
        zone = view.schedule.zone if view.schedule is not None and view.schedule.zone else self.config.planner_zone
        return self.forecasts.get(zone)

    def _outlook(self, battery: str, view: BatteryView, now: datetime) -> BatteryOutlook:
        default = policy.default_mode(self.config.planner_autopilot, self.config.planner_autopilot_off, battery)
        return derive.outlook(now, control=view.control, default_mode=default, schedule=view.schedule,
                              forecast=self._forecast_for(view), slots=self.config.ha_outlook_slots)

    async def _publish(self, entity: EntityConfig, *, force: bool) -> None:
        key = (entity.component, entity.device, entity.key)
        payload = self.config_topic.encode(entity.config)
        if not force and self.sent.get(key) == payload:
            return
        await self.bus.publish(self.config_topic, entity.config, component=entity.component, device=entity.device,
                               entity=entity.key)
        self.sent[key] = payload
        self.bus.counters["configs_published"] += 1

    async def refresh(self, battery: str, view: BatteryView, now: datetime, *, force: bool = False) -> None:
        """Publish the battery's outlook if it changed, then every config of it that changed."""
        current = self._outlook(battery, view, now)
        if not derive.same(self.outlooks.get(battery), current):
            await self.bus.publish(OUTLOOK, current, battery=battery)
            self.outlooks[battery] = current
            self.bus.counters["outlooks_published"] += 1
        facts = BatteryFacts(
            spec=view.spec,
            plan_currency=view.schedule.currency if view.schedule is not None else None,
            price_currency=current.currency,
            alarm_rules=enabled_alarm_rules(self.alarm_config, battery),
        )
        for entity in battery_entities(battery, facts, self.wiring):
            await self._publish(entity, force=force)
        for rule in ALARM_RULE_IDS:
            if rule not in facts.alarm_rules and (battery, rule) not in self.alarms_cleared:
                key = f"alarm_{rule}"
                await self.bus.publish_bytes(self.config_topic.name(component="binary_sensor", device=battery,
                                                                    entity=key), b"", retain=True)
                self.alarms_cleared.add((battery, rule))

    async def _forget_if_gone(self, battery: str, view: BatteryView) -> None:
        async with self.lock:
            if view.has_spec or view.has_telemetry or self.batteries.get(battery) is not view:
                return
            await self._forget(battery)

    async def _forget(self, battery: str) -> None:
        del self.batteries[battery]
        self.outlooks.pop(battery, None)
        for component, key in BATTERY_ENTITIES:
            await self.bus.publish_bytes(self.config_topic.name(component=component, device=battery, entity=key), b"",
                                         retain=True)
            self.sent.pop((component, battery, key), None)
        await self.bus.publish_bytes(self.bus.name(OUTLOOK, battery=battery), b"", retain=True)
        self.bus.counters["batteries_forgotten"] += 1
        log.info("%s: retained spec and telemetry cleared; its Home Assistant entities are removed", battery)

    async def step(self) -> datetime | None:
        """One pass: refresh every battery and node sensor; returns when the next boundary is (or None)."""
        async with self.lock:
            return await self._step()

    async def _step(self) -> datetime | None:
        force, self.republish_all = self.republish_all, False
        now = self.clock()
        for node in sorted(self.nodes):
            await self._publish(node_entity(node, self.wiring), force=force)
        wake: list[datetime] = []
        for battery, view in list(self.batteries.items()):
            await self.refresh(battery, view, now, force=force)
            boundary = derive.next_change(now, view.control, view.schedule, self._forecast_for(view))
            if boundary is not None:
                wake.append(boundary)
        return min(wake) if wake else None

    async def run(self) -> None:
        while True:
            self.wake.clear()  # before the pass: a message arriving during it wakes the next one at once
            wake_at = await self.step()
            timeout = IDLE_WAKE_S if wake_at is None else (wake_at - self.clock()).total_seconds() + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=min(max(timeout, 0.001), IDLE_WAKE_S))


__all__ = ["HomeAssistantConfig", "HomeAssistantNode"]
