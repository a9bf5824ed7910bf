"""CSV exports (nodes/renderer/csvout.py, exports.py) and the display time zone (nodes/renderer/timezone.py)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nodes.contract.messages import Alarm, BatterySpec, Schedule, ScheduleSlot, Telemetry
from nodes.renderer.config import RendererConfig
from nodes.renderer.csvout import cell, csv_bytes, table_bytes
from nodes.renderer.draw import Scene
from nodes.renderer.exports import SERIES, fleet_table, scene_table, telemetry_table
from nodes.renderer.fleet import fleet_row, fleet_totals
from nodes.renderer.insights import Insights
from nodes.renderer.series import PriceSeries, TelemetrySeries
from nodes.renderer.timezone import display_time, utc_offset_s, zone_problem
from nodes.runtime.config import load, load_or_exit

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)


def parse(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"))))


# -- the writer --------------------------------------------------------------------------------------------


def test_cells_are_exact_utc_and_empty_when_missing() -> None:
    assert cell(None) == ""
    assert cell(float("nan")) == ""
    assert cell(float("inf")) == ""
    assert cell(0.1 + 0.2) == "0.30000000000000004", "numbers in full, read back the same"
    assert cell(-12.5) == "-12.5"
    assert cell(3) == "3"
    assert cell(True) == "true"
    berlin = datetime(2025, 1, 16, 13, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert cell(berlin) == "2025-01-16T13:00:00Z", "any zone written as UTC"
    assert cell(datetime(2025, 1, 16, 13, 0)) == "2025-01-16T13:00:00Z", "naive means UTC"


def test_text_a_spreadsheet_would_run_as_a_formula_is_neutralised() -> None:
    assert cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert [cell(t) for t in ("+1", "-x", "@sum", "\tx", "ok")] == ["'+1", "'-x", "'@sum", "'\tx", "ok"]


def test_rows_round_trip_through_a_csv_reader() -> None:
    body = csv_bytes(("time_utc", "text", "value_kw"),
                     [[NOW, 'a "quoted", comma\nline', -1.25], [NOW, None, None]])
    assert body.startswith(b"time_utc,text,value_kw\r\n")
    assert parse(body) == [["time_utc", "text", "value_kw"], ["2025-01-16T12:00:00Z", 'a "quoted", comma\nline',
                                                                 "-1.25"], ["2025-01-16T12:00:00Z", "", ""]]
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        csv_bytes(("a", "b", "c"), [[1, 2]])


# -- what each panel exports ---------------------------------------------------------------------------------


def scene(telemetry: TelemetrySeries) -> Scene:
    slots = [ScheduleSlot(start=NOW + timedelta(hours=h), end=NOW + timedelta(hours=h + 1), price_per_mwh=80.0 + h,
                          charge_kw=0.0, discharge_kw=50.0 * (h % 2), soc_kwh=500.0) for h in range(-30, 3)]
    schedule = Schedule(plan_id="p1", created_at=NOW, soc_initial_kwh=500, slots=slots, expected_revenue=1.0,
                        currency="GBP")
    alarm = Alarm(rule="cell_temp_high", state="raised", since=NOW - timedelta(minutes=5), severity="critical",
                  message="=cmd hot", value=58.0, threshold=55.0, unit="°C")
    return Scene(battery="b1", telemetry=telemetry, prices=PriceSeries.from_schedule(schedule), schedule=schedule,
                 spec=BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=250,
                                  max_discharge_kw=250),
                 insights=Insights(begin=NOW - timedelta(days=1), end=NOW, samples=3, realised_revenue=12.5,
                                   currency="GBP"),
                 now=NOW, x_range=(NOW - timedelta(days=1), NOW + timedelta(hours=12)), live=True, alarms=[alarm])


def test_telemetry_exports_say_whether_rows_are_samples_or_bucket_means() -> None:
    raw = TelemetrySeries.from_telemetry(
        [Telemetry(ts=NOW + timedelta(seconds=i), soc_kwh=500.0 + i, power_kw=-10.0, cell_temp_max_c=30.0 + i)
         for i in range(3)])
    table = telemetry_table("cells", raw, ("cell_temp_max_c", "soh_pct"))
    assert table.columns == ("time_utc", "bucket_s", "cell_temp_max_c", "soh_pct")
    assert table.note == "raw samples"
    rows = parse(table_bytes(table))
    assert rows[1] == ["2025-01-16T12:00:00Z", "", "30.0", ""], "a column the battery does not report: empty cells"
    means = TelemetrySeries(np.array([NOW.timestamp()]), np.array([510.0]), np.array([-5.0]), np.array([np.nan]),
                            np.array([np.nan]), np.array([60.0]))
    table = telemetry_table("soc", means, ("soc_kwh",))
    assert parse(table_bytes(table))[1] == ["2025-01-16T12:00:00Z", "60.0", "510.0"]
    assert "means over [time_utc, time_utc + bucket_s)" in table.note


def test_every_panel_exports_its_data_with_units_in_the_column_names() -> None:
    telemetry = TelemetrySeries.from_telemetry([Telemetry(ts=NOW, soc_kwh=500.0, power_kw=25.0)])
    tables = {name: scene_table(name, scene(telemetry)) for name in SERIES if name != "diagnostics"}
    assert tables["power"].columns == ("time_utc", "bucket_s", "power_kw", "target_charge_kw", "target_discharge_kw")
    assert parse(table_bytes(tables["soc"]))[1] == ["2025-01-16T12:00:00Z", "", "500.0"]
    assert tables["telemetry"].columns[2:6] == ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw")
    schedule = tables["schedule"]
    assert schedule.columns[:4] == ("slot_start_utc", "slot_end_utc", "price_per_mwh", "currency")
    assert len(schedule.rows) == 24 + 3, "the slots in the view (24 h back, the plan ahead), not the older ones"
    assert {row[3] for row in schedule.rows} == {"GBP"}
    prices = parse(table_bytes(tables["prices"]))
    assert prices[0] == ["slot_start_utc", "slot_end_utc", "price_per_mwh", "currency"]
    assert prices[1][3] == "GBP"
    insights = dict(tables["insights"].rows)  # type: ignore[arg-type]
    assert insights["realised_revenue"] == 12.5
    assert insights["currency"] == "GBP"
    assert "begin_utc" in insights
    alarms = parse(table_bytes(tables["alarms"]))
    assert alarms[0][:4] == ["since_utc", "state", "rule", "severity"]
    assert alarms[1][4] == "'=cmd hot", "bus text is neutralised"
    with pytest.raises(ValueError, match="unknown export"):
        scene_table("nope", scene(telemetry))


def test_the_fleet_csv_is_the_table_with_its_totals_row() -> None:
    spec = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=90, max_charge_kw=50, max_discharge_kw=50)
    rows = [fleet_row("a", now=NOW, telemetry=Telemetry(ts=NOW, soc_kwh=40.0, power_kw=5.0), spec=spec),
            fleet_row("b", now=NOW, telemetry=Telemetry(ts=NOW, soc_kwh=60.0, power_kw=-2.0), spec=spec)]
    parsed = parse(table_bytes(fleet_table(rows, fleet_totals(rows))))
    header = parsed[0]
    assert header[:5] == ["battery", "soc_kwh", "soc_pct_of_capacity", "capacity_kwh", "power_kw"]
    assert "telemetry_time_utc" in header
    assert [r[0] for r in parsed[1:]] == ["a", "b", "TOTAL"]
    total = dict(zip(header, parsed[-1], strict=True))
    assert (total["soc_kwh"], total["soc_pct_of_capacity"], total["power_kw"]) == ("100.0", "50.0", "3.0")


# -- the display zone ----------------------------------------------------------------------------------------


def test_a_zone_must_be_iana() -> None:
    assert zone_problem("UTC") is None
    assert zone_problem("Europe/Berlin") is None
    assert zone_problem("America/New_York") is None
    assert "not an IANA time zone" in (zone_problem("Mars/Olympus") or "")
    assert "not an IANA time zone" in (zone_problem("../etc/passwd") or "")
    assert zone_problem("") is not None
    assert zone_problem(" Europe/Berlin") is not None


def test_times_are_written_in_the_zone_with_daylight_saving() -> None:
    winter, summer = datetime(2025, 1, 16, 12, tzinfo=UTC), datetime(2025, 7, 16, 12, tzinfo=UTC)
    assert display_time(winter, "UTC") == "2025-01-16 12:00:00 UTC"
    assert display_time(winter, "Europe/Berlin") == "2025-01-16 13:00:00 CET"
    assert display_time(summer, "Europe/Berlin", seconds=False) == "2025-07-16 14:00 CEST"
    assert utc_offset_s(winter, "America/New_York") == -5 * 3600
    assert utc_offset_s(summer, "America/New_York") == -4 * 3600
    # the clock jumps: 01:00 UTC on 2025-03-30 is 03:00 CEST, one second before it was 01:59:59 CET
    jump = datetime(2025, 3, 30, 1, tzinfo=UTC)
    assert display_time(jump - timedelta(seconds=1), "Europe/Berlin") == "2025-03-30 01:59:59 CET"
    assert display_time(jump, "Europe/Berlin") == "2025-03-30 03:00:00 CEST"


def test_bess_display_tz_is_read_and_a_bad_one_stops_the_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert load(RendererConfig, {"BESS_DISPLAY_TZ": "Europe/Berlin"}).display_tz == "Europe/Berlin"
    assert load(RendererConfig, {}).display_tz == "UTC"
    with pytest.raises(SystemExit) as stopped:
        load_or_exit(RendererConfig, "renderer", {"BESS_DISPLAY_TZ": "Mars/Olympus"})
    assert stopped.value.code == 2
    assert "BESS_DISPLAY_TZ: 'Mars/Olympus' is not an IANA time zone" in capsys.readouterr().err
