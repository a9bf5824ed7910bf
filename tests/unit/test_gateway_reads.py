"""GET /read without I/O: query validation and the recorder's rows back into the seed's shape (and CSV)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from nodes.contract.messages import HistoryResult
from nodes.gateway.bodies import ReadRecord
from nodes.gateway.errors import ApiError
from nodes.gateway.reads import parse_every, parse_read_query, parse_time, to_csv, to_records

NOW = datetime(2025, 1, 16, 12, tzinfo=UTC)


def query(**params: str) -> dict[str, object]:
    parsed = parse_read_query(params.items(), now=NOW, default_battery="battery-1", max_rows=1000)
    return {f: getattr(parsed, f) for f in parsed.__struct_fields__}


def test_seed_query() -> None:
    assert query(begin="2025-01-16T09:00:00Z", end="2025-01-16T11:00:00Z") == {
        "battery": "battery-1",
        "begin": datetime(2025, 1, 16, 9, tzinfo=UTC),
        "end": datetime(2025, 1, 16, 11, tzinfo=UTC),
        "every_s": None,
        "csv": False,
        "limit": 1000,
        "limit_given": False,
    }


def test_options() -> None:
    parsed = query(begin="2025-01-16T09:00:00Z", battery="b-2", every="15m", format="csv", limit="10")
    assert (parsed["end"], parsed["battery"], parsed["every_s"], parsed["csv"], parsed["limit"]) == (
        NOW,
        "b-2",
        900,
        True,
        10,
    )
    assert parsed["limit_given"] is True


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m", 60), ("15m", 900), ("1h", 3600), ("1d", 86400), ("90m", 5400)]
)
def test_every(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1", "1.5m", "-1m", "0s", "1w", "400d", "1 minute", "1H", " 1h"])
def test_bad_every(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_every(text)
    assert (info.value.status, info.value.field) == (422, "every")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-16T10:00:00Z", datetime(2025, 1, 16, 10, tzinfo=UTC)),
        ("2025-01-16T11:00:00+01:00", datetime(2025, 1, 16, 10, tzinfo=UTC)),
        ("2025-01-16T11:00:00 01:00", datetime(2025, 1, 16, 10, tzinfo=UTC)),  # "+" decoded to a space
        ("2025-01-16T11:00:00.5 0100", datetime(2025, 1, 16, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    assert parse_time(text, "begin") == expected


def test_every_bucket_count_is_checked_before_asking() -> None:
    assert query(begin="2025-01-16T11:50:00Z", every="1s")["every_s"] == 1  # 601 intervals: fine
    with pytest.raises(ApiError, match="intervals, more than 1000"):
        query(begin="2025-01-16T00:00:00Z", every="1s")


def test_records_follow_the_columns_by_name() -> None:
    result = HistoryResult(
        ok=True,
        columns=["time", "mean_target_charge_kw", "mean_soc_kwh"],
        rows=[["2025-01-16T10:00:00Z", 100.0, 700.0], ["2025-01-16T10:15:00Z", None, None], ["short"], []],
    )
    assert to_records(result) == [ReadRecord(timestamp="2025-01-16T10:00:00Z", soc_kwh=700.0, target_charge_kw=100.0)]


def test_non_numbers_are_dropped() -> None:
    result = HistoryResult(ok=True, columns=["time", "soc_kwh", "power_kw"], rows=[["t", True, "x"], ["u", 1, "y"]])
    assert to_records(result) == [ReadRecord(timestamp="u", soc_kwh=1)]


def test_csv() -> None:
    records = [
        ReadRecord(timestamp="2025-01-16T10:00:00Z", soc_kwh=700, target_charge_kw=100, target_discharge_kw=50),
        ReadRecord(timestamp="2025-01-16T10:01:00Z", soc_kwh=650.5),
    ]
    assert to_csv(records) == (
        "timestamp,SOC,target_charge,target_discharge,power_kw\n"
        "2025-01-16T10:00:00Z,700,100,50,\n2025-01-16T10:01:00Z,650.5,,,\n"
    )
    assert to_csv([]) == "timestamp,SOC,target_charge,target_discharge,power_kw\n"


def test_csv_has_every_value_the_json_answer_has() -> None:
    # one recorder answer with every column the recorder stores, as both answers of the same query see it
    columns = ["time", "soc_kwh", "target_discharge_kw", "target_charge_kw", "power_kw"]
    result = HistoryResult(ok=True, columns=columns, rows=[["2025-01-16T10:00:00Z", 700.0, 50.0, 100.0, -20.5]])
    records = to_records(result)
    [as_json] = msgspec.json.decode(msgspec.json.encode(records))
    header, row = (line.split(",") for line in to_csv(records).splitlines())
    as_csv = dict(zip(header, row, strict=True))
    assert set(as_csv) == set(as_json) == {"timestamp", "SOC", "target_charge", "target_discharge", "power_kw"}
    assert {key: str(value) for key, value in as_json.items()} == as_csv


def test_bms_columns_come_back_by_name_and_the_csv_has_them_only_when_reported() -> None:
    columns = ["time", "soc_kwh", "power_kw", "cell_temp_max_c", "soh_pct", "bms_alarms"]
    result = HistoryResult(ok=True, columns=columns, rows=[
        ["2025-01-16T10:00:00Z", 700.0, -20.0, 31.5, 97.0, "OVT,FAN"],
        ["2025-01-16T10:00:02Z", 699.0, -20.0, 31.0, 97.0, ""],
        ["2025-01-16T10:00:04Z", 698.0, -20.0, None, None, None],
    ])
    first, second, third = to_records(result)
    assert (first.cell_temp_max_c, first.soh_pct, first.bms_alarms) == (31.5, 97.0, ["OVT", "FAN"])
    assert (second.bms_alarms, third.bms_alarms, third.cell_temp_max_c) == ([], None, None)
    [as_json, *_] = msgspec.json.decode(msgspec.json.encode([first]))
    assert as_json["bms_alarms"] == ["OVT", "FAN"]
    assert "pack_voltage_v" not in as_json
    lines = to_csv([first, second, third]).splitlines()
    assert lines[0] == "timestamp,SOC,target_charge,target_discharge,power_kw,cell_temp_max_c,soh_pct,bms_alarms"
    assert lines[1] == '2025-01-16T10:00:00Z,700.0,,,-20.0,31.5,97.0,"OVT,FAN"'
    assert lines[3] == "2025-01-16T10:00:04Z,698.0,,,-20.0,,,"
