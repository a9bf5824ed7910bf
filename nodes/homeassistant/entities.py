"""Which Home Assistant entities a battery gets, and each one's discovery config (pure: facts in, configs out).

Values come from the existing topics through ``value_template`` where their JSON has them; what Home Assistant
cannot compute from a retained message (anything about "now") comes from the derived ``battery/{battery}/outlook``
(this node) and ``battery/{battery}/revenue`` (the renderer). Power is signed like telemetry everywhere: **+ when
discharging (to the grid), - when charging**. Units and classes follow Home Assistant 2024.3.3's sensor rules
(``homeassistant/components/sensor/const.py``: ``DEVICE_CLASS_UNITS``, ``DEVICE_CLASS_STATE_CLASSES``):
``energy_storage`` in kWh with ``measurement``, ``battery`` in % with ``measurement``, ``power`` in kW with
``measurement``, ``monetary`` only with an ISO 4217 currency and ``total``; a price per MWh is not ``monetary``
(it is a rate) and has no device class. A money or price template shows a value only when the message's own
currency is the unit's, so a changed currency never shows under the old unit (the config follows it).

An entity whose facts are not known yet is left out until they are: ``soc_percent`` needs the capacity, the power
setpoint the power limits (from the spec), prices and money their currency.

Alarms: one ``binary_sensor`` per battery and alarm rule (``device_class: problem``, on while the retained
``battery/{battery}/alarm/{rule}`` says ``raised``, off once it says ``cleared``; its attributes are the alarm's
severity, message, since, value and threshold), available while the alarms node is not offline. The alarms node
publishes transitions only, so a rule never raised since the broker's retained store began is ``unknown`` (no
message yet), not off. A rule disabled for the battery in ``BESS_ALARMS`` gets no sensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from nodes.alarms.rules import RULES
from nodes.contract.discovery import Component, DiscoveryConfig
from nodes.contract.messages import BatterySpec
from nodes.contract.topics import (
    ALARM,
    MODE_REQUEST,
    OUTLOOK,
    POWER_REQUEST,
    REPLAN_REQUEST,
    REQUEST_RESULT,
    REVENUE,
    SCHEDULE,
    STATE,
    TELEMETRY,
)
from nodes.homeassistant.discovery import (
    SYSTEM_DEVICE,
    Wiring,
    availability,
    battery_device,
    entity_object_id,
    origin,
    system_device,
    unique_id,
)

#: The node names entities depend on (besides the configured device node).
PLANNER, GATEWAY, RENDERER, SELF, ALARMS = "planner", "gateway", "renderer", "homeassistant", "alarms"
#: Every alarm rule's id and title (:mod:`nodes.alarms.rules`), in the order the alarms node lists them.
ALARM_RULES: Final[tuple[tuple[str, str], ...]] = tuple((rule.id, rule.title) for rule in RULES)
ALARM_RULE_IDS: Final[tuple[str, ...]] = tuple(rule_id for rule_id, _ in ALARM_RULES)

#: ``(component, key)`` of every entity a battery can have, in the order they are published (for clearing all).
BATTERY_ENTITIES: Final[tuple[tuple[Component, str], ...]] = (
    ("sensor", "soc_kwh"),
    ("sensor", "soc_percent"),
    ("sensor", "power_kw"),
    ("sensor", "mode"),
    ("sensor", "lease_end"),
    ("sensor", "planned_action"),
    ("sensor", "planned_power_kw"),
    ("sensor", "next_action"),
    ("sensor", "next_power_kw"),
    ("sensor", "price"),
    ("sensor", "expected_revenue"),
    ("sensor", "revenue_today"),
    ("sensor", "planner_status"),
    ("sensor", "last_request"),
    ("select", "control_mode"),
    ("number", "power_setpoint"),
    ("button", "replan"),
    *(("binary_sensor", f"alarm_{rule_id}") for rule_id, _ in ALARM_RULES),
)
#: The control modes the select offers (the contract's ControlModeName).
MODES: Final = ["autopilot", "manual", "idle"]
#: The setpoint's resolution in kW.
SETPOINT_STEP_KW: Final = 0.1


@dataclass(frozen=True)
class BatteryFacts:
    """What the configs of one battery depend on (a change re-publishes the configs that use it)."""

    spec: BatterySpec | None = None
    #: the currency of the battery's plan (Schedule.currency), None before the first plan
    plan_currency: str | None = None
    #: the currency of the price shown now (the outlook's), None before any price is known
    price_currency: str | None = None
    #: the alarm rules enabled for this battery (``BESS_ALARMS``; by default every rule)
    alarm_rules: tuple[str, ...] = ALARM_RULE_IDS

    @property
    def money_currency(self) -> str | None:
        """The currency of the revenue sensors: the plan's, else the prices'."""
        return self.plan_currency or self.price_currency


@dataclass(frozen=True)
class EntityConfig:
    """One entity: where its config goes and what it says."""

    component: Component
    device: str
    key: str
    config: DiscoveryConfig


def _number(value: float) -> str:
    return repr(float(value))


def _when_currency(field: str, currency: str, *, default_eur: bool = False) -> str:
    """A template giving ``value_json.<field>`` only when the message's currency is ``currency`` (else unknown)."""
    code = "(value_json.currency | default('EUR'))" if default_eur else "(value_json.currency | default(''))"
    return f"{{{{ value_json.{field} if {code} == '{currency}' else None }}}}"


