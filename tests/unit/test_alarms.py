"""Alarm rules raise and clear with hysteresis on a fake clock; their settings parse strictly, naming the field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from nodes.alarms.rules import RULES, AlarmInputs, AlarmReading, reading_from
from nodes.alarms.settings import (
    RULE_IDS,
    AlarmConfigError,
    AlarmSettings,
    CellTempHighSettings,
    TelemetryStaleSettings,
    parse_alarm_settings,
)
from nodes.alarms.state import RuleState, Transition, evaluate, restore
from nodes.contract.alarms import Alarm
from nodes.contract.messages import BatterySpec, Command, NodeStatus, Telemetry

T0 = datetime(2025, 1, 16, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=90, max_charge_kw=50, max_discharge_kw=50)
DEFAULTS = AlarmSettings()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reading(ts: datetime, **fields: object) -> AlarmReading:
    values: dict[str, object] = {"soc_kwh": 50.0, "power_kw": 0.0, "cell_temp_max_c": 25.0,
                                 "cell_temp_min_c": 20.0, "cell_voltage_max_v": 3.35, "cell_voltage_min_v": 3.30,
                                 "bms_alarms": ()}
    values.update(fields)
    return msgspec.convert({"ts": ts, **values}, AlarmReading)


def healthy(now: datetime) -> AlarmInputs:
    return AlarmInputs(
        reading=reading(now), spec=SPEC,
        command=Command(command_id="idle-0", action="idle", issued_at=T0, valid_until=T0 + timedelta(days=1)),
        nodes={"planner": NodeStatus(node="planner", state="online"),
               "recorder": NodeStatus(node="recorder", state="online")},
        prices_until=now + timedelta(days=1),
    )


@dataclass
class Runner:
    """Evaluates one battery's rules at the given instants, keeping the book, collecting transitions."""

    settings: AlarmSettings = field(default_factory=AlarmSettings)
    book: dict[str, RuleState] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    next_due: datetime | None = None

    def __call__(self, inputs: AlarmInputs, now: datetime) -> list[Transition]:
        result = evaluate(self.book, inputs, self.settings, now)
        self.book, self.next_due = result.book, result.next_due
        self.transitions += result.transitions
        return result.transitions

    def of(self, rule: str) -> list[tuple[str, float]]:
        return [(t.kind, (t.at - T0).total_seconds()) for t in self.transitions if t.rule == rule]


# -- the scripted scenario: every rule raised once and cleared once, at exact times --------------------------

Fault = Callable[[AlarmInputs, float], AlarmInputs]


def _with_reading(inputs: AlarmInputs, **fields: object) -> AlarmInputs:
    assert inputs.reading is not None
    return msgspec.structs.replace(inputs, reading=msgspec.structs.replace(inputs.reading, **fields))


def _stale(inputs: AlarmInputs, t: float) -> AlarmInputs:
    return msgspec.structs.replace(inputs, reading=reading(at(700)))


def _not_followed(inputs: AlarmInputs, t: float) -> AlarmInputs:
    command = Command(command_id="d-1", action="discharge", power_kw=40, issued_at=at(1000),
                      valid_until=at(5000))
    return _with_reading(msgspec.structs.replace(inputs, command=command), power_kw=0.0 if t < 1300 else 40.0)


def _node(name: str, state: str) -> Fault:
    def fault(inputs: AlarmInputs, t: float) -> AlarmInputs:
        nodes = {**inputs.nodes, name: NodeStatus(node=name, state=state, reason="influxd down")}  # type: ignore[arg-type]
        return msgspec.structs.replace(inputs, nodes=nodes)
    return fault


def _prices(inputs: AlarmInputs, t: float) -> AlarmInputs:
    return msgspec.structs.replace(inputs, prices_until=at(3500 + 3600))


#: rule -> (fault window [start, end) in s, the fault, expected raise instant, expected clear instant)
SCENARIO: dict[str, tuple[float, float, Fault, float, float]] = {
    "soc_below_min": (100, 300, lambda i, t: _with_reading(i, soc_kwh=5.0), 130, 330),
    "soc_above_max": (400, 600, lambda i, t: _with_reading(i, soc_kwh=95.0), 430, 630),
    # the last reading at 700 turns stale after 60 s (at 760 + 1 us, seen at 761); readings resume at 900
    "telemetry_stale": (700, 900, _stale, 761, 910),
    "command_not_followed": (1000, 1300, _not_followed, 1060, 1330),
    "cell_temp_high": (1400, 1600, lambda i, t: _with_reading(i, cell_temp_max_c=60.0), 1410, 1660),
    "cell_temp_low": (1700, 1900, lambda i, t: _with_reading(i, cell_temp_min_c=-5.0), 1760, 1960),
    "cell_voltage_high": (2000, 2200, lambda i, t: _with_reading(i, cell_voltage_max_v=3.7), 2010, 2260),
    "cell_voltage_low": (2300, 2500, lambda i, t: _with_reading(i, cell_voltage_min_v=2.4), 2310, 2560),
    "bms_alarm": (2600, 2800, lambda i, t: _with_reading(i, bms_alarms=("OVT",)), 2600, 2830),
    "node_offline": (2900, 3100, _node("recorder", "offline"), 2930, 3110),
    "node_degraded": (3200, 3400, _node("planner", "degraded"), 3260, 3410),
    # the forecast ends at 7100: less than 3600 s ahead from 3500 on (seen at 3501); a new one at 3700
    "prices_stale": (0, 3700, _prices, 3560, 3700),
    "plan_infeasible": (3800, 4000, lambda i, t: msgspec.structs.replace(i, plan_problem="not planned: infeasible"),
                        3800, 4000),
}


