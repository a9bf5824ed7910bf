"""The alarm rules: what each one looks at and when its condition holds (pure: inputs, settings, clock in).

A rule turns the battery's current inputs into an :class:`Observation`, one of four levels:

* ``on``: the raise condition holds (the SOC is beyond the limit, the hottest cell above 55 °C);
* ``off``: the clear condition holds (back within the limit, below 50 °C);
* ``hold``: in the band between the two (value hysteresis: neither raises nor clears);
* ``unknown``: the rule cannot judge (no fresh reading, no spec, the field is not reported).

The timing (hold for ``raise_after_s`` before raising, ``clear_after_s`` before clearing) is applied by
:mod:`nodes.alarms.state`, the same for every rule. Rules that judge a reading judge only a fresh one (younger
than ``telemetry_stale.stale_after_s``): an hour-old temperature neither raises nor clears an alarm, the stale
telemetry alarm says what is wrong then.

Inputs are a small Struct on purpose (:class:`AlarmInputs`): the node that wires the rules fills it from the
bus; :func:`reading_from` takes any Telemetry, including the optional BMS fields (``cell_temp_max_c``,
``cell_temp_min_c``, ``cell_voltage_max_v``, ``cell_voltage_min_v``, ``bms_alarms``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from nodes.alarms.settings import (
    AlarmSettings,
    BmsAlarmSettings,
    CommandFollowSettings,
    NodeSettings,
    PricesStaleSettings,
    SocLimitSettings,
)
from nodes.contract import energy
from nodes.contract.messages import BatterySpec, Command, NodeStatus
from nodes.diagnostics import commanded

Level = Literal["on", "off", "hold", "unknown"]


class AlarmReading(msgspec.Struct, kw_only=True, frozen=True):
    """The fields of a reading the rules look at (Telemetry's names; the cell fields optional)."""

    ts: datetime
    soc_kwh: float
    power_kw: float | None = None
    cell_temp_max_c: float | None = None
    cell_temp_min_c: float | None = None
    cell_voltage_max_v: float | None = None
    cell_voltage_min_v: float | None = None
    bms_alarms: tuple[str, ...] | None = None
    """None: the device does not report codes (the BMS rule cannot judge); ``()``: it reports none."""


def reading_from(telemetry: object) -> AlarmReading:
    """The rules' view of a Telemetry (or anything with its attribute names; missing optional fields are None)."""
    return msgspec.convert(telemetry, AlarmReading, from_attributes=True)


class AlarmInputs(msgspec.Struct, kw_only=True, frozen=True):
    """What the rules of one battery look at, as the node last received it."""

    reading: AlarmReading | None = None
    """The latest reading of the battery (None: none received)."""
    spec: BatterySpec | None = None
    command: Command | None = None
    """The latest command sent to the battery (its lease may have ended: then idle is expected)."""
    nodes: dict[str, NodeStatus] = msgspec.field(default_factory=dict)
    """The latest status of each node, by node name."""
    prices_until: datetime | None = None
    """End of the last slot of the price forecast the battery is planned on (None: no forecast)."""
    plan_problem: str | None = None
    """Why the planner could not plan this battery (its status details say ``not planned: ...``); None: planned."""
    watched_since: datetime | None = None
    """When the judge began watching this battery: one never heard from is stale ``stale_after_s`` after that
    (not at once, so a stack that starts does not raise an alarm for a device that reports a second later)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """A rule's judgement of the current inputs."""

    level: Level
    message: str = ""
    """The situation in words, with the value and the threshold that applies at this level."""
    value: float | None = None
    threshold: float | None = None
    key: str = ""
    """What is wrong, as an identity (the BMS codes, the nodes): a change while raised is published again."""
    began_at: datetime | None = None
    """When the condition began, if the inputs say (a reading's age passing the limit); else when first seen."""
    flips_at: datetime | None = None
    """When the level will change without new inputs (a reading turning stale): the evaluator's next wake-up."""


UNKNOWN = Observation("unknown")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: its id (the settings field and alarm topic level), what it is about, its unit, its judgement."""

    id: str
    title: str
    unit: str
    observe: Callable[[AlarmInputs, AlarmSettings, datetime], Observation]


# -- helpers ---------------------------------------------------------------------------------------------------


def fresh_reading(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> AlarmReading | None:
    """The reading, if it is younger than the stale limit (older readings are not judged)."""
    reading = inputs.reading
    if reading is None or (now - reading.ts).total_seconds() > settings.telemetry_stale.stale_after_s:
        return None
    return reading


def _threshold(value: float | None, *, above: bool, raise_at: float, clear_at: float, what: str,
               unit: str, digits: int) -> Observation:
    """``on`` beyond ``raise_at``, ``off`` back past ``clear_at``, ``hold`` in between (value hysteresis)."""
    if value is None:
        return UNKNOWN
    side = "above" if above else "below"
    back = "below" if above else "above"
    if (value > raise_at) if above else (value < raise_at):
        return Observation("on", f"{what} {value:.{digits}f} {unit} {side} {raise_at:g} {unit}", value, raise_at)
    if (value < clear_at) if above else (value > clear_at):
        return Observation("off", f"{what} {value:.{digits}f} {unit} {back} {clear_at:g} {unit}", value, clear_at)
    return Observation("hold", f"{what} {value:.{digits}f} {unit}, between {min(raise_at, clear_at):g} and "
                       f"{max(raise_at, clear_at):g} {unit}", value, raise_at)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the rules ---------------------------------------------------------------------------------------------


def _soc(inputs: AlarmInputs, settings: AlarmSettings, now: datetime, *, above: bool) -> Observation:
    reading, spec = fresh_reading(inputs, settings, now), inputs.spec
    if reading is None or spec is None:
        return UNKNOWN
    rule: SocLimitSettings = settings.soc_above_max if above else settings.soc_below_min
    margin = rule.beyond_pct / 100.0 * energy.usable_kwh(spec)
    limit = spec.soc_max_kwh if above else spec.soc_min_kwh
    raise_at = limit + margin if above else limit - margin
    found = _threshold(reading.soc_kwh, above=above, raise_at=raise_at, clear_at=limit, what="SOC", unit="kWh",
                       digits=1)
    name = "maximum" if above else "minimum"
    suffix = f" (spec {name} {limit:g} kWh)"
    return Observation(found.level, found.message + suffix, found.value, found.threshold)


def soc_below_min(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """SOC below the spec's minimum by more than ``beyond_pct`` of the usable range."""
    return _soc(inputs, settings, now, above=False)


def soc_above_max(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """SOC above the spec's maximum by more than ``beyond_pct`` of the usable range."""
    return _soc(inputs, settings, now, above=True)


def telemetry_stale(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """No reading for more than ``stale_after_s`` (or none at all)."""
    limit = settings.telemetry_stale.stale_after_s
    if inputs.reading is None:
        since = inputs.watched_since
        if since is None:
            return Observation("on", "no telemetry received", None, limit)
        stale_at = since + timedelta(seconds=limit)
        waited = (now - since).total_seconds()
        if waited <= limit:
            return Observation("unknown", f"no telemetry yet, watched for {waited:.0f} s (limit {limit:g} s)",
                               flips_at=stale_at + timedelta(microseconds=1))
        return Observation("on", f"no telemetry received since {_iso(since)} (limit {limit:g} s)", waited, limit,
                           began_at=stale_at)
    ts = inputs.reading.ts
    age = (now - ts).total_seconds()
    stale_at = ts + timedelta(seconds=limit)
    if age > limit:
        return Observation("on", f"no telemetry for {age:.0f} s (last reading {_iso(ts)}, limit {limit:g} s)", age,
                           limit, began_at=stale_at)
    return Observation("off", f"last reading {age:.0f} s ago (limit {limit:g} s)", age, limit,
                       flips_at=stale_at + timedelta(microseconds=1))


def command_not_followed(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The power is off the last command's (idle once its lease ended) by more than the tolerance."""
    rule: CommandFollowSettings = settings.command_not_followed
    reading, spec, command = fresh_reading(inputs, settings, now), inputs.spec, inputs.command
    if command is None:
        return Observation("off", "no command sent")
    if reading is None or spec is None or reading.power_kw is None or reading.ts < command.issued_at:
        return UNKNOWN  # nothing known yet of how the battery answered this command
    ended = reading.ts >= command.valid_until
    expected = 0.0 if ended else commanded.expected_power_kw(commanded.signed_power_kw(command), spec)
    tolerance = commanded.tolerance_kw(spec, rule.tolerance_pct)
    asked = (f"lease of {command.command_id} ended at {_iso(command.valid_until)}, idle expected" if ended
             else f"{command.action} {abs(expected):g} kW asked by {command.command_id}")
    at_limit = bool(commanded.at_soc_limit(expected, reading.soc_kwh, spec))
    error = abs(reading.power_kw - expected)
    if at_limit:
        return Observation("off", f"{asked}; at the SOC limit, the battery may refuse", error, tolerance)
    text = f"{asked}, battery at {reading.power_kw:g} kW (off by {error:.1f} kW, tolerance {tolerance:.1f} kW)"
    return Observation("on" if error > tolerance else "off", text, error, tolerance)


def cell_temp_high(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The hottest cell above ``raise_above_c``; cleared below ``clear_below_c``."""
    reading, rule = fresh_reading(inputs, settings, now), settings.cell_temp_high
    return _threshold(reading.cell_temp_max_c if reading else None, above=True, raise_at=rule.raise_above_c,
                      clear_at=rule.clear_below_c, what="max cell temperature", unit="°C", digits=1)


def cell_temp_low(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The coldest cell below ``raise_below_c``; cleared above ``clear_above_c``."""
    reading, rule = fresh_reading(inputs, settings, now), settings.cell_temp_low
    return _threshold(reading.cell_temp_min_c if reading else None, above=False, raise_at=rule.raise_below_c,
                      clear_at=rule.clear_above_c, what="min cell temperature", unit="°C", digits=1)


def cell_voltage_high(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The highest cell voltage above ``raise_above_v``; cleared below ``clear_below_v``."""
    reading, rule = fresh_reading(inputs, settings, now), settings.cell_voltage_high
    return _threshold(reading.cell_voltage_max_v if reading else None, above=True, raise_at=rule.raise_above_v,
                      clear_at=rule.clear_below_v, what="max cell voltage", unit="V", digits=3)


def cell_voltage_low(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The lowest cell voltage below ``raise_below_v``; cleared above ``clear_above_v``."""
    reading, rule = fresh_reading(inputs, settings, now), settings.cell_voltage_low
    return _threshold(reading.cell_voltage_min_v if reading else None, above=False, raise_at=rule.raise_below_v,
                      clear_at=rule.clear_above_v, what="min cell voltage", unit="V", digits=3)


def bms_alarm(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The BMS reports alarm codes (other than the ignored ones)."""
    reading, rule = fresh_reading(inputs, settings, now), settings.bms_alarm
    if reading is None or reading.bms_alarms is None:
        return UNKNOWN
    codes = _codes(reading, rule)
    if codes:
        return Observation("on", "BMS reports " + ", ".join(codes), float(len(codes)), 0.0, key=",".join(codes))
    return Observation("off", "BMS reports no alarm", 0.0, 0.0)


def _codes(reading: AlarmReading, rule: BmsAlarmSettings) -> list[str]:
    return sorted(set(reading.bms_alarms or ()) - set(rule.ignore_codes))


def _watched(inputs: AlarmInputs, rule: NodeSettings) -> list[tuple[str, NodeStatus | None]]:
    names = rule.nodes if rule.nodes is not None else tuple(sorted(inputs.nodes))
    return [(name, inputs.nodes.get(name)) for name in names]


def node_offline(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """A watched node is offline (its last will), or a node named in ``nodes`` never published a status."""
    watched = _watched(inputs, settings.node_offline)
    if not watched:
        return UNKNOWN
    down = [(name, status) for name, status in watched if status is None or status.state == "offline"]
    if not down:
        return Observation("off", "all watched nodes online: " + ", ".join(n for n, _ in watched), 0.0, 0.0)
    parts = [f"{name} (no status received)" if status is None
             else f"{name}" + (f" (since {_iso(status.since)})" if status.since else "") for name, status in down]
    return Observation("on", "offline: " + ", ".join(parts), float(len(down)), 0.0,
                       key=",".join(n for n, _ in down))


def node_degraded(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """A watched node reports ``degraded`` (with its reason)."""
    watched = [(n, s) for n, s in _watched(inputs, settings.node_degraded) if s is not None]
    if not watched:
        return UNKNOWN
    down = [(name, status) for name, status in watched if status.state == "degraded"]
    if not down:
        return Observation("off", "no watched node degraded", 0.0, 0.0)
    parts = [f"{name}: {status.reason[:120]}" if status.reason else name for name, status in down]
    return Observation("on", "degraded: " + "; ".join(parts), float(len(down)), 0.0,
                       key=",".join(n for n, _ in down))


def prices_stale(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The price forecast ends less than ``min_horizon_s`` ahead, or there is none."""
    rule: PricesStaleSettings = settings.prices_stale
    need = rule.min_horizon_s
    if inputs.prices_until is None:
        return Observation("on", "no price forecast received", None, need)
    ahead = (inputs.prices_until - now).total_seconds()
    short_at = inputs.prices_until - timedelta(seconds=need)
    when = f"prices end {_iso(inputs.prices_until)}"
    if ahead < need:
        return Observation("on", f"{when}, {ahead:.0f} s ahead (at least {need:g} s needed)", ahead, need,
                           began_at=short_at)
    return Observation("off", f"{when}, {ahead:.0f} s ahead", ahead, need, flips_at=short_at)


def plan_infeasible(inputs: AlarmInputs, settings: AlarmSettings, now: datetime) -> Observation:
    """The planner reports it could not plan this battery."""
    if inputs.plan_problem:
        return Observation("on", inputs.plan_problem[:400])
    return Observation("off", "planned")


RULES: tuple[Rule, ...] = (
    Rule("soc_below_min", "SOC below the minimum", "kWh", soc_below_min),
    Rule("soc_above_max", "SOC above the maximum", "kWh", soc_above_max),
    Rule("telemetry_stale", "telemetry stale", "s", telemetry_stale),
    Rule("command_not_followed", "command not followed", "kW", command_not_followed),
    Rule("cell_temp_high", "cell temperature high", "°C", cell_temp_high),
    Rule("cell_temp_low", "cell temperature low", "°C", cell_temp_low),
    Rule("cell_voltage_high", "cell voltage high", "V", cell_voltage_high),
    Rule("cell_voltage_low", "cell voltage low", "V", cell_voltage_low),
    Rule("bms_alarm", "BMS alarm", "codes", bms_alarm),
    Rule("node_offline", "node offline", "nodes", node_offline),
    Rule("node_degraded", "node degraded", "nodes", node_degraded),
    Rule("prices_stale", "prices stale", "s", prices_stale),
    Rule("plan_infeasible", "plan infeasible", "", plan_infeasible),
)
"""Every rule, in :data:`nodes.alarms.settings.RULE_IDS` order (a test keeps the two equal)."""
RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


__all__ = [
    "RULES",
    "RULES_BY_ID",
    "UNKNOWN",
    "AlarmInputs",
    "AlarmReading",
    "Level",
    "Observation",
    "Rule",
    "fresh_reading",
    "reading_from",
]
