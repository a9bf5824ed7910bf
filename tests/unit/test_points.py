"""Messages -> line protocol: each mapping, timestamps from the message, floats as floats, escaping.

The round trips parse lines with :func:`parse_line`, a small reference parser written from the behaviour of
influxd 1.6.7 measured on this machine (the real-server round trip is in test_store_contract.py):
a tag/key delimiter is escaped when a backslash precedes it and only ``\\,`` ``\\=`` ``\\ `` are unescaped;
inside a quoted string ``\\\\`` and ``\\"`` are unescaped and a raw line break is allowed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.contract.messages import (
    Alarm,
    BatteryState,
    Command,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)
from nodes.contract.topics import COMMAND, PRICES, SCHEDULE, STATE, TELEMETRY
from nodes.recorder import points, table

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
T0_US = 1_737_021_600_000_000

Value = float | str


# -- a reference parser ------------------------------------------------------------------------------------------


def _split_unescaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not preceded by a backslash (the 1.x scanner rule for keys and tags)."""
    parts, start = [], 0
    for i, char in enumerate(text):
        if char == sep and (i == 0 or text[i - 1] != "\\"):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unescape_key(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _split_fields(text: str) -> list[str]:
    """Split ``k=v,k2="a,b"`` on commas outside quoted values (a backslash inside quotes escapes the next char)."""
    parts, start, quoted, i = [], 0, False, 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\":
            i += 2
            continue
        if quoted and char == '"':
            quoted = False
        elif not quoted and char == '"' and i > 0 and text[i - 1] == "=" and text[i - 2 : i - 1] != "\\":
            quoted = True  # a string value opens right after its key's "="; a quote inside a key is literal
        elif char == "," and not quoted and text[i - 1] != "\\":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str:
    assert text.startswith('"'), text
    assert text.endswith('"'), text
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '\\"':
            out.append(body[i + 1])
            i += 2
        else:
            assert body[i] != '"', f"unescaped quote in {text!r}"
            out.append(body[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Value], int]:
    """(measurement, tags, fields, timestamp) of one line of line protocol."""
    head_end = next(i for i, c in enumerate(line) if c == " " and line[i - 1] != "\\")
    head, rest = line[:head_end], line[head_end + 1 :]
    fields_text, _, stamp = rest.rpartition(" ")
    measurement, *tag_parts = _split_unescaped(head, ",")
    tags = {}
    for part in tag_parts:
        key, value = _split_unescaped(part, "=")
        tags[_unescape_key(key)] = _unescape_key(value)
    fields: dict[str, Value] = {}
    for part in _split_fields(fields_text):
        key_text = _split_unescaped(part, "=")[0]
        value_text = part[len(key_text) + 1 :]
        if value_text.startswith('"'):
            fields[_unescape_key(key_text)] = _unquote(value_text)
        else:
            assert not value_text.endswith("i"), f"integer field in {line!r}"
            fields[_unescape_key(key_text)] = float(value_text)
    return _unescape_key(measurement), tags, fields, int(stamp)


def parse(lines: list[str]) -> list[tuple[str, dict[str, str], dict[str, Value], int]]:
    return [parse_line(line) for line in lines]


# -- scalars ----------------------------------------------------------------------------------------------------


def test_epoch_us_is_exact_and_zone_aware() -> None:
    assert points.epoch_us(T0) == T0_US
    assert points.epoch_us(T0 + timedelta(microseconds=1)) == T0_US + 1
    plus_one = timezone(timedelta(hours=1))
    assert points.epoch_us(datetime(2025, 1, 16, 11, 0, tzinfo=plus_one)) == T0_US
    assert points.epoch_us(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_epoch_us_matches_rfc3339_round_trip(ts: datetime) -> None:
    assert points.rfc3339_from_us(points.epoch_us(ts)) == points.rfc3339(ts)
    assert datetime.fromisoformat(points.rfc3339(ts)) == ts


def test_rfc3339_is_utc_with_optional_microseconds() -> None:
    assert points.rfc3339(T0) == "2025-01-16T10:00:00Z"
    assert points.rfc3339(T0 + timedelta(microseconds=250_000)) == "2025-01-16T10:00:00.250000Z"
    assert points.rfc3339(datetime(2025, 1, 16, 12, 0, tzinfo=timezone(timedelta(hours=2)))) == "2025-01-16T10:00:00Z"


@pytest.mark.parametrize(
    ("value", "text"), [(700, "700.0"), (700.0, "700.0"), (-0.5, "-0.5"), (1e16, "1e+16"), (1e-5, "1e-05")]
)
def test_numbers_are_always_floats(value: float, text: str) -> None:
    assert points.number(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_left_out(value: float) -> None:
    assert points.number(value) is None
    line = points.telemetry_lines("b1", Telemetry(ts=T0, soc_kwh=1.0, power_kw=value))[0]
    _, _, fields, _ = parse_line(line)
    assert "power_kw" not in fields
    assert "power_kw" in fields["absent"].split(","), "and named absent, so a read does not find an older value"


# -- each mapping -------------------------------------------------------------------------------------------------


def test_telemetry_line() -> None:
    msg = Telemetry(ts=T0, soc_kwh=700, power_kw=-50.0, target_charge_kw=100.0, target_discharge_kw=50.0)
    (line,) = points.telemetry_lines("battery-1", msg)
    assert line == (
        "telemetry,battery=battery-1 soc_kwh=700.0,power_kw=-50.0,target_charge_kw=100.0,"
        f'target_discharge_kw=50.0,source="device",absent="bms" {T0_US}'
    ), "a reading without a BMS says so with one word"


def test_telemetry_names_the_fields_it_leaves_out() -> None:
    (line,) = points.telemetry_lines("b1", Telemetry(ts=T0, soc_kwh=1.5, source="gateway"))
    assert parse_line(line) == (
        "telemetry", {"battery": "b1"},
        {"soc_kwh": 1.5, "source": "gateway", "absent": "power_kw,target_charge_kw,target_discharge_kw,bms"}, T0_US,
    )
    (seed,) = points.telemetry_lines("b1", Telemetry(ts=T0, soc_kwh=1.5, target_charge_kw=1, target_discharge_kw=0))
    assert parse_line(seed)[2]["absent"] == "power_kw,bms"


def test_telemetry_with_bms_fields_writes_them_and_names_the_ones_it_lacks() -> None:
    msg = Telemetry(ts=T0, soc_kwh=700, power_kw=-50.0, target_charge_kw=100.0, target_discharge_kw=0.0,
                    pack_voltage_v=812, cell_temp_min_c=21.5, cell_temp_max_c=29.25, soh_pct=97.5,
                    bms_alarms=["OVT", "W 12"])
    (line,) = points.telemetry_lines("b1", msg)
    _, _, fields, stamp = parse_line(line)
    assert stamp == T0_US
    assert (fields["pack_voltage_v"], fields["cell_temp_min_c"], fields["cell_temp_max_c"], fields["soh_pct"]) == (
        812.0, 21.5, 29.25, 97.5)
    assert fields["bms_alarms"] == "OVT,W 12"
    assert fields["absent"].split(",") == [
        "pack_current_a", "cell_voltage_min_v", "cell_voltage_max_v", "energy_charged_kwh_total",
        "energy_discharged_kwh_total",
    ], "each missing BMS field by name, and no 'bms': the device has a BMS"
    (quiet,) = points.telemetry_lines("b1", msgspec.structs.replace(msg, bms_alarms=[]))
    assert parse_line(quiet)[2]["bms_alarms"] == "", "no codes reported is an empty text, not an absent field"
    (silent,) = points.telemetry_lines("b1", msgspec.structs.replace(msg, bms_alarms=None))
    assert "bms_alarms" in parse_line(silent)[2]["absent"].split(",")


def test_integer_json_values_are_written_as_floats() -> None:
    msg = TELEMETRY.decode(b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": 700, "power_kw": 0}')
    (line,) = points.telemetry_lines("b1", msg)
    assert "soc_kwh=700.0," in line
    assert "power_kw=0.0," in line


def test_timestamp_comes_from_the_message_so_redelivery_rewrites_the_same_point() -> None:
    msg = TELEMETRY.example
    first = points.telemetry_lines("b1", msg)
    again = points.telemetry_lines("b1", TELEMETRY.decode(TELEMETRY.encode(msg)))
    assert first == again
    assert first[0].endswith(f" {points.epoch_us(msg.ts)}")


def test_command_line() -> None:
    msg = Command(
        command_id="c-1",
        action="discharge",
        power_kw=50,
        issued_at=T0,
        valid_until=T0 + timedelta(minutes=5),
        source="gateway",
        plan_id="p-1",
        text='DISCHARGE 50kW, "now"',
    )
    (line,) = points.command_lines("b1", msg)
    assert parse_line(line) == (
        "command",
        {"battery": "b1"},
        {
            "action": "discharge",
            "power_kw": 50.0,
            "command_id": "c-1",
            "source": "gateway",
            "valid_until": "2025-01-16T10:05:00Z",
            "plan_id": "p-1",
            "text": 'DISCHARGE 50kW, "now"',
        },
        T0_US,
    )


def test_command_example_without_optional_fields_writes_them_blank() -> None:
    # blank, not left out: a later write of the same point replaces an earlier text instead of keeping it
    msg = msgspec.structs.replace(COMMAND.example, text=None, plan_id=None)
    (line,) = points.command_lines("b1", msg)
    _, _, fields, stamp = parse_line(line)
    assert (fields["text"], fields["plan_id"]) == ("", "")
    assert set(table.SERIES["command"].blank_is_none) == {"text", "plan_id"}
    assert stamp == points.epoch_us(msg.issued_at)


def test_state_line_joins_limits() -> None:
    msg = BatteryState(
        ts=T0,
        mode="charging",
        power_kw=-25,
        command_id="c-1",
        command_source="planner",
        valid_until=T0 + timedelta(minutes=15),
        limits_hit=["soc_max", "max_charge_kw"],
        reason="clipped to the charge limit",
    )
    (line,) = points.state_lines("b1", msg)
    assert parse_line(line) == (
        "state",
        {"battery": "b1"},
        {
            "mode": "charging",
            "power_kw": -25.0,
            "command_id": "c-1",
            "command_source": "planner",
            "valid_until": "2025-01-16T10:15:00Z",
            "limits_hit": "soc_max,max_charge_kw",
            "reason": "clipped to the charge limit",
        },
        T0_US,
    )
    assert parse(points.state_lines("b1", STATE.example))[0][2]["limits_hit"] == ""


def test_schedule_lines_one_per_slot_plus_plan() -> None:
    msg = SCHEDULE.example
    lines = parse(points.schedule_lines("battery-1", msg))
    assert len(lines) == len(msg.slots) + 1
    tags = {"battery": "battery-1", "plan_id": msg.plan_id}
    for slot, (measurement, slot_tags, fields, stamp) in zip(msg.slots, lines, strict=False):
        assert (measurement, slot_tags, stamp) == ("schedule", tags, points.epoch_us(slot.start))
        assert fields == {
            "price_per_mwh": slot.price_per_mwh,
            "charge_kw": slot.charge_kw,
            "discharge_kw": slot.discharge_kw,
            "soc_kwh": slot.soc_kwh,
            "end": points.rfc3339(slot.end),
            "created_at": "2025-01-16T10:00:00Z",
            "currency": "EUR",
        }
    measurement, plan_tags, fields, stamp = lines[-1]
    assert (measurement, plan_tags, stamp) == ("plan", {"battery": "battery-1"}, points.epoch_us(msg.created_at))
    assert fields["plan_id"] == msg.plan_id
    assert fields["expected_revenue"] == 22.13
    assert fields["baseline_revenue"] == 18.0
    assert fields["slots"] == 2.0
    assert fields["currency"] == "EUR"


def test_schedule_without_baseline_and_with_odd_plan_id() -> None:
    slot = ScheduleSlot(
        start=T0, end=T0 + timedelta(hours=1), price_per_mwh=-5, charge_kw=1, discharge_kw=0, soc_kwh=10
    )
    msg = Schedule(plan_id="plan 1,a=b", created_at=T0, soc_initial_kwh=0, slots=[slot], expected_revenue=0)
    lines = parse(points.schedule_lines("b1", msg))
    assert lines[0][1] == {"battery": "b1", "plan_id": "plan 1,a=b"}
    assert lines[0][2]["price_per_mwh"] == -5.0
    assert "baseline_revenue" not in lines[1][2]


def test_empty_plan_id_leaves_the_tag_out() -> None:
    msg = msgspec.structs.replace(SCHEDULE.example, plan_id="")
    assert parse(points.schedule_lines("b1", msg))[0][1] == {"battery": "b1"}


def test_prices_lines_one_per_slot() -> None:
    msg = PRICES.example
    lines = parse(points.prices_lines("de-lu", msg))
    assert [(m, t, s) for m, t, _, s in lines] == [
        ("prices", {"zone": "de-lu"}, points.epoch_us(slot.start)) for slot in msg.slots
    ]
    assert lines[1][2] == {
        "price_per_mwh": 131.0,
        "end": "2025-01-16T12:00:00Z",
        "issued_at": "2025-01-16T10:00:00Z",
        "source": "day-ahead csv",
        "currency": "EUR",
    }


def test_prices_and_schedule_points_carry_their_currency() -> None:
    aud = msgspec.structs.replace(PRICES.example, currency="AUD")
    assert {fields["currency"] for _, _, fields, _ in parse(points.prices_lines("nsw1", aud))} == {"AUD"}
    plan = msgspec.structs.replace(SCHEDULE.example, currency="AUD")
    assert {fields["currency"] for _, _, fields, _ in parse(points.schedule_lines("b1", plan))} == {"AUD"}


def test_empty_forecast_has_no_lines() -> None:
    assert points.prices_lines("z", PriceForecast(zone="z", issued_at=T0, slots=[])) == []
    msg = PriceForecast(zone="z", issued_at=T0, slots=[PriceSlot(start=T0, end=T0, price_per_mwh=1)])
    assert len(points.prices_lines("z", msg)) == 1


def test_series_columns_match_what_is_written() -> None:
    written = {
        "telemetry": points.telemetry_lines("b", TELEMETRY.example),
        "command": points.command_lines("b", COMMAND.example),
        "state": points.state_lines("b", STATE.example),
        "schedule": points.schedule_lines("b", SCHEDULE.example)[:-1],
        "prices": points.prices_lines("z", PRICES.example),
    }
    for kind, lines in written.items():
        series = table.SERIES[kind]  # type: ignore[index]
        for measurement, tags, fields, _ in parse(lines):
            assert measurement == series.measurement
            assert series.tag in tags
            assert set(fields) <= set(series.columns) | {"created_at", points.MASK}
            assert set(series.numeric) <= set(series.columns)
            for name in series.numeric:
                assert isinstance(fields.get(name, 0.0), float), (kind, name)


# -- escaping -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ("a b", r"a\ b"),
        ("a,b", r"a\,b"),
        ("a=b", r"a\=b"),
        ("a\\b", "a\\b"),
        ("a\\,b", "a\\\\,b"),
        ('say "hi"', r'say\ "hi"'),
        ("line\nbreak", "line_break"),
        ("cr\rx", "cr_x"),
        ("ends\\", "ends_"),
        ("ends\\\\", "ends__"),
    ],
)
def test_escape_tag(value: str, escaped: str) -> None:
    assert points.escape_tag(value) == escaped


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("ends\\", '"ends\\\\"'),
        ("a,b=c d", '"a,b=c d"'),
        ("two\nlines", '"two\nlines"'),
        ("", '""'),
    ],
)
def test_quote_string(value: str, quoted: str) -> None:
    assert points.quote_string(value) == quoted