def scripted_inputs(t: float) -> AlarmInputs:
    inputs = healthy(at(t))
    for start, end, fault, _, _ in SCENARIO.values():
        if start <= t < end:
            inputs = fault(inputs, t)
    if t >= 1300:  # the discharge command stays in force and is followed from then on
        inputs = _not_followed(inputs, t)
    return inputs


def test_every_rule_is_raised_once_and_cleared_once_at_the_exact_instants() -> None:
    run = Runner()
    for t in range(4300):
        run(scripted_inputs(t), at(t))
    assert set(SCENARIO) == set(RULE_IDS)
    for rule, (_, _, _, raised, cleared) in SCENARIO.items():
        assert run.of(rule) == [("raised", raised), ("cleared", cleared)], rule
    assert run.book == {}


def test_waking_only_when_due_gives_the_same_instants() -> None:
    """Evaluated on input changes and at ``next_due`` only (no polling), the raise and clear are just as exact."""
    run = Runner(settings=AlarmSettings(telemetry_stale=TelemetryStaleSettings(stale_after_s=600)))
    changes = {0: 25.0, 100: 60.0, 200: 45.0}
    now, temp, ts = 0.0, 25.0, 0.0
    for _ in range(10):
        temp, ts = (changes[int(now)], now) if now in changes else (temp, ts)
        run(msgspec.structs.replace(healthy(at(ts)), reading=reading(at(ts), cell_temp_max_c=temp)), at(now))
        wake = [(run.next_due - T0).total_seconds()] if run.next_due else []
        later = [t for t in (*changes, *wake) if t > now]
        if not later:
            break
        now = min(later)
    assert run.of("cell_temp_high") == [("raised", 110), ("cleared", 260)]


def test_a_stale_reading_is_raised_from_when_it_turned_stale_even_when_seen_late() -> None:
    settings = AlarmSettings(telemetry_stale=TelemetryStaleSettings(raise_after_s=20))
    first = evaluate({}, healthy(at(0)), settings, at(0))
    assert first.next_due == at(60) + timedelta(microseconds=1)
    late = evaluate(first.book, msgspec.structs.replace(healthy(at(90)), reading=reading(at(0))), settings, at(90))
    assert [(t.rule, t.kind, t.at) for t in late.transitions] == [("telemetry_stale", "raised", at(90))]
    assert late.transitions[0].alarm().message.startswith("no telemetry for 90 s")


# -- no flapping --------------------------------------------------------------------------------------------


def test_a_noisy_temperature_around_the_threshold_raises_once_and_never_flaps() -> None:
    rng = np.random.default_rng(3)
    rising = 55 + rng.normal(0, 1.5, 3600)
    falling = 50 + rng.normal(0, 1.5, 3600)
    signal = np.concatenate((rising, falling))
    # without hysteresis this signal would cross a threshold hundreds of times
    assert int(np.sum(np.diff(rising > 55) != 0)) > 500
    run = Runner()
    for t, value in enumerate(signal):
        inputs = msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=float(value)))
        run(inputs, at(t))
    kinds = [kind for kind, _ in run.of("cell_temp_high")]
    assert kinds[:1] == ["raised"]
    assert kinds.count("raised") == 1  # the band 50-55 holds it raised; it never comes back after clearing
    assert kinds.count("cleared") <= 1
    raised_at = run.of("cell_temp_high")[0][1]
    assert raised_at < 3600


def test_a_value_in_the_band_keeps_the_alarm_raised_and_unknown_never_clears_it() -> None:
    run = Runner()
    for t in range(0, 100):
        run(msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=60.0)), at(t))
    assert run.of("cell_temp_high") == [("raised", 10)]
    for t in range(100, 400):  # 52 °C: below the raise threshold, above the clear one
        run(msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=52.0)), at(t))
    for t in range(400, 700):  # the BMS stops reporting temperatures
        run(msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=None)), at(t))
    assert run.of("cell_temp_high") == [("raised", 10)]
    assert run.book["cell_temp_high"].active


