"""The parts every discovery config shares (pure): device and origin blocks, availability, ids and topics.

* **Device**: one per battery (``identifiers: ["bess_<battery>"]``, the battery id as its name, manufacturer and
  model when the battery's spec names them, this project's version, ``configuration_url`` = the battery's
  dashboard page), and one for the system (``bess_system``) that holds the nodes' connectivity sensors.
* **Ids**: ``unique_id`` ``bess_<battery>_<key>`` (stable: it never depends on names, units or settings, so Home
  Assistant keeps an entity's history and customisations across restarts and re-publishes), ``object_id``
  ``<battery>_<key>`` with ``-`` as ``_`` (so the entity id is e.g. ``sensor.battery_1_soc_kwh``).
* **Availability**: an entity lists the status topic of every node that feeds it (``node/<name>/status``, whose
  last will is ``offline``), with ``availability_mode: all``: it is unavailable while any of them is offline.
  ``degraded`` counts as available (the node runs and its values are there; its status says what is wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodes.contract.discovery import HA_CONFIG, Availability, DeviceInfo, ExternalTopic, OriginInfo, object_id
from nodes.contract.messages import BatterySpec
from nodes.contract.topics import STATUS, Topic

#: Every config's ``origin.name`` and the prefix of every ``unique_id`` and device identifier.
ORIGIN = "bess"
#: The ``{device}`` level of the system device's configs (the nodes' connectivity sensors).
SYSTEM_DEVICE = "bess"
#: What a node status means for availability: only ``offline`` (the last will) makes an entity unavailable.
AVAILABLE_TEMPLATE = "{{ 'offline' if value_json.state == 'offline' else 'online' }}"


@dataclass(frozen=True)
class Wiring:
    """Where things are: the topic root, Home Assistant's prefix, which node feeds device values, the dashboard."""

    root: str
    prefix: str
    #: the node whose status says whether the batteries' own values are live (the simulator, a bridge), or None
    device_node: str | None
    #: the dashboard's base URL as Home Assistant's users reach it (no trailing slash)
    dashboard_url: str
    version: str
    #: batteries fed by another node than ``device_node`` (a bridged battery: ``{"battery-1": "bridge"}``)
    device_nodes: Mapping[str, str] = field(default_factory=dict)

    def device_node_of(self, battery: str) -> str | None:
        """The node whose status says whether this battery's own values are live."""
        return self.device_nodes.get(battery, self.device_node)

    @property
    def config_topic(self) -> ExternalTopic[Any]:
        """The discovery config topic under the configured prefix."""
        return HA_CONFIG.under(self.prefix)

    def topic(self, topic: Topic[Any], **params: str) -> str:
        """A concrete topic of ours under the root (a state, command or attributes topic of an entity)."""
        return topic.name(root=self.root, **params)

    def status_topic(self, node: str) -> str:
        """``<root>/node/<node>/status``."""
        return STATUS.name(root=self.root, node=node)


def unique_id(device: str, key: str) -> str:
    """The stable unique id of an entity: ``bess_<device>_<key>``."""
    return f"{ORIGIN}_{device}_{key}"


def entity_object_id(device: str, key: str) -> str:
    """The ``object_id`` (entity id part) of an entity: ``battery-1``, ``soc_kwh`` -> ``battery_1_soc_kwh``."""
    return object_id(device, key)


def battery_device(battery: str, spec: BatterySpec | None, wiring: Wiring) -> DeviceInfo:
    """The device block shared by every entity of ``battery``."""
    return DeviceInfo(
        identifiers=[f"{ORIGIN}_{battery}"],
        name=battery,
        manufacturer=spec.manufacturer if spec is not None else None,
        model=spec.model if spec is not None else None,
        sw_version=wiring.version,
        configuration_url=f"{wiring.dashboard_url}/battery/{battery}",
    )


def system_device(wiring: Wiring) -> DeviceInfo:
    """The device block of the system (the nodes' connectivity sensors)."""
    return DeviceInfo(identifiers=[f"{ORIGIN}_system"], name="BESS", model="nodes", sw_version=wiring.version,
                      configuration_url=f"{wiring.dashboard_url}/")


def origin(wiring: Wiring) -> OriginInfo:
    """The origin block: this project and its version."""
    return OriginInfo(name=ORIGIN, sw_version=wiring.version)


def availability(nodes: tuple[str, ...], wiring: Wiring) -> dict[str, Any]:
    """The availability keys for an entity fed by ``nodes`` (none: always available)."""
    entries = [Availability(topic=wiring.status_topic(node), value_template=AVAILABLE_TEMPLATE) for node in nodes]
    if not entries:
        return {}
    return {"availability": entries, "availability_mode": "all"}


__all__ = [
    "AVAILABLE_TEMPLATE",
    "ORIGIN",
    "SYSTEM_DEVICE",
    "Wiring",
    "availability",
    "battery_device",
    "entity_object_id",
    "origin",
    "system_device",
    "unique_id",
]
