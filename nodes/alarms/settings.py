"""The alarm rules' settings: defaults for every battery, overrides per battery (``BESS_ALARMS``, JSON).

Why JSON in one variable: thirteen rules with two to four settings each would be fifty ``BESS_*`` variables,
times the batteries. One JSON document holds the site's defaults and each battery's differences::

    BESS_ALARMS='{"defaults": {"cell_temp_high": {"raise_above_c": 50, "clear_below_c": 45}},
                  "batteries": {"b2": {"telemetry_stale": {"stale_after_s": 300}}}}'

A battery's settings are the built-in defaults, then ``defaults``, then its own entry, merged per setting
(overriding ``raise_above_c`` keeps the rule's other settings). Strict like every config: an unknown rule or
setting, a wrong type or a clear threshold on the wrong side of its raise threshold is an error whose message
names the field (``BESS_ALARMS: batteries.b2.cell_temp_high.clear_below_c: ...``).

Timing of every rule (``raise_after_s``, ``clear_after_s``) and value hysteresis (raise at 55 °C, clear below
50 °C) are what keeps alarms from flapping; :mod:`nodes.alarms.state` applies them. Cell voltage defaults are an
LFP cell's window (2.5-3.65 V); set them for other chemistries (NMC: about 3.0-4.2 V).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from nodes.contract.alarms import SEVERITIES, Severity
from nodes.contract.names import ID_PATTERN, ID_RULE

VARIABLE = "BESS_ALARMS"
Seconds = Annotated[float, Meta(ge=0.0, le=30 * 86_400.0)]
Percent = Annotated[float, Meta(ge=0.0, le=100.0)]
Celsius = Annotated[float, Meta(ge=-100.0, le=200.0)]
Volts = Annotated[float, Meta(ge=0.0, le=10.0)]
Code = Annotated[str, Meta(min_length=1, max_length=64)]


class RuleSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What every rule has: on/off, severity, and how long a condition must hold before it is raised/cleared."""

    enabled: bool = True
    severity: Severity = "warning"
    raise_after_s: Seconds = 0.0
    """The condition must hold this long (on every evaluation) before the alarm is raised."""
    clear_after_s: Seconds = 0.0
    """The condition must be absent this long before the alarm is cleared."""

    def problems(self, name: str) -> list[str]:
        """Cross-field errors, each naming its field under ``name``."""
        return []


class SocLimitSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """SOC beyond a limit of the spec: raised beyond it by ``beyond_pct`` of the usable range, cleared within it."""

    raise_after_s: Seconds = 30.0
    clear_after_s: Seconds = 30.0
    beyond_pct: Percent = 1.0


class TelemetryStaleSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """No reading for more than ``stale_after_s``; the cell and SOC rules judge only readings younger than that."""

    severity: Severity = "critical"
    clear_after_s: Seconds = 10.0
    stale_after_s: Annotated[float, Meta(gt=0.0, le=86_400.0)] = 60.0


class CommandFollowSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The power is off the last command's (or idle, once its lease ended) by more than the tolerance for longer
    than ``raise_after_s``: the command was not followed within that time."""

    raise_after_s: Seconds = 60.0
    clear_after_s: Seconds = 30.0
    tolerance_pct: Annotated[float, Meta(gt=0.0, le=100.0)] = 5.0
    """Percent of the spec's larger power limit."""


class HighThresholdSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of a rule raised above one value and cleared below a lower one."""

    def problems(self, name: str) -> list[str]:
        raise_name, clear_name = _threshold_names(self)
        raise_at, clear_at = getattr(self, raise_name), getattr(self, clear_name)
        if clear_at > raise_at:
            return [f"{name}.{clear_name}: {clear_at:g} is above {raise_name} {raise_at:g}; the alarm could never "
                    "clear"]
        return []


class LowThresholdSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of a rule raised below one value and cleared above a higher one."""

    def problems(self, name: str) -> list[str]:
        raise_name, clear_name = _threshold_names(self)
        raise_at, clear_at = getattr(self, raise_name), getattr(self, clear_name)
        if clear_at < raise_at:
            return [f"{name}.{clear_name}: {clear_at:g} is below {raise_name} {raise_at:g}; the alarm could never "
                    "clear"]
        return []


def _threshold_names(settings: RuleSettings) -> tuple[str, str]:
    names = [f for f in settings.__struct_fields__ if f.startswith(("raise_above", "raise_below"))]
    clears = [f for f in settings.__struct_fields__ if f.startswith(("clear_above", "clear_below"))]
    return names[0], clears[0]


