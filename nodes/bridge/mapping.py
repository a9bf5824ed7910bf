"""From a device's own payloads to this project's Telemetry (pure: no I/O, the clock passed in).

The units of the project are in its field names (``soc_kwh``, ``power_kw`` + discharging, grid side where the
device knows it); a device reports in its own units and signs, which its profile names:

* state of charge in ``%`` (of the capacity: ``kWh = % / 100 * capacity_kwh``), ``kWh`` or ``Wh``;
* power in ``W`` or ``kW``, positive for ``charge`` or ``discharge`` (``charge``: the sign is flipped).

A value is decoded as its profile's encoding says: ``value_json`` ``{"value": 42.5}`` (``{"value": null}``: not
available now), ``scalar`` ``42.5``, ``json`` an object with the value at a dotted path. An empty payload (how
dbus-flashmq says a device disappeared, and how MQTT clears a retained value) makes the value unknown. Anything
else that is not a finite number in range is a :class:`MappingError`: the bridge logs it (cut), counts it and
keeps the last good value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nodes.bridge.profile import BoundProfile, Encoding, PowerReading, SocReading
from nodes.contract.messages import Telemetry

#: The largest number a device may report and be believed (a power in W of a grid-scale battery is far below).
MAX_ABS_VALUE = 1e9


class MappingError(ValueError):
    """A payload that does not carry a usable value for its reading."""


#: A value the device said it does not have now (``{"value": null}``, an empty payload).
UNKNOWN = None


def _at_path(document: Any, path: str) -> Any:
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise MappingError(f"no {path!r} in the object (missing at {part!r})")
    return node


def decode_value(payload: bytes, encoding: Encoding, path: str = "") -> float | None:
    """The number a payload carries, or None when the device says it has none now."""
    if not payload.strip():
        return UNKNOWN
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MappingError("not UTF-8 text") from None
    raw: Any
    if encoding == "scalar":
        raw = text
    else:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise MappingError(f"not JSON: {exc}") from None
        if encoding == "value_json":
            if not isinstance(document, dict) or "value" not in document:
                raise MappingError('expected {"value": ...}')
            raw = document["value"]
        else:
            raw = _at_path(document, path)
    if raw is None:
        return UNKNOWN
    if isinstance(raw, bool):
        raise MappingError(f"expected a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise MappingError(f"expected a number, got {str(raw)[:40]!r}") from None
    if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
        raise MappingError(f"{value!r} is not a plausible reading")
    return value


def soc_kwh(value: float, reading: SocReading, capacity_kwh: float) -> float:
    """A device's state of charge in kWh (``%`` of ``capacity_kwh``, ``Wh`` / 1000, ``kWh``)."""
    scaled = value * reading.scale
    if reading.unit == "%":
        if not 0.0 <= scaled <= 100.0:
            raise MappingError(f"state of charge {scaled:g} % is outside 0..100")
        return scaled / 100.0 * capacity_kwh
    kwh = scaled / 1000.0 if reading.unit == "Wh" else scaled
    if kwh < 0:
        raise MappingError(f"state of charge {kwh:g} kWh is negative")
    return kwh


def power_kw(value: float, reading: PowerReading) -> float:
    """A device's power in kW, + discharging (this project's sign)."""
    kw = value * reading.scale / (1000.0 if reading.unit == "W" else 1.0)
    return (-kw if reading.positive == "charge" else kw) + 0.0  # + 0.0: no -0.0 on the wire


@dataclass
class DeviceReadings:
    """What the bridge knows of the device now: the last good values and when it last heard from it."""

    soc_kwh: float | None = None
    power_kw: float | None = None
    last_message_at: datetime | None = None

    def live(self, now: datetime, stale_after: timedelta) -> bool:
        """True when the device sent anything within ``stale_after``."""
        return self.last_message_at is not None and now - self.last_message_at <= stale_after


@dataclass
class Mapper:
    """The readings of one bound profile: which concrete topics carry what, and how to read them."""

    bound: BoundProfile
    capacity_kwh: float
    #: concrete topic -> the readings it carries (a json device carries several on one topic)
    topics: dict[str, list[SocReading | PowerReading]] = field(init=False)

    def __post_init__(self) -> None:
        readings = self.bound.profile.readings
        self.topics = {}
        for reading in (readings.soc, readings.power):
            if reading is not None:
                self.topics.setdefault(self.bound.topic(reading.topic), []).append(reading)

    def read(self, topic: str, payload: bytes, now: datetime, held: DeviceReadings) -> list[str]:
        """Apply one message to ``held``; the problems found (each reading of the topic independently)."""
        readings = self.topics.get(topic)
        if readings is None:
            return [f"{topic} is not a topic of profile {self.bound.profile.name}"]
        held.last_message_at = now
        problems: list[str] = []
        encoding = self.bound.profile.encoding
        for reading in readings:
            try:
                value = decode_value(payload, encoding, reading.path)
                if isinstance(reading, SocReading):
                    held.soc_kwh = None if value is None else soc_kwh(value, reading, self.capacity_kwh)
                else:
                    held.power_kw = None if value is None else power_kw(value, reading)
            except MappingError as exc:
                what = "soc" if isinstance(reading, SocReading) else "power"
                problems.append(f"{what}: {exc}")
        return problems


def telemetry(held: DeviceReadings, now: datetime, target: tuple[float, float] = (0.0, 0.0)) -> Telemetry | None:
    """The Telemetry to publish now, or None while the state of charge is unknown.

    ``target`` is ``(charge_kw, discharge_kw)`` of the command the bridge is carrying out.
    """
    if held.soc_kwh is None:
        return None
    return Telemetry(
        ts=now,
        soc_kwh=round(held.soc_kwh, 6),
        power_kw=None if held.power_kw is None else round(held.power_kw, 6),
        target_charge_kw=target[0],
        target_discharge_kw=target[1],
        # source left at the contract's default, "device": the battery's own feed, what the planner plans from
    )


__all__ = [
    "MAX_ABS_VALUE",
    "DeviceReadings",
    "Mapper",
    "MappingError",
    "decode_value",
    "power_kw",
    "soc_kwh",
    "telemetry",
]
