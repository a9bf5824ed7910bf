"""Raw retention never deletes the samples of a day whose KPI day is not stored (nodes.recorder.raw_guard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.recorder import raw_guard
from nodes.renderer import ledger

DAY = 20_000  # a day number (2024-10-04)
START = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=DAY)


def test_the_guard_reads_raw_samples_as_far_around_a_day_as_the_kpi_ledger_does() -> None:
    assert raw_guard.KPI_SPAN_S == ledger.MAX_SPAN_S


def test_a_battery_whose_days_are_all_stored_is_deleted_up_to_the_cutoff() -> None:
    cutoff = START + timedelta(days=3)
    out = raw_guard.limits({"b1": {DAY, DAY + 1, DAY + 2}}, {"b1": {DAY, DAY + 1, DAY + 2}}, cutoff)
    assert out == {"b1": cutoff}
    assert raw_guard.held_back(out, cutoff) == []


def test_the_first_day_without_a_stored_kpi_day_stops_the_deletion_before_its_samples_are_needed() -> None:
    cutoff = START + timedelta(days=3)
    out = raw_guard.limits({"b1": {DAY, DAY + 1, DAY + 2}, "b2": {DAY}}, {"b1": {DAY, DAY + 2}}, cutoff)
    assert out["b1"] == START + timedelta(days=1) - timedelta(seconds=ledger.MAX_SPAN_S)
    assert out["b2"] == START - timedelta(seconds=ledger.MAX_SPAN_S)
    assert raw_guard.held_back(out, cutoff) == ["b1", "b2"]
    statements = raw_guard.delete_statements("telemetry", START - timedelta(days=1), out)
    assert len(statements) == 2
    assert "\"battery\"='b1'" in statements[0]
    assert "'2024-10-04T18:00:00.000000Z'" in statements[0]
    text = raw_guard.describe(["b1", "b2"], out)
    assert "2 battery(ies)" in text
    assert "kpis backfill" in text


def test_nothing_is_deleted_for_a_battery_whose_limit_is_before_the_rolled_up_range() -> None:
    out = {"b1": START}
    assert raw_guard.delete_statements("telemetry", START, out) == []


def test_days_are_read_per_battery_from_a_grouped_answer() -> None:
    us = DAY * 86_400 * 1_000_000
    answer = {"series": [
        {"name": "kpi_1d", "tags": {"battery": "b1"}, "columns": ["time", "count"],
         "values": [[us, 1], [us + 86_400 * 1_000_000, 0]]},
        {"name": "kpi_1d", "tags": {"battery": "b2"}, "columns": ["time", "count"], "values": [[us, 3]]},
    ]}
    assert raw_guard.days_of(answer) == {"b1": {DAY}, "b2": {DAY}}


def test_the_day_queries_start_at_the_day_of_the_oldest_raw_point_left() -> None:
    us = DAY * 86_400 * 1_000_000
    answer = {"series": [
        {"name": "telemetry", "tags": {"battery": "b1"}, "columns": ["time", "first"], "values": [[us + 5_000, 1.0]]},
        {"name": "telemetry", "tags": {"battery": "b2"}, "columns": ["time", "first"],
         "values": [[us + 86_400 * 1_000_000, 2.0]]},
    ]}
    assert raw_guard.earliest_day(answer) == START
    assert raw_guard.earliest_day({}) is None
    assert "first(\"soc_kwh\")" in raw_guard.first_query("telemetry", "soc_kwh", START, START + timedelta(days=1))
