"""The renderer's node shell without I/O: what its handlers store, and its settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import ControlMode, NodeStatus
from nodes.renderer.config import RendererConfig
from nodes.renderer.node import Renderer
from nodes.runtime.config import load
from nodes.runtime.memory import MemoryBus

NOW = datetime(2025, 1, 16, 12, 0, tzinfo=UTC)


async def test_a_status_is_stored_under_the_topic_it_arrived_on() -> None:
    renderer = Renderer(RendererConfig(), MemoryBus("renderer"))
    delivery: Any = None
    await renderer.on_status({"node": "recorder"}, NodeStatus(node="recorder", state="online"), delivery)
    await renderer.on_status({"node": "market"}, NodeStatus(node="recorder", state="offline"), delivery)
    assert renderer.dashboard.statuses["recorder"].state == "online"
    assert renderer.dashboard.statuses["market"].state == "offline"
    assert renderer.dashboard.statuses["market"].node == "market"


async def test_a_node_removed_for_good_leaves_the_status_strip() -> None:
    renderer = Renderer(RendererConfig(), MemoryBus("renderer"))
    delivery: Any = None
    await renderer.on_status({"node": "bridge"}, NodeStatus(node="bridge", state="offline"), delivery)
    published = renderer.dashboard.events_published
    await renderer.on_status_cleared({"node": "bridge"})
    assert "bridge" not in renderer.dashboard.statuses
    assert renderer.dashboard.events_published == published + 1, "browsers are told to drop the chip"
    assert not any(b'"bridge"' in frame for frame in renderer.dashboard.snapshot_frames(None, figures=False))
    await renderer.on_status_cleared({"node": "bridge"})
    assert renderer.dashboard.events_published == published + 1, "nothing to tell the second time"


async def test_control_mode_reaches_the_dashboard() -> None:
    renderer = Renderer(RendererConfig(), MemoryBus("renderer"))
    mode = ControlMode(mode="manual", set_at=NOW, until=NOW + timedelta(minutes=5), reason="operator command")
    await renderer.on_control({"battery": "b1"}, mode, None)  # type: ignore[arg-type]
    assert renderer.dashboard.controls["b1"] == mode
    assert "b1" in renderer.dashboard.batteries


def test_one_token_for_both_by_default() -> None:
    assert load(RendererConfig, {}).auth() is None
    shared = load(RendererConfig, {"BESS_GATEWAY_TOKEN": "gw-token"}).auth()
    assert shared is not None
    assert (shared.token, shared.view_required) == ("gw-token", True)
    own = load(RendererConfig, {"BESS_GATEWAY_TOKEN": "gw", "BESS_DASHBOARD_TOKEN": "dash",
                                "BESS_DASHBOARD_VIEW_TOKEN_REQUIRED": "false"}).auth()
    assert own is not None
    assert (own.token, own.view_required, own.view_token) == ("dash", False, None)
    shared_read = load(RendererConfig, {"BESS_GATEWAY_TOKEN": "gw", "BESS_GATEWAY_READ_TOKEN": "ro"}).auth()
    assert shared_read is not None
    assert shared_read.view_token == "ro"  # read-only clients of the gateway may view the dashboard too
    assert "BESS_DASHBOARD_TOKEN is empty" in load(RendererConfig, {"BESS_DASHBOARD_TOKEN": " "}).problems()[0]
    assert load(RendererConfig, {"BESS_HISTORY_PAGE_ROWS": "5"}).problems()


async def test_a_changed_planner_note_redraws_that_battery() -> None:
    renderer = Renderer(RendererConfig(), MemoryBus("renderer"))
    renderer._view("b1")
    renderer._view("b2")
    note = NodeStatus(node="planner", state="online", details={"b1": "monitored, not planned: no spec received"})
    await renderer.on_status({"node": "planner"}, note, None)  # type: ignore[arg-type]
    assert renderer.dirty == {"b1"}
    renderer.dirty.clear()
    await renderer.on_status({"node": "planner"}, note, None)  # type: ignore[arg-type]
    assert renderer.dirty == set()  # nothing changed: no redraw
