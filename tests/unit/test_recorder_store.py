"""Store adapters against a fake HTTP server: error sorting and result shaping without a real InfluxDB.

The real-server contract is tests/integration/test_store_contract.py. This file exists because InfluxDB 2.x
cannot run on machines without a Docker engine: here at least the Influx2Store's glue (influxdb-client calls,
error mapping, the retry of the good lines after a 400, Flux result -> rows) runs against canned v2 answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from nodes.contract.messages import BMS_NUMBERS, HistoryQuery
from nodes.recorder.config import RecorderConfig
from nodes.recorder.store import (
    Influx1Store,
    Influx2Store,
    StoreRefused,
    StoreUnavailable,
    make_store,
    rejections_from_error,
)
from nodes.runtime.config import ConfigError, load

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)

FLUX_CSV = """\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,double,double,string
#group,false,false,true,true,false,true,true,false,false,false
#default,_result,,,,,,,,,
,result,table,_start,_stop,_time,_measurement,battery,soc_kwh,power_kw,source
,,0,2025-01-16T09:00:00Z,2025-01-17T10:00:00Z,2025-01-16T10:00:01Z,telemetry,b1,2,-1.5,device
,,0,2025-01-16T09:00:00Z,2025-01-17T10:00:00Z,2025-01-16T10:00:00Z,telemetry,b1,1,-1.5,gateway

