"""The gateway's HTTP routes on the in-memory bus (no broker; a recorder double answers on it): happy paths, and
every known bad input answered with its 4xx and the ``{"error", "field"}`` shape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nodes.contract.messages import (
    BatterySpec,
    Command,
    ControlMode,
    HistoryQuery,
    HistoryResult,
    PriceForecast,
    StoredReceipt,
    Telemetry,
)
from nodes.contract.topics import HISTORY_REQUEST
from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.fleet import Fleet
from nodes.gateway.receipts import Receipts
from nodes.gateway.specs import SpecBook
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.support.recorder_double import RecorderDouble

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)
SEED = {"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}
SEED_4 = {"SOC": 500, "target_discharge": 0, "target_charge": 400, "timestamp": "2025-01-14T10:00:00Z"}
JSON = {"Content-Type": "application/json"}
COLUMNS = ["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw"]
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=200, max_discharge_kw=250)
MAX_BODY = 4096


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def bus(broker: MemoryBroker) -> MemoryBus:
    """The gateway's bus; every message it publishes is in ``bus.published``."""
    return MemoryBus("gateway", broker)


@pytest.fixture
def recorder(broker: MemoryBroker) -> RecorderDouble:
    """Plays the recorder on the same broker: receipts for durable writes, answers to history requests."""
    return RecorderDouble(broker)


@pytest.fixture
def receipts() -> Receipts:
    return Receipts()


@pytest.fixture
def specs() -> SpecBook:
    book = SpecBook()
    book.update("limited", SPEC)
    return book


def make_gateway(
    bus: MemoryBus, specs: SpecBook, *, known: tuple[str, ...] = ("battery-1",), fleet: Fleet | None = None,
    clock: Callable[[], datetime] = lambda: NOW, receipts: Receipts | None = None, **settings: Any,
) -> Gateway:
    """A gateway on the memory bus; ``known`` batteries were seen on the bus (as a device's telemetry would be)."""
    ids = iter(f"c-{n:04d}" for n in range(1000))
    fleet = fleet or Fleet()
    for battery in known:
        fleet.saw(battery)
    return Gateway(
        bus,
        specs,
        GatewaySettings(max_body_bytes=MAX_BODY, read_timeout_s=0.5, **settings),
        fleet=fleet,
        receipts=receipts,
        clock=clock,
        new_command_id=lambda: next(ids),
    )


