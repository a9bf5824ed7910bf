"""Which batteries the renderer draws (nodes/renderer/attention.py), and its wiring: with thousands of ids only the
published, viewed and recently viewed batteries are drawn, ask for history, and buffer live samples."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import BatterySpec, Figure, HistoryQuery, HistoryResult, Telemetry
from nodes.contract.topics import FIGURE, HISTORY, SPEC, TELEMETRY
from nodes.renderer.attention import Attention, render_order
from nodes.renderer.config import RendererConfig
from nodes.renderer.figures import FIGURE_IDS
from nodes.renderer.node import Renderer
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus

SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250,
                      max_discharge_kw=250)


def test_a_small_fleet_is_published_whole() -> None:
    attention = Attention(publish_max=3, warm_max=2, warm_s=60)
    for battery in ("a", "b", "c"):
        attention.seen(battery)
    assert attention.published() == {"a", "b", "c"}
    assert attention.warm(0.0) == {"a", "b", "c"}


def test_a_burst_of_new_ids_does_not_push_out_the_batteries_already_there() -> None:
    attention = Attention(publish_max=3, warm_max=2, warm_s=60)
    attention.seen("old-unspecced")
    attention.spec("battery-1")
    for i in range(2000):
        attention.seen(f"burst-{i}")
    assert attention.published() == {"battery-1", "old-unspecced", "burst-0"}
    assert not attention.is_warm("burst-1999", 0.0)


def test_batteries_with_a_spec_rank_first() -> None:
    attention = Attention(publish_max=2, warm_max=2, warm_s=60)
    for battery in ("x1", "x2", "x3"):
        attention.seen(battery)
    attention.spec("x3")
    assert attention.published() == {"x3", "x1"}, "a device that announced its spec, then the first seen"


def test_viewed_batteries_are_warm_and_recent_ones_stay_warm_for_a_bounded_time_and_number() -> None:
    streams: set[str] = set()
    attention = Attention(publish_max=0, warm_max=2, warm_s=60, streams=lambda: streams)
    for battery in ("a", "b", "c", "d"):
        attention.seen(battery)
    assert attention.warm(0.0) == set()
    streams.add("a")
    assert attention.is_warm("a", 0.0)
    attention.requested("b", 0.0)
    attention.requested("c", 10.0)
    attention.requested("d", 20.0)
    assert attention.warm(20.0) == {"a", "c", "d"}, "at most warm_max recently viewed ones: b went first"
    assert attention.warm(75.0) == {"a", "d"}, "c was asked for 65 s ago"
    streams.clear()
    assert attention.warm(100.0) == set()
    assert attention.counts(100.0) == {"batteries_known": 4, "batteries_published": 0, "batteries_warm": 0}


class Rig:
    """A renderer publishing at most one battery, a recorder double counting history requests by battery."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus("renderer", self.broker)
        self.renderer = Renderer(RendererConfig(history_timeout_s=0.5, renderer_publish_max=1), self.bus)
        self.device = MemoryBus("device", self.broker)
        self.queries: list[HistoryQuery] = []
        self.published: set[str] = set()
        MemoryBus("recorder", self.broker).serve(HISTORY, self._answer)
        MemoryBus("viewer", self.broker).subscribe(FIGURE, self._on_figure)

    async def _answer(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        self.queries.append(query)
        return HistoryResult(ok=True, columns=["time"], rows=[])

    async def _on_figure(self, params: dict[str, str], figure: Figure, delivery: Delivery) -> None:
        self.published.add(params["battery"])

    def asked_for(self) -> set[str | None]:
        return {q.battery for q in self.queries if q.battery is not None}

    async def render_pass(self) -> set[str]:
        """One pass of the node's loop: settle who is drawn, draw the dirty ones."""
        await self.renderer._settle_attention()
        drawn = self.renderer.dirty & self.renderer._drawn
        for battery in sorted(drawn):
            self.renderer.dirty.discard(battery)
            await self.renderer.render(battery)
        await self.broker.idle()
        return drawn


async def test_unviewed_ids_cost_no_history_no_figures_and_no_live_buffer() -> None:
    rig = Rig()
    await rig.renderer.setup()
    now = datetime.now(UTC)
    await rig.device.publish(SPEC, SPEC_B1, battery="b1")
    for i in range(200):
        await rig.device.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=500.0), battery=f"burst-{i:03d}")
    await rig.device.publish(TELEMETRY, Telemetry(ts=now - timedelta(seconds=1), soc_kwh=400.0), battery="b1")
    await rig.broker.idle()

    assert await rig.render_pass() == {"b1"}
    assert rig.asked_for() == {"b1"}, "no history request for an id nobody views"
    assert rig.published == {"b1"}
    assert set(rig.renderer.dashboard.figures) == {"b1"}
    cold = rig.renderer.views["burst-007"]
    assert not cold.live, "no live samples buffered for a cold battery"
    assert not cold.book.live
    assert rig.renderer.dashboard.telemetry["burst-007"].soc_kwh == 500.0, "its index row stays live"

    # a browser opens burst-007's page on the live window: drawn at once, for the dashboard only
    client = rig.renderer.dashboard.subscribe("burst-007")
    assert "burst-007" in rig.renderer.dirty
    assert await rig.render_pass() == {"burst-007"}
    assert rig.asked_for() == {"b1", "burst-007"}
    assert set(FIGURE_IDS) <= set(rig.renderer.dashboard.figures["burst-007"])
    assert rig.published == {"b1"}, "its retained figure topics are not published: it is outside the published set"
    await rig.device.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=501.0), battery="burst-007")
    await rig.broker.idle()
    assert len(rig.renderer.views["burst-007"].live) == 1, "viewed: live samples are appended"

    # the viewer leaves: cooled down, what was read for it is dropped
    rig.renderer.dashboard.unsubscribe(client)
    assert await rig.render_pass() == set()
    assert "burst-007" not in rig.renderer.dashboard.figures
    assert not rig.renderer.views["burst-007"].live
    assert not rig.renderer.views["burst-007"].display
    assert rig.renderer.attention.counts(0.0)["batteries_known"] == 201


