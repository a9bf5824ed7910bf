"""The dashboard's fleet, export and diagnostics routes (nodes/renderer/web_exports.py) through aiohttp's test server,
and what the pages carry for them (CSV links, the diagnostics panel, the time-zone toggle)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import BatterySpec, Schedule, ScheduleSlot, Telemetry
from nodes.renderer.csvout import Table
from nodes.renderer.dashboard import DashboardState
from nodes.renderer.diagnosis import DiagnosticRow, DiagnosticsPanel
from nodes.renderer.web import build_app
from nodes.renderer.windows import TimeWindow

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=900, max_charge_kw=250, max_discharge_kw=250)


class Providers:
    def __init__(self) -> None:
        self.exports: list[tuple[str, str, str]] = []
        self.diagnostics: list[tuple[str, str]] = []

    async def export(self, battery: str, window: TimeWindow, series: str) -> Table:
        self.exports.append((battery, window.key, series))
        return Table(series, ("time_utc", "soc_kwh"), [[NOW, 500.0]], "raw samples")

    async def diagnose(self, battery: str, window: TimeWindow) -> DiagnosticsPanel:
        self.diagnostics.append((battery, window.key))
        row = DiagnosticRow(key="efficiency", title="round-trip efficiency", value=87.9, unit="%", spec_value=88.0,
                            sample=4, sample_unit="closed SOC cycles", summary="measured 87.9 % vs spec 88 % over 4 "
                            "cycles", method="Closed SOC cycles: ...", readings=5000, hours=14.0)
        return DiagnosticsPanel(battery=battery, window=window.key, status="ready", computed_at=NOW,
                                begin=NOW - timedelta(days=1), end=NOW, readings=5000, commands=9, rows=[row],
                                refresh_s=300.0)


@pytest.fixture
def providers() -> Providers:
    return Providers()


@pytest.fixture
def state(providers: Providers) -> DashboardState:
    state = DashboardState(clock=lambda: NOW)
    state.display_tz = "America/New_York"
    state.diagnostics_provider = providers.diagnose
    state.export_provider = providers.export
    state.set_telemetry("b1", Telemetry(ts=NOW - timedelta(seconds=5), soc_kwh=400.0, power_kw=100.0))
    state.set_spec("b1", SPEC)
    slot = ScheduleSlot(start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=2), price_per_mwh=100.0,
                        charge_kw=0.0, discharge_kw=100.0, soc_kwh=300.0)
    state.set_schedule("b1", Schedule(plan_id="p", created_at=NOW, soc_initial_kwh=400.0, slots=[slot],
                                      expected_revenue=10.0))
    state.set_telemetry("b2", Telemetry(ts=NOW - timedelta(seconds=3), soc_kwh=600.0, power_kw=-20.0))
    return state


@pytest.fixture
async def client(state: DashboardState) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(state))) as client:
        yield client


async def test_the_fleet_as_json_has_rows_totals_and_the_zone(client: TestClient[Any, Any]) -> None:
    answer = await (await client.get("/api/fleet")).json()
    assert [r["battery"] for r in answer["rows"]] == ["b1", "b2"]
    b1 = answer["rows"][0]
    assert (b1["soc_pct"], b1["revenue_today"], b1["currency"]) == (40.0, 10.0, "EUR")
    totals = answer["totals"]
    assert (totals["energy_kwh"], totals["power_kw"], totals["revenue_today"]) == (1000.0, 80.0, {"EUR": 10.0})
    assert totals["how"]["energy"].startswith("Σ of the latest SOC")
    assert answer["display_tz"] == "America/New_York"


async def test_the_fleet_csv_is_an_attachment_with_utc_times(client: TestClient[Any, Any]) -> None:
    response = await client.get("/fleet.csv")
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="bess-fleet-20250116T120000Z.csv"'
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[1][rows[0].index("telemetry_time_utc")] == "2025-01-16T11:59:55Z"
    assert [r[0] for r in rows[1:]] == ["b1", "b2", "TOTAL"]


async def test_a_panel_exports_its_window_and_bad_requests_get_the_error_shape(
    client: TestClient[Any, Any], providers: Providers
) -> None:
    response = await client.get("/battery/b1/export.csv", params={"series": "soc", "window": "6h"})
    assert response.status == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="bess-b1-soc-6h-20250116T120000Z.csv"'
    assert response.headers["X-BESS-Export-Note"] == "raw samples"
    assert await response.text() == "time_utc,soc_kwh\r\n2025-01-16T12:00:00Z,500.0\r\n"
    assert providers.exports == [("b1", "6h", "soc")]
    bad = await client.get("/battery/b1/export.csv", params={"series": "nope"})
    assert bad.status == 422
    assert (await bad.json())["field"] == "series"
    assert (await client.get("/battery/zz/export.csv")).status == 404
    window = await client.get("/battery/b1/export.csv", params={"window": "99y"})
    assert window.status == 422
    assert (await window.json())["field"] == "window"


async def test_diagnostics_as_json_and_as_csv(client: TestClient[Any, Any], providers: Providers) -> None:
    panel = await (await client.get("/api/diagnostics/b1", params={"window": "7d"})).json()
    assert panel["status"] == "ready"
    (row,) = panel["rows"]
    assert (row["value"], row["sample"], row["sample_unit"]) == (87.9, 4, "closed SOC cycles")
    assert providers.diagnostics == [("b1", "7d")]
    body = await (await client.get("/battery/b1/export.csv", params={"series": "diagnostics"})).text()
    parsed = list(csv.reader(io.StringIO(body)))
    assert parsed[1][:5] == ["round-trip efficiency", "87.9", "%", "88.0", "4"]
    assert (await client.get("/api/diagnostics/nobody")).status == 404


async def test_pages_carry_csv_links_the_diagnostics_panel_and_the_zone_toggle(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/battery/b1")).text()
    assert 'id="panel-diagnostics"' in page
    assert page.count('class="panel-csv"') == 8, "every figure panel and the diagnostics"
    assert 'href="/battery/b1/export.csv?series=soc"' in page
    assert 'data-display-tz="America/New_York"' in page
    assert 'data-tz="UTC"' in page
    assert 'data-tz="America/New_York"' in page
    index = await (await client.get("/")).text()
    assert 'id="fleet-csv" href="/fleet.csv"' in index
    assert 'data-display-tz="America/New_York"' in index
    assert "2025-01-16 06:59:55 EST" in index, "the server writes times in the display zone too"


async def test_without_a_display_zone_there_is_nothing_to_toggle(state: DashboardState) -> None:
    state.display_tz = "UTC"
    async with TestClient(TestServer(build_app(state))) as client:
        page = await (await client.get("/")).text()
    assert 'class="tz-label" id="tz-toggle" data-zones="UTC"' in page
    assert "data-tz=" not in page