def _representable_tag(value: str) -> str:
    """What a tag value becomes: line breaks and trailing backslashes cannot be carried."""
    value = value.replace("\n", "_").replace("\r", "_")
    kept = value.rstrip("\\")
    return kept + "_" * (len(value) - len(kept))


@given(st.text(min_size=1))
def test_tag_values_round_trip(value: str) -> None:
    line = points.line("m", {"tag": value}, points._Fields().num("f", 1.0), T0)
    assert line is not None
    assert parse_line(line)[1] == {"tag": _representable_tag(value)}


@given(st.text())
def test_string_fields_round_trip(value: str) -> None:
    command = msgspec.structs.replace(COMMAND.example, text=value, command_id="c")
    (line,) = points.command_lines("b1", command)
    assert parse_line(line)[2]["text"] == value


@given(st.text(min_size=1), st.text())
def test_field_keys_and_values_round_trip(key: str, value: str) -> None:
    line = points.line("m", {"b": "x"}, points._Fields().text(key.replace("\n", " "), value), T0)
    assert line is not None
    assert parse_line(line)[2] == {_representable_tag(key.replace("\n", " ")): value}


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(value: float) -> None:
    line = points.line("m", {"b": "x"}, points._Fields().num("f", value), T0)
    assert line is not None
    assert parse_line(line)[2]["f"] == value
    assert not line.split(" ")[1].endswith("i")


