"""The gateway's limits agree with each other and with what the README promises (issue 16, item 6)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.bodies import DEFAULT_MAX_BODY_BYTES, MAX_BATCH
from nodes.gateway.config import GatewayConfig
from nodes.gateway.fleet import Fleet
from nodes.gateway.openapi import document
from nodes.gateway.specs import SpecBook
from nodes.runtime.memory import MemoryBus
from tests.unit.test_gateway_app import NOW


def _batch(pretty: bool) -> bytes:
    # the README's record, with a battery id of the longest allowed length, power_kw, full-precision numbers and a
    # timestamp with microseconds and an offset: the largest plausible record
    record = {"SOC": 987654.123456789, "target_discharge": 123456.987654321, "target_charge": 234567.876543219,
              "timestamp": "2025-01-16T10:00:00.123456+01:00", "power_kw": -345678.765432198, "battery": "b" * 64}
    return json.dumps([record] * MAX_BATCH, indent=2 if pretty else None).encode()


def test_the_default_body_limit_holds_a_full_batch_of_the_largest_plausible_records() -> None:
    assert GatewayConfig().gateway_max_body_bytes == DEFAULT_MAX_BODY_BYTES == GatewaySettings().max_body_bytes
    readme = json.dumps([{"SOC": 700, "target_discharge": 50, "target_charge": 100,
                          "timestamp": "2025-01-16T10:00:00Z", "battery": "battery-1"}] * MAX_BATCH).encode()
    assert len(readme) > 1024 * 1024, "the batch that got 413 before (1.2 MB)"
    assert len(readme) < len(_batch(pretty=True)) <= DEFAULT_MAX_BODY_BYTES


async def test_a_full_readme_batch_is_accepted() -> None:
    bus = MemoryBus("gateway")  # no recorder: the records are not confirmed, so 202
    gateway = Gateway(bus, SpecBook(), GatewaySettings(), fleet=Fleet(), clock=lambda: NOW)
    async with TestClient(TestServer(create_app(gateway, openapi=b"{}"))) as client:
        response = await client.post("/write", data=_batch(pretty=True), headers={"Content-Type": "application/json"})
        assert response.status == 202, await response.text()
        body: dict[str, Any] = await response.json()
        assert body["count"] == MAX_BATCH
        too_many = json.dumps([json.loads(_batch(pretty=False))[0]] * (MAX_BATCH + 1)).encode()
        refused = await client.post("/write", data=too_many, headers={"Content-Type": "application/json"})
        assert refused.status == 422  # the count is the limit, not the bytes
    assert len(bus.published) == MAX_BATCH


def test_openapi_says_both_limits() -> None:
    write = document()["paths"]["/write"]["post"]
    assert f"{DEFAULT_MAX_BODY_BYTES:,} bytes" in write["description"]
    assert f"{DEFAULT_MAX_BODY_BYTES:,} bytes" in write["responses"]["413"]["description"]
    schema = write["requestBody"]["content"]["application/json"]["schema"]
    assert [option.get("maxItems") for option in schema["anyOf"]] == [MAX_BATCH, None]
