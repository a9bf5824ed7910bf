"""Home Assistant's MQTT discovery topics: outside this project's topic root, under Home Assistant's own prefix.

Home Assistant reads entity configs from ``<prefix>/<component>/[<node_id>/]<object_id>/config`` (prefix
``homeassistant`` unless its MQTT integration is told otherwise) and announces itself with ``online`` /
``offline`` on ``<prefix>/status``. These topics are the contract with Home Assistant, not between our nodes, so
they are declared here once, as :class:`ExternalTopic` objects: a :class:`nodes.contract.topics.Topic` whose
first levels are the prefix (``BESS_HA_DISCOVERY_PREFIX``) instead of the topic root, and whose payload may be
plain text. The bus publishes and subscribes them like any topic; the broker ACL is derived from their roles.

The payload Structs hold exactly the discovery keys this project uses, each one checked in Home Assistant
2024.3.3's own schemas (``homeassistant/components/mqtt/{mixins,sensor,binary_sensor,number,select,button}.py``:
``MQTT_ENTITY_COMMON_SCHEMA``, ``MQTT_AVAILABILITY_LIST_SCHEMA``, ``MQTT_ENTITY_DEVICE_INFO_SCHEMA``,
``MQTT_ORIGIN_INFO_SCHEMA``, each platform's ``PLATFORM_SCHEMA_MODERN``); discovery drops unknown keys silently
(``extra=vol.REMOVE_EXTRA``), so a key that is not in those schemas would do nothing. Per-entity configs are the
form every Home Assistant since 2021 understands (device-based discovery needs 2024.11 or newer).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from nodes.contract.messages import ShortText, Text
from nodes.contract.names import ID_SHAPE, Role
from nodes.contract.topics import Topic, TopicError, check_root

P = TypeVar("P", bound=msgspec.Struct)

#: ``BESS_HA_DISCOVERY_PREFIX``: Home Assistant's discovery prefix (its MQTT integration's default).
DEFAULT_PREFIX = "homeassistant"
PREFIX_SETTING = "BESS_HA_DISCOVERY_PREFIX"

Template = Annotated[str, Meta(max_length=4000, description="a Home Assistant (Jinja2) template")]
TopicName = Annotated[str, Meta(max_length=1000, description="a concrete MQTT topic")]


@dataclass(frozen=True)
class ExternalTopic(Topic[P]):
    """A topic of another system's tree: its first levels are ``prefix``, not this project's topic root.

    ``name``, ``filter`` and ``parse`` ignore the bus's ``root`` and use ``prefix`` (move the tree with
    :meth:`under`). With ``text_field`` the payload is plain text (Home Assistant's ``online``), carried in that
    one string field of the payload Struct.
    """

    prefix: str = DEFAULT_PREFIX
    prefix_setting: str = PREFIX_SETTING
    text_field: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_root(self.prefix)

    def under(self, prefix: str) -> ExternalTopic[P]:
        """The same topic under another prefix (the configured ``BESS_HA_DISCOVERY_PREFIX``)."""
        return dataclasses.replace(self, prefix=check_root(prefix))

    @property
    def template(self) -> str:
        """The full template under the prefix, e.g. ``homeassistant/status``."""
        return f"{self.prefix}/{self.path}"

    def name(self, *, root: str = "", **params: str) -> str:
        """A concrete topic name under the prefix (``root`` is ignored: this topic is not under it)."""
        return super().name(root=self.prefix, **params)

    def filter(self, *, root: str = "", **fixed: str) -> str:
        """A subscription filter under the prefix."""
        return super().filter(root=self.prefix, **fixed)

    def parse(self, topic: str, *, root: str = "") -> dict[str, str] | None:
        """The parameters of a concrete topic under the prefix, or ``None``."""
        return super().parse(topic, root=self.prefix)

    def encode(self, message: P) -> bytes:
        """JSON, or the text of ``text_field``."""
        if self.text_field is None:
            return super().encode(message)
        return str(getattr(message, self.text_field)).encode()

    def decode(self, payload: bytes) -> P:
        """JSON, or plain text into ``text_field`` (validated like JSON: a wrong value is a ValidationError)."""
        if self.text_field is None:
            return super().decode(payload)
        return msgspec.convert({self.text_field: payload.decode("utf-8").strip()}, self.payload)


# -- payloads ------------------------------------------------------------------------------------------------------


class HaStatus(Struct, kw_only=True):
    """Home Assistant's birth and last will message (plain text on the wire)."""

    state: Literal["online", "offline"]


class Availability(Struct, kw_only=True, omit_defaults=True):
    """One entry of an entity's ``availability`` list (``MQTT_AVAILABILITY_LIST_SCHEMA``)."""

    topic: TopicName
    payload_available: ShortText = "online"
    payload_not_available: ShortText = "offline"
    value_template: Template | None = None


class DeviceInfo(Struct, kw_only=True, omit_defaults=True):
    """The ``device`` block (``MQTT_ENTITY_DEVICE_INFO_SCHEMA``): one per battery, shared by its entities."""

    identifiers: Annotated[list[ShortText], Meta(min_length=1, max_length=4)]
    name: ShortText
    manufacturer: ShortText | None = None
    model: ShortText | None = None
    sw_version: ShortText | None = None
    configuration_url: Text | None = None


class OriginInfo(Struct, kw_only=True, omit_defaults=True):
    """The ``origin`` block (``MQTT_ORIGIN_INFO_SCHEMA``): who published the config."""

    name: ShortText
    sw_version: ShortText | None = None
    support_url: Text | None = None


Component = Literal["sensor", "binary_sensor", "number", "select", "button"]
COMPONENTS: tuple[Component, ...] = ("sensor", "binary_sensor", "number", "select", "button")


class DiscoveryConfig(Struct, kw_only=True, omit_defaults=True):
    """One entity's discovery config: the common keys, then those of sensor, binary_sensor, number, select, button.

    Only the keys set are sent (``None`` means "not set": Home Assistant's default applies).
    """

    # common (MQTT_ENTITY_COMMON_SCHEMA + MQTT_AVAILABILITY_SCHEMA)
    name: ShortText
    unique_id: Annotated[str, Meta(max_length=200)]
    object_id: Annotated[str, Meta(max_length=200)] | None = None
    device: DeviceInfo | None = None
    origin: OriginInfo | None = None
    availability: Annotated[list[Availability], Meta(max_length=4)] | None = None
    availability_mode: Literal["all", "any", "latest"] | None = None
    entity_category: Literal["config", "diagnostic"] | None = None
    icon: ShortText | None = None
    enabled_by_default: bool | None = None
    json_attributes_topic: TopicName | None = None
    json_attributes_template: Template | None = None
    qos: Literal[0, 1, 2] | None = None
    # sensor / binary_sensor (MQTT_RO_SCHEMA and the platform's own keys)
    state_topic: TopicName | None = None
    value_template: Template | None = None
    device_class: ShortText | None = None
    state_class: Literal["measurement", "total", "total_increasing"] | None = None
    unit_of_measurement: ShortText | None = None
    suggested_display_precision: Annotated[int, Meta(ge=0, le=10)] | None = None
    last_reset_value_template: Template | None = None
    expire_after: Annotated[int, Meta(ge=1)] | None = None
    payload_on: ShortText | None = None
    payload_off: ShortText | None = None
    # number / select / button (MQTT_RW_SCHEMA, MQTT_BASE_SCHEMA and the platform's own keys)
    command_topic: TopicName | None = None
    command_template: Template | None = None
    retain: bool | None = None
    options: Annotated[list[ShortText], Meta(max_length=16)] | None = None
    min_value: float | None = msgspec.field(default=None, name="min")
    max_value: float | None = msgspec.field(default=None, name="max")
    step: Annotated[float, Meta(ge=0.001)] | None = None
    mode: Literal["auto", "box", "slider"] | None = None
    payload_press: ShortText | None = None


# -- the topics ----------------------------------------------------------------------------------------------------

_EXAMPLE_DEVICE = DeviceInfo(identifiers=["bess_battery-1"], name="battery-1", sw_version="0.1.0",
                             configuration_url="http://127.0.0.1:8050/battery/battery-1")

HA_CONFIG: ExternalTopic[DiscoveryConfig] = ExternalTopic(
    path="{component}/{device}/{entity}/config",
    payload=DiscoveryConfig,
    qos=1,
    retain=True,
    producers=(Role.HOMEASSISTANT,),
    consumers=(Role.HASS,),
    doc="One Home Assistant entity per retained config (`{device}` is the battery id, or `bess` for the "
    "connectivity sensors of the nodes; `{entity}` the entity's key). An empty retained payload removes the "
    "entity: when a battery's retained spec and telemetry are both cleared (the battery is gone for good), the "
    "homeassistant node clears every config of that battery. Re-published whenever Home Assistant announces "
    "itself on `<prefix>/status`.",
    example=DiscoveryConfig(
        name="State of charge",
        unique_id="bess_battery-1_soc_kwh",
        object_id="battery_1_soc_kwh",
        device=_EXAMPLE_DEVICE,
        origin=OriginInfo(name="bess", sw_version="0.1.0"),
        availability=[Availability(topic="bess/v1/node/simulator/status",
                                   value_template="{{ 'offline' if value_json.state == 'offline' else 'online' }}")],
        state_topic="bess/v1/battery/battery-1/telemetry",
        value_template="{{ value_json.soc_kwh }}",
        device_class="energy_storage",
        state_class="measurement",
        unit_of_measurement="kWh",
    ),
    example_params={"component": "sensor", "device": "battery-1", "entity": "soc_kwh"},
)

HA_STATUS: ExternalTopic[HaStatus] = ExternalTopic(
    path="status",
    payload=HaStatus,
    qos=1,
    retain=False,
    producers=(Role.HASS,),
    consumers=(Role.HOMEASSISTANT,),
    doc="Home Assistant's birth (`online`, when its MQTT integration starts) and last will (`offline`), as plain "
    "text. On `online` the homeassistant node publishes every config again, so a Home Assistant that lost its "
    "retained configs (a new broker, a cleared prefix) rebuilds every entity.",
    example=HaStatus(state="online"),
    text_field="state",
)

ALL_EXTERNAL_TOPICS: tuple[ExternalTopic[Any], ...] = (HA_CONFIG, HA_STATUS)

_SLUG = re.compile(r"[^a-z0-9_]+")


def object_id(*parts: str) -> str:
    """Home Assistant's entity id part for our parts (``battery-1``, ``soc_kwh`` -> ``battery_1_soc_kwh``)."""
    return _SLUG.sub("_", "_".join(parts).lower()).strip("_")


def check_prefix(prefix: str) -> str:
    """A valid discovery prefix (segments of ``[A-Za-z0-9_-]``), else :class:`TopicError`."""
    return check_root(prefix)


__all__ = [
    "ALL_EXTERNAL_TOPICS",
    "COMPONENTS",
    "DEFAULT_PREFIX",
    "HA_CONFIG",
    "HA_STATUS",
    "ID_SHAPE",
    "PREFIX_SETTING",
    "Availability",
    "Component",
    "DeviceInfo",
    "DiscoveryConfig",
    "ExternalTopic",
    "HaStatus",
    "OriginInfo",
    "TopicError",
    "check_prefix",
    "object_id",
]