def _optional(field: str) -> str:
    """A numeric template that is unknown (``None``) when the field is absent (Home Assistant's ``None`` payload)."""
    return f"{{{{ value_json.{field} if value_json.{field} is defined else None }}}}"


class _Builder:
    """Makes the configs of one battery (the common keys filled in once)."""

    def __init__(self, battery: str, facts: BatteryFacts, wiring: Wiring) -> None:
        self.battery = battery
        self.facts = facts
        self.wiring = wiring
        self.device = battery_device(battery, facts.spec, wiring)
        node = wiring.device_node_of(battery)
        self.device_feed: tuple[str, ...] = (node,) if node else ()

    def make(self, component: Component, key: str, name: str, feeds: tuple[str, ...], **keys: Any) -> EntityConfig:
        config = DiscoveryConfig(
            name=name,
            unique_id=unique_id(self.battery, key),
            object_id=entity_object_id(self.battery, key),
            device=self.device,
            origin=origin(self.wiring),
            qos=1,
            **availability(feeds, self.wiring),
            **keys,
        )
        return EntityConfig(component, self.battery, key, config)

    def topic(self, topic: Any) -> str:
        return self.wiring.topic(topic, battery=self.battery)


def battery_entities(battery: str, facts: BatteryFacts, wiring: Wiring) -> list[EntityConfig]:
    """Every entity ``battery`` has with these facts (see the module docstring for what needs which fact)."""
    b = _Builder(battery, facts, wiring)
    telemetry, state, outlook = b.topic(TELEMETRY), b.topic(STATE), b.topic(OUTLOOK)
    device, plan = b.device_feed, (SELF, PLANNER)
    out = [
        b.make("sensor", "soc_kwh", "State of charge", device, state_topic=telemetry,
               value_template="{{ value_json.soc_kwh }}", device_class="energy_storage", state_class="measurement",
               unit_of_measurement="kWh", suggested_display_precision=1),
    ]
    spec = facts.spec
    if spec is not None and spec.capacity_kwh > 0:
        out.append(b.make(
            "sensor", "soc_percent", "State of charge (%)", device, state_topic=telemetry,
            value_template=f"{{{{ (value_json.soc_kwh / {_number(spec.capacity_kwh)} * 100) | round(1) }}}}",
            device_class="battery", state_class="measurement", unit_of_measurement="%",
        ))
    out += [
        b.make("sensor", "power_kw", "Power", device, state_topic=telemetry, value_template=_optional("power_kw"),
               device_class="power", state_class="measurement", unit_of_measurement="kW",
               suggested_display_precision=1, icon="mdi:battery-charging"),
        b.make("sensor", "mode", "Mode", device, state_topic=state, value_template="{{ value_json.mode }}",
               json_attributes_topic=state,
               json_attributes_template="{{ {'power_kw': value_json.power_kw | default(0), "
               "'command_id': value_json.command_id | default(None), "
               "'command_source': value_json.command_source | default(None), "
               "'limits_hit': value_json.limits_hit | default([]), 'reason': value_json.reason | default('')} "
               "| tojson }}"),
        # a timestamp sensor logs a warning for every value that is not a time (also "None"): without a lease the
        # state is the time the battery reported following none (for an expired lease: when it ended)
        b.make("sensor", "lease_end", "Command lease end", device, state_topic=state, device_class="timestamp",
               value_template="{{ value_json.valid_until if value_json.valid_until is defined else value_json.ts }}",
               icon="mdi:timer-sand", json_attributes_topic=state,
               json_attributes_template="{{ {'lease': value_json.valid_until is defined, "
               "'command_id': value_json.command_id | default(None), "
               "'command_source': value_json.command_source | default(None)} | tojson }}"),
        b.make("sensor", "planned_action", "Planned action", plan, state_topic=outlook,
               value_template="{{ value_json.action | default('no plan') }}", icon="mdi:calendar-clock",
               json_attributes_topic=outlook,
               json_attributes_template="{{ {'until': value_json.slot_end | default(None), "
               "'plan_id': value_json.plan_id | default(None), 'upcoming': value_json.upcoming | default([])} "
               "| tojson }}"),
        b.make("sensor", "planned_power_kw", "Planned power", plan, state_topic=outlook,
               value_template=_optional("power_kw"), device_class="power", state_class="measurement",
               unit_of_measurement="kW", suggested_display_precision=1),
        b.make("sensor", "next_action", "Next planned action", plan, state_topic=outlook,
               value_template="{{ value_json.next_action | default('none') }}", icon="mdi:calendar-arrow-right",
               json_attributes_topic=outlook,
               json_attributes_template="{{ {'at': value_json.next_change_at | default(None), "
               "'power_kw': value_json.next_power_kw | default(None)} | tojson }}"),
        b.make("sensor", "next_power_kw", "Next planned power", plan, state_topic=outlook,
               value_template=_optional("next_power_kw"), device_class="power", state_class="measurement",
               unit_of_measurement="kW", suggested_display_precision=1),
    ]
    if facts.price_currency is not None:
        out.append(b.make(
            "sensor", "price", "Price now", (SELF,), state_topic=outlook,
            value_template=_when_currency("price_per_mwh", facts.price_currency), state_class="measurement",
            unit_of_measurement=f"{facts.price_currency}/MWh", suggested_display_precision=2, icon="mdi:cash-clock",
            json_attributes_topic=outlook,
            json_attributes_template="{{ {'until': value_json.price_until | default(None), "
            "'zone': value_json.zone | default(None)} | tojson }}",
        ))
    money = facts.money_currency
    if money is not None:
        schedule = b.topic(SCHEDULE)
        out += [
            b.make("sensor", "expected_revenue", "Expected revenue of the plan", (PLANNER,), state_topic=schedule,
                   value_template=_when_currency("expected_revenue", money, default_eur=True),
                   device_class="monetary", state_class="total", unit_of_measurement=money,
                   suggested_display_precision=2, json_attributes_topic=schedule,
                   json_attributes_template="{{ {'plan_id': value_json.plan_id, 'created_at': value_json.created_at, "
                   "'baseline_revenue': value_json.baseline_revenue | default(None), "
                   "'slots': value_json.slots | length} | tojson }}"),
            b.make("sensor", "revenue_today", "Realised revenue today", (RENDERER,), state_topic=b.topic(REVENUE),
                   value_template=_when_currency("realised_revenue", money), device_class="monetary",
                   state_class="total", unit_of_measurement=money, suggested_display_precision=2,
                   last_reset_value_template="{{ value_json.day_start }}", json_attributes_topic=b.topic(REVENUE),
                   json_attributes_template="{{ {'derived': 'integral of stored telemetry x price, as the "
                   "dashboard', 'since': value_json.day_start, 'until': value_json.until | default(None), "
                   "'samples': value_json.samples | default(0), "
                   "'unpriced_energy_kwh': value_json.unpriced_energy_kwh | default(0)} | tojson }}"),
        ]
    out += [
        b.make("sensor", "planner_status", "Planner status", (PLANNER,),
               state_topic=wiring.status_topic(PLANNER), value_template="{{ value_json.state }}",
               entity_category="diagnostic", json_attributes_topic=wiring.status_topic(PLANNER),
               json_attributes_template="{{ {'reason': value_json.reason | default(''), "
               f"'note': (value_json.details | default({{}})).get('{battery}', '')}} | tojson }}}}"),
        b.make("sensor", "last_request", "Last control request", (GATEWAY,), state_topic=b.topic(REQUEST_RESULT),
               value_template="{{ value_json.outcome }}", entity_category="diagnostic",
               json_attributes_topic=b.topic(REQUEST_RESULT),
               json_attributes_template="{{ {'request': value_json.request, 'at': value_json.ts, "
               "'source': value_json.source | default('homeassistant'), "
               "'status': value_json.status | default(202), 'error': value_json.error | default(''), "
               "'command_id': value_json.command_id | default(None), 'text': value_json.text | default(None)} "
               "| tojson }}"),
        b.make("select", "control_mode", "Control mode", (GATEWAY, SELF), command_topic=b.topic(MODE_REQUEST),
               command_template='{"mode": "{{ value }}"}', state_topic=outlook,
               value_template="{{ value_json.control_mode }}", options=list(MODES), icon="mdi:steering"),
    ]
    if spec is not None and spec.max_discharge_kw + spec.max_charge_kw > 0:
        out.append(b.make(
            "number", "power_setpoint", "Manual power setpoint", (GATEWAY,), command_topic=b.topic(POWER_REQUEST),
            command_template='{"power_kw": {{ value }}}', state_topic=state,
            value_template="{{ value_json.power_kw | default(0) }}", min_value=-spec.max_charge_kw,
            max_value=spec.max_discharge_kw, step=SETPOINT_STEP_KW, mode="box", unit_of_measurement="kW",
            device_class="power", icon="mdi:knob",
        ))
    out.append(b.make("button", "replan", "Re-plan now", (PLANNER,), command_topic=b.topic(REPLAN_REQUEST),
                      payload_press='{"reason": "Home Assistant button"}', icon="mdi:refresh"))
    out += [_alarm_entity(b, rule_id, title) for rule_id, title in ALARM_RULES if rule_id in facts.alarm_rules]
    return out


