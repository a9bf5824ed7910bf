"""The index in pages (nodes/renderer/paging.py): 100 rows a page, search, server-side sort over every battery,
totals of the whole fleet on every page; /api/fleet paged the same way, /fleet.csv whole."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import BatterySpec, Telemetry
from nodes.renderer.dashboard import DashboardState
from nodes.renderer.fleet import FleetRow
from nodes.renderer.paging import PageError, PageQuery, page_of, sort_rows
from nodes.renderer.web import build_app

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)
FLEET = 250


def row(battery: str, soc_kwh: float | None = None) -> FleetRow:
    return FleetRow(battery=battery, href=f"/battery/{battery}", soc_kwh=soc_kwh)


def test_pages_split_a_fleet_and_the_last_one_answers_beyond_the_end() -> None:
    rows = [row(f"b{i:03d}") for i in range(FLEET)]
    first = page_of(rows, PageQuery())
    assert [r.battery for r in first.rows][:2] == ["b000", "b001"]
    assert len(first.rows) == 100
    assert (first.page, first.pages, first.matched, first.partial) == (1, 3, FLEET, True)
    beyond = page_of(rows, PageQuery(page=9))
    assert (beyond.page, len(beyond.rows), beyond.rows[-1].battery) == (3, 50, "b249")
    assert not page_of(rows[:100], PageQuery()).partial, "one page holds every battery"


def test_search_is_a_case_insensitive_substring_of_the_id() -> None:
    rows = [row("Site-A-1"), row("site-a-2"), row("site-b-1")]
    found = page_of(rows, PageQuery(q="SITE-A"))
    assert [r.battery for r in found.rows] == ["Site-A-1", "site-a-2"]
    assert (found.matched, found.total, found.partial) == (2, 3, True)


def test_sorting_puts_unknown_values_last_both_ways_and_ties_by_id() -> None:
    rows = [row("c", 5.0), row("a", None), row("b", 5.0), row("d", 9.0)]
    assert [r.battery for r in sort_rows(rows, "soc", False)] == ["b", "c", "d", "a"]
    assert [r.battery for r in sort_rows(rows, "soc", True)] == ["d", "b", "c", "a"]
    assert [r.battery for r in sort_rows(rows, "", False)] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(("query", "field"), [({"page": "0"}, "page"), ({"page": "x"}, "page"),
                                              ({"q": "x" * 65}, "q"), ({"sort": "nope"}, "sort"),
                                              ({"dir": "up"}, "dir"), ({"per_page": "1001"}, "per_page")])
def test_bad_parameters_name_their_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(PageError) as caught:
        PageQuery.parse(query)
    assert caught.value.field == field


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    state = DashboardState(clock=lambda: NOW)
    for i in range(FLEET):
        battery = f"b{i:03d}"
        state.set_telemetry(battery, Telemetry(ts=NOW - timedelta(seconds=5), soc_kwh=float(i), power_kw=1.0))
        state.set_spec(battery, BatterySpec(capacity_kwh=1000, soc_min_kwh=0, soc_max_kwh=1000, max_charge_kw=1,
                                            max_discharge_kw=1))
    async with TestClient(TestServer(build_app(state))) as client:
        yield client


def ids_on(page: str) -> list[str]:
    return re.findall(r'<tr class="battery-row" id="battery-([^"]+)"', page)


async def test_the_index_shows_one_page_with_the_whole_fleets_totals(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")
    page = await response.text()
    assert ids_on(page) == [f"b{i:03d}" for i in range(100)]
    assert 'data-paged="true"' in page
    assert "fleet · 250 batteries, 250 counted" in page, "the totals are of every battery, not of the page"
    assert 'data-page="1" data-pages="3"' in page
    assert 'href="/?page=2" rel="next"' in page
    assert len(page.encode()) < 200_000

    sorted_desc = await (await client.get("/?sort=soc&dir=desc&page=1")).text()
    assert ids_on(sorted_desc)[:2] == ["b249", "b248"], "sorted over every battery before paging"
    assert 'href="/?page=2&amp;sort=soc&amp;dir=desc" rel="next"' in sorted_desc
    search = await (await client.get("/?q=b24")).text()
    assert ids_on(search) == [f"b24{i}" for i in range(10)]
    assert "fleet · 250 batteries" in search
    assert 'data-paged="true"' in search
    nothing = await (await client.get("/?q=zzz")).text()
    assert "no battery matches this search" in nothing

    bad = await client.get("/?page=0")
    assert bad.status == 422
    assert (await bad.json())["field"] == "page"


async def test_the_fleet_api_is_paged_and_the_csv_is_whole(client: TestClient[Any, Any]) -> None:
    answer = await (await client.get("/api/fleet?page=3")).json()
    assert [r["battery"] for r in answer["rows"]] == [f"b{i:03d}" for i in range(200, 250)]
    assert (answer["page"], answer["pages"], answer["matched"], answer["batteries"]) == (3, 3, FLEET, FLEET)
    assert answer["totals"]["batteries"] == FLEET
    assert len((await (await client.get("/api/fleet?per_page=1000")).json())["rows"]) == FLEET
    rows = list(csv.reader(io.StringIO(await (await client.get("/fleet.csv")).text())))
    assert len(rows) == 1 + FLEET + 1, "header, every battery, TOTAL"


async def test_the_event_stream_of_a_page_carries_only_that_pages_batteries(client: TestClient[Any, Any]) -> None:
    async with client.get("/events?page=3") as response:
        snapshot = b""
        while b"b249" not in snapshot:
            snapshot += await asyncio.wait_for(response.content.readany(), 5)
    batteries = set(re.findall(rb'"battery":"(b\d+)"', snapshot))
    assert batteries == {f"b{i:03d}".encode() for i in range(200, 250)}, "page 3's rows, nothing of pages 1 and 2"
    assert (await client.get("/events?page=x")).status == 422


def test_a_filtered_client_takes_only_its_batteries_and_the_fleet_wide_events() -> None:
    state = DashboardState(clock=lambda: NOW)
    client = state.subscribe(None, None, frozenset({"b1"}))
    state.set_telemetry("b2", Telemetry(ts=NOW, soc_kwh=1.0))
    state.set_telemetry("b1", Telemetry(ts=NOW, soc_kwh=2.0))
    state.publish_event("status", None, b"{}", key="recorder")
    kinds = [frame.split(b"\n", 1)[0] for frame in client.drain()]
    assert kinds == [b"event: telemetry", b"event: status"]


async def test_the_battery_api_is_bounded_too(client: TestClient[Any, Any]) -> None:
    whole = await (await client.get("/api/batteries")).json()
    assert (len(whole["batteries"]), whole["pages"]) == (FLEET, 1), "up to 1,000 a page by default"
    page = await (await client.get("/api/batteries?per_page=100&page=3")).json()
    assert [b["battery"] for b in page["batteries"]] == [f"b{i:03d}" for i in range(200, 250)]
    assert (page["page"], page["pages"], page["matched"]) == (3, 3, FLEET)
    assert (await client.get("/api/batteries?per_page=0")).status == 422
