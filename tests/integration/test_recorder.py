"""The recorder as a process against real mosquitto and influxd: storage, history, malformed payloads.

Fault tests (SIGKILL mid-stream, influxd down) are in test_recorder_faults.py and reuse the helpers here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy import stack
from nodes.contract.messages import (
    BMS_NUMBERS,
    BatteryState,
    Command,
    HistoryQuery,
    HistoryResult,
    PriceForecast,
    PriceSlot,
    Schedule,
    ScheduleSlot,
    Telemetry,
)
from nodes.contract.topics import COMMAND, HISTORY, PRICES, SCHEDULE, STATE, TELEMETRY
from nodes.recorder.points import epoch_us
from nodes.renderer.series import PriceSeries
from nodes.runtime.bus import Bus, MqttSettings
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)


# -- helpers shared with test_recorder_faults.py ----------------------------------------------------------------


@dataclass
class Rig:
    """One test's recorder setup: its environment, database and battery, and ways to look at them."""

    services: Services
    run_node: Callable[..., NodeProcess]
    env: dict[str, str]
    db: str
    battery: str

    def start(self) -> NodeProcess:
        """Start ``python -m nodes.recorder`` and wait until it is online (so its subscriptions exist)."""
        proc = self.run_node("recorder", self.env)
        proc.wait_online(
            self.services.mqtt_host, self.services.mqtt_port, self.env["BESS_TOPIC_ROOT"], node_id=self.node_id
        )
        return proc

    @property
    def node_id(self) -> str:
        return self.env["BESS_NODE_ID"]

    def status(self) -> dict[str, Any]:
        """The recorder's retained status (decoded), or {}."""
        topic = f"{self.env['BESS_TOPIC_ROOT']}/node/{self.node_id}/status"
        payload = self.services.read_retained(topic, timeout=2.0).get(topic)
        return {} if payload is None else dict(json.loads(payload))

    def counter(self, name: str) -> int | None:
        """One counter of the retained status."""
        value = (self.status().get("counters") or {}).get(name)
        return None if value is None else int(value)

    def select(self, query: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query as dicts (time in epoch microseconds)."""
        result = stack.influx_query(self.services.influx_url, query, self.db, epoch="u")
        series = result["results"][0].get("series") or []
        return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]

    def count(self, measurement: str = "telemetry", field: str = "soc_kwh") -> int:
        """``count(field)`` in ``measurement``."""
        rows = self.select(f'SELECT count("{field}") FROM "{measurement}"')
        return int(rows[0]["count"]) if rows else 0


def make_rig(
    services: Services, run_node: Callable[..., NodeProcess], node_env: dict[str, str], influx_db: str, battery: str
) -> Rig:
    """node_env plus a private client id (so no test inherits another's MQTT session) and fast status updates."""
    env = {
        **node_env,
        "BESS_NODE_ID": f"recorder-{uuid.uuid4().hex[:8]}",
        "BESS_STATUS_INTERVAL_S": "0.5",
        "BESS_MQTT_RECONNECT_DELAY_S": "0.2",
    }
    return Rig(services, run_node, env, influx_db, battery)


async def make_publisher(services: Services, topic_root: str) -> Bus:
    """A started test-side bus (clean session) that can also make history requests."""
    bus = Bus(
        f"tester-{uuid.uuid4().hex[:8]}",
        MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root),
        persistent=False,
    )
    bus.enable_requests(HISTORY)
    await bus.start(retry=False)
    return bus


def telemetry(i: int, seconds: float = 1.0) -> Telemetry:
    """The i-th test message: its own timestamp, soc_kwh = i."""
    return Telemetry(ts=T0 + timedelta(seconds=seconds * i), soc_kwh=float(i), power_kw=2.0)


async def publish_telemetry(bus: Bus, battery: str, indices: range, *, seconds: float = 1.0) -> None:
    """Publish ``telemetry(i)`` for each index, waiting for a PUBACK every 10 messages.

    Pacing keeps the publisher well inside the broker's receive maximum (mosquitto's default: 20 unacknowledged
    QoS 1 messages per client), so a test never depends on how the Bus queues beyond it.
    """
    for k, i in enumerate(indices):
        await bus.publish(TELEMETRY, telemetry(i, seconds), battery=battery, wait_ack=k % 10 == 9, timeout=30)


# -- tests ----------------------------------------------------------------------------------------------------------


async def test_every_message_kind_is_stored_at_its_own_timestamp(rig: Rig, publisher: Bus) -> None:
    rig.start()
    hour = timedelta(hours=1)
    command = Command(command_id="c-1", action="discharge", power_kw=50, issued_at=T0 + timedelta(seconds=1),
                      valid_until=T0 + timedelta(minutes=5), source="gateway", text='DISCHARGE 50kW "now", ok')
    state = BatteryState(ts=T0 + timedelta(seconds=2), mode="discharging", power_kw=50, command_id="c-1",
                         limits_hit=["soc_min", "max_discharge_kw"], reason="clipped")
    schedule = Schedule(
        plan_id="p-1", created_at=T0 - timedelta(minutes=5), soc_initial_kwh=500, expected_revenue=22.13,
        baseline_revenue=18,
        slots=[ScheduleSlot(start=T0 + i * hour, end=T0 + (i + 1) * hour, price_per_mwh=40 + i, charge_kw=0,
                            discharge_kw=250, soc_kwh=500 - i) for i in range(3)],
    )
    prices = PriceForecast(zone="de-lu", issued_at=T0 - hour, slots=[
        PriceSlot(start=T0 + i * hour, end=T0 + (i + 1) * hour, price_per_mwh=-5.5 + i) for i in range(4)
    ])
    await publisher.publish(
        TELEMETRY,
        Telemetry(ts=T0, soc_kwh=700, power_kw=-50, target_charge_kw=100, target_discharge_kw=50),
        battery=rig.battery,
    )
    await publisher.publish(COMMAND, command, battery=rig.battery)
    await publisher.publish(STATE, state, battery=rig.battery)
    await publisher.publish(SCHEDULE, schedule, battery=rig.battery)
    await publisher.publish(PRICES, prices, zone="de-lu")

    def stored() -> bool:
        return (
            rig.count() == 1
            and rig.count("command", "action") == 1
            and rig.count("state", "mode") == 1
            and rig.count("schedule", "soc_kwh") == 3
            and rig.count("plan", "plan_id") == 1
            and rig.count("prices", "price_per_mwh") == 4
        )

    await wait_for_async(stored, 15, 0.1, what="every point in InfluxDB")
    assert rig.select("SELECT * FROM telemetry") == [
        {"time": epoch_us(T0), "battery": rig.battery, "soc_kwh": 700, "power_kw": -50, "target_charge_kw": 100,
         "target_discharge_kw": 50, "source": "device", "absent": "bms"}  # absent: the fields it left out (no BMS)
    ]
    (row,) = rig.select("SELECT * FROM command")
    assert (row["time"], row["text"], row["valid_until"]) == (
        epoch_us(command.issued_at), command.text, "2025-01-16T10:05:00Z"
    )
    (row,) = rig.select("SELECT * FROM state")
    assert (row["time"], row["limits_hit"]) == (epoch_us(state.ts), "soc_min,max_discharge_kw")
    rows = rig.select("SELECT * FROM schedule")
    assert [(r["time"], r["plan_id"]) for r in rows] == [(epoch_us(s.start), "p-1") for s in schedule.slots]
    (row,) = rig.select("SELECT * FROM plan")
    assert (row["time"], row["expected_revenue"]) == (epoch_us(schedule.created_at), 22.13)
    rows = rig.select("SELECT * FROM prices")
    assert [(r["time"], r["zone"], r["price_per_mwh"]) for r in rows] == [
        (epoch_us(s.start), "de-lu", s.price_per_mwh) for s in prices.slots
    ]
    # A field's type is fixed by its first write: JSON integers must have been stored as floats.
    assert {r["fieldKey"]: r["fieldType"] for r in rig.select("SHOW FIELD KEYS FROM telemetry")}["soc_kwh"] == "float"


async def test_history_request_returns_raw_and_downsampled_rows(rig: Rig, publisher: Bus) -> None:
    rig.start()
    await publish_telemetry(publisher, rig.battery, range(120), seconds=30)  # every 30 s for an hour
    await wait_for_async(lambda: rig.count() == 120, 15, 0.1, what="120 telemetry points")

    span: dict[str, Any] = {"battery": rig.battery, "begin": T0, "end": T0 + timedelta(hours=1)}
    raw: HistoryResult = await publisher.request(HISTORY, HistoryQuery(kind="telemetry", limit=10, **span))
    assert raw.ok, raw.error
    assert raw.columns == ["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", "source",
                           *BMS_NUMBERS, "bms_alarms"]
    assert raw.truncated
    no_bms = [None] * (len(BMS_NUMBERS) + 1)
    assert raw.rows[:2] == [
        ["2025-01-16T10:00:00Z", 0.0, 2.0, None, None, "device", *no_bms],
        ["2025-01-16T10:00:30Z", 1.0, 2.0, None, None, "device", *no_bms],
    ]
    assert len(raw.rows) == 10

    full: HistoryResult = await publisher.request(HISTORY, HistoryQuery(kind="telemetry", **span))
    assert (len(full.rows), full.truncated) == (120, False)

    means: HistoryResult = await publisher.request(HISTORY, HistoryQuery(kind="telemetry", every_s=600, **span))
    assert means.ok, means.error
    assert means.columns == ["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", *BMS_NUMBERS]
    assert [row[0] for row in means.rows] == [f"2025-01-16T10:{m}0:00Z" for m in range(6)]
    assert means.rows[0][1:3] == [9.5, 2.0]  # mean of 0..19
    assert means.rows[5][1] == 109.5

    nothing: HistoryResult = await publisher.request(
        HISTORY, HistoryQuery(kind="prices", zone="nowhere", begin=T0, end=T0 + timedelta(hours=1))
    )
    assert (nothing.ok, nothing.rows) == (True, [])

    bad: HistoryResult = await publisher.request(HISTORY, HistoryQuery(kind="prices", **span))
    assert not bad.ok
    assert "zone" in (bad.error or "")


async def test_prices_and_schedules_are_stored_and_read_back_with_their_currency(rig: Rig, publisher: Bus) -> None:
    rig.start()
    hour = timedelta(hours=1)
    prices = PriceForecast(zone="nsw1", issued_at=T0 - hour, currency="AUD", slots=[
        PriceSlot(start=T0 + i * hour, end=T0 + (i + 1) * hour, price_per_mwh=85.0 + i) for i in range(3)
    ])
    schedule = Schedule(
        plan_id="p-aud", created_at=T0 - timedelta(minutes=5), soc_initial_kwh=500, expected_revenue=7.5,
        currency="AUD",
        slots=[ScheduleSlot(start=T0 + i * hour, end=T0 + (i + 1) * hour, price_per_mwh=85.0 + i, charge_kw=0,
                            discharge_kw=100, soc_kwh=500 - 100 * (i + 1)) for i in range(3)],
    )
    await publisher.publish(PRICES, prices, zone="nsw1")
    await publisher.publish(SCHEDULE, schedule, battery=rig.battery)
    await wait_for_async(
        lambda: rig.count("prices", "price_per_mwh") == 3 and rig.count("schedule", "soc_kwh") == 3
        and rig.count("plan", "plan_id") == 1,
        15, 0.1, what="AUD prices and plan in InfluxDB",
    )
    assert {r["currency"] for r in rig.select("SELECT * FROM prices")} == {"AUD"}
    (row,) = rig.select("SELECT * FROM plan")
    assert row["currency"] == "AUD"

    span: dict[str, Any] = {"begin": T0, "end": T0 + 3 * hour}
    answer: HistoryResult = await publisher.request(HISTORY, HistoryQuery(kind="prices", zone="nsw1", **span))
    assert answer.ok, answer.error
    column = answer.columns.index("currency")
    assert [(r[0], r[answer.columns.index("price_per_mwh")], r[column]) for r in answer.rows] == [
        ("2025-01-16T10:00:00Z", 85.0, "AUD"), ("2025-01-16T11:00:00Z", 86.0, "AUD"),
        ("2025-01-16T12:00:00Z", 87.0, "AUD"),
    ]
    # the renderer's reading of that answer keeps the currency
    assert PriceSeries.from_history(answer).currencies == {"AUD"}
    planned: HistoryResult = await publisher.request(
        HISTORY, HistoryQuery(kind="schedule", battery=rig.battery, **span)
    )
    assert planned.ok, planned.error
    assert {r[planned.columns.index("currency")] for r in planned.rows} == {"AUD"}


async def test_malformed_payloads_are_counted_and_valid_ones_still_stored(rig: Rig, publisher: Bus) -> None:
    rig.start()
    topic = publisher.name(TELEMETRY, battery=rig.battery)
    await publisher.publish(TELEMETRY, telemetry(0), battery=rig.battery)
    await publisher.publish_bytes(topic, b"this is not json", qos=1)
    await publisher.publish_bytes(topic, b'{"ts": "2025-01-16T10:00:01Z", "soc_kwh": -5}', qos=1)  # out of bounds
    await publisher.publish_bytes(topic, b'{"soc_kwh": 1}', qos=1)  # no timestamp
    await publish_telemetry(publisher, rig.battery, range(2, 12))

    await wait_for_async(lambda: rig.count() == 11, 15, 0.1, what="the 11 valid points")
    await wait_for_async(lambda: rig.counter("decode_errors") == 3, 10, 0.1, what="decode_errors == 3 in the status")
    counters = rig.status()["counters"]
    assert (counters["stored"], counters["rejected"], counters["messages"]) == (11, 0, 11)


async def test_sigterm_flushes_pending_points_and_says_offline(rig: Rig, publisher: Bus) -> None:
    # A long batch delay: the points are still pending when SIGTERM arrives and must be flushed, not lost.
    rig.env["BESS_RECORDER_BATCH_MAX_DELAY_MS"] = "30000"
    proc = rig.start()
    await publish_telemetry(publisher, rig.battery, range(50))
    await wait_for_async(lambda: rig.counter("pending") == 50, 10, 0.1, what="50 pending points")
    assert rig.count() == 0
    assert proc.stop() == 0
    assert rig.count() == 50
    assert rig.status()["state"] == "offline"


async def test_shared_subscription_splits_the_stream_and_one_recorder_answers(
    rig: Rig, publisher: Bus, services: Services
) -> None:
    rig.env["BESS_RECORDER_SHARE_GROUP"] = "recorder"
    other = Rig(services, rig.run_node, {**rig.env, "BESS_NODE_ID": f"recorder-{uuid.uuid4().hex[:8]}"}, rig.db,
                rig.battery)
    rig.start()
    other.start()
    await publish_telemetry(publisher, rig.battery, range(1000))
    await wait_for_async(lambda: rig.count() == 1000, 20, 0.1, what="1000 points from two recorders")
    result: HistoryResult = await publisher.request(
        HISTORY, HistoryQuery(kind="telemetry", battery=rig.battery, begin=T0, end=T0 + timedelta(hours=1))
    )
    assert len(result.rows) == 1000

    def counters() -> list[dict[str, int]] | None:
        found = [r.status().get("counters") or {} for r in (rig, other)]
        done = sum(c.get("messages", 0) for c in found) == 1000 and sum(c.get("history_requests", 0) for c in found)
        return found if done else None

    first, second = await wait_for_async(counters, 10, 0.1, what="both recorders' counters")
    assert first["messages"] > 0
    assert second["messages"] > 0  # the broker split the stream
    assert first["history_requests"] + second["history_requests"] == 1  # and exactly one answered
