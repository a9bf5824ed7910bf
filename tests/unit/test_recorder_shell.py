"""The recorder's wiring on the in-memory bus: data topics become store writes, history requests get typed
answers from the store (or ``ok=false`` with the reason), and the store's health is the node's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.contract.messages import Command, HistoryQuery, HistoryResult, Telemetry
from nodes.contract.topics import COMMAND, HISTORY, STATUS, TELEMETRY
from nodes.recorder import points
from nodes.recorder.config import RecorderConfig
from nodes.recorder.node import Recorder
from nodes.recorder.store import StoreUnavailable
from nodes.runtime.memory import MemoryBroker, MemoryBus
from tests.unit.test_recorder_batcher import FakeStore

T0 = datetime(2025, 1, 16, 10, tzinfo=UTC)
QUERY = HistoryQuery(kind="telemetry", battery="b1", begin=T0, end=T0 + timedelta(hours=1), limit=500_000)


class AnsweringStore(FakeStore):
    """A fake store that answers queries from what it was asked (or fails while ``unavailable``)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[HistoryQuery] = []
        self.unavailable = False

    async def query(self, q: HistoryQuery) -> HistoryResult:
        self.queries.append(q)
        if self.unavailable:
            raise StoreUnavailable("connection refused")
        return HistoryResult(ok=True, columns=["time", "soc_kwh"], rows=[["2025-01-16T10:00:00Z", 700.0]])


async def started(store: AnsweringStore) -> tuple[Recorder, MemoryBroker]:
    broker = MemoryBroker()
    config = RecorderConfig(batch_max_delay_ms=10, history_max_rows=1000)
    recorder = Recorder(config, MemoryBus("recorder", broker, settings=config), store=store)  # type: ignore[arg-type]
    await recorder.setup()
    return recorder, broker


async def test_the_recorder_answers_a_history_request_from_its_store() -> None:
    store = AnsweringStore()
    recorder, broker = await started(store)
    renderer = MemoryBus("renderer", broker)
    result = await renderer.request(HISTORY, QUERY, timeout=2)
    assert result == HistoryResult(ok=True, columns=["time", "soc_kwh"], rows=[["2025-01-16T10:00:00Z", 700.0]])
    [asked] = store.queries
    assert asked.limit == 1000  # capped by BESS_HISTORY_MAX_ROWS before it reaches the store
    assert (asked.kind, asked.battery, asked.begin) == ("telemetry", "b1", T0)
    await recorder.shutdown()


async def test_a_store_failure_is_an_answer_with_the_reason_not_silence() -> None:
    store = AnsweringStore()
    store.unavailable = True
    recorder, broker = await started(store)
    result = await MemoryBus("gateway", broker).request(HISTORY, QUERY, timeout=2)
    assert (result.ok, result.error) == (False, "store unavailable: connection refused")
    assert recorder.counters()["history_errors"] == 1
    await recorder.shutdown()


async def test_data_topics_are_written_and_the_counters_reach_the_status() -> None:
    store = AnsweringStore()
    recorder, broker = await started(store)
    await recorder.bus.start()
    device, planner = MemoryBus("device", broker), MemoryBus("planner", broker)
    reading = Telemetry(ts=T0, soc_kwh=700.0, power_kw=-50.0)
    command = Command(command_id="a-1", action="idle", issued_at=T0, valid_until=T0 + timedelta(minutes=5))
    await device.publish(TELEMETRY, reading, battery="b1")
    await planner.publish(COMMAND, command, battery="b1")
    await broker.idle()  # every handler returned: its batch is written (the PUBACK would go now)
    written = [line for batch in store.writes for line in batch]
    assert points.telemetry_line("b1", reading) in written
    assert all(line in written for line in points.command_lines("b1", command))
    await recorder.bus.publish_status()
    status = broker.retained_message(STATUS, node="recorder")
    assert status is not None
    assert status.counters["messages"] == 2
    assert status.counters["received"] == 2
    await recorder.shutdown()
