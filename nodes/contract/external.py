"""Topics outside this project's tree that a device bridge reads or writes: each shipped profile's dialect.

They are not :class:`~nodes.contract.topics.Topic` declarations: the device owns their names and payloads, and a
profile (``nodes/bridge/profiles/*.toml``) is where the bridge learns them. They are listed here so that
``topics.md`` names every topic the system touches; ``tests/unit/test_bridge_profile.py`` fails when a shipped
profile uses a topic this list does not name, or this list names one no profile uses. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True)
class ExternalTopic:
    """One topic of a device's own dialect, as a template with the profile's ``{variables}``."""

    profile: str
    template: str
    direction: Literal["device -> bridge", "bridge -> device"]
    payload: str
    doc: str


_VICTRON = "victron"
_SA = "solarassistant"
_JSON = "generic-json"

EXTERNAL_TOPICS: Final[tuple[ExternalTopic, ...]] = (
    ExternalTopic(_VICTRON, "N/{portal_id}/system/0/Dc/Battery/Soc", "device -> bridge", '`{"value": 87.5}`',
                  "state of charge in % (of BESS_BRIDGE_CAPACITY_KWH); `{\"value\": null}` or an empty payload: "
                  "unknown"),
    ExternalTopic(_VICTRON, "N/{portal_id}/system/0/Dc/Battery/Power", "device -> bridge", '`{"value": -2000}`',
                  "battery power in W, + charging (the bridge flips it: power_kw 2.0)"),
    ExternalTopic(_VICTRON, "R/{portal_id}/keepalive", "bridge -> device", "empty",
                  "every 30 s (QoS 0): makes dbus-flashmq publish every value; it stops 60 s after the last one"),
    ExternalTopic(_VICTRON, "W/{portal_id}/settings/0/Settings/CGwacs/AcPowerSetPoint", "bridge -> device",
                  '`{"value": 5000}`',
                  "ESS grid setpoint in W, + import: charge X kW = +X*1000, discharge X kW = -X*1000, idle 0 "
                  "(self-consumption); not retained, QoS 1"),
    ExternalTopic(_SA, "solar_assistant/{device}/battery_state_of_charge/state", "device -> bridge", "`87`",
                  "state of charge in %, plain text"),
    ExternalTopic(_SA, "solar_assistant/{device}/battery_power/state", "device -> bridge", "`-2000`",
                  "battery power in W, + charging (assumed; see the profile)"),
    ExternalTopic(_SA, "solar_assistant/{inverter}/work_mode_priority/set", "bridge -> device",
                  "`Battery first` / `Grid first` / `Load first`",
                  "Growatt work mode: charge, discharge, idle (self-consumption)"),
    ExternalTopic(_SA, "solar_assistant/{inverter}/battery_first_grid_charge/set", "bridge -> device", "`Enabled`",
                  "with a charge: the battery may charge from the grid"),
    ExternalTopic(_SA, "solar_assistant/{inverter}/battery_first_charge_rate/set", "bridge -> device", "`40`",
                  "with a charge: the charge power in % of BESS_BRIDGE_MAX_CHARGE_KW"),
    ExternalTopic(_SA, "solar_assistant/{inverter}/grid_first_discharge_rate/set", "bridge -> device", "`40`",
                  "with a discharge: the discharge power in % of BESS_BRIDGE_MAX_DISCHARGE_KW"),
    ExternalTopic(_JSON, "{prefix}/state", "device -> bridge", '`{"battery": {"soc": 55.5, "power_w": -1200}}`',
                  "one JSON object: soc in %, power in W + discharging (paths set in the profile)"),
    ExternalTopic(_JSON, "{prefix}/set", "bridge -> device", '`{"mode": "charge", "power_w": 5000}`',
                  "one JSON object per command; idle: `{\"mode\": \"idle\", \"power_w\": 0}`"),
)
"""Every foreign topic of the shipped profiles, in profile order."""

__all__ = ["EXTERNAL_TOPICS", "ExternalTopic"]
