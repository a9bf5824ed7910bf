"""The bus's payload bounds never drop a message the contract accepts, and bound everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from nodes.contract.messages import (
    MAX_SLOTS,
    BatteryState,
    Command,
    ControlMode,
    Figure,
    HistoryQuery,
    HistoryResult,
    NodeStatus,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)
from nodes.contract.topics import ALL_TOPICS
from nodes.runtime.bus import MqttSettings
from nodes.runtime.payload_limits import max_json_bytes, payload_limit

T = datetime(2025, 1, 16, 10, 0, 0, 123456, tzinfo=UTC)
NASTY = "\u0001"  # a control character: JSON escapes it as \u0001, 6 bytes for 1 character


def _limit(payload: type[msgspec.Struct]) -> int:
    settings = MqttSettings()
    return payload_limit(payload, max_payload_bytes=settings.mqtt_max_payload_bytes,
                         max_bulk_payload_bytes=settings.mqtt_max_bulk_payload_bytes)


def _largest_valid() -> list[msgspec.Struct]:
    """A message at every bound of the contract: the longest strings (all escaped), the longest lists."""
    slot = ScheduleSlot(start=T, end=T + timedelta(minutes=15), price_per_mwh=-99_999.123456789,
                        charge_kw=9_999_999.123456789, discharge_kw=9_999_999.123456789, soc_kwh=9_999_999.123456789)
    return [
        Telemetry(ts=T, soc_kwh=9_999_999.5, power_kw=-9_999_999.123456789, target_charge_kw=1e7,
                  target_discharge_kw=1e7, source=NASTY * 64),
        Command(command_id=NASTY * 64, action="discharge", power_kw=1e7, issued_at=T, valid_until=T,
                source="homeassistant", plan_id=NASTY * 64, text=NASTY * 500),
        BatteryState(ts=T, mode="discharging", power_kw=-1e7, command_id=NASTY * 64, command_source=NASTY * 64,
                     valid_until=T, limits_hit=[NASTY * 64] * 32, reason=NASTY * 500),
        ControlMode(mode="autopilot", set_at=T, until=T, source=NASTY * 64, reason=NASTY * 500),
        Schedule(plan_id=NASTY * 64, created_at=T, soc_initial_kwh=1e7, slots=[slot] * MAX_SLOTS,
                 expected_revenue=-1e12, baseline_revenue=-1e12, zone=NASTY * 64, solver=NASTY * 64,
                 solve_ms=1e9, reason=NASTY * 500, currency="AUD"),
        PriceForecast(zone="z" * 64, issued_at=T, source=NASTY * 64, currency="AUD",
                      slots=[PriceSlot(start=T, end=T, price_per_mwh=-99_999.123456789)] * MAX_SLOTS),
        HistoryQuery(kind="schedule", battery="b" * 64, zone="z" * 64, begin=T, end=T, every_s=366 * 86400,
                     limit=1_000_000),
        NodeStatus(node=NASTY * 64, state="degraded", since=T, version=NASTY * 64, reason=NASTY * 4000,
                   pid=-(2**63), counters={f"{i:064d}": -(2**63) for i in range(200)},
                   details={f"{i:064d}": NASTY * 500 for i in range(1000)}),
    ]


@pytest.mark.parametrize("message", _largest_valid(), ids=lambda m: type(m).__name__)
def test_the_largest_valid_message_fits_its_computed_maximum_and_the_bound(message: msgspec.Struct) -> None:
    size = len(msgspec.json.encode(message))
    largest = max_json_bytes(type(message))
    assert largest is not None
    assert size <= largest
    assert size <= _limit(type(message))


def test_small_messages_get_the_configured_bound_and_unbounded_ones_the_bulk_bound() -> None:
    settings = MqttSettings()
    assert settings.mqtt_max_payload_bytes == 256 * 1024
    assert _limit(Telemetry) == _limit(Command) == settings.mqtt_max_payload_bytes
    # a Plotly figure and a history answer have no bound in the contract: the bulk bound applies
    assert max_json_bytes(Figure) is None
    assert max_json_bytes(HistoryResult) is None
    assert _limit(Figure) == _limit(HistoryResult) == settings.mqtt_max_bulk_payload_bytes


def test_every_topic_has_a_finite_bound() -> None:
    for topic in ALL_TOPICS:
        assert 1024 <= _limit(topic.payload) <= MqttSettings().mqtt_max_bulk_payload_bytes, topic.template


def test_a_history_answer_at_the_recorders_default_row_limit_fits_the_bulk_bound() -> None:
    # the recorder answers at most BESS_RECORDER_HISTORY_MAX_ROWS (default 100,000) rows
    row = ["2025-01-16T10:00:00.123456Z", 9_999_999.123456789, -9_999_999.123456789, 1e7, 1e7, "device"]
    answer = HistoryResult(ok=True, columns=["time", "soc_kwh", "power_kw", "target_charge_kw",
                                             "target_discharge_kw", "source"], rows=[row] * 100_000)
    assert len(msgspec.json.encode(answer)) <= _limit(HistoryResult)
