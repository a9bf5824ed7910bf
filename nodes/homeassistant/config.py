"""The homeassistant node's settings (``BESS_HA_*``; see :mod:`nodes.runtime.config`).

It also reads four settings of other nodes, so that what it shows agrees with them: ``BESS_DASHBOARD_PORT`` (the
dashboard link of every device, unless ``BESS_HA_DASHBOARD_URL`` says how Home Assistant's users reach it),
``BESS_PLANNER_ZONE`` (the prices of a battery whose plan names no zone), ``BESS_PLANNER_AUTOPILOT`` /
``BESS_PLANNER_AUTOPILOT_OFF`` (the control mode in force when no ControlMode is, as the planner decides it) and
``BESS_ALARMS`` (a rule disabled for a battery gets no alarm sensor).
"""

from __future__ import annotations

import msgspec

from nodes.alarms.settings import RULE_IDS, AlarmConfig, AlarmConfigError, parse_alarm_settings
from nodes.contract.discovery import DEFAULT_PREFIX, TopicError, check_prefix
from nodes.contract.messages import MAX_OUTLOOK_SLOTS
from nodes.contract.topics import id_problems
from nodes.runtime.config import MqttSettings

MAX_HA_BATTERIES = 5000
"""``BESS_HA_MAX_BATTERIES`` at most: 85,000 retained configs is already more than Home Assistant handles well."""


class HomeAssistantConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_HA_*`` settings of the homeassistant node."""

    #: Home Assistant's discovery prefix (its MQTT integration's setting; ``homeassistant`` by default)
    ha_discovery_prefix: str = DEFAULT_PREFIX
    #: the dashboard as Home Assistant's users reach it, e.g. ``http://bess.local:8050`` (unset: loopback)
    ha_dashboard_url: str | None = None
    dashboard_port: int = 8050
    #: the node whose status says whether the batteries' own values are live ("" when a real device feeds them)
    ha_device_node: str = "simulator"
    #: per-battery exceptions, ``battery=node`` (``battery-1=bridge``: a bridged battery's values are live while
    #: the bridge is); ``deploy/up`` sets it for the bridged battery
    ha_device_node_of: list[str] = msgspec.field(default_factory=list)
    #: the only batteries made into Home Assistant devices (empty: every battery that announced a spec; an id
    #: that only ever got telemetry, e.g. an HTTP write, gets none unless listed here)
    ha_batteries: list[str] = msgspec.field(default_factory=list)
    #: devices at most (each is ~17 retained discovery configs); beyond it the node reports degraded, saying so
    ha_max_batteries: int = 200
    #: how many upcoming slots the outlook (and the planned action's attributes) carry
    ha_outlook_slots: int = 6
    planner_zone: str = "de-lu"
    planner_autopilot: bool = False
    planner_autopilot_off: list[str] = msgspec.field(default_factory=list)
    #: the alarms node's rule settings (``BESS_ALARMS``): which rules each battery has
    alarms: str | None = None

    @property
    def device_nodes(self) -> dict[str, str]:
        """``BESS_HA_DEVICE_NODE_OF`` as ``{battery: node}`` (valid entries only; :meth:`problems` names the rest)."""
        pairs = (entry.partition("=") for entry in self.ha_device_node_of)
        return {battery: node for battery, sep, node in pairs if sep and battery and node}

    @property
    def dashboard_url(self) -> str:
        """The dashboard's base URL without a trailing slash."""
        return (self.ha_dashboard_url or f"http://127.0.0.1:{self.dashboard_port}").rstrip("/")

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found: list[str] = []
        try:
            check_prefix(self.ha_discovery_prefix)
        except TopicError as exc:
            found.append(f"BESS_HA_DISCOVERY_PREFIX: {exc}")
        if not self.dashboard_url.startswith(("http://", "https://")):
            found.append("BESS_HA_DASHBOARD_URL must start with http:// or https://")
        if self.ha_device_node:
            found += id_problems(self.ha_device_node, "BESS_HA_DEVICE_NODE")
        for entry in self.ha_device_node_of:
            battery, sep, node = entry.partition("=")
            if not sep:
                found.append(f"BESS_HA_DEVICE_NODE_OF: {entry!r} is not battery=node")
                continue
            found += id_problems(battery, "BESS_HA_DEVICE_NODE_OF battery")
            found += id_problems(node, "BESS_HA_DEVICE_NODE_OF node")
        for battery in self.ha_batteries:
            found += id_problems(battery, "BESS_HA_BATTERIES")
        if not 1 <= self.ha_max_batteries <= MAX_HA_BATTERIES:
            found.append(f"BESS_HA_MAX_BATTERIES must be 1 to {MAX_HA_BATTERIES}")
        if not 0 <= self.ha_outlook_slots <= MAX_OUTLOOK_SLOTS:
            found.append(f"BESS_HA_OUTLOOK_SLOTS must be 0 to {MAX_OUTLOOK_SLOTS}")
        found += id_problems(self.planner_zone, "BESS_PLANNER_ZONE")
        try:
            parse_alarm_settings(self.alarms)
        except AlarmConfigError as exc:
            found.append(f"BESS_ALARMS: {exc}")
        return found


def enabled_alarm_rules(alarms: AlarmConfig, battery: str) -> tuple[str, ...]:
    """The ids of the alarm rules enabled for ``battery`` (its alarm sensors), in the alarms node's order."""
    settings = alarms.for_battery(battery)
    return tuple(rule for rule in RULE_IDS if settings.rule(rule).enabled)


__all__ = ["HomeAssistantConfig", "enabled_alarm_rules", "parse_alarm_settings"]
