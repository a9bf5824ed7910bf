"""A device profile: how one device's own MQTT dialect maps to this project's battery topics (pure: parse, validate
and bind; the only I/O is reading the file it is given).

A profile is a TOML (or JSON) file validated by strict Structs: an unknown key is an error, so a typo never becomes
a silent default, and every problem names its field path, e.g.
``victron.toml: readings.power.unit: Expected `'W' | 'kW'`, got `'Watt'```. The bridge exits 2 with that line.

What a profile says (``nodes/bridge/profiles/*.toml`` are complete examples):

* ``encoding``: how the device encodes a value: ``value_json`` (``{"value": x}``, Victron's dbus-flashmq),
  ``scalar`` (the bare number or text, SolarAssistant) or ``json`` (one JSON object, values at a dotted ``path``).
* ``variables``: the parts of the topics that differ per installation (``{portal_id}``, ``{device}``), each with
  its doc and an optional default; set from ``BESS_BRIDGE_PORTAL_ID``, ``BESS_BRIDGE_DEVICE`` or
  ``BESS_BRIDGE_VARS=name=value,...``.
* ``readings``: where the state of charge (``soc``, required) and the power (``power``) are published, in which unit,
  and for power which direction is positive.
* ``writes``: what to publish for a ``charge``, a ``discharge`` and the ``idle`` command (the device's own safe mode,
  self-consumption on most hybrids): literal ``value`` steps and ``setpoint`` steps (the command's power in
  ``W``, ``kW`` or ``percent`` of the spec's maximum, signed when ``positive`` is given).
* ``keepalive``: a message the device needs periodically to keep publishing (Victron's ``R/<portal id>/keepalive``).
* ``spec``: defaults for the battery's BatterySpec; the ``BESS_BRIDGE_*`` settings override them.
* ``device_account``: what the device itself may publish and read on this project's broker in secure mode
  (``BESS_MQTT_AUTH=1``: its own broker user), as topic filters in its own namespace (Victron's
  ``N/{portal_id}/#``); absent: exactly the profile's topics (:mod:`nodes.bridge.acl`).
* ``vendor``, ``description``, ``verified``: for people: what was checked against the vendor's documentation.
"""

from __future__ import annotations

import json
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from nodes.contract.names import ID_PATTERN, ID_REGEX

Encoding = Literal["value_json", "scalar", "json"]
SocUnit = Literal["%", "kWh", "Wh"]
PowerUnit = Literal["W", "kW"]
SetpointUnit = Literal["W", "kW", "percent"]
Direction = Literal["charge", "discharge"]
Action = Literal["charge", "discharge", "idle"]
Seconds = Annotated[float, Meta(gt=0.0, le=86_400.0)]
Template = Annotated[str, Meta(min_length=1, max_length=512)]
#: a topic filter template (``N/{portal_id}/#``): a template that may have MQTT wildcards
FilterTemplate = Annotated[str, Meta(min_length=1, max_length=512)]
DocText = Annotated[str, Meta(max_length=4000)]

#: Where the shipped profiles live (``BESS_BRIDGE_PROFILE=victron`` is ``profiles/victron.toml``).
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
#: A shipped profile is named like any id of the system (its file is ``profiles/<name>.toml``).
SHIPPED_NAME = ID_PATTERN
#: Largest profile file read: a profile is a page of settings, not a data file.
MAX_PROFILE_BYTES = 256 * 1024


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field path."""


class Variable(Struct, kw_only=True, forbid_unknown_fields=True):
    """A part of the device's topics that differs per installation."""

    doc: DocText
    default: Annotated[str, Meta(min_length=1, max_length=256)] | None = None