def test_a_condition_that_does_not_hold_long_enough_is_never_raised() -> None:
    run = Runner()
    for t in range(600):
        hot = (t // 5) % 2 == 0  # 5 s above, 5 s below the clear threshold: never 10 s in a row
        inputs = msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=60.0 if hot else 40.0))
        run(inputs, at(t))
    assert run.of("cell_temp_high") == []


# -- single rules ------------------------------------------------------------------------------------------


def test_a_battery_still_discharging_after_its_lease_ended_is_not_following() -> None:
    command = Command(command_id="d-9", action="discharge", power_kw=40, issued_at=T0, valid_until=at(600))
    inputs = msgspec.structs.replace(healthy(at(700)), command=command, reading=reading(at(700), power_kw=40.0))
    obs = RULES[3].observe(inputs, DEFAULTS, at(700))
    assert RULES[3].id == "command_not_followed"
    assert obs.level == "on"
    assert "lease of d-9 ended" in obs.message
    assert obs.value == 40.0


def test_a_charge_refused_at_the_soc_maximum_is_followed() -> None:
    command = Command(command_id="c-1", action="charge", power_kw=40, issued_at=T0, valid_until=at(600))
    inputs = msgspec.structs.replace(healthy(at(10)), command=command, reading=reading(at(10), soc_kwh=90.0))
    assert RULES[3].observe(inputs, DEFAULTS, at(10)).level == "off"


def test_changed_bms_codes_are_published_again_with_the_first_raise_time() -> None:
    run = Runner()
    run(msgspec.structs.replace(healthy(at(0)), reading=reading(at(0), bms_alarms=("OVT",))), at(0))
    changed = run(msgspec.structs.replace(healthy(at(5)), reading=reading(at(5), bms_alarms=("OVT", "IMB"))), at(5))
    assert [(t.kind, t.message) for t in changed] == [("updated", "BMS reports IMB, OVT")]
    alarm = changed[0].alarm()
    assert (alarm.state, alarm.since, alarm.value) == ("raised", at(0), 2)


def test_a_watched_node_that_never_reported_is_offline() -> None:
    settings = msgspec.convert({"node_offline": {"nodes": ["planner", "market"], "raise_after_s": 0}}, AlarmSettings)
    obs = evaluate({}, healthy(at(0)), settings, at(0))
    assert [(t.rule, t.message) for t in obs.transitions] == [("node_offline", "offline: market (no status received)")]


def test_after_a_restart_a_retained_alarm_is_neither_raised_again_nor_forgotten() -> None:
    retained = Alarm(rule="cell_temp_high", state="raised", since=at(-500), severity="critical",
                     message="max cell temperature 60.0 °C above 55 °C", value=60, threshold=55, unit="°C")
    run = Runner(book=restore([retained, msgspec.structs.replace(retained, rule="gone", state="raised")]))
    assert set(run.book) == {"cell_temp_high"}
    for t in range(0, 30):
        run(msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=61.0)), at(t))
    assert run.of("cell_temp_high") == []
    for t in range(30, 100):
        run(msgspec.structs.replace(healthy(at(t)), reading=reading(at(t), cell_temp_max_c=40.0)), at(t))
    assert run.of("cell_temp_high") == [("cleared", 90)]
    cleared = run.transitions[-1].alarm()
    assert (cleared.state, cleared.raised_at, cleared.threshold) == ("cleared", at(-500), 50)


def test_disabling_a_raised_rule_clears_it() -> None:
    run = Runner()
    run(msgspec.structs.replace(healthy(at(0)), plan_problem="not planned: infeasible"), at(0))
    run.settings = msgspec.convert({"plan_infeasible": {"enabled": False}}, AlarmSettings)
    gone = run(msgspec.structs.replace(healthy(at(1)), plan_problem="not planned: infeasible"), at(1))
    assert [(t.rule, t.kind) for t in gone] == [("plan_infeasible", "cleared")]
    assert "disabled" in gone[0].message


def test_the_alarm_message_is_a_valid_wire_message() -> None:
    run = Runner()
    assert run(msgspec.structs.replace(healthy(at(0)), prices_until=None), at(0)) == []
    transition = run(msgspec.structs.replace(healthy(at(60)), prices_until=None), at(60))[0]
    payload = msgspec.json.encode(transition.alarm())
    decoded = msgspec.json.decode(payload, type=Alarm)
    assert (decoded.rule, decoded.state, decoded.severity, decoded.unit) == ("prices_stale", "raised", "warning", "s")
    assert decoded.value is None
    assert decoded.threshold == 3600


