"""The renderer's pure parts return figures (draw.py, history.py); the shell fans them out, typed (node.py)."""

from __future__ import annotations

import ast
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np

from nodes.contract.messages import Figure, Telemetry
from nodes.contract.topics import FIGURE
from nodes.renderer import history
from nodes.renderer.config import RendererConfig
from nodes.renderer.draw import Scene, draw, refresh_s
from nodes.renderer.figures import FIGURE_IDS
from nodes.renderer.insights import pending
from nodes.renderer.node import Renderer
from nodes.renderer.series import PriceSeries, TelemetrySeries
from nodes.runtime.memory import MemoryBus

NOW = datetime(2025, 1, 16, 12, tzinfo=UTC)
NODE_PY = Path(__file__).resolve().parents[2] / "nodes" / "renderer" / "node.py"


def readings(n: int, end: datetime = NOW) -> list[Telemetry]:
    return [Telemetry(ts=end - timedelta(minutes=n - i), soc_kwh=500.0 + i, power_kw=-10.0) for i in range(n)]


def test_draw_returns_contract_figures_in_dashboard_order() -> None:
    scene = Scene(
        battery="b1", telemetry=TelemetrySeries.from_telemetry(readings(5)), prices=PriceSeries.empty(),
        schedule=None, spec=None, insights=pending("computing", "reading"), now=NOW,
        x_range=(NOW - timedelta(hours=1), NOW + timedelta(minutes=30)), live=True,
    )
    drawing = draw(scene, figure_cache_s=10.0)
    assert [f.figure for f in drawing.figures] == list(FIGURE_IDS)
    assert all(isinstance(f, Figure) and f.battery == "b1" and f.generated_at == NOW for f in drawing.figures)
    assert drawing.refresh_s == 2.0  # KPIs still computing: the page asks again soon
    assert msgspec.json.decode(FIGURE.encode(drawing.figures[0]), type=Figure) == drawing.figures[0]


def test_when_a_page_asks_again() -> None:
    done = pending("unavailable", "n/a")
    assert refresh_s(done, live=True, figure_cache_s=3.0) == 10.0
    assert refresh_s(done, live=True, figure_cache_s=30.0) == 30.0
    assert refresh_s(done, live=False, figure_cache_s=30.0) is None


def test_live_samples_join_the_history_after_its_end() -> None:
    older = readings(3, end=NOW - timedelta(minutes=10))
    shown = history.DisplayHistory(TelemetrySeries.from_telemetry(older), 0.0, (NOW - timedelta(minutes=5)).timestamp(),
                                   0.0)
    live = deque([*older, *readings(2)])
    series = history.with_live(live, shown, (NOW - timedelta(hours=1)).timestamp(), NOW.timestamp() + 1)
    assert len(series) == 5  # the history's three, then the two live ones after its end (none twice)
    assert np.all(np.diff(series.time_s) > 0)
    assert len(history.with_live(live, None, (NOW - timedelta(minutes=3)).timestamp(), NOW.timestamp() + 1)) == 2


def test_which_history_to_ask_for() -> None:
    assert history.bucket_seconds(NOW - timedelta(hours=1), NOW, 2000) is None  # 1.8 s a point: raw
    assert history.bucket_seconds(NOW - timedelta(days=1), NOW, 2000) == 60  # 44 s rounded up: the 1-min rollup
    assert history.bucket_seconds(NOW - timedelta(hours=12), NOW, 2000) == 22  # under half a minute: as it is
    assert history.bucket_seconds(NOW - timedelta(days=30), NOW, 2000) == 1320  # 1296 s: whole minutes
    assert history.bucket_seconds(NOW - timedelta(days=365), NOW, 2000) == 18_000  # 15,768 s: whole hours
    assert history.bucket_seconds(NOW - timedelta(days=30), NOW, 1000) == 3600  # 2592 s: the 1-h rollup
    assert history.raw_may_fit(None, None, 3600.0, 2000)
    assert not history.raw_may_fit(44, 1.0, 86_400.0, 2000)  # a reading a second for a day does not fit
    assert history.raw_may_fit(44, 1 / 60, 86_400.0, 2000)  # a reading a minute does
    assert history.means_range(100.0, 200.0, 120.0, 150.0) == (120.0, 150.0 + 1e-6)
    assert history.price_days(90_000.0, 90_001.0) == (86_400.0, 172_800.0)
    assert history.covered([(0.0, 100.0, 5.0)], 10.0, 90.0, recent=True, now=10.0, refresh_s=60.0)
    assert not history.covered([(0.0, 100.0, 5.0)], 10.0, 90.0, recent=True, now=100.0, refresh_s=60.0)


async def test_render_fans_the_same_figures_out_to_the_bus_and_the_dashboard() -> None:
    bus = MemoryBus("renderer")  # no recorder on this broker: the figures are drawn from live data
    renderer = Renderer(RendererConfig(history_timeout_s=0.05), bus)
    for reading in readings(3, end=datetime.now(UTC)):
        await renderer.on_telemetry({"battery": "b1"}, reading, None)  # type: ignore[arg-type]
    await renderer.render("b1")
    figures = [sent for sent in bus.published if FIGURE.parse(sent.topic, root=bus.root) is not None]
    assert [FIGURE.parse(sent.topic, root=bus.root) for sent in figures] == [
        {"battery": "b1", "figure": f} for f in FIGURE_IDS
    ]
    for sent in figures:
        assert isinstance(sent.message, Figure)  # a typed publish, not raw bytes
        assert (sent.qos, sent.retain) == (FIGURE.qos, FIGURE.retain)
        assert renderer.dashboard.figures["b1"][sent.message.figure] == sent.payload == FIGURE.encode(sent.message)
    assert bus.state == "degraded"  # and says why: the recorder did not answer
    assert bus.counters["renders"] == 1


def test_the_shell_does_not_encode_or_draw_itself() -> None:
    """node.py wires: no plotly, no figure encoding, no raw publish (the pure modules do that)."""
    tree = ast.parse(NODE_PY.read_text())
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert {"publish_bytes", "render_all", "to_message", "encode"} & names == set()
