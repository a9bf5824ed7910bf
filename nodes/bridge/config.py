"""The bridge's settings (``BESS_BRIDGE_*``, ``BESS_MAX_LEASE_S``, ``BESS_MAX_OPERATOR_LEASE_S``).

``BESS_BRIDGE_PROFILE`` names the device dialect: a shipped profile (``victron``, ``solarassistant``,
``generic-json``: ``nodes/bridge/profiles/<name>.toml``) or a path to your own ``.toml``/``.json``. Its variables
come from ``BESS_BRIDGE_PORTAL_ID`` (``{portal_id}``), ``BESS_BRIDGE_DEVICE`` (``{device}``) and
``BESS_BRIDGE_VARS=name=value,...`` (any). The battery's spec is the profile's ``[spec]`` overridden by
``BESS_BRIDGE_CAPACITY_KWH``, ``_SOC_MIN_KWH``, ``_SOC_MAX_KWH``, ``_MAX_CHARGE_KW``, ``_MAX_DISCHARGE_KW`` and
``_ROUNDTRIP_EFFICIENCY``; the SOC limits default to 0 and the capacity, the power limits must be known (a device
limit the bridge does not know is not one it can refuse beyond). The device's topics are on the same broker as this
project's (``BESS_MQTT_*``); a device with its own broker (a Victron GX) is bridged into it by mosquitto (README).
Every problem, the profile's included, is one line and exit 2 at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

from nodes.bridge.acl import broker_topics
from nodes.bridge.profile import BoundProfile, Profile, ProfileError, bind, load_profile
from nodes.contract.messages import BatterySpec
from nodes.contract.topics import id_problems
from nodes.runtime.config import MqttSettings

#: The setting behind each variable that has its own (the others: BESS_BRIDGE_VARS).
VARIABLE_SETTINGS = {"portal_id": "BESS_BRIDGE_PORTAL_ID", "device": "BESS_BRIDGE_DEVICE"}
SPEC_FIELDS = ("capacity_kwh", "soc_min_kwh", "soc_max_kwh", "max_charge_kw", "max_discharge_kw",
               "roundtrip_efficiency")


@dataclass(frozen=True)
class Device:
    """Everything the bridge needs of its device, checked: the bound profile and the battery's spec."""

    bound: BoundProfile
    spec: BatterySpec

    @property
    def profile(self) -> Profile:
        """The profile."""
        return self.bound.profile


class BridgeConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_BRIDGE_*`` settings of the device bridge."""

    bridge_profile: str = ""
    #: the battery id the device appears as (``battery/<id>/...``; deploy/up does not simulate it then)
    bridge_battery: str = "battery-1"
    bridge_portal_id: str | None = None
    bridge_device: str | None = None
    bridge_vars: list[str] = msgspec.field(default_factory=list)
    bridge_capacity_kwh: float | None = None
    bridge_soc_min_kwh: float | None = None
    bridge_soc_max_kwh: float | None = None
    bridge_max_charge_kw: float | None = None
    bridge_max_discharge_kw: float | None = None
    bridge_roundtrip_efficiency: float | None = None
    #: how often the device's latest values are published as Telemetry while it is live
    bridge_telemetry_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    #: the longest autopilot (planner) lease obeyed, from arrival (the simulator's rule and setting)
    max_lease_s: float = 600.0
    #: the longest lease of any other source
    max_operator_lease_s: float = 86_400.0

    def variables(self) -> dict[str, str]:
        """The variable values given: BESS_BRIDGE_VARS, then the dedicated settings (which win)."""
        values: dict[str, str] = {}
        for item in self.bridge_vars:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ProfileError(f"BESS_BRIDGE_VARS: {item!r} is not name=value")
            values[name.strip()] = value.strip()
        if self.bridge_portal_id is not None:
            values["portal_id"] = self.bridge_portal_id
        if self.bridge_device is not None:
            values["device"] = self.bridge_device
        return values

    def device(self) -> Device:
        """Load and bind the profile and build the spec; raises ProfileError (one line) on any problem."""
        if not self.bridge_profile:
            raise ProfileError("BESS_BRIDGE_PROFILE: not set: name a shipped profile (victron, solarassistant, "
                               "generic-json) or give a path to a .toml/.json profile")
        try:
            profile = load_profile(self.bridge_profile)
        except ProfileError as exc:
            raise ProfileError(f"BESS_BRIDGE_PROFILE: {exc}") from None
        bound = bind(profile, self.variables(), settings=VARIABLE_SETTINGS)
        broker_topics(bound)  # a device_account that leaves out a topic of the profile: refused here, in any mode
        return Device(bound, self.spec(profile))

    def spec(self, profile: Profile) -> BatterySpec:
        """The profile's spec defaults with the BESS_BRIDGE_* overrides, validated like a wire message."""
        values: dict[str, float] = {}
        for name in SPEC_FIELDS:
            given = getattr(self, f"bridge_{name}")
            value = given if given is not None else getattr(profile.spec, name)
            if value is not None:
                values[name] = value
        for name in ("capacity_kwh", "max_charge_kw", "max_discharge_kw"):
            if name not in values:
                raise ProfileError(f"BESS_BRIDGE_{name.upper()}: profile {profile.name} does not give the "
                                   f"battery's {name}: set it")
        values.setdefault("soc_min_kwh", 0.0)
        values.setdefault("soc_max_kwh", values["capacity_kwh"])
        try:
            spec = msgspec.convert(values, BatterySpec)
        except msgspec.ValidationError as exc:
            raise ProfileError(f"battery spec (profile [spec] and BESS_BRIDGE_*): {exc}") from None
        problems = spec.problems()
        if problems:
            raise ProfileError(f"battery spec (profile [spec] and BESS_BRIDGE_*): {problems[0]}")
        return spec

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2, one line)."""
        found = [f"BESS_BRIDGE_BATTERY: {p}" for p in id_problems(self.bridge_battery, "battery")]
        if not 0 < self.max_lease_s <= self.max_operator_lease_s:
            found.append("BESS_MAX_LEASE_S must be > 0 and at most BESS_MAX_OPERATOR_LEASE_S")
        try:
            self.device()
        except ProfileError as exc:
            found.append(str(exc))
        return found


__all__ = ["SPEC_FIELDS", "VARIABLE_SETTINGS", "BridgeConfig", "Device"]
