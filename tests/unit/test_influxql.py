"""HistoryQuery -> InfluxQL (and Flux): the exact statements, and no way to inject through any value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.contract.messages import HistoryQuery
from nodes.contract.topics import HISTORY_REQUEST
from nodes.recorder import flux, influxql, split
from nodes.recorder.influxql import QueryError, build
from nodes.recorder.table import SERIES, Series

T0 = datetime(2025, 1, 16, 9, 0, tzinfo=UTC)
T1 = datetime(2025, 1, 16, 11, 0, tzinfo=UTC)
BMS = ("pack_voltage_v", "pack_current_a", "cell_voltage_min_v", "cell_voltage_max_v", "cell_temp_min_c",
       "cell_temp_max_c", "soh_pct", "energy_charged_kwh_total", "energy_discharged_kwh_total")


def query(**changes: Any) -> HistoryQuery:
    """A valid query with ``changes`` applied *without* validation, as a buggy or hostile caller could."""
    base = HistoryQuery(kind="telemetry", battery="b1", begin=T0, end=T1, limit=100)
    return msgspec.structs.replace(base, **changes)


def test_raw_query() -> None:
    text, plan = build(query())
    bms = "".join(f'"{name}",' for name in BMS)
    assert text == (
        f'SELECT "soc_kwh","power_kw","target_charge_kw","target_discharge_kw","source",{bms}"bms_alarms","absent" '
        "FROM \"telemetry\" WHERE \"battery\"='b1' AND time >= '2025-01-16T09:00:00.000000Z' "
        "AND time < '2025-01-16T11:00:00.000000Z' ORDER BY time ASC LIMIT 101"
    )
    assert plan.columns == ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", "source", *BMS,
                            "bms_alarms")
    assert influxql.stale_values(plan) is None


def test_downsampled_query() -> None:
    text, plan = build(query(every_s=60))
    means = "".join(f',mean("{name}") AS "{name}"' for name in BMS)
    counts = "".join(f',count("{name}") AS "{name}__count"' for name in BMS)
    assert text == (
        'SELECT mean("soc_kwh") AS "soc_kwh",mean("power_kw") AS "power_kw",'
        f'mean("target_charge_kw") AS "target_charge_kw",mean("target_discharge_kw") AS "target_discharge_kw"{means},'
        'count("power_kw") AS "power_kw__count",count("target_charge_kw") AS "target_charge_kw__count",'
        f'count("target_discharge_kw") AS "target_discharge_kw__count"{counts} '
        "FROM \"telemetry\" WHERE \"battery\"='b1' AND time >= '2025-01-16T09:00:00.000000Z' "
        "AND time < '2025-01-16T11:00:00.000000Z' GROUP BY time(60s) fill(none) ORDER BY time ASC LIMIT 101"
    )
    assert plan.columns == ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", *BMS)
    stale = influxql.stale_values(plan)
    assert stale is not None
    assert stale.startswith('SELECT "absent","power_kw","target_charge_kw","target_discharge_kw","pack_voltage_v",')
    assert """("absent" =~ /(^|,)(power_kw)(,|$)/ AND ("power_kw" >= 0 OR "power_kw" < 0))""" in stale
    # a BMS value is stale when its own name or the word for "no BMS field at all" is in the mask
    assert """("absent" =~ /(^|,)(soh_pct|bms)(,|$)/ AND ("soh_pct" >= 0 OR "soh_pct" < 0))""" in stale


@pytest.mark.parametrize(
    ("kind", "measurement", "tag"),
    [
        ("telemetry", '"telemetry"', '"battery"'),
        ("command", '"command"', '"battery"'),
        ("state", '"state"', '"battery"'),
        ("schedule", '"schedule"', '"battery"'),
        ("prices", '"prices"', '"zone"'),
    ],
)
def test_every_kind_reads_its_own_measurement(kind: str, measurement: str, tag: str) -> None:
    text, _ = build(query(kind=kind, zone="de-lu"))
    assert f" FROM {measurement} WHERE {tag}=" in text


def test_schedule_returns_the_plan_id_tag() -> None:
    _, plan = build(query(kind="schedule"))
    assert plan.columns[0] == "plan_id"


def test_times_are_converted_to_utc_microseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    begin = datetime(2025, 1, 16, 11, 0, 0, 123, tzinfo=plus_two)
    text, _ = build(query(begin=begin))
    assert "time >= '2025-01-16T09:00:00.000123Z'" in text


def test_limit_override_caps_the_query() -> None:
    text, plan = build(query(limit=1_000_000), limit=10)
    assert text.endswith("LIMIT 11")
    assert plan.limit == 10


# -- refusals: checked before any query exists -------------------------------------------------------------------


@pytest.mark.parametrize(
    "battery",
    [
        "x' OR 1=1 --",
        "b1'; DROP DATABASE bess; --",
        "b1' OR battery='b2",
        'b1" OR "1"="1',
        "B1",
        "b 1",
        "b1\\",
        "",
        "x" * 65,
        "b1\n",
    ],
)
def test_hostile_battery_ids_are_rejected(battery: str) -> None:
    with pytest.raises(QueryError, match="not a valid id"):
        build(query(battery=battery))


def test_hostile_zone_is_rejected() -> None:
    with pytest.raises(QueryError, match="zone"):
        build(query(kind="prices", zone="de' OR 1=1 --"))


def test_hostile_battery_is_rejected_at_the_wire_too() -> None:
    payload = (
        b'{"kind":"telemetry","battery":"x\' OR 1=1 --","begin":"2025-01-16T09:00:00Z","end":"2025-01-16T11:00:00Z"}'
    )
    with pytest.raises(msgspec.ValidationError):
        HISTORY_REQUEST.decode(payload)


@pytest.mark.parametrize(
    "changes",
    [
        {"battery": None},
        {"kind": "prices", "zone": None},
        {"kind": "nope"},
        {"begin": T1, "end": T0},
        {"begin": T0, "end": T0},
        {"begin": "2025-01-16T09:00:00Z' OR 1=1 --"},
        {"end": datetime(2025, 1, 16, 11, 0)},  # naive
        {"every_s": "60s) fill(0) --"},
        {"every_s": 0},
        {"every_s": True},
        {"every_s": 1.5},
        {"limit": "1; DROP DATABASE bess"},
        {"limit": 0},
        {"limit": -1},
    ],
)
def test_invalid_values_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(QueryError):
        build(query(**changes))


def test_string_literals_escape_quotes_and_backslashes() -> None:
    assert influxql.string_literal("a'b\\c") == "'a\\'b\\\\c'"
    assert influxql.ident('we"ird') == '"we\\"ird"'


@given(st.text())
def test_no_value_can_reach_the_query(battery: str) -> None:
    """Whatever the battery id, the query is either refused or uses exactly that id."""
    try:
        text, _ = build(query(battery=battery))
    except QueryError:
        return
    assert f"\"battery\"='{battery}' AND time" in text
    assert text.count("'") == 6


# -- flux -------------------------------------------------------------------------------------------------------------


def test_flux_raw() -> None:
    _, plan = build(query())
    script = flux.to_flux(plan, "bess")
    assert script == "\n".join(
        [
            'from(bucket: "bess")',
            "  |> range(start: 2025-01-16T09:00:00.000000Z, stop: 2025-01-16T11:00:00.000000Z)",
            '  |> filter(fn: (r) => r._measurement == "telemetry" and r["battery"] == "b1")',
            '  |> filter(fn: (r) => r._field == "soc_kwh" or r._field == "power_kw" or r._field == "target_charge_kw"'
            ' or r._field == "target_discharge_kw" or r._field == "source"'
            + "".join(f' or r._field == "{name}"' for name in BMS)
            + ' or r._field == "bms_alarms" or r._field == "absent")',
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            "  |> group()",
            '  |> sort(columns: ["_time"])',
            "  |> limit(n: 101)",
        ]
    )


def test_flux_downsampled_labels_buckets_with_their_start() -> None:
    _, plan = build(query(kind="schedule", every_s=900))
    script = flux.to_flux(plan, "bess")
    assert 'aggregateWindow(every: 900s, fn: mean, createEmpty: false, timeSrc: "_start")' in script
    assert 'group(columns: ["_field"])' in script
    assert '"plan_id"' not in script


def test_flux_strings_escape_interpolation() -> None:
    assert flux.string('a"b\\c${x}') == '"a\\"b\\\\c\\${x}"'


def test_price_means_are_asked_per_currency() -> None:
    _, plan = build(query(kind="prices", zone="de-lu", every_s=3600))
    assert plan.columns == ("price_per_mwh", "currency")  # the answer names the currency of every mean
    where = "WHERE \"zone\"='de-lu' AND time >= '2025-01-16T09:00:00.000000Z' AND time < '2025-01-16T11:00:00.000000Z'"
    assert influxql.split_values(plan) == f'SELECT DISTINCT("currency") FROM "prices" {where}'
    assert influxql.to_influxql(plan, "it's") == (
        f'SELECT mean("price_per_mwh") AS "price_per_mwh" FROM "prices" {where} AND "currency"=\'it\\\'s\' '
        "GROUP BY time(3600s) fill(none) ORDER BY time ASC LIMIT 101"
    )
    assert influxql.stale_values(plan) is None
    # raw rows carry the currency column anyway; telemetry has no currency to split by
    _, raw = build(query(kind="prices", zone="de-lu"))
    assert influxql.split_values(raw) is None
    assert "currency" in raw.columns
    _, telemetry = build(query(every_s=60))
    assert influxql.split_values(telemetry) is None
    with pytest.raises(QueryError, match="currency"):
        influxql.to_influxql(telemetry, "EUR")


def test_flux_means_of_a_series_with_a_currency_select_only_numbers_and_ask_the_currencies_apart() -> None:
    _, plan = build(query(kind="prices", zone="de-lu", every_s=900))
    script = flux.to_flux(plan, "bess")
    assert '|> filter(fn: (r) => r._field == "price_per_mwh")' in script  # no mean of a text field
    values = flux.split_values(plan, "bess")
    assert '|> filter(fn: (r) => r._field == "currency")' in values
    assert '|> distinct(column: "_value")' in values


def test_means_of_several_currencies_stay_apart() -> None:
    assert split.values([[0, "EUR"], [0, "AUD"], [0, ""], [0, None], [0, "EUR"]]) == ["AUD", "EUR"]
    assert split.label([[1, 2.0]], "EUR") == [[1, 2.0, "EUR"]]
    merged = split.merge({"EUR": [[0, 10.0], [3600, 11.0]], "AUD": [[3600, 300.0], [7200, 301.0]]})
    assert merged == [[0, 10.0, "EUR"], [3600, 300.0, "AUD"], [3600, 11.0, "EUR"], [7200, 301.0, "AUD"]]


def test_a_series_split_by_currency_has_no_optional_fields() -> None:
    with pytest.raises(ValueError, match="optional"):
        Series("prices", "zone", ("price_per_mwh", "currency"), ("price_per_mwh",), optional=("price_per_mwh",),
               split_by="currency")
    assert {SERIES["prices"].split_by, SERIES["schedule"].split_by} == {"currency"}
    assert SERIES["telemetry"].split_by is None
