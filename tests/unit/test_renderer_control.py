"""The dashboard's control panel on the in-memory bus: the renderer node's desk, the real gateway's request
handlers and the dashboard app (aiohttp's test server) with its token, CSRF and origin checks.

What an operator relies on: a panel action is the gateway's own decision (the same Command, the same refusal
text and status as its HTTP API), with ``source: dashboard``; nothing is controlled without the token (when one is
set), from another origin, without the anti-CSRF token, or from the network without a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import (
    BatteryState,
    Command,
    HistoryQuery,
    HistoryResult,
    ModeRequest,
    ReplanRequest,
    Schedule,
    ScheduleSlot,
)
from nodes.contract.topics import (
    COMMAND,
    CONTROL,
    HISTORY,
    MODE_REQUEST,
    POWER_REQUEST,
    REPLAN_REQUEST,
    SCHEDULE,
    STATE,
)
from nodes.contract.topics import SPEC as SPEC_TOPIC
from nodes.gateway.mqtt_requests import MqttRequests
from nodes.gateway.specs import SpecBook
from nodes.renderer import control_web
from nodes.renderer.config import RendererConfig
from nodes.renderer.guard import CSRF_COOKIE
from nodes.renderer.node import Renderer
from nodes.renderer.web import BATTERY_KINDS, build_app
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.unit.test_gateway_app import NOW, SPEC, make_gateway

TOKEN = "s3cret-token"


class Rig:
    """The renderer node and (unless ``gateway`` is False) the gateway on one broker; battery ``b1`` has SPEC."""

    def __init__(self, *, gateway: bool = True, **config: Any) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus("renderer", self.broker)
        self.renderer = Renderer(RendererConfig(dashboard_control_timeout_s=0.5, **config), self.bus)
        self.device = MemoryBus("simulator", self.broker)
        self.planner = MemoryBus("planner", self.broker)
        self.gateway_bus = MemoryBus("gateway", self.broker)
        self.requests: list[Any] = []
        if gateway:
            specs = SpecBook()
            specs.update("b1", SPEC)
            MqttRequests(make_gateway(self.gateway_bus, specs, known=("b1",))).subscribe()
        self.planner.subscribe(REPLAN_REQUEST, self._on_replan)
        self.stored: dict[str, HistoryResult] = {}
        MemoryBus("recorder", self.broker).serve(HISTORY, self._history)

    async def _on_replan(self, params: dict[str, str], request: ReplanRequest, delivery: Delivery) -> None:
        self.requests.append(request)
        slot = ScheduleSlot(start=NOW, end=NOW + timedelta(hours=1), price_per_mwh=50.0, charge_kw=0.0,
                            discharge_kw=0.0, soc_kwh=500.0)
        await self.planner.publish(SCHEDULE, Schedule(plan_id="p-new", created_at=NOW, soc_initial_kwh=500.0,
                                                      slots=[slot], expected_revenue=0.0), battery=params["battery"])

    async def _history(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        return self.stored.get(query.kind, HistoryResult(ok=True, columns=["time"], rows=[]))

    async def start(self) -> None:
        await self.renderer.setup()
        await self.device.publish(SPEC_TOPIC, SPEC, battery="b1")
        await self.broker.idle()

    def app(self) -> Any:
        r = self.renderer
        return build_app(r.dashboard, install=[control_web.installer(r.desk, r.guard, r.command_history)])


@pytest.fixture
async def rig() -> Rig:
    rig = Rig()
    await rig.start()
    return rig


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(rig.app())) as c:
        yield c


async def csrf_headers(client: TestClient[Any, Any], battery: str = "b1") -> dict[str, str]:
    """What the panel does first: GET its data, which sets the nonce cookie and gives the token."""
    response = await client.get(f"/api/control/{battery}")
    assert response.status == 200, await response.text()
    data = await response.json()
    return {"Content-Type": "application/json", data["csrf_header"]: data["csrf_token"]}


# -- the gateway decides, with the dashboard as source -------------------------------------------------------


async def test_a_manual_command_is_the_gateways_command_with_source_dashboard_and_its_lease(
        rig: Rig, client: TestClient[Any, Any]) -> None:
    headers = await csrf_headers(client)
    response = await client.post("/api/control/b1/command", headers=headers,
                                 json={"action": "discharge", "power_kw": 50, "lease_s": 900})
    body = await response.json()
    assert response.status == 202, body
    [sent] = rig.gateway_bus.sent(COMMAND, battery="b1")
    assert (sent.action, sent.power_kw, sent.source, sent.text) == ("discharge", 50.0, "dashboard", "DISCHARGE 50 kW")
    assert sent.valid_until == NOW + timedelta(seconds=900), "the panel's lease"
    assert body["command"]["command_id"] == sent.command_id
    assert body["command"]["source"] == "dashboard"
    [request] = rig.bus.sent(POWER_REQUEST, battery="b1")
    assert (request.power_kw, request.valid_for_s, request.source) == (50.0, 900, "dashboard")
    assert body["request_id"] == request.request_id == body["result"]["request_id"]
    [manual] = rig.gateway_bus.sent(CONTROL, battery="b1")
    assert (manual.mode, manual.source, manual.until) == ("manual", "dashboard", sent.valid_until)


@pytest.mark.parametrize(("action", "power", "signed"), [("charge", 20.5, -20.5), ("idle", None, 0.0)])
async def test_charge_is_negative_and_idle_zero_on_the_request(
        rig: Rig, client: TestClient[Any, Any], action: str, power: float | None, signed: float) -> None:
    body: dict[str, Any] = {"action": action} | ({"power_kw": power} if power is not None else {})
    response = await client.post("/api/control/b1/command", headers=await csrf_headers(client), json=body)
    assert response.status == 202, await response.text()
    [request] = rig.bus.sent(POWER_REQUEST, battery="b1")
    assert (request.power_kw, request.valid_for_s) == (signed, None), "no lease given: the gateway's own"
    [sent] = rig.gateway_bus.sent(COMMAND, battery="b1")
    assert sent.action == action


async def test_a_refusal_is_the_gateways_own_status_and_text(rig: Rig, client: TestClient[Any, Any]) -> None:
    headers = await csrf_headers(client)
    response = await client.post("/api/control/b1/command", headers=headers,
                                 json={"action": "discharge", "power_kw": 300})
    body = await response.json()
    assert response.status == 422
    assert body["error"] == "DISCHARGE 300 kW exceeds b1's max_discharge_kw of 250 kW (from its BatterySpec)"
    assert body["field"] == "power_kw"
    assert rig.gateway_bus.sent(COMMAND, battery="b1") == []
    # held idle: a setpoint is refused with the gateway's 409 (its idle lock)
    held = await client.post("/api/control/b1/mode", headers=headers, json={"mode": "idle"})
    assert held.status == 202
    locked = await client.post("/api/control/b1/command", headers=headers, json={"action": "charge", "power_kw": 5})
    assert locked.status == 409
    assert "control mode idle" in (await locked.json())["error"]
    unknown = await client.post("/api/control/b9/command", headers=headers, json={"action": "charge", "power_kw": 5})
    assert unknown.status == 404, "no force from the dashboard: a battery the gateway never saw"


async def test_pause_and_resume_are_control_modes_from_the_dashboard(rig: Rig, client: TestClient[Any, Any]) -> None:
    headers = await csrf_headers(client)
    paused = await client.post("/api/control/b1/mode", headers=headers, json={"mode": "manual", "for_s": 3600})
    assert paused.status == 202
    resumed = await client.post("/api/control/b1/mode", headers=headers, json={"mode": "autopilot"})
    assert resumed.status == 202
    pause, resume = rig.gateway_bus.sent(CONTROL, battery="b1")
    assert (pause.mode, pause.source, pause.until) == ("manual", "dashboard", NOW + timedelta(hours=1))
    assert (resume.mode, resume.source, resume.until) == ("autopilot", "dashboard", None)
    requests = rig.bus.sent(MODE_REQUEST, battery="b1")
    assert [r.source for r in requests] == ["dashboard", "dashboard"]
    assert isinstance(requests[0], ModeRequest)


async def test_re_plan_now_is_answered_with_the_next_schedule(rig: Rig, client: TestClient[Any, Any]) -> None:
    response = await client.post("/api/control/b1/replan", headers=await csrf_headers(client), json={})
    body = await response.json()
    assert response.status == 202, body
    assert (body["outcome"], body["schedule"]["plan_id"]) == ("planned", "p-new")
    [request] = rig.requests
    assert (request.source, request.request_id) == ("dashboard", body["request_id"])


async def test_without_a_gateway_the_panel_says_so_instead_of_pretending() -> None:
    rig = Rig(gateway=False)
    await rig.start()
    async with TestClient(TestServer(rig.app())) as client:
        response = await client.post("/api/control/b1/command", headers=await csrf_headers(client),
                                     json={"action": "discharge", "power_kw": 10})
        body = await response.json()
    assert response.status == 504
    assert "did not answer" in body["error"]
    assert set(body) >= {"error", "field", "request_id"}


async def test_an_incomplete_or_mistyped_body_is_a_422_naming_the_field(client: TestClient[Any, Any]) -> None:
    headers = await csrf_headers(client)
    cases = [({"action": "charge"}, "power_kw"), ({"action": "charge", "power_kw": 0}, "power_kw"),
             ({"action": "boost", "power_kw": 1}, "action"), ({"action": "idle", "lease_s": 0}, "lease_s"),
             ({"action": "idle", "leese_s": 60}, "leese_s")]
    for body, field in cases:
        response = await client.post("/api/control/b1/command", headers=headers, json=body)
        answer = await response.json()
        assert (response.status, answer["field"]) == (422, field), (body, answer)


# -- protection: token, CSRF, origin, host -------------------------------------------------------------------


async def token_rig(**config: Any) -> Rig:
    rig = Rig(dashboard_token=TOKEN, **config)
    await rig.start()
    return rig


async def test_an_unauthenticated_control_request_is_refused_with_the_json_error() -> None:
    rig = await token_rig()
    async with TestClient(TestServer(rig.app())) as client:
        response = await client.post("/api/control/b1/command", json={"action": "idle"})
        body = await response.json()
        assert response.status == 401
        assert body == {"error": body["error"], "field": "Authorization"}
        assert (await client.get("/api/control/b1")).status == 401, "the panel's data needs the token too"
    assert rig.bus.sent(POWER_REQUEST, battery="b1") == [], "nothing was sent"


async def test_an_authenticated_session_with_its_csrf_token_is_accepted_and_a_script_with_its_bearer_too() -> None:
    rig = await token_rig()
    async with TestClient(TestServer(rig.app())) as client:
        login = await client.post("/login", data={"token": TOKEN, "next": "/battery/b1"}, allow_redirects=False)
        assert login.status == 303
        response = await client.post("/api/control/b1/command", headers=await csrf_headers(client),
                                     json={"action": "discharge", "power_kw": 25})
        assert response.status == 202, await response.text()
    async with TestClient(TestServer(rig.app())) as script:  # no cookie, no CSRF token: the header is the proof
        bearer = await script.post("/api/control/b1/command", json={"action": "idle"},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status == 202, await bearer.text()
    assert [c.source for c in rig.gateway_bus.sent(COMMAND, battery="b1")] == ["dashboard", "dashboard"]


async def test_a_cross_origin_request_is_refused_even_with_the_session_cookie() -> None:
    rig = await token_rig()
    async with TestClient(TestServer(rig.app())) as client:
        await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        headers = await csrf_headers(client)
        for foreign in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Referer": "http://evil.example/page"}):
            response = await client.post("/api/control/b1/command", headers=headers | foreign,
                                         json={"action": "idle"})
            body = await response.json()
            assert (response.status, body["field"]) == (403, "Origin"), foreign
        own = f"http://{client.server.host}:{client.server.port}"
        same = await client.post("/api/control/b1/command", headers=headers | {"Origin": own},
                                 json={"action": "idle"})
        assert same.status == 202, await same.text()
    assert len(rig.bus.sent(POWER_REQUEST, battery="b1")) == 1, "only the same-origin request was sent"


async def test_the_anti_csrf_token_is_required_bound_to_the_cookie_and_only_json_is_taken() -> None:
    rig = await token_rig()
    async with TestClient(TestServer(rig.app())) as client:
        await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        headers = await csrf_headers(client)
        missing = await client.post("/api/control/b1/command", json={"action": "idle"})
        assert (missing.status, (await missing.json())["field"]) == (403, "X-CSRF-Token")
        wrong = await client.post("/api/control/b1/command", json={"action": "idle"},
                                  headers=headers | {"X-CSRF-Token": "0" * 64})
        assert (wrong.status, (await wrong.json())["field"]) == (403, "X-CSRF-Token")
        form = await client.post("/api/control/b1/command", data={"action": "idle"}, headers={
            "X-CSRF-Token": headers["X-CSRF-Token"]})
        assert (form.status, (await form.json())["field"]) == (415, "Content-Type"), "an HTML form cannot act"
        async with TestClient(TestServer(rig.app())) as other:  # another browser: its own nonce, so not this token
            await other.post("/login", data={"token": TOKEN}, allow_redirects=False)
            await csrf_headers(other)
            assert other.session.cookie_jar.filter_cookies(other.make_url("/"))[CSRF_COOKIE].value != (
                client.session.cookie_jar.filter_cookies(client.make_url("/"))[CSRF_COOKIE].value)
            stolen = await other.post("/api/control/b1/command", headers=headers, json={"action": "idle"})
            assert (stolen.status, (await stolen.json())["field"]) == (403, "X-CSRF-Token")
    assert rig.bus.sent(POWER_REQUEST, battery="b1") == []


async def test_the_view_token_may_look_but_not_act() -> None:
    rig = Rig(gateway_token=TOKEN, gateway_read_token="viewer")
    await rig.start()
    async with TestClient(TestServer(rig.app())) as client:
        ok = await client.get("/api/control/b1", headers={"Authorization": "Bearer viewer"})
        assert ok.status == 200
        data = await ok.json()
        assert data["enabled"] is False, "the panel shows it disabled rather than failing on the first click"
        assert "view token" in data["disabled_reason"]
        writer = await (await client.get("/api/control/b1", headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert writer["enabled"] is True
        refused = await client.post("/api/control/b1/command", json={"action": "idle"},
                                    headers={"Authorization": "Bearer viewer"})
        assert refused.status == 401


async def test_without_a_token_a_dashboard_on_the_network_refuses_control() -> None:
    rig = Rig(dashboard_host="0.0.0.0")
    await rig.start()
    async with TestClient(TestServer(rig.app())) as client:
        data = await (await client.get("/api/control/b1")).json()
        assert data["enabled"] is False
        assert "BESS_DASHBOARD_TOKEN" in data["disabled_reason"]
        response = await client.post("/api/control/b1/command", headers=await csrf_headers(client),
                                     json={"action": "idle"})
        assert (response.status, (await response.json())["field"]) == (403, "control")
    assert rig.bus.sent(POWER_REQUEST, battery="b1") == []


async def test_without_a_token_on_loopback_a_foreign_host_name_is_refused(client: TestClient[Any, Any]) -> None:
    """DNS rebinding: a page on evil.example pointed at 127.0.0.1 is same-origin with itself."""
    headers = await csrf_headers(client)
    rebound = await client.post("/api/control/b1/command", json={"action": "idle"},
                                headers=headers | {"Host": "evil.example:8050"})
    assert (rebound.status, (await rebound.json())["field"]) == (403, "Host")


async def test_control_can_be_turned_off() -> None:
    rig = Rig(dashboard_control=False)
    await rig.start()
    async with TestClient(TestServer(rig.app())) as client:
        response = await client.post("/api/control/b1/mode", headers=await csrf_headers(client),
                                     json={"mode": "manual"})
        assert (response.status, (await response.json())["field"]) == (403, "control")


# -- what the page shows -------------------------------------------------------------------------------------


async def test_the_battery_page_has_the_panel_and_the_history_and_nothing_without_them(
        rig: Rig, client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/battery/b1")).text()
    assert 'id="control-panel"' in page
    assert 'id="command-history"' in page
    assert "{{" not in page
    async with TestClient(TestServer(build_app(rig.renderer.dashboard))) as bare:
        plain = await (await bare.get("/battery/b1")).text()
    assert 'id="control-panel"' not in plain
    assert "{{" not in plain


async def test_the_panel_data_and_live_events_carry_the_running_command(rig: Rig,
                                                                       client: TestClient[Any, Any]) -> None:
    stream = rig.renderer.dashboard.subscribe("b1", BATTERY_KINDS)  # a battery page on a window of its own
    response = await client.post("/api/control/b1/command", headers=await csrf_headers(client),
                                 json={"action": "charge", "power_kw": 12})
    assert response.status == 202
    frames = b"".join(stream.drain())
    assert b"event: command" in frames
    assert b"event: request" in frames
    data = await (await client.get("/api/control/b1")).json()
    assert (data["command"]["action"], data["command"]["source"]) == ("charge", "dashboard")
    assert data["limits"] == {"max_charge_kw": 200.0, "max_discharge_kw": 250.0}
    assert data["results"][-1]["outcome"] == "accepted"


async def test_the_command_history_merges_stored_and_live_commands_with_their_outcomes(rig: Rig) -> None:
    issued = rig.renderer.dashboard.clock() - timedelta(minutes=30)
    stored = Command(command_id="c-old", action="discharge", power_kw=100.0, issued_at=issued,
                     valid_until=issued + timedelta(minutes=5), source="planner", text="DISCHARGE 100 kW")
    rig.stored["command"] = HistoryResult(ok=True, columns=[
        "time", "action", "power_kw", "command_id", "source", "valid_until", "plan_id", "text"], rows=[
        [issued.isoformat().replace("+00:00", "Z"), "discharge", 100.0, "c-old", "planner",
         stored.valid_until.isoformat().replace("+00:00", "Z"), None, "DISCHARGE 100 kW"]])
    rig.stored["state"] = HistoryResult(ok=True, columns=[
        "time", "mode", "power_kw", "command_id", "command_source", "valid_until", "limits_hit", "reason"], rows=[
        [(issued + timedelta(seconds=1)).isoformat(), "discharging", 100.0, "c-old", "planner", None, "", ""]])
    now = rig.renderer.dashboard.clock()
    live = Command(command_id="c-live", action="charge", power_kw=20.0, issued_at=now - timedelta(seconds=5),
                   valid_until=now + timedelta(minutes=10), source="dashboard", text="CHARGE 20 kW")
    await rig.gateway_bus.publish(COMMAND, live, battery="b1")
    await rig.device.publish(STATE, BatteryState(ts=now - timedelta(seconds=4), mode="charging", power_kw=-20.0,
                                                 command_id="c-live", command_source="dashboard"), battery="b1")
    await rig.broker.idle()
    async with TestClient(TestServer(rig.app())) as client:
        response = await client.get("/api/commands/b1?window=6h")
        body = await response.json()
    assert response.status == 200, body
    rows = {r["command_id"]: r for r in body["rows"]}
    assert [r["command_id"] for r in body["rows"]] == ["c-live", "c-old"], "newest first"
    assert (rows["c-live"]["source"], rows["c-live"]["outcome"], rows["c-live"]["end"]) == (
        "dashboard", "followed", "running")
    assert (rows["c-old"]["outcome"], rows["c-old"]["end"]) == ("followed", "lease ended")
    assert "Outcome" in body["outcome_help"]
