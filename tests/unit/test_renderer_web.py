"""The dashboard's HTTP routes, event stream, per-viewer windows and token, through aiohttp's test server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import BatteryState, ControlMode, Figure, NodeStatus, Telemetry
from nodes.renderer import figures as rf
from nodes.renderer.auth import COOKIE, DashboardAuth
from nodes.renderer.dashboard import DashboardState, WindowFigures, control_summary, sse_frame
from nodes.renderer.series import TelemetrySeries
from nodes.renderer.web import build_app, validation_field
from nodes.renderer.windows import DEFAULT_WINDOW, TimeWindow, WindowError, parse_window

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)


def soc_message(battery: str = "b1", n: int = 3) -> Figure:
    series = TelemetrySeries.from_telemetry(
        Telemetry(ts=NOW - timedelta(minutes=n - i), soc_kwh=500.0 + i) for i in range(n)
    )
    return rf.to_message(rf.soc_figure(series), "soc", battery, NOW)


class Provider:
    """A figure provider that remembers which windows were asked for and answers with one labelled figure."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, TimeWindow]] = []
        self.fail = fail

    async def __call__(self, battery: str, window: TimeWindow) -> WindowFigures:
        if self.fail:
            raise RuntimeError("history unavailable")
        self.calls.append((battery, window))
        figure = rf.to_message(rf.soc_figure(TelemetrySeries.empty()), "soc", battery, NOW)
        figure.layout["meta"]["window"] = window.key
        return WindowFigures({"soc": msgspec.json.encode(figure)}, 10.0 if window.window_s else None)


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def state(provider: Provider) -> DashboardState:
    state = DashboardState(figure_provider=provider, clock=lambda: NOW, keepalive_s=0.2)
    state.set_figure(soc_message())
    for figure_id in rf.FIGURE_IDS[1:]:  # the node renders the whole default set at once
        state.set_figure(rf.to_message(rf.schedule_figure(None), figure_id, "b1", NOW))
    state.set_status("recorder", NodeStatus(node="recorder", state="online", since=NOW))
    state.set_status(
        "planner",
        NodeStatus(
            node="planner", state="degraded", reason="prices <stale> & old",
            details={"b2": "monitored, not planned: no spec received"},
        ),
    )
    state.set_state(
        "b1",
        BatteryState(
            ts=NOW, mode="discharging", power_kw=50.0, command_id="c-1", valid_until=NOW + timedelta(minutes=5)
        ),
    )
    state.set_telemetry("b1", Telemetry(ts=NOW - timedelta(seconds=42), soc_kwh=512.0, power_kw=50.0))
    state.set_control(
        "b1",
        ControlMode(mode="manual", set_at=NOW, until=NOW + timedelta(minutes=5), source="gateway",
                    reason="operator command"),
    )
    state.add_battery("b2")
    return state


@pytest.fixture
async def client(state: DashboardState) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_app(state))) as client:
        yield client


async def read_event(response: ClientResponse, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    """The next server-sent event (skipping comments and the retry line) as (event type, envelope)."""

    async def read() -> tuple[str, dict[str, Any]]:
        kind, data = "", list[str]()
        while True:
            raw = await response.content.readline()
            if not raw:
                raise EOFError("stream ended")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    return kind, json.loads("\n".join(data))
                continue
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])

    return await asyncio.wait_for(read(), timeout)


# -- pages -------------------------------------------------------------------------------------------------