"""


@dataclass
class FakeV2:
    """Canned answers for /api/v2/write and /api/v2/query, and what it was sent."""

    write_status: list[int] = field(default_factory=list)
    write_body: str = ""
    bodies: list[str] = field(default_factory=list)
    flux: list[str] = field(default_factory=list)

    async def write(self, request: web.Request) -> web.Response:
        self.bodies.append((await request.read()).decode())
        assert request.query["precision"] == "us"
        assert request.headers["Authorization"] == "Token tok"
        status = self.write_status.pop(0) if self.write_status else 204
        if status == 204:
            return web.Response(status=204)
        return web.Response(status=status, text=self.write_body, content_type="application/json")

    async def query(self, request: web.Request) -> web.Response:
        self.flux.append((await request.json())["query"])
        return web.Response(text=FLUX_CSV, content_type="text/csv")


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeV2, str]]:
    state = FakeV2()
    app = web.Application()
    app.router.add_post("/api/v2/write", state.write)
    app.router.add_post("/api/v2/query", state.query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def v2(fake: tuple[FakeV2, str]) -> AsyncIterator[Influx2Store]:
    store = Influx2Store(fake[1], token="tok", org="org", bucket="bkt", timeout_s=5)
    await store.open()
    yield store
    await store.close()


async def test_v2_write(fake: tuple[FakeV2, str], v2: Influx2Store) -> None:
    outcome = await v2.write(["m,b=x f=1.0 1", "m,b=x f=2.0 2"])
    assert (outcome.written, outcome.rejected) == (2, ())
    assert fake[0].bodies == ["m,b=x f=1.0 1\nm,b=x f=2.0 2"]


@pytest.mark.parametrize("status", [401, 404, 429, 500, 503])
async def test_v2_retryable_statuses(fake: tuple[FakeV2, str], v2: Influx2Store, status: int) -> None:
    fake[0].write_status = [status]
    fake[0].write_body = '{"code":"unavailable","message":"try later"}'
    with pytest.raises(StoreUnavailable):
        await v2.write(["m,b=x f=1.0 1"])


async def test_v2_too_large_is_refused_not_retried(fake: tuple[FakeV2, str], v2: Influx2Store) -> None:
    fake[0].write_status = [413]
    fake[0].write_body = '{"code":"request too large","message":"request body too large"}'
    with pytest.raises(StoreRefused):
        await v2.write(["m,b=x f=1.0 1"])


async def test_v2_bad_line_is_rejected_and_the_rest_rewritten(fake: tuple[FakeV2, str], v2: Influx2Store) -> None:
    fake[0].write_status = [400]
    fake[0].write_body = '{"code":"invalid","message":"unable to parse \'bad line\': invalid field format"}'
    outcome = await v2.write(["m,b=x f=1.0 1", "bad line", "m,b=x f=2.0 2"])
    assert outcome.written == 2
    assert [(r.line, r.reason) for r in outcome.rejected] == [("bad line", "invalid field format")]
    assert fake[0].bodies[-1] == "m,b=x f=1.0 1\nm,b=x f=2.0 2"


async def test_v2_query_rows(fake: tuple[FakeV2, str], v2: Influx2Store) -> None:
    q = HistoryQuery(kind="telemetry", battery="b1", begin=T0 - timedelta(hours=1), end=T0 + timedelta(days=1))
    result = await v2.query(q)
    assert result.ok
    assert result.columns[:6] == ["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", "source"]
    assert result.columns[6:] == [*BMS_NUMBERS, "bms_alarms"]
    no_bms = [None] * (len(BMS_NUMBERS) + 1)
    assert result.rows == [
        ["2025-01-16T10:00:00Z", 1.0, -1.5, None, None, "gateway", *no_bms],
        ["2025-01-16T10:00:01Z", 2.0, -1.5, None, None, "device", *no_bms],
    ]
    assert 'from(bucket: "bkt")' in fake[0].flux[0]


def test_rejections_from_influx1_errors() -> None:
    parse = (
        "partial write: unable to parse 'bad line': invalid field format\n"
        "unable to parse 'm f= 1': missing field value dropped=0"
    )
    assert [(r.line, r.reason) for r in rejections_from_error(parse, 10)] == [
        ("bad line", "invalid field format"),
        ("m f= 1", "missing field value"),
    ]
    conflict = 'partial write: field type conflict: input field "f" on measurement "m" is type string dropped=2'
    rejected = rejections_from_error(conflict, 10)
    assert len(rejected) == 2
    assert all(r.line is None and "conflict" in r.reason for r in rejected)
    assert len(rejections_from_error("something odd", 10)) == 1
    assert len(rejections_from_error(conflict.replace("dropped=2", "dropped=9"), 3)) == 3


async def test_influx1_unreachable_is_retryable() -> None:
    store = Influx1Store("http://127.0.0.1:9", "db", timeout_s=1)
    try:
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.write(["m f=1.0 1"])
    finally:
        await store.close()


def test_config_picks_the_adapter_and_sizes_the_receive_window() -> None:
    config = load(RecorderConfig, {})
    assert (config.store, config.influx_url, config.influx_db) == ("influx1", "http://127.0.0.1:8086", "bess")
    assert (config.batch_max_points, config.batch_max_delay_ms, config.history_max_rows) == (5000, 200, 100_000)
    assert config.receive_maximum == 10_000
    assert isinstance(make_store(config), Influx1Store)
    assert load(RecorderConfig, {"BESS_BATCH_MAX_POINTS": "20000"}).receive_maximum == 40_000
    assert load(RecorderConfig, {"BESS_BATCH_MAX_POINTS": "50000"}).receive_maximum == 65_535
    assert load(RecorderConfig, {"BESS_RECORDER_RECEIVE_MAXIMUM": "100"}).receive_maximum == 5000  # >= one batch

    v2 = load(RecorderConfig, {"BESS_STORE": "influx2", "BESS_INFLUX_TOKEN": "t", "BESS_INFLUX_ORG": "o"})
    assert v2.problems() == []
    store = make_store(v2)
    assert isinstance(store, Influx2Store)
    assert (store.bucket, store.org) == ("bess", "o")


def test_config_problems_are_reported() -> None:
    assert len(load(RecorderConfig, {"BESS_STORE": "influx2"}).problems()) == 2
    assert load(RecorderConfig, {"BESS_INFLUX_URL": "127.0.0.1:8086"}).problems()
    with pytest.raises(ConfigError, match="BESS_RECORDER_SHARE_GROUP"):
        load(RecorderConfig, {"BESS_RECORDER_SHARE_GROUP": "a/b"})
    with pytest.raises(ConfigError, match="BESS_STORE"):
        load(RecorderConfig, {"BESS_STORE": "influx3"})
