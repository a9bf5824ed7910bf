"""The renderer's wiring on the in-memory bus: live topics feed the views, history comes from the recorder by
typed request, and every figure of a battery goes out on its retained figure topic (and to the dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nodes.contract.messages import (
    BatterySpec,
    Figure,
    HistoryQuery,
    HistoryResult,
    NodeStatus,
    Telemetry,
)
from nodes.contract.topics import FIGURE, HISTORY, SPEC, STATUS, TELEMETRY
from nodes.renderer.config import RendererConfig
from nodes.renderer.figures import FIGURE_IDS
from nodes.renderer.node import Renderer
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus

SPEC_B1 = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250,
                      max_discharge_kw=250)


class Rig:
    """A renderer, a device, a planner and (unless ``recorder`` is False) a recorder on one memory broker."""

    def __init__(self, *, recorder: bool = True) -> None:
        self.broker = MemoryBroker()
        self.bus = MemoryBus("renderer", self.broker)
        self.renderer = Renderer(RendererConfig(history_timeout_s=0.2), self.bus)
        self.device = MemoryBus("device", self.broker)
        self.planner = MemoryBus("planner", self.broker)
        self.queries: list[HistoryQuery] = []
        self.figures: dict[str, Figure] = {}
        if recorder:
            MemoryBus("recorder", self.broker).serve(HISTORY, self._answer)
        viewer = MemoryBus("viewer", self.broker)
        viewer.subscribe(FIGURE, self._on_figure, battery="b1")

    async def _answer(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        self.queries.append(query)
        return HistoryResult(ok=True, columns=["time"], rows=[])  # nothing stored yet

    async def _on_figure(self, params: dict[str, str], figure: Figure, delivery: Delivery) -> None:
        self.figures[params["figure"]] = figure

    async def start(self) -> None:
        await self.renderer.setup()
        now = datetime.now(UTC)
        await self.device.publish(SPEC, SPEC_B1, battery="b1")
        for i in range(3):
            reading = Telemetry(ts=now - timedelta(seconds=10 * (3 - i)), soc_kwh=500.0 + i, power_kw=-10.0)
            await self.device.publish(TELEMETRY, reading, battery="b1")
        await self.broker.idle()


async def test_live_readings_are_drawn_and_every_figure_is_published_on_its_retained_topic() -> None:
    rig = Rig()
    await rig.start()
    assert rig.renderer.dirty == {"b1"}  # the readings asked for a redraw
    await rig.renderer.render("b1")
    await rig.broker.idle()
    assert set(rig.figures) == set(FIGURE_IDS)
    assert all(f.battery == "b1" for f in rig.figures.values())
    assert rig.broker.retained_message(FIGURE, battery="b1", figure="soc") == rig.figures["soc"]
    assert set(rig.renderer.dashboard.figures["b1"]) == set(FIGURE_IDS)  # the dashboard got the same set
    assert {q.kind for q in rig.queries} >= {"telemetry"}  # the history came from the recorder, typed
    assert rig.bus.state == "online"
    await rig.renderer.shutdown()


async def test_without_a_recorder_the_renderer_draws_live_data_and_says_degraded() -> None:
    rig = Rig(recorder=False)
    await rig.start()
    await rig.renderer.render("b1")
    await rig.broker.idle()
    assert set(rig.figures) == set(FIGURE_IDS)
    assert rig.bus.state == "degraded"
    assert rig.bus.reason.startswith("history unavailable")
    assert rig.bus.counters["history_failures"] >= 1
    await rig.renderer.shutdown()


async def test_a_planner_note_in_its_status_reaches_the_dashboard_and_redraws_the_battery() -> None:
    rig = Rig()
    await rig.start()
    rig.renderer.dirty.clear()
    note = NodeStatus(node="planner", state="online", details={"b1": "not planned: no telemetry received"})
    await rig.planner.publish(STATUS, note, node="planner")
    await rig.broker.idle()
    assert rig.renderer.dashboard.statuses["planner"].details == note.details
    assert rig.renderer.dirty == {"b1"}
    await rig.renderer.shutdown()