async def test_index_lists_batteries_and_statuses(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert 'href="/battery/b1"' in page
    assert 'href="/battery/b2"' in page
    assert 'data-node="recorder" data-state="online"' in page
    assert "prices &lt;stale&gt; &amp; old" in page  # escaped
    assert 'data-mode="discharging"' in page
    assert "cdn.plot.ly" not in page
    assert "https://" not in page


async def test_index_shows_each_batterys_state(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/")).text()
    row = page[page.index('id="battery-b1"') : page.index('id="battery-b2"')]
    assert '<span class="soc-text">512.0 kWh</span>' in row  # no spec: kWh, no % of capacity
    assert 'data-field="power" data-sort-value="50.0" data-value="50.0" data-sign="+"' in row
    assert 'title="latest telemetry: + discharging, − charging">50.0 kW</td>' in row
    assert 'data-field="age" data-sort-value="42.0" data-ts="2025-01-16T11:59:18Z"' in row  # the age counts up
    assert 'data-mode="discharging"' in row
    assert 'data-control="manual"' in row
    assert "manual until 12:05 UTC (operator command)" in row
    assert row.count("title=") >= 6  # every number says what it is
    other = page[page.index('id="battery-b2"') :]
    assert '<span class="soc-text">—</span>' in other  # nothing known yet: a dash, not 0
    # a battery the planner does not plan says so, instead of the planner looking broken
    assert "planner: monitored, not planned: no spec received" in other
    summary = await (await client.get("/api/batteries")).json()
    b1 = summary["batteries"][0]
    assert (b1["soc_kwh"], b1["power_kw"], b1["mode"], b1["control_mode"], b1["telemetry_age_s"]) == (
        512.0, 50.0, "discharging", "manual", 42.0
    )
    assert summary["batteries"][1]["notes"] == {"planner": "monitored, not planned: no spec received"}


async def test_index_waiting_state_without_batteries() -> None:
    async with TestClient(TestServer(build_app(DashboardState()))) as client:
        page = await (await client.get("/")).text()
    assert 'id="no-batteries"' in page
    assert "waiting for telemetry" in page
    assert "no node has reported yet" in page


async def test_battery_page(client: TestClient[Any, Any]) -> None:
    response = await client.get("/battery/b1")
    assert response.status == 200
    page = await response.text()
    assert 'data-battery="b1"' in page
    for figure_id in rf.FIGURE_IDS:
        assert f'id="panel-{figure_id}" data-figure="{figure_id}" data-state="waiting" data-points="0"' in page
        assert f'id="plot-{figure_id}"' in page
    assert "waiting for telemetry" in page
    assert '<script src="/static/plotly.min.js?v=' in page
    assert "cdn.plot.ly" not in page
    assert "https://" not in page
    for key in ("6h", "24h", "7d", "30d"):  # links: the window is the viewer's, in the URL
        assert f'href="/battery/b1?window={key}" data-window="{key}"' in page
    assert 'id="window-begin"' in page
    assert 'id="lease"' in page
    assert 'id="mode"' in page
    assert 'id="control"' in page
    # The window of this page (default: 24 h sliding) is in the page for the selector to highlight.
    assert "&quot;window_s&quot;:86400" in page
    assert 'data-window-default="true"' in page
    week = await (await client.get("/battery/b1?window=7d")).text()
    assert 'data-window-key="7d"' in week
    assert 'data-window-default="false"' in week
    bad = await client.get("/battery/b1?window=fortnight")
    assert bad.status == 422
    assert (await bad.json())["field"] == "window"


async def test_battery_page_for_bad_ids(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/battery/B%201")).status == 404
    # A valid id that has not reported yet still gets its (waiting) page.
    assert (await client.get("/battery/b9")).status == 200


# -- static assets --------------------------------------------------------------------------------------------


async def test_plotly_js_is_served_offline_and_cached(client: TestClient[Any, Any]) -> None:
    response = await client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert response.status == 200
    assert response.content_type == "application/javascript"
    body = await response.read()
    assert len(body) > 3_000_000
    assert b"plotly.js" in body[:1000]
    assert "max-age=31536000" in response.headers["Cache-Control"]
    etag = response.headers["ETag"]
    gz = await client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert gz.headers["Content-Encoding"] == "gzip"
    assert len(await gz.read()) < len(body) / 2
    again = await client.get("/static/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status == 304


@pytest.mark.parametrize(("path", "ctype"), [("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "css")])
async def test_dashboard_assets(client: TestClient[Any, Any], path: str, ctype: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert ctype in response.content_type
    body = await response.text()
    assert "cdn.plot.ly" not in body
    assert (await client.get(path, headers={"If-None-Match": response.headers["ETag"]})).status == 304


async def test_dashboard_js_drives_plotly_react_and_test_hooks(client: TestClient[Any, Any]) -> None:
    js = await (await client.get("/static/dashboard.js")).text()
    for needle in (
        "Plotly.react",
        "EventSource",
        "/api/figures/",
        "history.pushState",
        "dataset.points",
        "dataset.lastUpdate",
        "body.dataset.ts",
    ):
        assert needle in js
    assert ".innerHTML" not in js


# -- JSON API --------------------------------------------------------------------------------------------------


async def test_api_batteries(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/batteries")
    assert response.status == 200
    answer = await response.json()
    assert [(b["battery"], b["href"], b["figures"], b["mode"]) for b in answer["batteries"]] == [
        ("b1", "/battery/b1", list(rf.FIGURE_IDS), "discharging"),
        ("b2", "/battery/b2", [], None),
    ]


async def test_api_figures(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/api/figures/b1")
    assert response.status == 200
    body = await response.read()
    answer = msgspec.json.decode(body, type=dict[str, Any])
    assert answer["battery"] == "b1"
    assert list(answer["figures"]) == list(rf.FIGURE_IDS)  # dashboard order
    figure = msgspec.convert(answer["figures"]["soc"], Figure)
    assert figure == msgspec.json.decode(msgspec.json.encode(soc_message()), type=Figure)
    # not drawn yet (b2 only just appeared): drawn on demand rather than answered with nothing
    fresh = await (await client.get("/api/figures/b2")).json()
    assert fresh["window"] == {"window_s": 86400}
    assert fresh["figures"]["soc"]["battery"] == "b2"


async def test_api_figures_errors(client: TestClient[Any, Any]) -> None:
    missing = await client.get("/api/figures/nope")
    assert missing.status == 404
    assert await missing.json() == {"error": "unknown battery 'nope'", "field": "battery"}
    bad = await client.get("/api/figures/Not_Valid")
    assert bad.status == 422
    assert (await bad.json())["field"] == "battery"
    unknown_route = await client.get("/api/nothing-here")
    assert unknown_route.status == 404
    assert set(await unknown_route.json()) == {"error", "field"}


async def test_api_status(client: TestClient[Any, Any]) -> None:
    answer = await (await client.get("/api/status")).json()
    assert set(answer["nodes"]) == {"planner", "recorder"}
    assert answer["control"]["b1"]["mode"] == "manual"
    assert answer["nodes"]["planner"]["state"] == "degraded"
    assert answer["batteries"]["b1"]["mode"] == "discharging"
    assert answer["batteries"]["b1"]["valid_until"] == "2025-01-16T12:05:00Z"
    assert answer["telemetry"]["b1"]["soc_kwh"] == 512.0


# -- events --------------------------------------------------------------------------------------------------


async def test_events_snapshot_then_live_updates(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events", params={"battery": "b1"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    snapshot = [await read_event(response) for _ in range(5 + len(rf.FIGURE_IDS))]
    kinds = [kind for kind, _ in snapshot]
    assert kinds == ["status", "status", "state", "control", "telemetry", *["figure"] * len(rf.FIGURE_IDS)]
    assert snapshot[3][1]["data"]["text"] == "Control: manual until 12:05 UTC (operator command)"
    figure = msgspec.convert(snapshot[5][1]["data"], Figure)
    assert figure.figure == "soc"
    assert figure.battery == "b1"
    assert snapshot[2][1]["battery"] == "b1"
    assert snapshot[2][1]["data"]["mode"] == "discharging"

    state.publish_event("figure", "b1", msgspec.json.encode(soc_message(n=7)), key="soc")
    kind, envelope = await read_event(response)
    assert kind == "figure"
    assert envelope["kind"] == "figure"
    assert envelope["battery"] == "b1"
    assert len(envelope["data"]["data"][0]["x"]) == 7

    # Another battery's news does not reach this page; node statuses reach every page.
    state.set_figure(soc_message(battery="b2"))
    state.set_status("gateway", NodeStatus(node="gateway", state="offline"))
    kind, envelope = await read_event(response)
    assert kind == "status"
    assert envelope["data"]["node"] == "gateway"
    response.close()


async def test_events_without_battery_get_states_of_all(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events")
    kinds = [(await read_event(response))[0] for _ in range(5)]
    assert kinds == ["status", "status", "state", "control", "telemetry"]
    state.set_figure(soc_message(n=9))  # the index takes no figures (they are big and it draws none)
    state.set_state("b2", BatteryState(ts=NOW, mode="idle"))
    kind, envelope = await read_event(response)
    assert (kind, envelope["battery"], envelope["data"]["mode"]) == ("state", "b2", "idle")
    response.close()


async def test_events_keepalive_and_close(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events", params={"battery": "b2"})
    for _ in range(2):  # b2 has no state, telemetry or figure yet: only the two node statuses
        await read_event(response)
    deadline = asyncio.get_running_loop().time() + 5
    while b": keepalive" not in await response.content.readline():
        assert asyncio.get_running_loop().time() < deadline
    assert state.client_count == 1
    state.close()
    rest = await asyncio.wait_for(response.content.read(), 5)  # returns at EOF: the server ended the stream
    assert rest.strip(b"\n").replace(b": keepalive", b"").strip() == b""
    for _ in range(100):
        if state.client_count == 0:
            break
        await asyncio.sleep(0.01)
    assert state.client_count == 0


async def test_events_rejects_bad_battery(client: TestClient[Any, Any]) -> None:
    response = await client.get("/events", params={"battery": "../etc"})
    assert response.status == 422
    assert (await response.json())["field"] == "battery"


def test_slow_client_queue_is_bounded_and_keeps_latest() -> None:
    state = DashboardState(queue_size=3)
    slow = state.subscribe("b1")
    for i in range(10):
        state.publish_event("figure", "b1", b'{"n":%d}' % i, key="soc")  # same key: replaced, never piles up
    assert len(slow.pending) == 1
    assert slow.drain() == [sse_frame("figure", "b1", b'{"n":9}')]
    for i in range(5):
        state.publish_event("note", "b1", b"%d" % i)  # no key: distinct events, the oldest are dropped
    assert [f.split(b'"data":')[1][:1] for f in slow.drain()] == [b"2", b"3", b"4"]
    assert slow.dropped == 2
    other = state.subscribe("b2")
    state.publish_event("figure", "b1", b"{}", key="soc")
    assert not other.pending
    assert other.wake.is_set() is False
    state.unsubscribe(slow)
    state.unsubscribe(other)
    assert state.client_count == 0


def test_sse_frame_splits_multiline_payloads() -> None:
    frame = sse_frame("status", None, b'{\n"a": 1\n}')
    assert frame == b'event: status\ndata: {"kind":"status","battery":null,"data":{\ndata: "a": 1\ndata: }}\n\n'


# -- windows belong to the viewer (issue 9 item 10) ------------------------------------------------------------


async def test_two_viewers_with_different_windows_see_different_ranges(
    client: TestClient[Any, Any], state: DashboardState, provider: Provider
) -> None:
    week = await (await client.get("/api/figures/b1", params={"window": "7d"})).json()
    day = await (await client.get("/api/figures/b1", params={"begin": "2025-01-14T00:00:00Z",
                                                             "end": "2025-01-15T00:00:00Z"})).json()
    assert week["window"] == {"window_s": 604800}
    assert week["figures"]["soc"]["layout"]["meta"]["window"] == "7d"
    assert week["refresh_s"] == 10.0  # a live window: the page asks again
    assert day["window"] == {"begin": "2025-01-14T00:00:00Z", "end": "2025-01-15T00:00:00Z"}
    assert day["figures"]["soc"]["layout"]["meta"]["window"] == "2025-01-14T00:00:00Z/2025-01-15T00:00:00Z"
    assert day["refresh_s"] is None  # a fixed past window does not change
    assert [w.key for _, w in provider.calls] == ["7d", "2025-01-14T00:00:00Z/2025-01-15T00:00:00Z"]
    # neither changed what anyone else sees: the default window's figures (and the live stream) are as before
    default = await (await client.get("/api/figures/b1")).json()
    assert default["window"] == {"window_s": 86400}
    assert msgspec.convert(default["figures"]["soc"], Figure) == msgspec.json.decode(
        msgspec.json.encode(soc_message()), type=Figure
    )
    assert not hasattr(state, "windows")
    # and there is no route left that sets a window for everyone
    assert (await client.post("/api/window", json={"battery": "b1", "window_s": 3600})).status in (404, 405)


async def test_a_non_default_page_takes_no_live_figures(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events", params={"battery": "b1", "figures": "0"})
    kinds = [(await read_event(response))[0] for _ in range(5)]
    assert "figure" not in kinds
    state.set_figure(soc_message(n=4))
    state.set_state("b1", BatteryState(ts=NOW, mode="idle"))
    kind, _ = await read_event(response)
    assert kind == "state"
    response.close()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"window": "fortnight"}, "window"),
        ({"window": "0h"}, "window"),
        ({"window": "30s"}, "window"),
        ({"window": "400d"}, "window"),
        ({"window": "7d", "begin": "2025-01-01T00:00:00Z"}, "window"),
        ({"begin": "yesterday"}, "begin"),
        ({"begin": "2025-01-01T00:00:00"}, "begin"),
        ({"end": "2025-01-01T00:00:00Z"}, "begin"),
        ({"begin": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end"),
        ({"begin": "2023-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "begin"),
        ({"begin": "2030-01-01T00:00:00Z"}, "begin"),
    ],
)
async def test_bad_windows_are_422_with_the_field(
    client: TestClient[Any, Any], query: dict[str, str], field: str
) -> None:
    response = await client.get("/api/figures/b1", params=query)
    assert response.status == 422
    answer = await response.json()
    assert answer["field"] == field
    assert answer["error"]


def test_parse_window() -> None:
    assert parse_window({}, NOW) == DEFAULT_WINDOW
    assert parse_window({"window": "6h"}, NOW) == TimeWindow(window_s=21600)
    assert parse_window({"window": "90m"}, NOW).key == "90m"
    assert parse_window({"window": "30d"}, NOW).query == "window=30d"
    fixed = parse_window({"begin": "2025-01-14T00:00:00+01:00"}, NOW)
    assert fixed.begin == datetime(2025, 1, 13, 23, 0, tzinfo=UTC)
    assert fixed.resolve(NOW) == (fixed.begin, NOW)
    assert fixed.is_live(NOW)
    past = parse_window({"begin": "2025-01-14T00:00:00Z", "end": "2025-01-15T00:00:00Z"}, NOW)
    assert not past.is_live(NOW)
    assert past.query == "begin=2025-01-14T00:00:00Z&end=2025-01-15T00:00:00Z"
    with pytest.raises(WindowError):
        parse_window({"window": "-1h"}, NOW)


async def test_provider_failure_is_503_json() -> None:
    state = DashboardState(figure_provider=Provider(fail=True), clock=lambda: NOW)
    state.add_battery("b1")
    async with TestClient(TestServer(build_app(state))) as client:
        response = await client.get("/api/figures/b1", params={"window": "7d"})
        assert response.status == 503
        assert await response.json() == {"error": "could not draw this window: history unavailable", "field": "window"}


# -- status belongs to its topic (item 18), control mode, notes -----------------------------------------------


async def test_a_status_belongs_to_the_topic_it_came_on(client: TestClient[Any, Any], state: DashboardState) -> None:
    # the market's user publishes on its own topic, claiming to be the recorder
    state.set_status("recorder", NodeStatus(node="recorder", state="online"))
    state.set_status("market", NodeStatus(node="recorder", state="offline", reason="I am the recorder"))
    answer = await (await client.get("/api/status")).json()
    assert answer["nodes"]["recorder"]["state"] == "online"
    assert answer["nodes"]["market"]["state"] == "offline"
    assert answer["nodes"]["market"]["node"] == "market"
    page = await (await client.get("/")).text()
    assert 'data-node="recorder" data-state="online"' in page
    assert 'data-node="market" data-state="offline"' in page


def test_control_summary_texts() -> None:
    assert control_summary(None, NOW)["text"] == "Control: planner default (no mode set)"
    manual = ControlMode(mode="manual", set_at=NOW, until=NOW + timedelta(minutes=5), reason="operator command")
    assert control_summary(manual, NOW)["text"] == "Control: manual until 12:05 UTC (operator command)"
    after = control_summary(manual, NOW + timedelta(minutes=6))
    assert (after["mode"], after["text"]) == (None, "Control: planner default (manual ended 12:05 UTC)")
    auto = ControlMode(mode="autopilot", set_at=NOW, source="dashboard")
    assert control_summary(auto, NOW)["text"] == "Control: autopilot (set by dashboard)"


def test_notes_for_a_battery_come_from_every_nodes_details(state: DashboardState) -> None:
    assert state.notes_for("b2") == {"planner": "monitored, not planned: no spec received"}
    assert state.notes_for("b1") == {}


def test_a_back_dated_write_does_not_replace_the_latest_reading(state: DashboardState) -> None:
    state.set_telemetry("b1", Telemetry(ts=NOW - timedelta(days=2), soc_kwh=1.0))
    assert state.telemetry["b1"].soc_kwh == 512.0


# -- dashboard token (item 19) -----------------------------------------------------------------------------------


def auth_state(view_required: bool = True) -> DashboardState:
    state = DashboardState(auth=DashboardAuth("s3cret-token", view_required), clock=lambda: NOW)
    state.set_figure(soc_message())
    return state


async def test_with_a_token_nothing_is_open_without_it() -> None:
    async with TestClient(TestServer(build_app(auth_state()))) as client:
        for path in ("/api/status", "/api/figures/b1", "/api/batteries", "/events"):
            response = await client.get(path)
            assert response.status == 401, path
            assert await response.json() == {
                "error": "missing or wrong dashboard token: send 'Authorization: Bearer <token>' or sign in",
                "field": "Authorization",
            }
        wrong = await client.get("/api/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        page = await client.get("/battery/b1")
        assert page.status == 401
        assert 'action="/login"' in await page.text()  # a person gets the login form
        ok = await client.get("/api/status", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200
        # every state-changing request needs the token, whatever the route
        refused = await client.post("/api/status", json={})
        assert refused.status == 401
        assert (await refused.json())["field"] == "Authorization"
        # static assets hold no data
        assert (await client.get("/static/dashboard.css")).status == 200


async def test_login_form_and_token_link_set_a_session_cookie() -> None:
    async with TestClient(TestServer(build_app(auth_state()))) as client:
        bad = await client.post("/login", data={"token": "guess", "next": "/battery/b1"}, allow_redirects=False)
        assert bad.status == 401
        assert "wrong token" in await bad.text()
        good = await client.post(
            "/login", data={"token": "s3cret-token", "next": "//evil.example/"}, allow_redirects=False
        )
        assert good.status == 303
        assert good.headers["Location"] == "/"  # no open redirect
        cookie = good.cookies[COOKIE]
        assert cookie.value
        assert "s3cret-token" not in cookie.value
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
        assert (await client.get("/api/status")).status == 200  # the session cookie is enough now
    async with TestClient(TestServer(build_app(auth_state()))) as client:
        link = await client.get("/battery/b1?window=7d&token=s3cret-token", allow_redirects=False)
        assert link.status == 303
        assert link.headers["Location"] == "/battery/b1?window=7d"  # the token leaves the address bar
        assert (await client.get("/battery/b1")).status == 200


async def test_viewing_can_be_left_open_while_writes_stay_protected() -> None:
    async with TestClient(TestServer(build_app(auth_state(view_required=False)))) as client:
        assert (await client.get("/api/status")).status == 200
        assert (await client.get("/battery/b1")).status == 200
        assert (await client.post("/api/status", json={})).status == 401


def test_validation_field() -> None:
    assert validation_field("Expected `int`, got `str` - at `$.window_s`") == "window_s"
    assert validation_field("Object missing required field `battery`") == "battery"
    assert validation_field("Object contains unknown field `colour`") == "colour"
    assert validation_field("Expected `object`, got `array`") is None


def test_add_battery_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="battery id"):
        DashboardState().add_battery("Bad/Id")


async def test_the_gateways_read_token_may_view_but_not_write() -> None:
    state = DashboardState(auth=DashboardAuth("write-token", True, "read-token"), clock=lambda: NOW)
    async with TestClient(TestServer(build_app(state))) as client:
        read = {"Authorization": "Bearer read-token"}
        assert (await client.get("/api/status", headers=read)).status == 200
        assert (await client.post("/api/status", headers=read, json={})).status == 401
        write = {"Authorization": "Bearer write-token"}
        assert (await client.post("/api/status", headers=write, json={})).status != 401
        viewer = await client.get("/battery/b1?token=read-token", allow_redirects=False)
        assert viewer.status == 303
        assert (await client.get("/api/status")).status == 200  # the viewer's cookie views
        assert (await client.post("/api/status", json={})).status == 401  # and never writes


async def test_every_dashboard_error_is_json_pages_too(client: TestClient[Any, Any]) -> None:
    for path in ("/no-such-page", "/static/missing.js"):
        response = await client.get(path)
        assert response.status == 404
        assert response.content_type == "application/json"
        assert set(await response.json()) == {"error", "field"}
    wrong_method = await client.delete("/")
    assert wrong_method.status == 405
    assert wrong_method.content_type == "application/json"


# -- alarms ------------------------------------------------------------------------------------------------


def _alarm(rule: str, state: str = "raised", severity: str = "critical", since_s: float = 0) -> Any:
    from nodes.contract.messages import Alarm

    return Alarm(rule=rule, state=state, since=NOW + timedelta(seconds=since_s), severity=severity,  # type: ignore[arg-type]
                 message=f"{rule} is {state}")


async def test_alarms_reach_the_fleet_table_the_api_and_the_event_streams(
    client: TestClient[Any, Any], state: DashboardState
) -> None:
    state.set_alarm("b1", _alarm("node_degraded", severity="warning", since_s=-60))
    state.set_alarm("b1", _alarm("cell_temp_high", since_s=-30))
    state.set_alarm("b1", _alarm("bms_alarm", state="cleared"))
    assert [a.rule for a in state.active_alarms("b1")] == ["cell_temp_high", "node_degraded"], "critical first"
    page = await (await client.get("/")).text()
    assert 'class="chip chip-alarm" data-count="2" data-severity="critical"' in page
    assert 'class="chip chip-alarm" data-count="0" data-severity="none"' in page, "b2 has none"
    batteries = (await (await client.get("/api/batteries")).json())["batteries"]
    assert [a["rule"] for a in batteries[0]["alarms"]] == ["cell_temp_high", "node_degraded"]
    assert (await (await client.get("/api/status")).json())["alarms"]["b1"][0]["rule"] == "cell_temp_high"

    index = await client.get("/events")
    kinds = [(await read_event(index))[0] for _ in range(8)]
    assert kinds[-3:] == ["alarm"] * 3, "the index gets every battery's alarms in its snapshot"
    battery_page = await client.get("/events", params={"battery": "b2"})
    await read_event(battery_page)  # two statuses, then nothing about b1's alarms
    await read_event(battery_page)
    state.set_alarm("b2", _alarm("telemetry_stale"))
    kind, envelope = await read_event(battery_page)
    assert (kind, envelope["battery"], envelope["data"]["state"]) == ("alarm", "b2", "raised")
    index.close()
    battery_page.close()


async def test_the_battery_page_has_the_banner_and_the_new_panels(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/battery/b1")).text()
    assert 'id="alarm-banner"' in page
    assert 'id="panel-cells"' in page
    assert 'class="panel panel-wide" id="panel-alarms"' in page
    assert page.index('id="panel-insights"') < page.index('id="panel-schedule"') < page.index('id="panel-alarms"')
