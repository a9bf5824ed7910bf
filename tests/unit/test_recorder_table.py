"""The recorder's table drives its subscriptions, its handlers and the query side (nodes/recorder/table.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

from nodes.contract.messages import BatteryState, Command, HistoryKind, HistoryQuery, PriceForecast, PriceSlot
from nodes.contract.topics import COMMAND, HISTORY, PRICES, STATE
from nodes.recorder import flux, influxql, points
from nodes.recorder.table import SERIES, TABLE
from tests.unit.test_recorder_batcher import FakeStore
from tests.unit.test_recorder_confirm import started

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)


def test_every_history_kind_has_one_row_and_every_row_a_kind() -> None:
    assert sorted(SERIES) == sorted(get_args(HistoryKind))
    assert len({row.kind for row in TABLE}) == len(TABLE)
    assert len({row.topic.path for row in TABLE}) == len(TABLE)
    for row in TABLE:
        assert row.series.tag in row.topic.params  # the tag comes from the topic the message arrived on
        assert row.series.tag in HistoryQuery.__struct_fields__  # and a query names it in the same field


async def test_the_recorder_subscribes_to_exactly_the_tables_topics() -> None:
    store = FakeStore()
    recorder, bus, _peer = await started(store)
    assert {sub.topic.path for sub in bus.subscriptions} == {row.topic.path for row in TABLE} | {HISTORY.ask.path}
    await recorder.shutdown()


async def test_each_row_stores_its_messages_with_its_point_builder() -> None:
    store = FakeStore()
    recorder, _bus, peer = await started(store)
    command = Command(command_id="c-1", action="charge", power_kw=5.0, issued_at=T0, valid_until=T0 + timedelta(1))
    state = BatteryState(ts=T0, mode="charging", power_kw=-5.0)
    forecast = PriceForecast(zone="de-lu", issued_at=T0, slots=[
        PriceSlot(start=T0, end=T0 + timedelta(hours=1), price_per_mwh=50.0)])
    await peer.publish(COMMAND, command, battery="b1")
    await peer.publish(STATE, state, battery="b1")
    await peer.publish(PRICES, forecast, zone="de-lu")
    await peer.broker.idle()
    written = [line for batch in store.writes for line in batch]
    expected = [*points.command_lines("b1", command), *points.state_lines("b1", state),
                *points.prices_lines("de-lu", forecast)]
    assert sorted(written) == sorted(expected)
    assert recorder.messages == 3
    await recorder.shutdown()


def test_the_query_side_reads_the_tables_series() -> None:
    query = HistoryQuery(kind="prices", zone="de-lu", begin=T0, end=T0 + timedelta(hours=1))
    text, checked = influxql.build(query)
    assert checked.series is SERIES["prices"]
    assert 'FROM "prices" WHERE "zone"=\'de-lu\'' in text
    schedule = influxql.plan(HistoryQuery(kind="schedule", battery="b1", begin=T0, end=T0 + timedelta(hours=1)))
    script = flux.to_flux(schedule, "bucket")
    assert 'r._field == "soc_kwh"' in script
    assert 'r._field == "plan_id"' not in script  # a tag column, by the table's word