@pytest.fixture
async def client(
    bus: MemoryBus, specs: SpecBook, recorder: RecorderDouble, receipts: Receipts
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(make_gateway(bus, specs, receipts=receipts), openapi=b'{"openapi": "3.1.0"}')
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def secured(bus: MemoryBus, specs: SpecBook, recorder: RecorderDouble) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(make_gateway(bus, specs, token="s3cret"), openapi=b"{}")
    async with TestClient(TestServer(app)) as c:
        yield c


def result(*rows: list[Any], truncated: bool = False, columns: list[str] = COLUMNS) -> HistoryResult:
    return HistoryResult(ok=True, columns=columns, rows=[list(r) for r in rows], truncated=truncated)


# -- happy paths ---------------------------------------------------------------------------------------------


async def test_write_seed_body_publishes_telemetry(
    client: TestClient[Any, Any], bus: MemoryBus, receipts: Receipts
) -> None:
    response = await client.post("/write", json=SEED)
    assert response.status == 200  # by default a 2xx means stored: the (fake) recorder confirmed it
    body = await response.json()
    assert body == {
        "topic": "bess/v1/battery/battery-1/telemetry",
        "message": {
            "ts": "2025-01-16T10:00:00Z",
            "soc_kwh": 700.0,
            "target_charge_kw": 100.0,
            "target_discharge_kw": 50.0,
            "source": "gateway",
        },
        "status": "stored",
        "ack": "stored",
        "stored": 1,
        "unconfirmed": [],
        "note": "stored: the recorder confirmed every record in the database",
    }
    [published] = bus.published
    assert published.wait_ack is True
    # the recorder is asked to confirm on the gateway's own response topic, quoting this record's id
    assert published.properties is not None
    assert published.properties["response_topic"] == "bess/v1/stored/gateway"
    assert published.properties["correlation_data"].decode().endswith("-0.0")
    assert receipts.waiting == 0  # nothing left behind
    assert published.retain is False  # an old record must not replace the device's retained latest reading
    assert published.topic == "bess/v1/battery/battery-1/telemetry"
    assert published.message == Telemetry(
        ts=datetime(2025, 1, 16, 10, tzinfo=UTC),
        soc_kwh=700,
        target_charge_kw=100,
        target_discharge_kw=50,
        source="gateway",
    )


async def test_write_names_the_battery_in_body_or_query(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    assert (await client.post("/write", json={**SEED, "battery": "b-7"})).status == 200
    assert (await client.post("/write?battery=b-8", json=SEED)).status == 200
    assert (await client.post("/write?battery=b-9&ack=stored", json={**SEED, "battery": "b-9"})).status == 200
    assert [p.topic.split("/")[3] for p in bus.published] == ["b-7", "b-8", "b-9"]


async def test_write_converts_offsets_to_utc_and_keeps_power(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post("/write", json={**SEED, "timestamp": "2025-01-16T11:00:00+01:00", "power_kw": -5})
    assert response.status == 200
    message = (await response.json())["message"]
    assert (message["ts"], message["power_kw"]) == ("2025-01-16T10:00:00Z", -5.0)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json; charset=utf-8"}, {"Content-Type": "application/vnd.bess+json"}],
    ids=["no content type", "charset", "+json"],
)
async def test_write_accepts_json_content_types(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    response = await client.post(
        "/write", data=json.dumps(SEED).encode(), headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert response.status == 200, await response.text()


async def test_write_batch_validates_all_then_publishes_all(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post("/write", json=[SEED, SEED_4, {**SEED, "battery": "b-2"}])
    assert response.status == 200
    assert await response.json() == {
        "count": 3,
        "topics": ["bess/v1/battery/b-2/telemetry", "bess/v1/battery/battery-1/telemetry"],
        "status": "stored",
        "ack": "stored",
        "stored": 3,
        "unconfirmed": [],
        "note": "stored: the recorder confirmed every record in the database",
    }
    assert len(bus.published) == 3
    ids = [p.properties["correlation_data"] for p in bus.published if p.properties]
    assert len(set(ids)) == 3  # one correlation id per record
    # one bad record: nothing is published
    bus.published.clear()
    response = await client.post("/write", json=[SEED, {**SEED_4, "SOC": -1}])
    assert (response.status, (await response.json())["field"]) == (422, "[1].SOC")
    assert bus.published == []


# -- what a /write answer means (durable by default, ?ack=broker for the fast path) ---------------------------


async def test_write_ack_broker_answers_202_at_the_puback(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.mode = "silent"  # would make a durable write wait; the fast path does not ask
    response = await client.post("/write?ack=broker", json=SEED)
    body = await response.json()
    assert response.status == 202
    assert (body["status"], body["ack"], body["stored"], body["unconfirmed"]) == ("accepted", "broker", None, None)
    assert "not confirmed stored" in body["note"]
    [published] = bus.published
    assert published.properties is None  # no response topic: the recorder sends no receipt
    batch = await client.post("/write?ack=broker", json=[SEED, SEED_4])
    assert (batch.status, (await batch.json())["status"]) == (202, "accepted")


async def test_write_not_confirmed_in_time_is_202_naming_the_records(
    bus: MemoryBus, specs: SpecBook, recorder: RecorderDouble, receipts: Receipts
) -> None:
    recorder.unconfirmed = {1}  # the second record's receipt never comes (say the recorder died before writing it)
    app = create_app(make_gateway(bus, specs, stored_timeout_s=0.2, receipts=receipts), openapi=b"{}")
    async with TestClient(TestServer(app)) as c:
        response = await c.post("/write", json=[SEED, SEED_4, {**SEED, "timestamp": "2025-01-16T10:00:01Z"}])
        body = await response.json()
        assert response.status == 202
        assert (body["status"], body["ack"], body["stored"], body["unconfirmed"]) == ("accepted", "stored", 2, [1])
        assert "1 of 3 records were not confirmed stored within 0.2 s" in body["note"]
        assert "re-sending is safe" in body["note"]
        recorder.mode = "silent"
        single = await c.post("/write", json=SEED)
        assert (single.status, (await single.json())["unconfirmed"]) == (202, [0])
    assert receipts.waiting == 0  # timed-out ids are forgotten: a late receipt finds nobody
    receipts.on_receipt(StoredReceipt(recorder="late", stored=[bus.published[-1].properties["correlation_data"]
                                                                   .decode()]))
    assert receipts.counters["late_receipts"] == 1


async def test_write_refused_by_the_database_is_422(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.mode = "refused"
    response = await client.post("/write", json=SEED)
    body = await response.json()
    assert response.status == 422
    assert body["error"].startswith("the database refused the record: field type conflict")
    assert "refused again" in body["error"]
    batch = await client.post("/write", json=[SEED, SEED_4])
    assert (batch.status, (await batch.json())["field"]) == (422, "[0]")


async def test_write_default_mode_comes_from_the_settings(
    bus: MemoryBus, specs: SpecBook, recorder: RecorderDouble
) -> None:
    recorder.mode = "silent"
    app = create_app(make_gateway(bus, specs, write_ack="broker"), openapi=b"{}")
    async with TestClient(TestServer(app)) as c:
        assert (await c.post("/write", json=SEED)).status == 202  # at once: no receipt is awaited
        recorder.mode = "stored"
        assert (await c.post("/write?ack=stored", json=SEED)).status == 200


async def test_write_unknown_ack_mode_is_422(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post("/write?ack=db", json=SEED)
    assert (response.status, (await response.json())["field"]) == (422, "ack")
    assert bus.published == []


async def test_command_publishes_a_lease(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post("/mqtt/publish", json={"command": "DISCHARGE 50kW"})
    assert response.status == 202
    assert await response.json() == {
        "topic": "bess/v1/battery/battery-1/set",
        "message": {
            "command_id": "c-0000",
            "action": "discharge",
            "power_kw": 50.0,
            "issued_at": "2025-01-16T12:00:00Z",
            "valid_until": "2025-01-16T12:05:00Z",
            "source": "gateway",
            "text": "DISCHARGE 50kW",
        },
        "spec_known": False,
        "control": {
            "mode": "manual",
            "until": "2025-01-16T12:05:00Z",
            "autopilot_paused_until": "2025-01-16T12:05:00Z",
            "topic": "bess/v1/battery/battery-1/control",
            "note": "battery-1: manual until 2025-01-16T12:05:00Z: the autopilot sends no command, operator "
            'commands rule; POST /control {"mode": "autopilot"} hands it back to the planner sooner',
        },
    }
    mode, published = bus.published  # the mode first: the autopilot must not override the command meanwhile
    assert mode.topic == "bess/v1/battery/battery-1/control"
    assert mode.message == ControlMode(
        mode="manual", set_at=NOW, until=datetime(2025, 1, 16, 12, 5, tzinfo=UTC), source="gateway",
        reason="operator command c-0000 (DISCHARGE 50kW)",
    )
    assert isinstance(published.message, Command)
    assert published.wait_ack
    assert mode.wait_ack


async def test_command_within_a_known_spec(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post(
        "/mqtt/publish", json={"command": "charge 0.2 MW", "battery": "limited", "valid_for_s": 60}
    )
    assert response.status == 202
    body = await response.json()
    assert body["spec_known"] is True
    assert (body["message"]["power_kw"], body["message"]["valid_until"]) == (200.0, "2025-01-16T12:01:00Z")
    idle = await client.post("/mqtt/publish?battery=limited", json={"command": "STOP"})
    assert (await idle.json())["message"]["action"] == "idle"


async def test_read_returns_records_in_the_written_shape(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.answer = result(
        ["2025-01-16T10:00:00Z", 700, None, 100, 50],
        ["2025-01-16T10:01:00Z", 650.5, -20.0, 100, 50],
        ["2025-01-16T10:02:00Z", None, None, None, None],  # an empty downsampling bucket: skipped
    )
    response = await client.get("/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z")
    assert response.status == 200
    assert await response.json() == [
        {"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"},
        {
            "SOC": 650.5,
            "target_discharge": 50,
            "target_charge": 100,
            "timestamp": "2025-01-16T10:01:00Z",
            "power_kw": -20.0,
        },
    ]
    [query] = bus.sent(HISTORY_REQUEST)
    assert query == HistoryQuery(
        kind="telemetry",
        battery="battery-1",
        begin=datetime(2025, 1, 16, 9, tzinfo=UTC),
        end=datetime(2025, 1, 16, 11, tzinfo=UTC),
        limit=100_000,
    )


async def test_alarms_returns_the_stored_transitions_of_a_battery(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    columns = ["time", "rule", "state", "severity", "message", "value", "threshold", "unit", "raised_at"]
    recorder.answer = result(
        ["2025-01-16T10:00:11Z", "cell_temp_high", "raised", "critical", "max cell temperature 58.0 °C above 55 °C",
         58.0, 55.0, "°C", None],
        ["2025-01-16T10:01:30Z", "cell_temp_high", "cleared", "critical", "max cell temperature 44.0 °C below 50 °C",
         44.0, 50.0, "°C", "2025-01-16T10:00:11Z"],
        columns=columns,
    )
    response = await client.get("/alarms?battery=b-2")
    assert response.status == 200
    raised, cleared = await response.json()
    assert raised == {"time": "2025-01-16T10:00:11Z", "rule": "cell_temp_high", "state": "raised",
                      "severity": "critical", "message": "max cell temperature 58.0 °C above 55 °C", "value": 58.0,
                      "threshold": 55.0, "unit": "°C"}
    assert (cleared["state"], cleared["raised_at"]) == ("cleared", "2025-01-16T10:00:11Z")
    [query] = bus.sent(HISTORY_REQUEST)
    assert (query.kind, query.battery, query.begin, query.end) == (
        "alarms", "b-2", datetime(2025, 1, 15, 12, tzinfo=UTC), NOW), "by default the last day"
    response = await client.get("/alarms?every=1m")
    assert (response.status, (await response.json())["field"]) == (422, "every")


async def test_read_downsampled_csv_with_defaults(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.answer = result(["2025-01-16T10:00:00Z", 700.0, None, 100.0, None])
    # an unencoded "+01:00" arrives as " 01:00"; end defaults to now
    response = await client.get("/read?begin=2025-01-16T10:00:00+01:00&every=15m&format=csv&battery=b-1")
    assert response.status == 200
    assert response.content_type == "text/csv"
    assert await response.text() == (
        "timestamp,SOC,target_charge,target_discharge,power_kw\n2025-01-16T10:00:00Z,700.0,100.0,,\n"
    )
    [query] = bus.sent(HISTORY_REQUEST)
    assert (query.battery, query.every_s, query.begin, query.end) == (
        "b-1",
        900,
        datetime(2025, 1, 16, 9, tzinfo=UTC),
        NOW,
    )


async def test_read_truncated_without_limit_is_422(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.answer = result(["2025-01-16T10:00:00Z", 1, None, 1, 1], truncated=True)
    response = await client.get("/read?begin=2025-01-01T00:00:00Z&end=2025-01-16T00:00:00Z")
    body = await response.json()
    assert (response.status, body["field"]) == (422, "every")
    assert "every=1m" in body["error"]
    # with an explicit limit the first rows are the answer, flagged by a header
    response = await client.get("/read?begin=2025-01-01T00:00:00Z&end=2025-01-16T00:00:00Z&limit=1")
    assert response.status == 200
    assert response.headers["X-Truncated"] == "true"
    assert bus.sent(HISTORY_REQUEST)[-1].limit == 1


async def test_read_without_recorder_is_504(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.answer = None  # the recorder does not answer
    response = await client.get("/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z")
    assert response.status == 504
    assert "recorder did not answer" in (await response.json())["error"]


async def test_read_recorder_error_is_502(
    client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    recorder.answer = HistoryResult(ok=False, error="influxdb unreachable")
    response = await client.get("/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z")
    assert (response.status, (await response.json())["error"]) == (
        502,
        "the recorder could not answer: influxdb unreachable",
    )


async def test_prices_published(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    body = {
        "zone": "de-lu",
        "issued_at": "2025-01-16T09:00:00Z",
        "slots": [
            {"start": "2025-01-16T10:00:00Z", "end": "2025-01-16T11:00:00Z", "price_per_mwh": 42.5},
            {"start": "2025-01-16T11:00:00Z", "end": "2025-01-16T12:00:00Z", "price_per_mwh": -3},
        ],
    }
    response = await client.post("/prices", json=body)
    assert response.status == 202
    assert (await response.json())["topic"] == "bess/v1/market/de-lu/prices"
    [published] = bus.published
    assert isinstance(published.message, PriceForecast)
    assert [s.price_per_mwh for s in published.message.slots] == [42.5, -3.0]
    assert published.message.currency == "EUR"  # the default when the body names none


async def test_prices_in_another_currency_keep_it(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.post("/prices", json=_prices(zone="nsw1", currency="AUD"))
    assert response.status == 202
    [published] = bus.published
    assert isinstance(published.message, PriceForecast)
    assert published.message.currency == "AUD"


async def test_health(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    response = await client.get("/health")
    body = await response.json()
    assert (response.status, body["mqtt"], body["specs_known"]) == (200, "connected", ["limited"])
    bus.connected.clear()
    response = await client.get("/health")
    assert (response.status, (await response.json())["mqtt"]) == (503, "disconnected")


async def test_openapi_is_served(client: TestClient[Any, Any]) -> None:
    response = await client.get("/openapi.json")
    assert (response.status, await response.json()) == (200, {"openapi": "3.1.0"})


async def test_chunked_body_over_the_limit_is_413(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b"["
        for _ in range(MAX_BODY // 100 + 1):
            yield b" " * 100
        yield b"]"

    response = await client.post("/write", data=chunks(), headers=JSON)
    assert (response.status, (await response.json())["field"]) == (413, None)
    assert bus.published == []


async def test_counters_after_traffic(bus: MemoryBus, specs: SpecBook, recorder: RecorderDouble) -> None:
    gateway = make_gateway(bus, specs)
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as c:
        await c.post("/write", json=[SEED, SEED_4])
        await c.post("/mqtt/publish", json={"command": "IDLE"})
        await c.post("/write", json={"SOC": -1})
    assert dict(gateway.counters) == {"telemetry": 2, "commands": 1, "control": 1, "stored_confirmed": 2,
                                      "stored_unconfirmed": 0}


# -- broker trouble ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [("/write", SEED), ("/mqtt/publish", {"command": "IDLE"}), ("/write", [SEED, SEED_4])],
    ids=["write", "command", "batch"],
)
async def test_broker_down_is_503(client: TestClient[Any, Any], bus: MemoryBus, path: str, body: Any) -> None:
    bus.fail_publishes(BusUnavailable("not connected to the MQTT broker"))
    response = await client.post(path, json=body)
    payload = await response.json()
    assert response.status == 503
    assert "broker unavailable" in payload["error"]
    assert payload["field"] is None


async def test_batch_partly_acknowledged_says_how_many(client: TestClient[Any, Any], bus: MemoryBus) -> None:
    bus.fail_publishes(BusUnavailable("no PUBACK"), after=1)
    response = await client.post("/write", json=[SEED, SEED_4])
    assert response.status == 503
    assert "1 of 2 records were acknowledged" in (await response.json())["error"]


async def test_read_broker_down_is_503(client: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble) -> None:
    bus.fail_publishes(BusUnavailable("not connected to the MQTT broker"))
    response = await client.get("/read?begin=2025-01-16T09:00:00Z")
    assert response.status == 503


async def test_unexpected_error_is_a_json_500_with_an_id(
    client: TestClient[Any, Any], bus: MemoryBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus.fail_publishes(RuntimeError("boom"))
    response = await client.post("/write", json=SEED)
    body = await response.json()
    assert response.status == 500
    assert body["error"].startswith("internal error ")
    error_id = body["error"].split()[2].rstrip(":")
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)


# -- authentication ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}, {"Authorization": "s3cret"}],
    ids=["none", "wrong token", "basic", "no scheme"],
)
@pytest.mark.parametrize("path", ["/write", "/mqtt/publish", "/prices"])
async def test_token_required_for_posts(
    secured: TestClient[Any, Any], bus: MemoryBus, path: str, headers: dict[str, str]
) -> None:
    response = await secured.post(path, json=SEED, headers=headers)
    body = await response.json()
    assert (response.status, body["field"]) == (401, "Authorization")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert bus.published == []


async def test_token_accepted_and_reads_need_it_too(
    secured: TestClient[Any, Any], bus: MemoryBus, recorder: RecorderDouble
) -> None:
    response = await secured.post("/write", json=SEED, headers={"Authorization": "Bearer s3cret"})
    assert response.status == 200
    response = await secured.post("/mqtt/publish", json={"command": "IDLE"}, headers={"authorization": "bearer s3cret"})
    assert response.status == 202
    recorder.answer = result()
    assert (await secured.get("/read?begin=2025-01-16T09:00:00Z")).status == 401
    assert (await secured.get("/control")).status == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert (await secured.get("/read?begin=2025-01-16T09:00:00Z", headers=auth)).status == 200
    assert (await secured.get("/control", headers=auth)).status == 200
    assert (await secured.get("/health")).status == 200
    assert (await secured.get("/openapi.json")).status == 200


# -- the table of bad requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    path: str
    body: Any = None  # dict/list -> JSON; bytes -> raw; None with GET
    status: int = 422
    field: str | None = None
    text: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(JSON))
    method: str = "POST"


def _seed(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {**SEED, **changes}
    return {k: v for k, v in record.items() if v is not ...}


PRICES = {
    "zone": "de-lu",
    "issued_at": "2025-01-16T09:00:00Z",
    "slots": [{"start": "2025-01-16T10:00:00Z", "end": "2025-01-16T11:00:00Z", "price_per_mwh": 42.5}],
}


def _prices(**changes: Any) -> dict[str, Any]:
    return {**PRICES, **changes}


def _slot(**changes: Any) -> dict[str, Any]:
    return {**PRICES["slots"][0], **changes}  # type: ignore[dict-item]


READ = "/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z"

BAD = [
    # malformed, wrong type of body, wrong size
    Bad("write malformed", "/write", b"{", 400, None, "malformed JSON"),
    Bad("write empty body", "/write", b"", 400, None, "empty or truncated"),
    Bad("write trailing garbage", "/write", json.dumps(SEED).encode() + b" x", 400, None, "trailing characters"),
    Bad("write NaN literal", "/write", b'{"SOC": NaN}', 400, None, "malformed JSON"),
    Bad(
        "write form content type",
        "/write",
        json.dumps(SEED).encode(),
        415,
        "Content-Type",
        "application/json",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Bad(
        "write text/plain",
        "/write",
        json.dumps(SEED).encode(),
        415,
        "Content-Type",
        "not JSON",
        headers={"Content-Type": "text/plain"},
    ),
    Bad("write too large", "/write", b"[" + b" " * MAX_BODY + b"]", 413, None, f"limit of {MAX_BODY} bytes"),
    Bad("command too large", "/mqtt/publish", b" " * (MAX_BODY + 1), 413, None, "larger than the limit"),
    Bad("write a string", "/write", "seed", 422, None, "expected object | array"),
    Bad("write null", "/write", b"null", 422, None, "expected object | array"),
    # fields of a record
    Bad("write missing SOC", "/write", _seed(SOC=...), 422, "SOC", "missing required field SOC"),
    Bad("write missing timestamp", "/write", _seed(timestamp=...), 422, "timestamp", "missing required field"),
    Bad("write missing target_charge", "/write", _seed(target_charge=...), 422, "target_charge", "missing"),
    Bad("write SOC string", "/write", _seed(SOC="700"), 422, "SOC", "expected float, got str"),
    Bad("write SOC bool", "/write", _seed(SOC=True), 422, "SOC", "got bool"),
    Bad("write SOC negative", "/write", _seed(SOC=-1), 422, "SOC", ">= 0.0"),
    Bad("write SOC 1e400", "/write", json.dumps(SEED).replace("700", "1e400").encode(), 422, "SOC", "finite"),
    Bad("write SOC huge", "/write", _seed(SOC=1e12), 422, "SOC", "<= 10000000.0"),
    Bad("write target_charge negative", "/write", _seed(target_charge=-0.1), 422, "target_charge", ">= 0.0"),
    Bad("write target_discharge null", "/write", _seed(target_discharge=None), 422, "target_discharge", "null"),
    Bad(
        "write power_kw -inf",
        "/write",
        json.dumps({**SEED, "power_kw": 0}).replace('"power_kw": 0', '"power_kw": -1e999').encode(),
        422,
        "power_kw",
        "finite",
    ),
    Bad("write timestamp without zone", "/write", _seed(timestamp="2025-01-16T10:00:00"), 422, "timestamp", "timezone"),
    Bad("write timestamp not a date", "/write", _seed(timestamp="yesterday"), 422, "timestamp", "RFC3339"),
    Bad("write timestamp a number", "/write", _seed(timestamp=1737021600), 422, "timestamp", "expected datetime"),
    Bad(
        "write timestamp before 2000",
        "/write",
        _seed(timestamp="1999-12-31T23:59:59Z"),
        422,
        "timestamp",
        "before 2000",
    ),
    Bad(
        "write timestamp far future",
        "/write",
        _seed(timestamp="2025-01-18T12:00:00Z"),
        422,
        "timestamp",
        "in the future",
    ),
    Bad("write unknown field", "/write", _seed(soc=1), 422, "soc", "unknown field soc"),
    Bad("write battery bad id", "/write", _seed(battery="Battery 1"), 422, "battery", "[a-z0-9_-]"),
    Bad("write battery too long", "/write", _seed(battery="b" * 65), 422, "battery", "[a-z0-9_-]"),
    Bad("write query battery bad id", "/write?battery=B1", SEED, 422, "battery", "not a valid id"),
    Bad("write battery body vs query", "/write?battery=b-1", _seed(battery="b-2"), 422, "battery", "differs"),
    Bad("write unknown query parameter", "/write?bettery=b-1", SEED, 422, "bettery", "unknown query parameter"),
    Bad("write batch empty", "/write", [], 422, None, "expected array of length >= 1"),
    Bad("write batch bad item type", "/write", [SEED, 5], 422, "[1]", "expected object"),
    Bad("write batch missing field", "/write", [SEED, _seed(SOC=...)], 422, "[1].SOC", "missing required"),
    Bad(
        "write batch bad timestamp",
        "/write",
        [SEED, _seed(timestamp="2030-01-01T00:00:00Z")],
        422,
        "[1].timestamp",
        "in the future",
    ),
    Bad("write batch unknown field", "/write", [_seed(x=1)], 422, "[0].x", "unknown field"),
    # commands
    Bad("command unknown word", "/mqtt/publish", {"command": "FLY 50kW"}, 422, "command", "unknown command word"),
    Bad("command missing power", "/mqtt/publish", {"command": "DISCHARGE"}, 422, "command", "missing power"),
    Bad("command missing unit", "/mqtt/publish", {"command": "DISCHARGE 50"}, 422, "command", "missing unit"),
    Bad("command unknown unit", "/mqtt/publish", {"command": "DISCHARGE 50 kWh"}, 422, "command", "unknown unit"),
    Bad("command negative", "/mqtt/publish", {"command": "CHARGE -5kW"}, 422, "command", "negative"),
    Bad("command zero charge", "/mqtt/publish", {"command": "CHARGE 0kW"}, 422, "command", "send IDLE"),
    Bad("command empty", "/mqtt/publish", {"command": ""}, 422, "command", "length >= 1"),
    Bad("command not a string", "/mqtt/publish", {"command": 50}, 422, "command", "expected str"),
    Bad("command missing", "/mqtt/publish", {}, 422, "command", "missing required field command"),
    Bad("command unknown field", "/mqtt/publish", {"cmd": "IDLE"}, 422, "cmd", "unknown field"),
    Bad("command lease zero", "/mqtt/publish", {"command": "IDLE", "valid_for_s": 0}, 422, "valid_for_s", ">= 1"),
    Bad(
        "command lease string",
        "/mqtt/publish",
        {"command": "IDLE", "valid_for_s": "60"},
        422,
        "valid_for_s",
        "expected int",
    ),
    Bad(
        "command battery bad id", "/mqtt/publish", {"command": "IDLE", "battery": "../x"}, 422, "battery", "[a-z0-9_-]"
    ),
    Bad(
        "command beyond spec",
        "/mqtt/publish",
        {"command": "DISCHARGE 0.3 MW", "battery": "limited"},
        422,
        "command",
        "exceeds limited's max_discharge_kw of 250 kW",
    ),
    Bad(
        "charge beyond spec",
        "/mqtt/publish?battery=limited",
        {"command": "charge 201 kW"},
        422,
        "command",
        "max_charge_kw of 200 kW",
    ),
    # reads
    Bad(
        "read missing begin",
        "/read?end=2025-01-16T11:00:00Z",
        None,
        422,
        "begin",
        "missing query parameter begin",
        method="GET",
    ),
    Bad("read begin without zone", "/read?begin=2025-01-16T09:00:00", None, 422, "begin", "with a zone", method="GET"),
    Bad("read end garbage", "/read?begin=2025-01-16T09:00:00Z&end=soon", None, 422, "end", "RFC 3339", method="GET"),
    Bad(
        "read begin after end",
        "/read?begin=2025-01-16T12:00:00Z&end=2025-01-16T11:00:00Z",
        None,
        422,
        "begin",
        "must be before end",
        method="GET",
    ),
    Bad(
        "read begin equals end",
        "/read?begin=2025-01-16T11:00:00Z&end=2025-01-16T11:00:00Z",
        None,
        422,
        "begin",
        "must be before end",
        method="GET",
    ),
    Bad("read every unknown unit", READ + "&every=5x", None, 422, "every", "s, m, h or d", method="GET"),
    Bad("read every zero", READ + "&every=0s", None, 422, "every", "not an interval", method="GET"),
    Bad(
        "read every too fine",
        "/read?begin=2024-01-16T00:00:00Z&end=2025-01-16T00:00:00Z&every=1s",
        None,
        422,
        "every",
        "intervals, more than",
        method="GET",
    ),
    Bad("read format xml", READ + "&format=xml", None, 422, "format", "json or csv", method="GET"),
    Bad("read limit zero", READ + "&limit=0", None, 422, "limit", "from 1 to", method="GET"),
    Bad("read limit text", READ + "&limit=lots", None, 422, "limit", "whole number", method="GET"),
    Bad("read limit too big", READ + "&limit=100001", None, 422, "limit", "from 1 to 100000", method="GET"),
    Bad("read unknown parameter", READ + "&start=x", None, 422, "start", "unknown query parameter", method="GET"),
    Bad(
        "read repeated parameter",
        READ + "&begin=2025-01-16T09:30:00Z",
        None,
        422,
        "begin",
        "more than once",
        method="GET",
    ),
    Bad("read battery bad id", READ + "&battery=B%201", None, 422, "battery", "not a valid id", method="GET"),
    # prices
    Bad(
        "prices slot ends before start",
        "/prices",
        _prices(slots=[_slot(end="2025-01-16T09:00:00Z")]),
        422,
        "slots[0].end",
        "end must be after start",
    ),
    Bad("prices slots overlap", "/prices", _prices(slots=[_slot(), _slot()]), 422, "slots[1].start", "time order"),
    Bad("prices no slots", "/prices", _prices(slots=[]), 422, "slots", "length >= 1"),
    Bad("prices zone upper case", "/prices", _prices(zone="DE"), 422, "zone", "[a-z0-9_-]"),
    Bad("prices currency", "/prices", _prices(currency="usd"), 422, "currency", "^[A-Z]{3}$"),
    Bad(
        "prices price out of range",
        "/prices",
        _prices(slots=[_slot(price_per_mwh=1e9)]),
        422,
        "slots[0].price_per_mwh",
        "<= 100000",
    ),
    Bad(
        "prices slot unknown field", "/prices", _prices(slots=[_slot(price=1)]), 422, "slots[0].price", "unknown field"
    ),
    Bad("prices query parameter", "/prices?zone=x", PRICES, 422, "zone", "unknown query parameter"),
    # routing
    Bad("unknown route", "/writes", SEED, 404, None, "no route POST /writes"),
    Bad("GET on a POST route", "/write", None, 405, None, "allowed: POST", method="GET"),
    Bad("PUT on a POST route", "/mqtt/publish", {"command": "IDLE"}, 405, None, "not allowed", method="PUT"),
]


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
async def test_bad_request(client: TestClient[Any, Any], bus: MemoryBus, case: Bad, recorder: RecorderDouble) -> None:
    recorder.answer = result()
    data = case.body if isinstance(case.body, bytes) or case.body is None else json.dumps(case.body).encode()
    response = await client.request(
        case.method, case.path, data=data, headers=case.headers, skip_auto_headers=["Content-Type"]
    )
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "field"}
    assert (response.status, body["field"]) == (case.status, case.field), body["error"]
    assert case.text in body["error"]
    assert bus.published == []


def test_the_table_is_big_enough() -> None:
    assert len(BAD) >= 30
