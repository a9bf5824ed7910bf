"""The diagnostics panel: report -> rows (nodes/renderer/diagnosis.py), the cadence and bounds of computing it
(nodes/renderer/diagnoser.py) and its wiring in the renderer on the in-memory bus (history from the recorder by
typed request, raw rows only, the Commands stored for the window)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import BatterySpec, Command, HistoryQuery, HistoryResult, Telemetry
from nodes.contract.topics import HISTORY, TELEMETRY
from nodes.contract.topics import SPEC as SPEC_TOPIC
from nodes.diagnostics.history import History
from nodes.diagnostics.report import diagnose
from nodes.renderer import diagnoser as diagnoser_module
from nodes.renderer.config import RendererConfig
from nodes.renderer.diagnoser import Diagnoser
from nodes.renderer.diagnosis import commands_from_history, csv_rows, panel_rows
from nodes.renderer.node import Renderer
from nodes.renderer.windows import TimeWindow
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from nodes.simulator.battery import SimBattery
from tests.support.cycles import cycle

SPEC = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=90, max_charge_kw=50, max_discharge_kw=50,
                   roundtrip_efficiency=0.88)


def cycling(end: datetime, hours: float = 14.0, dt_s: float = 10.0) -> tuple[list[Telemetry], list[Command]]:
    """The simulated battery cycled between its SOC limits, its last reading one step before ``end``."""
    return cycle(SimBattery(SPEC, 50), end - timedelta(hours=hours), end - timedelta(seconds=dt_s), dt_s,
                 id_prefix="c")


def rows_of(readings: list[Telemetry]) -> HistoryResult:
    return HistoryResult(ok=True, columns=["time", "soc_kwh", "power_kw"],
                         rows=[[r.ts.isoformat().replace("+00:00", "Z"), r.soc_kwh, r.power_kw] for r in readings])


def command_rows(commands: list[Command]) -> HistoryResult:
    return HistoryResult(ok=True, columns=["time", "action", "power_kw", "command_id", "source", "valid_until",
                                           "plan_id", "text"],
                         rows=[[c.issued_at.isoformat(), c.action, c.power_kw, c.command_id, c.source,
                                c.valid_until.isoformat(), None, None] for c in commands])


# -- pure: the panel's rows ----------------------------------------------------------------------------------


def test_every_result_becomes_a_row_with_its_number_sample_and_method() -> None:
    end = datetime(2025, 1, 16, 12, tzinfo=UTC)
    readings, commands = cycling(end)
    report = diagnose(History.from_readings(readings), SPEC, commands)
    rows = {r.key: r for r in panel_rows(report)}
    assert list(rows) == ["efficiency", "capacity", "cycles", "tracking", "response", "consistency", "gaps"]
    eff = rows["efficiency"]
    assert eff.value == pytest.approx(88.0, abs=1.0)
    assert eff.unit == "%"
    assert eff.spec_value == pytest.approx(88.0)
    assert eff.sample == report.efficiency.cycles >= 3
    assert eff.sample_unit == "closed SOC cycles"
    assert eff.summary.startswith("measured ")
    assert f"over {eff.sample} cycles" in eff.summary
    assert eff.method.startswith("Closed SOC cycles")
    assert rows["tracking"].sample == len(commands)
    assert rows["gaps"].value == 0.0
    assert rows["gaps"].sample == 0
    columns, csv = csv_rows(diagnoser_module.DiagnosticsPanel(battery="b", window="24h", status="ready",
                                                              rows=list(rows.values())))
    assert columns[:4] == ("diagnostic", "value", "unit", "spec_value")
    assert len(csv) == 7


def test_a_result_without_enough_data_has_no_number() -> None:
    end = datetime(2025, 1, 16, 12, tzinfo=UTC)
    readings, _ = cycling(end, hours=0.5)
    rows = {r.key: r for r in panel_rows(diagnose(History.from_readings(readings), SPEC, []))}
    assert rows["efficiency"].value is None
    assert rows["efficiency"].summary.startswith("not enough data: need ")
    assert rows["efficiency"].need is not None
    assert rows["tracking"].value is None
    assert rows["tracking"].sample == 0


def test_stored_commands_are_read_back_and_rows_that_are_not_one_skipped() -> None:
    issued = datetime(2025, 1, 16, tzinfo=UTC)
    good = Command(command_id="c", action="discharge", power_kw=40, issued_at=issued,
                   valid_until=issued + timedelta(minutes=5))
    result = command_rows([good])
    result.rows.append(["2025-01-16T00:10:00Z", "explode", 1.0, "x", "operator", "2025-01-16T00:20:00Z", None, None])
    result.rows.append(["not a time", "idle", None, "y", "operator", "2025-01-16T00:20:00Z", None, None])
    (stored,) = commands_from_history(result)
    assert (stored.action, stored.power_kw, stored.issued_at, stored.valid_until) == (
        "discharge", 40.0, issued, issued + timedelta(minutes=5))


# -- the cadence and the bounds ------------------------------------------------------------------------------


class FakeHistory:
    """The node shell's history reads, counted, over a list of readings and commands."""

    def __init__(self, readings: list[Telemetry], commands: list[Command], page_rows: int = 1000) -> None:
        self.readings, self.commands, self.page_rows = readings, commands, page_rows
        self.pages_read = 0
        self.gate: asyncio.Event | None = None

    async def pages(self, kind: str, begin_s: float, end_s: float, **ids: str
                    ) -> AsyncIterator[tuple[HistoryResult, float]]:
        assert kind == "telemetry"
        inside = [r for r in self.readings if begin_s <= r.ts.timestamp() < end_s]
        for i in range(0, max(len(inside), 1), self.page_rows):
            if self.gate is not None:
                await self.gate.wait()
            self.pages_read += 1
            yield rows_of(inside[i : i + self.page_rows]), end_s

    async def read(self, kind: str, begin: datetime, end: datetime, **kwargs: Any) -> HistoryResult:
        assert kind == "command"
        assert kwargs["every_s"] is None
        return command_rows([c for c in self.commands if begin <= c.issued_at < end])