def _alarm_entity(b: _Builder, rule_id: str, title: str) -> EntityConfig:
    """The problem sensor of one alarm rule: its state and attributes straight from the retained alarm topic."""
    topic = b.wiring.topic(ALARM, battery=b.battery, rule=rule_id)
    return b.make(
        "binary_sensor", f"alarm_{rule_id}", f"Alarm: {title}", (ALARMS,), state_topic=topic,
        value_template="{{ 'ON' if value_json.state == 'raised' else 'OFF' }}", payload_on="ON", payload_off="OFF",
        device_class="problem", json_attributes_topic=topic,
        json_attributes_template="{{ {'severity': value_json.severity, 'message': value_json.message, "
        "'since': value_json.since, 'value': value_json.value | default(None), "
        "'threshold': value_json.threshold | default(None), 'unit': value_json.unit | default(''), "
        "'raised_at': value_json.raised_at | default(None)} | tojson }}",
    )


def node_entity(node: str, wiring: Wiring) -> EntityConfig:
    """The connectivity sensor of one node, on the system device: on unless its status says offline."""
    status = wiring.status_topic(node)
    config = DiscoveryConfig(
        name=node,
        unique_id=unique_id("node", node),
        object_id=entity_object_id(SYSTEM_DEVICE, node),
        device=system_device(wiring),
        origin=origin(wiring),
        qos=1,
        state_topic=status,
        value_template="{{ 'OFF' if value_json.state == 'offline' else 'ON' }}",
        payload_on="ON",
        payload_off="OFF",
        device_class="connectivity",
        entity_category="diagnostic",
        json_attributes_topic=status,
        json_attributes_template="{{ {'state': value_json.state, 'reason': value_json.reason | default(''), "
        "'version': value_json.version | default('')} | tojson }}",
    )
    return EntityConfig("binary_sensor", SYSTEM_DEVICE, node, config)


__all__ = [
    "ALARM_RULES",
    "ALARM_RULE_IDS",
    "BATTERY_ENTITIES",
    "MODES",
    "BatteryFacts",
    "EntityConfig",
    "battery_entities",
    "node_entity",
]