def test_rules_read_any_telemetry_with_its_bms_fields() -> None:
    assert reading_from(Telemetry(ts=T0, soc_kwh=12.0)) == AlarmReading(ts=T0, soc_kwh=12.0)
    rich = reading_from(Telemetry(ts=T0, soc_kwh=12.0, cell_temp_max_c=41.5, bms_alarms=["OVT"], pack_voltage_v=800))
    assert (rich.cell_temp_max_c, rich.bms_alarms, rich.power_kw) == (41.5, ("OVT",), None)


def test_a_device_that_reports_no_codes_neither_raises_nor_clears_the_bms_alarm() -> None:
    silent = _with_reading(healthy(T0), bms_alarms=None)
    result = evaluate({}, silent, DEFAULTS, T0)
    assert result.observations["bms_alarm"].level == "unknown"
    raised = evaluate({}, _with_reading(healthy(T0), bms_alarms=("OVT",)), DEFAULTS, T0)
    assert [t.kind for t in raised.transitions if t.rule == "bms_alarm"] == ["raised"]
    later = evaluate(raised.book, _with_reading(healthy(at(60)), bms_alarms=None), DEFAULTS, at(60))
    assert later.book["bms_alarm"].active, "codes no longer reported: not a reason to clear"


def test_the_rule_table_and_the_settings_name_the_same_rules() -> None:
    assert tuple(rule.id for rule in RULES) == RULE_IDS


# -- settings ----------------------------------------------------------------------------------------------


def test_settings_merge_defaults_then_the_battery_per_setting() -> None:
    config = parse_alarm_settings(
        '{"defaults": {"cell_temp_high": {"raise_above_c": 50, "clear_below_c": 45}},'
        ' "batteries": {"b2": {"cell_temp_high": {"raise_above_c": 48}, "bms_alarm": {"ignore_codes": ["FAN"]}}}}',
        ["b1", "b2"],
    )
    assert config.for_battery("b1").cell_temp_high == CellTempHighSettings(raise_above_c=50, clear_below_c=45)
    b2 = config.for_battery("b2")
    assert (b2.cell_temp_high.raise_above_c, b2.cell_temp_high.clear_below_c) == (48, 45)
    assert b2.cell_temp_high.raise_after_s == 10  # built-in default kept
    assert b2.bms_alarm.ignore_codes == ("FAN",)
    assert parse_alarm_settings(None).for_battery("x") == AlarmSettings()
    assert parse_alarm_settings("  ").defaults == AlarmSettings()


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("{", "", "not valid JSON"),
        ('{"default": {}}', "default", "unknown key"),
        ('{"defaults": {"cell_temp_hi": {}}}', "defaults.cell_temp_hi", "unknown rule, known: soc_below_min"),
        ('{"defaults": {"cell_temp_high": {"raise_abve_c": 1}}}', "defaults.cell_temp_high.raise_abve_c",
         "unknown setting"),
        ('{"defaults": {"cell_temp_high": {"raise_above_c": "hot"}}}', "defaults.cell_temp_high.raise_above_c",
         "Expected `float`, got `str`"),
        ('{"batteries": {"b1": {"telemetry_stale": {"stale_after_s": -1}}}}', "batteries.b1.telemetry_stale"
         ".stale_after_s", "Expected `float` > 0.0"),
        ('{"batteries": {"b1": {"cell_temp_high": {"clear_below_c": 60}}}}', "batteries.b1.cell_temp_high"
         ".clear_below_c", "60 is above raise_above_c 55"),
        ('{"defaults": {"cell_voltage_low": {"clear_above_v": 2.0}}}', "defaults.cell_voltage_low.clear_above_v",
         "2 is below raise_below_v 2.5"),
        ('{"batteries": {"b9": {}}}', "batteries.b9", "not a configured battery"),
        ('{"batteries": {"B 1": {}}}', "batteries.B 1", "not a valid battery id"),
        ('{"defaults": {"bms_alarm": []}}', "defaults.bms_alarm", "expected an object"),
        ('{"defaults": {"bms_alarm": {"severity": "loud"}}}', "defaults.bms_alarm.severity",
         "Invalid enum value 'loud' (one of info, warning, critical)"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(AlarmConfigError) as caught:
        parse_alarm_settings(text, ["b1"])
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert str(caught.value).startswith("BESS_ALARMS: ")


def test_the_alarm_message_is_bounded_like_every_wire_message() -> None:
    good = {"rule": "cell_temp_high", "state": "raised", "since": "2025-01-16T00:00:00Z", "severity": "critical",
            "message": "hot"}
    assert msgspec.convert(good, Alarm).state == "raised"
    for bad in ({"state": "up"}, {"message": "x" * 501}, {"rule": "Cell Temp"}, {"value": 1e12},
                {"since": "2025-01-16T00:00:00"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode({**good, **bad}), type=Alarm)