async def test_a_panel_is_computed_once_per_refresh_period_and_past_windows_are_kept() -> None:
    end = datetime.now(UTC)
    readings, commands = cycling(end)
    history = FakeHistory(readings, commands)
    diag = Diagnoser(history.pages, history.read, lambda b: SPEC, refresh_s=300.0)
    live = TimeWindow(window_s=86400)
    first = await diag.panel("b1", live)
    assert first.status == "ready"
    assert first.readings == len(readings)
    assert first.commands == len(commands)
    assert first.refresh_s == 300.0
    reads = history.pages_read
    assert (await diag.panel("b1", live)) is first, "within the refresh period: the same panel, nothing read"
    assert history.pages_read == reads
    diag.cache[("b1", live.key)] = (0.0, first)  # the period is over
    again = await diag.panel("b1", live)
    assert again is not first
    assert history.pages_read > reads
    assert diag.computed == 2
    past = await diag.panel("b1", TimeWindow(begin=end - timedelta(hours=20), end=end - timedelta(hours=2)))
    assert past.refresh_s is None, "a window in the past does not change: not asked again"


async def test_a_slow_read_answers_computing_then_the_result() -> None:
    end = datetime.now(UTC)
    readings, commands = cycling(end, hours=2)
    history = FakeHistory(readings, commands)
    history.gate = asyncio.Event()
    diag = Diagnoser(history.pages, history.read, lambda b: SPEC)
    diagnoser_module.WAIT_S, wait = 0.05, diagnoser_module.WAIT_S
    try:
        waiting = await diag.panel("b1", TimeWindow(window_s=3 * 3600))
        assert waiting.status == "computing"
        assert waiting.refresh_s == diagnoser_module.COMPUTING_REFRESH_S
        assert len(diag.tasks) == 1
        await diag.panel("b1", TimeWindow(window_s=3 * 3600))
        assert len(diag.tasks) == 1, "one computation per battery and window at a time"
        history.gate.set()
        await asyncio.gather(*diag.tasks.values())
        assert (await diag.panel("b1", TimeWindow(window_s=3 * 3600))).status == "ready"
    finally:
        diagnoser_module.WAIT_S = wait


async def test_a_window_beyond_the_row_bound_is_refused_with_the_reason_and_no_spec_says_so() -> None:
    end = datetime.now(UTC)
    readings, commands = cycling(end, hours=3)
    history = FakeHistory(readings, commands, page_rows=100)
    diag = Diagnoser(history.pages, history.read, lambda b: SPEC, max_rows=500)
    panel = await diag.panel("b1", TimeWindow(window_s=86400))
    assert panel.status == "unavailable"
    assert panel.rows == []
    assert "more than 500 raw readings (BESS_RENDERER_DIAGNOSTICS_MAX_ROWS)" in panel.note
    assert history.pages_read == 6, "reading stops at the bound, not at the end of the window"
    no_spec = Diagnoser(history.pages, history.read, lambda b: None)
    assert "no spec received" in (await no_spec.panel("b1", TimeWindow(window_s=86400))).note


# -- wiring: the renderer on the in-memory bus ---------------------------------------------------------------


async def test_the_renderer_diagnoses_raw_history_and_stored_commands_from_the_recorder() -> None:
    end = datetime.now(UTC)
    readings, commands = cycling(end)
    broker = MemoryBroker()
    renderer = Renderer(RendererConfig(history_timeout_s=1.0, history_page_rows=1000), MemoryBus("renderer", broker))
    queries: list[HistoryQuery] = []

    async def answer(params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        queries.append(query)
        if query.kind == "command":
            return command_rows([c for c in commands if query.begin <= c.issued_at < query.end])
        inside = [r for r in readings if query.begin <= r.ts < query.end]
        page = inside[: query.limit]
        return HistoryResult(ok=True, columns=["time", "soc_kwh", "power_kw"], truncated=len(inside) > query.limit,
                             rows=rows_of(page).rows)

    MemoryBus("recorder", broker).serve(HISTORY, answer)
    device = MemoryBus("device", broker)
    await renderer.setup()
    await device.publish(SPEC_TOPIC, SPEC, battery="b1")
    await device.publish(TELEMETRY, readings[-1], battery="b1")
    await broker.idle()
    provider = renderer.dashboard.diagnostics_provider
    assert provider is not None
    panel = await provider("b1", TimeWindow(window_s=86400))
    assert panel.status == "ready", panel.note
    eff = next(r for r in panel.rows if r.key == "efficiency")
    assert eff.value == pytest.approx(88.0, abs=1.0)
    telemetry = [q for q in queries if q.kind == "telemetry"]
    assert telemetry
    assert all(q.every_s is None for q in telemetry), "raw readings, never bucket means"
    assert len(telemetry) >= len(readings) // 1000, "read in pages of BESS_RENDERER_HISTORY_PAGE_ROWS"
    command = next(q for q in queries if q.kind == "command")
    assert panel.begin is not None
    assert command.begin <= panel.begin - timedelta(days=1), "a lease reaching into the window is known"
    # a new spec makes every comparison with the old one out of date
    await device.publish(SPEC_TOPIC, SPEC, battery="b1")
    await broker.idle()
    assert not any(k[0] == "b1" for k in renderer.diagnoser.cache)
    await renderer.shutdown()
