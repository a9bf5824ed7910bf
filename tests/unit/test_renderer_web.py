"""The dashboard's HTTP routes, event stream and window endpoint, through aiohttp's test server."""

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

from nodes.contract.messages import BatteryState, Figure, NodeStatus, Telemetry
from nodes.renderer import figures as rf
from nodes.renderer.series import TelemetrySeries
from nodes.renderer.web import DashboardState, TimeWindow, build_app, sse_frame, validation_field

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)


def soc_message(battery: str = "b1", n: int = 3) -> Figure:
    series = TelemetrySeries.from_telemetry(
        Telemetry(ts=NOW - timedelta(minutes=n - i), soc_kwh=500.0 + i) for i in range(n)
    )
    return rf.to_message(rf.soc_figure(series), "soc", battery, NOW)


class Recorder:
    """An on_window_change hook that remembers its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, datetime | None, datetime | None]] = []
        self.fail = fail

    async def __call__(self, battery: str, begin: datetime | None, end: datetime | None) -> None:
        if self.fail:
            raise RuntimeError("history unavailable")
        self.calls.append((battery, begin, end))


@pytest.fixture
def hook() -> Recorder:
    return Recorder()


@pytest.fixture
def state(hook: Recorder) -> DashboardState:
    state = DashboardState(on_window_change=hook, clock=lambda: NOW, keepalive_s=0.2)
    state.set_figure(soc_message())
    state.set_status(NodeStatus(node="recorder", state="online", since=NOW))
    state.set_status(NodeStatus(node="planner", state="degraded", reason="prices <stale> & old"))
    state.set_state(
        "b1",
        BatteryState(
            ts=NOW, mode="discharging", power_kw=50.0, command_id="c-1", valid_until=NOW + timedelta(minutes=5)
        ),
    )
    state.set_telemetry("b1", Telemetry(ts=NOW, soc_kwh=512.0, power_kw=50.0))
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
    for seconds in (21600, 86400, 604800, 2592000):
        assert f'data-window-s="{seconds}"' in page
    assert 'id="window-begin"' in page
    assert 'id="lease"' in page
    assert 'id="mode"' in page
    # The current window (default: 24 h sliding) is in the page for the selector to highlight.
    assert "&quot;window_s&quot;:86400" in page


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
        "/api/window",
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
    assert await response.json() == {
        "batteries": [
            {"battery": "b1", "href": "/battery/b1", "figures": ["soc"], "mode": "discharging"},
            {"battery": "b2", "href": "/battery/b2", "figures": [], "mode": None},
        ]
    }


async def test_api_figures(client: TestClient[Any, Any], state: DashboardState) -> None:
    state.set_figure(rf.to_message(rf.power_figure(TelemetrySeries.empty()), "power", "b1", NOW))
    response = await client.get("/api/figures/b1")
    assert response.status == 200
    body = await response.read()
    answer = msgspec.json.decode(body, type=dict[str, Any])
    assert answer["battery"] == "b1"
    assert list(answer["figures"]) == ["soc", "power"]  # dashboard order
    figure = msgspec.convert(answer["figures"]["soc"], Figure)
    assert figure == msgspec.json.decode(msgspec.json.encode(soc_message()), type=Figure)
    assert await (await client.get("/api/figures/b2")).json() == {"battery": "b2", "figures": {}}


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
    assert answer["nodes"]["planner"]["state"] == "degraded"
    assert answer["batteries"]["b1"]["mode"] == "discharging"
    assert answer["batteries"]["b1"]["valid_until"] == "2025-01-16T12:05:00Z"
    assert answer["telemetry"]["b1"]["soc_kwh"] == 512.0


# -- events --------------------------------------------------------------------------------------------------


async def test_events_snapshot_then_live_updates(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events", params={"battery": "b1"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    snapshot = [await read_event(response) for _ in range(5)]
    kinds = [kind for kind, _ in snapshot]
    assert kinds == ["status", "status", "state", "telemetry", "figure"]
    figure = msgspec.convert(snapshot[-1][1]["data"], Figure)
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
    state.set_status(NodeStatus(node="gateway", state="offline"))
    kind, envelope = await read_event(response)
    assert kind == "status"
    assert envelope["data"]["node"] == "gateway"
    response.close()


async def test_events_without_battery_get_states_of_all(client: TestClient[Any, Any], state: DashboardState) -> None:
    response = await client.get("/events")
    kinds = [(await read_event(response))[0] for _ in range(4)]
    assert kinds == ["status", "status", "state", "telemetry"]
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


# -- window ------------------------------------------------------------------------------------------------------


async def test_window_relative(client: TestClient[Any, Any], state: DashboardState, hook: Recorder) -> None:
    response = await client.post("/api/window", json={"battery": "b1", "window_s": 21600})
    assert response.status == 202
    answer = await response.json()
    assert answer == {
        "ok": True,
        "battery": "b1",
        "begin": "2025-01-16T06:00:00Z",
        "end": None,
        "window_s": 21600,
    }
    assert hook.calls == [("b1", NOW - timedelta(hours=6), None)]
    assert state.window_for("b1") == TimeWindow(window_s=21600)
    assert state.window_for("b2") == TimeWindow(window_s=86400)  # the default


async def test_window_absolute(client: TestClient[Any, Any], state: DashboardState, hook: Recorder) -> None:
    body = {"battery": "b1", "begin": "2025-01-01T00:00:00Z", "end": "2025-01-08T00:00:00+00:00"}
    response = await client.post("/api/window", json=body)
    assert response.status == 202
    begin, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 8, tzinfo=UTC)
    assert hook.calls == [("b1", begin, end)]
    assert state.window_for("b1").resolve(NOW) == (begin, end)
    # Open end: up to now.
    assert (await client.post("/api/window", json={"battery": "b1", "begin": "2025-01-15T00:00:00Z"})).status == 202
    assert hook.calls[-1] == ("b1", datetime(2025, 1, 15, tzinfo=UTC), None)


async def test_window_change_is_pushed_to_open_pages(client: TestClient[Any, Any]) -> None:
    events = await client.get("/events", params={"battery": "b1"})
    for _ in range(5):
        await read_event(events)
    await client.post("/api/window", json={"battery": "b1", "window_s": 604800})
    kind, envelope = await read_event(events)
    assert kind == "window"
    assert envelope["data"]["window_s"] == 604800
    events.close()


async def test_window_sync_hook_and_no_hook() -> None:
    calls: list[str] = []
    state = DashboardState(on_window_change=lambda battery, begin, end: calls.append(battery), clock=lambda: NOW)
    state.add_battery("b1")
    async with TestClient(TestServer(build_app(state))) as client:
        assert (await client.post("/api/window", json={"battery": "b1", "window_s": 3600})).status == 202
    assert calls == ["b1"]
    state = DashboardState()
    state.add_battery("b1")
    async with TestClient(TestServer(build_app(state))) as client:
        assert (await client.post("/api/window", json={"battery": "b1", "window_s": 3600})).status == 202


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, None),
        (b"", 400, None),
        (b"[]", 422, None),
        (b'{"window_s": 3600}', 422, "battery"),
        (b'{"battery": 7, "window_s": 3600}', 422, "battery"),
        (b'{"battery": "B 1", "window_s": 3600}', 422, "battery"),
        (b'{"battery": "b1", "window_s": 3600, "colour": "red"}', 422, "colour"),
        (b'{"battery": "b1", "window_s": 10}', 422, "window_s"),
        (b'{"battery": "b1", "window_s": "day"}', 422, "window_s"),
        (b'{"battery": "b1", "begin": "yesterday"}', 422, "begin"),
        (b'{"battery": "b1", "begin": "2025-01-01T00:00:00"}', 422, "begin"),  # no zone
        (b'{"battery": "b1"}', 422, "window_s"),
        (b'{"battery": "b1", "end": "2025-01-01T00:00:00Z"}', 422, "begin"),
        (b'{"battery": "b1", "window_s": 3600, "begin": "2025-01-01T00:00:00Z"}', 422, "window_s"),
        (b'{"battery": "b1", "begin": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}', 422, "end"),
        (b'{"battery": "b1", "begin": "2024-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z"}', 422, "begin"),
        (b'{"battery": "b1", "begin": "2030-01-01T00:00:00Z"}', 422, "begin"),  # in the future, open end
        (b'{"battery": "nope", "window_s": 3600}', 404, "battery"),
    ],
)
async def test_window_bad_bodies(
    client: TestClient[Any, Any], hook: Recorder, body: bytes, status: int, field: str | None
) -> None:
    response = await client.post("/api/window", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    answer = await response.json()
    assert set(answer) == {"error", "field"}
    assert answer["error"]
    assert answer["field"] == field
    assert hook.calls == []


async def test_window_hook_failure_is_503_json() -> None:
    state = DashboardState(on_window_change=Recorder(fail=True), clock=lambda: NOW)
    state.add_battery("b1")
    async with TestClient(TestServer(build_app(state))) as client:
        response = await client.post("/api/window", json={"battery": "b1", "window_s": 3600})
        assert response.status == 503
        assert await response.json() == {"error": "could not apply the window: history unavailable", "field": None}


def test_validation_field() -> None:
    assert validation_field("Expected `int`, got `str` - at `$.window_s`") == "window_s"
    assert validation_field("Object missing required field `battery`") == "battery"
    assert validation_field("Object contains unknown field `colour`") == "colour"
    assert validation_field("Expected `object`, got `array`") is None


def test_add_battery_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="battery id"):
        DashboardState().add_battery("Bad/Id")


async def test_every_dashboard_error_is_json_pages_too(client: TestClient[Any, Any]) -> None:
    for path in ("/no-such-page", "/static/missing.js"):
        response = await client.get(path)
        assert response.status == 404
        assert response.content_type == "application/json"
        assert set(await response.json()) == {"error", "field"}
    wrong_method = await client.delete("/")
    assert wrong_method.status == 405
    assert wrong_method.content_type == "application/json"
