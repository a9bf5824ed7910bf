"""The at-least-once batcher with a fake store: add() returns only after the write, retries, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from nodes.contract.messages import HistoryQuery, HistoryResult, NodeState
from nodes.recorder.batcher import Batcher
from nodes.recorder.store import Rejection, StoreRefused, StoreUnavailable, WriteOutcome


class FakeStore:
    """Records writes; fails while ``down``; each write takes ``delay`` seconds."""

    def __init__(self, *, down: int = 0, delay: float = 0.0) -> None:
        self.writes: list[list[str]] = []
        self.down = down  # number of writes to fail
        self.forever_down = False
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.reject: set[str] = set()
        self.too_large: set[str] = set()  # a batch holding one of these is refused whole (413)
        self.unnamed: set[str] = set()  # rejected without naming the line (1.x: "dropped=N")

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def query(self, q: HistoryQuery) -> HistoryResult:
        return HistoryResult(ok=True)

    async def write(self, lines: list[str]) -> WriteOutcome:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.forever_down or self.down > 0:
                self.down -= 1
                raise StoreUnavailable("connection refused")
            if self.too_large.intersection(lines):
                raise StoreRefused("InfluxDB write answered 413: Request Entity Too Large")
            self.writes.append(list(lines))
            rejected = tuple(Rejection("bad", line) for line in lines if line in self.reject)
            rejected += tuple(Rejection("field type conflict") for line in lines if line in self.unnamed)
            return WriteOutcome(written=len(lines) - len(rejected), rejected=rejected)
        finally:
            self.active -= 1


def make(store: FakeStore, states: list[tuple[NodeState, str]] | None = None, **kwargs: float) -> Batcher:
    options: dict[str, float] = {"max_points": 3, "max_delay_s": 0.05, "backoff_min_s": 0.01, "backoff_max_s": 0.02}
    options.update(kwargs)
    batcher = Batcher(
        store,
        max_points=int(options.pop("max_points")),
        on_state=None if states is None else (lambda s, r: states.append((s, r))),
        **options,
    )
    batcher.start()
    return batcher


async def test_add_returns_after_the_batch_is_written() -> None:
    store = FakeStore()
    batcher = make(store, max_delay_s=10)
    adds = [asyncio.create_task(batcher.add([f"l{i}"])) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*adds), 1)
    assert store.writes == [["l0", "l1", "l2"]]
    assert batcher.counters() == {"stored": 3, "rejected": 0, "retries": 0, "batches": 1, "splits": 0, "pending": 0}
    await batcher.close(1)


async def test_a_partial_batch_is_written_after_the_delay() -> None:
    store = FakeStore()
    batcher = make(store, max_delay_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(batcher.add(["only"]), 1)
    assert loop.time() - started >= 0.04
    assert store.writes == [["only"]]
    await batcher.close(1)


async def test_add_is_not_done_before_the_write() -> None:
    store = FakeStore(delay=0.2)
    batcher = make(store)
    add = asyncio.create_task(batcher.add(["a", "b", "c"]))
    await asyncio.sleep(0.1)
    assert not add.done()
    assert batcher.pending == 3
    await asyncio.wait_for(add, 1)
    await batcher.close(1)


async def test_one_write_in_flight_while_the_next_batch_fills() -> None:
    store = FakeStore(delay=0.02)
    batcher = make(store, max_delay_s=0.01)
    adds = [asyncio.create_task(batcher.add([f"l{i}"])) for i in range(20)]
    await asyncio.wait_for(asyncio.gather(*adds), 2)
    assert store.max_active == 1
    assert sorted(line for batch in store.writes for line in batch) == sorted(f"l{i}" for i in range(20))
    assert all(len(batch) <= 3 for batch in store.writes)
    await batcher.close(1)


async def test_store_down_retries_reports_degraded_then_online() -> None:
    store = FakeStore(down=3)
    states: list[tuple[NodeState, str]] = []
    batcher = make(store, states)
    await asyncio.wait_for(batcher.add(["a"]), 2)
    assert store.writes == [["a"]]
    assert batcher.retries == 3
    assert states == [("degraded", "store unavailable: connection refused"), ("online", "")]
    await batcher.close(1)


async def test_rejected_lines_do_not_block_the_batch() -> None:
    store = FakeStore()
    store.reject = {"bad"}
    batcher = make(store)
    await asyncio.wait_for(asyncio.gather(batcher.add(["good"]), batcher.add(["bad"]), batcher.add(["x"])), 1)
    assert batcher.stored == 2
    assert batcher.rejected == 1
    await batcher.close(1)


async def test_a_batch_refused_whole_is_split_until_the_refused_line_stands_alone() -> None:
    store = FakeStore()
    store.too_large = {"huge"}
    states: list[tuple[NodeState, str]] = []
    batcher = make(store, states, max_points=8)
    lines = ["a", "b", "c", "huge", "e", "f", "g", "h"]
    await asyncio.wait_for(asyncio.gather(*(batcher.add([line]) for line in lines)), 1)
    written = [line for write in store.writes for line in write]
    assert sorted(written) == sorted(set(lines) - {"huge"})  # every other line stored, once
    assert (batcher.stored, batcher.rejected, batcher.retries) == (7, 1, 0)  # refused, not retried
    assert batcher.splits == 3  # 8 -> 4 -> 2 -> 1
    assert states == []  # the store answered every time: the node stays online
    await batcher.add(["after"])  # and later lines are not held up
    assert store.writes[-1] == ["after"]
    await batcher.close(1)


async def test_lines_rejected_without_a_name_are_found_and_counted_exactly() -> None:
    store = FakeStore()
    store.unnamed = {"conflict-1", "conflict-2"}
    batcher = make(store, max_points=6)
    lines = ["a", "conflict-1", "b", "c", "d", "conflict-2"]
    await asyncio.wait_for(asyncio.gather(*(batcher.add([line]) for line in lines)), 1)
    assert (batcher.stored, batcher.rejected) == (4, 2)
    await batcher.close(1)


async def test_close_flushes_pending_lines_and_parks_later_ones() -> None:
    store = FakeStore()
    batcher = make(store, max_delay_s=10)
    first = asyncio.create_task(batcher.add(["pending"]))
    await asyncio.sleep(0)
    assert await batcher.close(1) is True
    await asyncio.wait_for(first, 1)
    assert store.writes == [["pending"]]
    late = asyncio.create_task(batcher.add(["late"]))
    await asyncio.sleep(0.05)
    assert not late.done(), "a message arriving during shutdown must stay unacknowledged"
    late.cancel()


async def test_close_with_the_store_down_gives_up_in_time_without_acknowledging() -> None:
    store = FakeStore()
    store.forever_down = True
    batcher = make(store)
    add = asyncio.create_task(batcher.add(["never stored"]))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.close(0.2) is False
    assert loop.time() - started < 1.5
    await asyncio.sleep(0.05)
    assert not add.done(), "unwritten lines must never be acknowledged"
    assert batcher.pending == 1
    add.cancel()


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="max_points"):
        Batcher(FakeStore(), max_points=0)


async def test_sync_writes_pending_lines_without_waiting_for_the_batch_delay() -> None:
    store = FakeStore()
    batcher = make(store, max_delay_s=60)  # without sync these lines would wait a minute
    add = asyncio.create_task(batcher.add(["early"]))
    await asyncio.sleep(0)  # the handler has queued its line
    assert await asyncio.wait_for(batcher.sync(timeout=1), 2) is True
    assert store.writes == [["early"]]
    await asyncio.wait_for(add, 1)
    assert await batcher.sync(timeout=1) is True  # nothing pending: at once
    await batcher.close(1)


async def test_sync_gives_up_after_its_timeout_while_the_store_is_down() -> None:
    store = FakeStore()
    store.forever_down = True
    batcher = make(store, max_delay_s=60)
    add = asyncio.create_task(batcher.add(["stuck"]))
    await asyncio.sleep(0)
    assert await batcher.sync(timeout=0.2) is False
    assert not add.done()  # still unacknowledged: nothing was stored
    add.cancel()
    await batcher.close(0.1)


# -- stored confirmations: urgent lines and per-line refusals ----------------------------------------------------


async def test_an_urgent_line_brings_its_batch_forward_and_later_lines_group_behind_the_write() -> None:
    store = FakeStore(delay=0.05)
    batcher = make(store, max_points=1000, max_delay_s=10)  # without urgency nothing would be written for 10 s
    first = asyncio.create_task(batcher.add(["u0"], urgent=True))
    await asyncio.wait_for(first, 1)
    assert store.writes == [["u0"]]
    # while one write is in flight, urgent lines that arrive meanwhile are written together right after it
    slow = asyncio.create_task(batcher.add(["u1"], urgent=True))
    await asyncio.sleep(0.01)
    grouped = [asyncio.create_task(batcher.add([f"g{i}"], urgent=True)) for i in range(5)]
    await asyncio.wait_for(asyncio.gather(slow, *grouped), 1)
    assert store.writes[1:] == [["u1"], [f"g{i}" for i in range(5)]]
    await batcher.close(1)


async def test_add_returns_the_stores_reason_for_a_refused_line_and_none_for_stored_ones() -> None:
    store = FakeStore()
    store.reject = {"bad"}
    batcher = make(store, max_delay_s=0.01)
    good, bad, mixed = await asyncio.wait_for(
        asyncio.gather(batcher.add(["good"]), batcher.add(["bad"]), batcher.add(["ok", "bad"])), 1
    )
    assert (good, bad, mixed) == (None, "bad", "bad")
    await batcher.close(1)
