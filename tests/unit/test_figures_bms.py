"""The battery (BMS) panel and the alarm history table: drawn from what was reported and stored, nothing else."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import BMS_NUMBERS, Alarm, HistoryResult, Telemetry
from nodes.renderer import figures as rf
from nodes.renderer.figures.alarms import history_rows
from nodes.renderer.series import TelemetrySeries, downsample

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)


def readings(n: int, **bms: float) -> list[Telemetry]:
    return [Telemetry(ts=T0 + timedelta(minutes=i), soc_kwh=500.0 + i, power_kw=-10.0,
                      **{k: v + i for k, v in bms.items()}) for i in range(n)]


def test_the_series_keeps_the_bms_columns_it_was_given_through_every_operation() -> None:
    series = TelemetrySeries.from_telemetry(readings(10, cell_temp_max_c=30.0, soh_pct=97.0))
    assert set(series.bms) == {"cell_temp_max_c", "soh_pct"}, "only what was reported"
    assert series.column("cell_temp_max_c").tolist() == [30.0 + i for i in range(10)]
    plain = TelemetrySeries.from_telemetry(readings(3))
    joined = plain.concat(series.between(T0.timestamp() + 600, None))
    assert set(joined.bms) == {"cell_temp_max_c", "soh_pct"}
    assert len(joined) == 3, "no reading after 10 minutes"
    both = series.between(None, T0.timestamp() + 300).concat(plain)
    assert [None if math.isnan(v) else round(v, 1) for v in both.column("soh_pct").tolist()] == [
        None, None, None, 100.0, 101.0], "a later duplicate timestamp wins: the plain readings had no SOH"
    assert downsample(series, 2).column("cell_temp_max_c").tolist() == [32.0, 37.0]


def test_the_series_reads_the_bms_columns_of_a_history_answer() -> None:
    columns = ["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", *BMS_NUMBERS]
    row = ["2025-01-16T10:00:00Z", 500.0, -10.0, None, None, *[None] * len(BMS_NUMBERS)]
    row[columns.index("cell_temp_min_c")] = 21.0
    series = TelemetrySeries.from_history(HistoryResult(ok=True, columns=columns, rows=[row]))
    assert list(series.bms) == ["cell_temp_min_c"], "a column with no value at all counts as not reported"


def test_the_battery_panel_draws_cell_temperatures_and_voltages_and_says_where_the_soh_comes_from() -> None:
    series = TelemetrySeries.from_telemetry(readings(
        5, cell_temp_min_c=22.0, cell_temp_max_c=28.0, cell_voltage_min_v=3.30, cell_voltage_max_v=3.32,
        soh_pct=97.0, pack_voltage_v=800.0, pack_current_a=-12.0))
    figure = rf.cells_figure(series).to_plotly_json()
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["coldest cell", "hottest cell", "lowest cell voltage", "highest cell voltage"]
    assert figure["data"][1]["fill"] == "tonexty", "the band between the coldest and the hottest cell"
    assert figure["data"][2]["yaxis"] == "y2"
    subtitle = figure["layout"]["title"]["subtitle"]["text"]
    assert subtitle == "state of health 101.0 % (reported by the BMS) · pack 804 V, -8 A"
    assert figure["layout"]["meta"]["absent"] is False
    assert figure["layout"]["meta"]["points"] == 20


def test_a_battery_without_a_bms_gets_a_panel_that_says_so_and_asks_to_be_hidden() -> None:
    figure = rf.cells_figure(TelemetrySeries.from_telemetry(readings(5))).to_plotly_json()
    assert figure["data"] == []
    assert figure["layout"]["meta"]["absent"] is True
    assert any("reports no BMS values" in a["text"] for a in figure["layout"]["annotations"])


def alarm(rule: str, state: str, since_s: float, raised_s: float | None = None, severity: str = "critical") -> Alarm:
    return Alarm(rule=rule, state=state, since=T0 + timedelta(seconds=since_s), severity=severity,  # type: ignore[arg-type]
                 message=f"{rule} {state}", raised_at=None if raised_s is None else T0 + timedelta(seconds=raised_s))


def test_the_history_pairs_each_raise_with_its_clear_newest_first() -> None:
    stored = [
        alarm("cell_temp_high", "cleared", 100, raised_s=-3600),  # raised before the window
        alarm("cell_temp_high", "raised", 200),
        alarm("cell_temp_high", "cleared", 290, raised_s=200),
        alarm("node_offline", "raised", 400, severity="warning"),
    ]
    rows = history_rows(stored, T0 + timedelta(seconds=460))
    assert [(r["rule"], r["raised (UTC)"], r["cleared (UTC)"], r["lasted"]) for r in rows] == [
        ("node_offline", "01-16 10:06:40", "active", "60 s so far"),
        ("cell_temp_high", "01-16 10:03:20", "01-16 10:04:50", "2 min"),
        ("cell_temp_high", "01-16 09:00:00", "01-16 10:01:40", "62 min"),
    ]
    assert rows[1]["message"] == "cell_temp_high raised", "the raise says what was wrong"


def test_the_history_figure_reads_the_stored_rows() -> None:
    columns = ["time", "rule", "state", "severity", "message", "value", "threshold", "unit", "raised_at"]
    result = HistoryResult(ok=True, columns=columns, rows=[
        ["2025-01-16T10:00:11Z", "cell_temp_high", "raised", "critical", "hot", 58.0, 55.0, "°C", None],
        ["2025-01-16T10:00:12Z", "junk", "exploded", "critical", "not an alarm", None, None, None, None],
    ])
    alarms = rf.alarms_from_history(result)
    assert [(a.rule, a.since) for a in alarms] == [("cell_temp_high", T0 + timedelta(seconds=11))]
    figure = rf.alarm_history_figure(alarms, T0 + timedelta(minutes=1)).to_plotly_json()
    (table,) = figure["data"]
    assert table["type"] == "table"
    assert figure["layout"]["title"]["text"] == "Alarm history · 1 alarm(s) in this window"
    empty = rf.alarm_history_figure([], T0, note="alarm history unavailable (timeout)").to_plotly_json()
    assert any("alarm history unavailable" in a["text"] for a in empty["layout"]["annotations"])