def test_a_point_without_fields_is_no_line() -> None:
    assert points.line("m", {"b": "x"}, points._Fields().num("f", math.nan), T0) is None


def test_extreme_but_valid_times_neither_crash_nor_corrupt() -> None:
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))  # UTC would be year 10000
    assert points.rfc3339(far) == "9999-12-31T23:59:59-01:00"
    assert points.rfc3339(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00Z"  # zero-padded year
    assert points.query_time(datetime(1, 1, 1, tzinfo=UTC)) == "1677-09-22T00:00:00.000000Z"
    assert points.query_time(far) == "2262-04-11T00:00:00.000000Z"
    assert points.query_time(datetime(2025, 1, 16, 10, tzinfo=UTC)) == "2025-01-16T10:00:00.000000Z"


def test_alarm_lines_one_point_per_transition_at_its_since() -> None:
    raised = Alarm(rule="cell_temp_high", state="raised", since=T0, severity="critical",
                   message='max cell "hot" 57.2 °C above 55 °C', value=57.2, threshold=55.0, unit="°C")
    (line,) = points.alarm_lines("b1", raised)
    assert parse_line(line) == (
        "alarms", {"battery": "b1", "rule": "cell_temp_high"},
        {"state": "raised", "severity": "critical", "message": 'max cell "hot" 57.2 °C above 55 °C', "value": 57.2,
         "threshold": 55.0, "unit": "°C", "raised_at": "", "absent": ""}, T0_US,
    )
    cleared = Alarm(rule="node_offline", state="cleared", since=T0 + timedelta(minutes=5), severity="critical",
                    message="all watched nodes online", raised_at=T0)
    (line,) = points.alarm_lines("b1", cleared)
    _, tags, fields, stamp = parse_line(line)
    assert (tags["rule"], stamp) == ("node_offline", T0_US + 300_000_000)
    assert (fields["raised_at"], fields["absent"]) == ("2025-01-16T10:00:00Z", "value,threshold")
    assert "value" not in fields
