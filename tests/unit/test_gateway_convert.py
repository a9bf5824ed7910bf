"""The gateway's pure parts: HTTP bodies -> contract messages (convert.py) and the answer to a write (outcome.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nodes.gateway.bodies import PricesBody, PriceSlotBody, WriteBody
from nodes.gateway.convert import to_price_forecast, to_telemetry
from nodes.gateway.errors import ApiError, ImplausibleTimestamp
from nodes.gateway.outcome import ack_mode, write_outcome
from nodes.gateway.receipts import Expectation

NOW = datetime(2025, 1, 16, 12, tzinfo=UTC)
PLUS_ONE = timezone(timedelta(hours=1))


def record(ts: datetime) -> WriteBody:
    return WriteBody(soc_kwh=700.0, target_discharge_kw=50.0, target_charge_kw=100.0, timestamp=ts)


def test_a_record_becomes_gateway_telemetry_in_utc() -> None:
    telemetry = to_telemetry(record(datetime(2025, 1, 16, 11, tzinfo=PLUS_ONE)), NOW)
    assert telemetry.ts == datetime(2025, 1, 16, 10, tzinfo=UTC)
    assert telemetry.ts.utcoffset() == timedelta(0)
    assert (telemetry.soc_kwh, telemetry.target_charge_kw, telemetry.source) == (700.0, 100.0, "gateway")


def test_an_implausible_timestamp_is_a_422_on_the_records_field() -> None:
    with pytest.raises(ImplausibleTimestamp) as info:
        to_telemetry(record(NOW + timedelta(days=3)), NOW, "[3].")
    assert (info.value.status, info.value.field) == (422, "[3].timestamp")


def test_overlapping_price_slots_are_refused_with_the_slot() -> None:
    hour = timedelta(hours=1)
    body = PricesBody(zone="de-lu", issued_at=NOW, slots=[
        PriceSlotBody(start=NOW, end=NOW + hour, price_per_mwh=10.0),
        PriceSlotBody(start=NOW + hour / 2, end=NOW + 2 * hour, price_per_mwh=20.0),
    ])
    with pytest.raises(ApiError) as info:
        to_price_forecast(body)
    assert (info.value.status, info.value.field) == (422, "slots[1].start")
    ordered = PricesBody(zone="de-lu", issued_at=NOW, slots=[body.slots[0]], source="")
    forecast = to_price_forecast(ordered)
    assert (forecast.source, len(forecast.slots)) == ("gateway", 1)


def test_the_answer_to_a_write() -> None:
    assert write_outcome(1, None, single=True, stored_timeout_s=5.0)[0] == 202
    waited = Expectation(["a", "b"])
    waited.settle(0, None)
    status, fields = write_outcome(2, waited, single=False, stored_timeout_s=5.0)
    assert (status, fields["status"], fields["unconfirmed"]) == (202, "accepted", [1])
    waited.settle(1, None)
    assert write_outcome(2, waited, single=False, stored_timeout_s=5.0)[:1] == (200,)
    refused = Expectation(["c"])
    refused.settle(0, "field type conflict")
    with pytest.raises(ApiError) as info:
        write_outcome(1, refused, single=True, stored_timeout_s=5.0)
    assert info.value.status == 422
    assert ack_mode(None, "broker") == "broker"
    with pytest.raises(ApiError):
        ack_mode("maybe", "stored")