class SocReading(Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the device publishes its state of charge."""

    topic: Template
    #: a dotted path into the JSON object (``json`` encoding only): ``battery.soc``, ``batteries.0.soc``
    path: str = ""
    unit: SocUnit
    #: multiplies the raw number first (a device that reports tenths of a percent: 0.1)
    scale: float = 1.0


class PowerReading(Struct, kw_only=True, forbid_unknown_fields=True):
    """Where the device publishes the battery's power, and which direction is positive."""

    topic: Template
    path: str = ""
    unit: PowerUnit
    #: what a positive number means on the device (this project's power_kw is + discharging)
    positive: Direction
    scale: float = 1.0


class Readings(Struct, kw_only=True, forbid_unknown_fields=True):
    """The device values the bridge turns into Telemetry."""

    soc: SocReading
    power: PowerReading | None = None


class WriteStep(Struct, kw_only=True, forbid_unknown_fields=True):
    """One value published to the device: a literal ``value`` or the command's ``setpoint``."""

    topic: Template
    value: str | int | float | bool | None = None
    setpoint: SetpointUnit | None = None
    #: for a setpoint: the direction a positive number asks for (absent: the magnitude, unsigned)
    positive: Direction | None = None
    #: ``json`` encoding: where the value goes in the object; steps on one topic make one message
    path: str = ""


class Writes(Struct, kw_only=True, forbid_unknown_fields=True):
    """What the bridge publishes for each command action."""

    charge: Annotated[list[WriteStep], Meta(min_length=1, max_length=16)]
    discharge: Annotated[list[WriteStep], Meta(min_length=1, max_length=16)]
    idle: Annotated[list[WriteStep], Meta(min_length=1, max_length=16)]
    #: re-send the current writes this often (a device with its own watchdog); absent: only when they change
    refresh_s: Seconds | None = None

    def steps(self, action: Action) -> list[WriteStep]:
        """The steps of one action."""
        return {"charge": self.charge, "discharge": self.discharge, "idle": self.idle}[action]


class Keepalive(Struct, kw_only=True, forbid_unknown_fields=True):
    """A message the device needs periodically, or it stops publishing."""

    topic: Template
    payload: Annotated[str, Meta(max_length=1024)] = ""
    #: sent once at start and after every reconnect instead of ``payload`` (absent: ``payload``)
    first_payload: Annotated[str, Meta(max_length=1024)] | None = None
    interval_s: Seconds


class SpecDefaults(Struct, kw_only=True, forbid_unknown_fields=True):
    """Defaults for the BatterySpec the bridge publishes (the ``BESS_BRIDGE_*`` settings override each)."""

    capacity_kwh: float | None = None
    soc_min_kwh: float | None = None
    soc_max_kwh: float | None = None
    max_charge_kw: float | None = None
    max_discharge_kw: float | None = None
    roundtrip_efficiency: float | None = None


class DeviceAccount(Struct, kw_only=True, forbid_unknown_fields=True):
    """What the device itself may do on this project's broker in secure mode (its own user, whose ACL is these
    filters): everything it publishes and subscribes to, in its own namespace. A device denied a publish is not
    told (mosquitto drops it, and closes the connection after a denied QoS 1 publish), so a device that
    publishes more than the bridge reads (a GX's full publish) needs its whole namespace here."""

    #: what it publishes: must cover every reading topic
    publishes: Annotated[list[FilterTemplate], Meta(min_length=1, max_length=16)]
    #: what it may read: must cover every write and the keep-alive; absent: exactly those (a read grant is checked
    #: per delivered message, so a device that subscribes to more simply gets only these)
    reads: Annotated[list[FilterTemplate], Meta(min_length=1, max_length=16)] | None = None


class Profile(Struct, kw_only=True, forbid_unknown_fields=True):
    """One device dialect."""

    name: Annotated[str, Meta(pattern=ID_REGEX)]
    vendor: Annotated[str, Meta(min_length=1, max_length=200)]
    description: DocText = ""
    verified: DocText = ""
    encoding: Encoding
    #: the device counts as offline when none of its topics carried a message for this long
    stale_after_s: Seconds = 120.0
    variables: dict[Annotated[str, Meta(pattern="^[a-z][a-z0-9_]{0,31}$")], Variable] = msgspec.field(
        default_factory=dict
    )
    keepalive: Keepalive | None = None
    readings: Readings
    writes: Writes
    spec: SpecDefaults = msgspec.field(default_factory=SpecDefaults)
    #: the device's own broker user in secure mode; absent: exactly the profile's topics
    device_account: DeviceAccount | None = None


# -- loading ------------------------------------------------------------------------------------------------


def _where(exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected ... - at `$.readings.soc.unit``` as ``readings.soc.unit: Expected ...``."""
    message = str(exc)
    text, sep, path = message.rpartition(" - at `$")
    if not sep:
        return f"(top level): {message}"
    return f"{path.rstrip('`').lstrip('.') or '(top level)'}: {text}"


def parse_profile(text: str, *, fmt: Literal["toml", "json"], source: str) -> Profile:
    """A validated Profile from TOML or JSON text; raises :class:`ProfileError` naming ``source`` and the field."""
    try:
        raw = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ProfileError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: (top level): expected a table of settings")
    try:
        profile = msgspec.convert(raw, Profile)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"{source}: {_where(exc)}") from None
    problems = profile_problems(profile)
    if problems:
        raise ProfileError(f"{source}: {problems[0]}")
    return profile


def resolve_source(value: str) -> Path:
    """The file behind ``BESS_BRIDGE_PROFILE``: a shipped profile's name (``victron``) or a path."""
    if SHIPPED_NAME.fullmatch(value):
        path = PROFILES_DIR / f"{value}.toml"
        if not path.exists():
            shipped = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
            raise ProfileError(f"no shipped profile {value!r} (shipped: {shipped}); or give a path to a .toml/.json")
        return path
    return Path(value).expanduser()


def load_profile(value: str) -> Profile:
    """Load ``BESS_BRIDGE_PROFILE`` (a shipped name or a path to a .toml or .json file)."""
    path = resolve_source(value)
    if path.suffix not in (".toml", ".json"):
        raise ProfileError(f"{path}: a profile is a .toml or .json file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_PROFILE_BYTES} bytes: not a profile")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None
    return parse_profile(text, fmt="toml" if path.suffix == ".toml" else "json", source=path.name)


# -- cross-field rules --------------------------------------------------------------------------------------


def template_names(template: str) -> list[str]:
    """The ``{variable}`` names of a topic template; ValueError for a malformed one (``{``, ``{x:>3}``, ``{}``)."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"{{{name}}} must be a plain variable name")
        names.append(name)
    return names


def _topics(profile: Profile) -> Iterator[tuple[str, str]]:
    """``(field path, template)`` of every topic in the profile."""
    yield "readings.soc.topic", profile.readings.soc.topic
    if profile.readings.power is not None:
        yield "readings.power.topic", profile.readings.power.topic
    for action in ("charge", "discharge", "idle"):
        for index, step in enumerate(profile.writes.steps(action)):
            yield f"writes.{action}[{index}].topic", step.topic
    if profile.keepalive is not None:
        yield "keepalive.topic", profile.keepalive.topic


def filter_problems(where: str, template: str, variables: Mapping[str, Variable]) -> list[str]:
    """Why a ``device_account`` filter template cannot be one (empty when it can): a topic filter (``+`` a whole
    level, ``#`` only the whole last one) with declared variables that starts with a plain level, so that it
    stays in the device's namespace (never ``#``, ``+/...`` or ``$SYS``)."""
    try:
        names = template_names(template)
    except ValueError as exc:
        return [f"{where}: {template!r} is not a topic filter template ({exc})"]
    found = [f"{where}: {{{name}}} is not one of the profile's variables ({', '.join(sorted(variables)) or 'none'})"
             for name in names if name not in variables]
    levels = template.split("/")
    for index, level in enumerate(levels):
        if not level:
            found.append(f"{where}: {template!r} has an empty level")
        elif ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            found.append(f"{where}: {template!r}: '+' is a whole level and '#' only the whole last one")
    if levels[0] in ("+", "#") or levels[0].startswith("$"):
        found.append(f"{where}: {template!r} must start with a plain level of the device's namespace "
                     "(never '#', '+' or '$')")
    return found


def _path_problem(where: str, path: str, encoding: Encoding) -> str | None:
    if encoding == "json" and not path:
        return f"{where}.path: the json encoding needs the value's path in the object (e.g. battery.soc)"
    if encoding != "json" and path:
        return f"{where}.path: only the json encoding has paths (this profile's encoding is {encoding})"
    if path and not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", path):
        return f"{where}.path: {path!r} must be names (or list indices) joined by '.'"
    return None


def profile_problems(profile: Profile) -> list[str]:
    """Rules the Structs cannot express, each with its field path; empty when the profile is consistent."""
    found: list[str] = []
    for where, template in _topics(profile):
        try:
            names = template_names(template)
        except ValueError as exc:
            found.append(f"{where}: {template!r} is not a topic template ({exc})")
            continue
        for name in names:
            if name not in profile.variables:
                found.append(f"{where}: {{{name}}} is not one of the profile's variables "
                             f"({', '.join(sorted(profile.variables)) or 'none declared'})")
        if "+" in template or "#" in template:
            found.append(f"{where}: {template!r} has a wildcard: name one topic (variables fill the parts)")
    readings = [("readings.soc", profile.readings.soc.path)]
    if profile.readings.power is not None:
        readings.append(("readings.power", profile.readings.power.path))
    for where, path in readings:
        problem = _path_problem(where, path, profile.encoding)
        if problem:
            found.append(problem)
    for action in ("charge", "discharge", "idle"):
        for index, step in enumerate(profile.writes.steps(action)):
            where = f"writes.{action}[{index}]"
            if (step.value is None) == (step.setpoint is None):
                found.append(f"{where}: give exactly one of value and setpoint")
            if step.positive is not None and step.setpoint is None:
                found.append(f"{where}.positive: only a setpoint has a sign")
            if action == "idle" and step.setpoint is not None:
                found.append(f"{where}.setpoint: the idle write has no power: give a value")
            if step.setpoint == "percent" and step.positive is not None:
                found.append(f"{where}.positive: a percent setpoint is a magnitude of the spec's maximum")
            problem = _path_problem(where, step.path, profile.encoding)
            if problem:
                found.append(problem)
    if profile.device_account is not None:
        for kind in ("publishes", "reads"):
            for index, template in enumerate(getattr(profile.device_account, kind) or []):
                found.extend(filter_problems(f"device_account.{kind}[{index}]", template, profile.variables))
    return found


# -- binding ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoundProfile:
    """A profile with its variables filled in: every topic concrete."""

    profile: Profile
    values: Mapping[str, str]

    def topic(self, template: str) -> str:
        """A template with the variables filled in."""
        return template.format_map(self.values)


def value_problems(name: str, value: str) -> list[str]:
    """``[]`` when ``value`` can fill a topic variable (no wildcards, no empty levels)."""
    if not value or "+" in value or "#" in value or value.startswith("/") or value.endswith("/"):
        return [f"variable {name}={value!r}: must be non-empty, without '+', '#' or a leading/trailing '/'"]
    if any(char.isspace() or not char.isprintable() for char in value):
        # no id of a device has one, and the broker's ACL file (one filter a line) could not hold it
        return [f"variable {name}={value!r}: must be without spaces or control characters"]
    return []


def bind(profile: Profile, given: Mapping[str, str], *, settings: Mapping[str, str]) -> BoundProfile:
    """Fill the profile's variables from ``given`` (else their defaults); ``settings`` names the setting that sets
    each variable, for the error message. Raises :class:`ProfileError` for a missing, unknown or bad value."""
    values: dict[str, str] = {}
    unknown = sorted(set(given) - set(profile.variables))
    if unknown:
        raise ProfileError(f"profile {profile.name} has no variable {unknown[0]!r} "
                           f"(its variables: {', '.join(sorted(profile.variables)) or 'none'})")
    for name, variable in profile.variables.items():
        value = given.get(name, variable.default)
        if value is None:
            setting = settings.get(name, f"BESS_BRIDGE_VARS={name}=...")
            raise ProfileError(f"{setting}: profile {profile.name} needs {name}: {variable.doc}")
        for problem in value_problems(name, value):
            raise ProfileError(problem)
        values[name] = value
    return BoundProfile(profile, values)


__all__ = [
    "MAX_PROFILE_BYTES",
    "PROFILES_DIR",
    "Action",
    "BoundProfile",
    "DeviceAccount",
    "Direction",
    "Encoding",
    "Keepalive",
    "PowerReading",
    "Profile",
    "ProfileError",
    "Readings",
    "SocReading",
    "SpecDefaults",
    "Variable",
    "WriteStep",
    "Writes",
    "bind",
    "filter_problems",
    "load_profile",
    "parse_profile",
    "profile_problems",
    "resolve_source",
    "template_names",
]