async def test_history_requests_in_flight_are_bounded_over_every_battery() -> None:
    broker = MemoryBroker()
    renderer = Renderer(RendererConfig(history_timeout_s=2, renderer_history_max_inflight=2),
                        MemoryBus("renderer", broker))
    await renderer.setup()
    inflight = peak = 0
    gate = asyncio.Event()

    async def slow(params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await gate.wait()
        inflight -= 1
        return HistoryResult(ok=True, columns=["time"], rows=[])

    MemoryBus("slow-recorder", broker).serve(HISTORY, slow)
    now = datetime.now(UTC)
    asks = [asyncio.create_task(renderer._history("telemetry", now - timedelta(hours=1), now, every_s=None,
                                                       limit=10, battery=f"b{i}")) for i in range(6)]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert peak == 2, "the rest wait in line"
    gate.set()
    await asyncio.gather(*asks)
    assert peak == 2


async def test_a_battery_pushed_out_of_the_published_set_has_its_retained_figures_cleared() -> None:
    rig = Rig()
    await rig.renderer.setup()
    now = datetime.now(UTC)
    await rig.device.publish(TELEMETRY, Telemetry(ts=now, soc_kwh=500.0), battery="early")
    await rig.broker.idle()
    assert await rig.render_pass() == {"early"}, "the only battery: published"
    assert rig.broker.retained_message(FIGURE, battery="early", figure="soc") is not None

    await rig.device.publish(SPEC, SPEC_B1, battery="b1")  # a device with a spec ranks first
    await rig.broker.idle()
    assert await rig.render_pass() == {"b1"}
    assert rig.broker.retained_message(FIGURE, battery="early", figure="soc") is None, "no stale drawing left"
    assert rig.broker.retained_message(FIGURE, battery="b1", figure="soc") is not None


def test_a_pass_draws_the_live_batteries_first_then_new_ones_viewed_first_then_refreshes() -> None:
    changed = {"b1", "burst-1", "viewed-new"}
    stale = {"a0", "b1", "burst-2", "old"}
    assert render_order(changed, stale, drawn={"b1", "a0", "old"}, viewed={"viewed-new"}) == [
        ("b1", False), ("viewed-new", True), ("burst-1", True), ("burst-2", True), ("a0", True), ("old", True)]


def test_the_published_set_is_always_the_first_by_spec_then_first_seen() -> None:
    rng = random.Random(14)
    attention = Attention(publish_max=5, warm_max=2, warm_s=60)
    order: list[str] = []
    specced: set[str] = set()
    for _ in range(400):
        battery = f"b{rng.randrange(60)}"
        if battery not in order:
            order.append(battery)
        if rng.random() < 0.1:
            attention.spec(battery)
            specced.add(battery)
        else:
            attention.seen(battery)
        expected = sorted(order, key=lambda b: (b not in specced, order.index(b)))[:5]
        assert attention.published() == set(expected)


def test_every_message_of_a_burst_costs_constant_time() -> None:
    attention = Attention(publish_max=50, warm_max=16, warm_s=600)
    started = time.perf_counter()
    for i in range(20_000):
        attention.seen(f"burst-{i}")
        assert not attention.is_warm(f"burst-{i}", 0.0) or i < 50
    assert time.perf_counter() - started < 1.0, "no re-ranking of every battery per message"