class CellTempHighSettings(HighThresholdSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The hottest cell above ``raise_above_c``, cleared below ``clear_below_c``."""

    severity: Severity = "critical"
    raise_after_s: Seconds = 10.0
    clear_after_s: Seconds = 60.0
    raise_above_c: Celsius = 55.0
    clear_below_c: Celsius = 50.0


class CellTempLowSettings(LowThresholdSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The coldest cell below ``raise_below_c`` (lithium cells must not be charged below 0 °C)."""

    raise_after_s: Seconds = 60.0
    clear_after_s: Seconds = 60.0
    raise_below_c: Celsius = 0.0
    clear_above_c: Celsius = 5.0


class CellVoltageHighSettings(HighThresholdSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The highest cell voltage above ``raise_above_v`` (LFP default)."""

    severity: Severity = "critical"
    raise_after_s: Seconds = 10.0
    clear_after_s: Seconds = 60.0
    raise_above_v: Volts = 3.65
    clear_below_v: Volts = 3.55


class CellVoltageLowSettings(LowThresholdSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The lowest cell voltage below ``raise_below_v`` (LFP default)."""

    severity: Severity = "critical"
    raise_after_s: Seconds = 10.0
    clear_after_s: Seconds = 60.0
    raise_below_v: Volts = 2.5
    clear_above_v: Volts = 2.7


class BmsAlarmSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The BMS reports alarm codes (other than ``ignore_codes``)."""

    clear_after_s: Seconds = 30.0
    ignore_codes: Annotated[tuple[Code, ...], Meta(max_length=100)] = ()


class NodeSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A node this battery depends on is offline/degraded. ``nodes``: the ones to watch (a watched node with no
    status at all counts as offline); None: every node that has published a status."""

    raise_after_s: Seconds = 30.0
    clear_after_s: Seconds = 10.0
    nodes: Annotated[tuple[Code, ...], Meta(max_length=100)] | None = None


class PricesStaleSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The price forecast ends less than ``min_horizon_s`` ahead (or there is none): nothing left to plan on."""

    raise_after_s: Seconds = 60.0
    min_horizon_s: Seconds = 3600.0


class PlanInfeasibleSettings(RuleSettings, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The planner could not plan this battery (infeasible limits, solver failure)."""


def _critical_node() -> NodeSettings:
    return NodeSettings(severity="critical")


def _degraded_node() -> NodeSettings:
    return NodeSettings(raise_after_s=60.0)


class AlarmSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The settings of every rule for one battery; the field names are the rule ids (and alarm topic levels)."""

    soc_below_min: SocLimitSettings = msgspec.field(default_factory=SocLimitSettings)
    soc_above_max: SocLimitSettings = msgspec.field(default_factory=SocLimitSettings)
    telemetry_stale: TelemetryStaleSettings = msgspec.field(default_factory=TelemetryStaleSettings)
    command_not_followed: CommandFollowSettings = msgspec.field(default_factory=CommandFollowSettings)
    cell_temp_high: CellTempHighSettings = msgspec.field(default_factory=CellTempHighSettings)
    cell_temp_low: CellTempLowSettings = msgspec.field(default_factory=CellTempLowSettings)
    cell_voltage_high: CellVoltageHighSettings = msgspec.field(default_factory=CellVoltageHighSettings)
    cell_voltage_low: CellVoltageLowSettings = msgspec.field(default_factory=CellVoltageLowSettings)
    bms_alarm: BmsAlarmSettings = msgspec.field(default_factory=BmsAlarmSettings)
    node_offline: NodeSettings = msgspec.field(default_factory=_critical_node)
    node_degraded: NodeSettings = msgspec.field(default_factory=_degraded_node)
    prices_stale: PricesStaleSettings = msgspec.field(default_factory=PricesStaleSettings)
    plan_infeasible: PlanInfeasibleSettings = msgspec.field(default_factory=PlanInfeasibleSettings)

    def rule(self, rule_id: str) -> RuleSettings:
        """The settings of one rule by its id."""
        settings = getattr(self, rule_id)
        assert isinstance(settings, RuleSettings)
        return settings

    def problems(self, name: str) -> list[str]:
        """Cross-field errors of every rule, each naming its field under ``name``."""
        return [p for rule_id in RULE_IDS for p in self.rule(rule_id).problems(f"{name}.{rule_id}")]


RULE_IDS: tuple[str, ...] = tuple(AlarmSettings.__struct_fields__)
"""Every rule id, in the order a banner lists them."""


class AlarmConfigError(ValueError):
    """``BESS_ALARMS`` cannot be used; ``field`` is the dotted path of the culprit (``batteries.b1.bms_alarm``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{VARIABLE}: {field}: {reason}" if field else f"{VARIABLE}: {reason}")
        self.field = field
        self.reason = reason


class AlarmConfig(msgspec.Struct, kw_only=True, frozen=True):
    """The site's rule settings: ``defaults`` and each battery's own (already merged)."""

    defaults: AlarmSettings = msgspec.field(default_factory=AlarmSettings)
    batteries: dict[str, AlarmSettings] = msgspec.field(default_factory=dict)

    def for_battery(self, battery: str) -> AlarmSettings:
        """The settings that apply to ``battery``."""
        return self.batteries.get(battery, self.defaults)


_AT = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def _convert(document: Mapping[str, Any], where: str) -> AlarmSettings:
    """Validate one battery's (or the defaults') merged settings; the error names the field under ``where``."""
    try:
        settings = msgspec.convert(document, AlarmSettings)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _AT.match(text)
        reason, path = (match["reason"], match["path"]) if match else (text, "")
        field = where + path
        unknown = _UNKNOWN.match(reason)
        if unknown:
            field = f"{field}.{unknown['name']}"
            reason = "unknown rule, known: " + ", ".join(RULE_IDS) if not path else "unknown setting"
        elif path.endswith(".severity"):
            reason += " (one of " + ", ".join(SEVERITIES) + ")"
        raise AlarmConfigError(field, reason) from exc
    problems = settings.problems(where)
    if problems:
        field, _, reason = problems[0].partition(": ")
        raise AlarmConfigError(field, reason)
    return settings


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AlarmConfigError(field, f"expected an object, got {type(value).__name__}")
    return value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], field: str) -> dict[str, Any]:
    """Per rule, per setting: ``over`` wins."""
    merged = {rule: dict(_object(settings, f"{field}.{rule}")) for rule, settings in base.items()}
    for rule, settings in over.items():
        merged[rule] = {**merged.get(rule, {}), **_object(settings, f"{field}.{rule}")}
    return merged


def parse_alarm_settings(text: str | None, batteries: Iterable[str] | None = None) -> AlarmConfig:
    """``BESS_ALARMS`` into an :class:`AlarmConfig` (empty or unset: the built-in defaults).

    ``batteries``: the configured battery ids; an override for any other id is an error (a typo would otherwise
    leave the real battery on the defaults without a word). Raises :class:`AlarmConfigError`.
    """
    if text is None or not text.strip():
        return AlarmConfig()
    try:
        document = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise AlarmConfigError("", f"not valid JSON ({exc})") from exc
    top = _object(document, "")
    unknown = sorted(set(top) - {"defaults", "batteries"})
    if unknown:
        raise AlarmConfigError(unknown[0], "unknown key, expected 'defaults' and/or 'batteries'")
    defaults_doc = _object(top.get("defaults", {}), "defaults")
    defaults = _convert(_merge({}, defaults_doc, "defaults"), "defaults")
    known = None if batteries is None else set(batteries)
    merged: dict[str, AlarmSettings] = {}
    for battery, own in _object(top.get("batteries", {}), "batteries").items():
        where = f"batteries.{battery}"
        if not ID_PATTERN.fullmatch(battery):
            raise AlarmConfigError(where, f"not a valid battery id: use {ID_RULE}")
        if known is not None and battery not in known:
            raise AlarmConfigError(where, f"not a configured battery (BESS_BATTERIES: {', '.join(sorted(known))})")
        merged[battery] = _convert(_merge(defaults_doc, _object(own, where), where), where)
    return AlarmConfig(defaults=defaults, batteries=merged)


__all__ = [
    "RULE_IDS",
    "VARIABLE",
    "AlarmConfig",
    "AlarmConfigError",
    "AlarmSettings",
    "BmsAlarmSettings",
    "CellTempHighSettings",
    "CellTempLowSettings",
    "CellVoltageHighSettings",
    "CellVoltageLowSettings",
    "CommandFollowSettings",
    "NodeSettings",
    "PlanInfeasibleSettings",
    "PricesStaleSettings",
    "RuleSettings",
    "SocLimitSettings",
    "TelemetryStaleSettings",
    "parse_alarm_settings",
]
