"""Nodes as processes and what a viewer waits for: the shared measuring part of the history benchmarks.

``bench/history.py`` and ``bench/dashboard.py`` load history into a private influxd, then use this module to run
the recorder and the renderer as processes (:class:`Nodes`, the renderer restartable for cold reads) and to time
a window the way a viewer meets it: ``GET /api/figures/..?window=`` (:func:`api_build`), the wait until its KPIs
are exact (:func:`cold_kpis`) and the page in headless Chromium (:func:`page_load`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from tests.support.browser import Page, open_page  # noqa: E402


@dataclass
class Nodes:
    """The recorder and renderer of a benchmark, as processes on a private broker and database."""

    broker_port: int
    influx_url: str
    db: str
    logs: Path
    root: str = "bench/bess/v1"
    extra_env: dict[str, str] = field(default_factory=dict)
    dashboard_port: int = field(default_factory=stack.free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BESS_MQTT_PORT": str(self.broker_port),
            "BESS_INFLUX_URL": self.influx_url,
            "BESS_INFLUX_DB": self.db,
            "BESS_TOPIC_ROOT": self.root,
            "BESS_DASHBOARD_PORT": str(self.dashboard_port),
            # a window over raw points can take minutes without rollups: measure it, do not time it out
            "BESS_INFLUX_TIMEOUT_S": "600",
            "BESS_RENDERER_HISTORY_TIMEOUT_S": "600",
            "BESS_RENDERER_FIGURE_CACHE_S": "0",  # every request builds: that is what is measured
            **self.extra_env,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, name: str, timeout_s: float = 120.0) -> float:
        """Start ``nodes.<name>`` and wait until it says online; the seconds that took."""
        started = time.perf_counter()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"nodes.{name}"],
            env=self.env,
            cwd=ROOT,
            stdout=(self.logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        topic = f"{self.root}/node/{name}/status"
        deadline = time.monotonic() + timeout_s
        while b'"online"' not in stack.read_retained("127.0.0.1", self.broker_port, topic).get(topic, b""):
            if time.monotonic() > deadline or self.processes[name].poll() is not None:
                raise SystemExit(f"{name} did not come online; see {self.logs / (name + '.log')}")
            time.sleep(0.2)
        return time.perf_counter() - started

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stack.stop_processes([process], 20)

    def stop_all(self) -> None:
        stack.stop_processes(list(self.processes.values()), 20)
        self.processes.clear()

    def run_cli(self, *argv: str, timeout_s: float = 7200.0) -> subprocess.CompletedProcess[str]:
        """``python -m <argv>`` with the nodes' settings (a back-fill, a check)."""
        return subprocess.run(
            [sys.executable, "-m", *argv], env=self.env, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )

    def has_cli(self, module: str, *command: str) -> bool:
        """Does ``python -m <module> <command...> --help`` exist (another part's back-fill may not be merged)?

        The module's ``__main__.py`` must name the command first: a node without subcommands ignores its
        arguments and would start running instead of answering ``--help``."""
        main = ROOT / module.replace(".", "/") / "__main__.py"
        if not main.is_file() or not all(word in main.read_text() for word in command):
            return False
        try:
            return self.run_cli(module, *command, "--help", timeout_s=60).returncode == 0
        except subprocess.TimeoutExpired:
            return False


async def wait_listed(http: aiohttp.ClientSession, base: str, batteries: list[str], timeout_s: float = 120) -> None:
    """Until the renderer lists every battery in ``batteries`` (it learns them from live telemetry)."""
    deadline = time.monotonic() + timeout_s
    wanted = set(batteries)
    while True:
        try:
            async with http.get(f"{base}/api/batteries") as response:
                listed = {b["battery"] for b in (await response.json())["batteries"]}
            if wanted <= listed:
                return
        except aiohttp.ClientError:
            pass  # the web server starts right after the broker connection
        if time.monotonic() > deadline:
            raise SystemExit(f"the renderer did not list {sorted(wanted)[:3]}...")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Build:
    """One ``GET /api/figures`` answer: how long, the KPI status and note, and the points the SOC panel drew."""

    seconds: float
    status: str
    note: str
    soc_points: int


def _soc_points(figure: dict[str, Any]) -> int:
    return sum(len(trace.get("x") or ()) for trace in figure.get("data", ()))


async def api_build(http: aiohttp.ClientSession, base: str, battery: str, window: str) -> Build:
    """Seconds for one ``GET /api/figures`` of ``window``, with the KPI status it answered with."""
    started = time.perf_counter()
    async with http.get(f"{base}/api/figures/{battery}", params={"window": window},
                        timeout=aiohttp.ClientTimeout(total=1200)) as response:
        response.raise_for_status()
        answer = await response.json()
    seconds = time.perf_counter() - started
    figures = answer["figures"]
    meta = figures["insights"]["layout"]["meta"]["insights"]
    return Build(seconds, str(meta["status"]), str(meta.get("note") or ""), _soc_points(figures["soc"]))


@dataclass(frozen=True)
class Kpis:
    """How long a window's KPIs took to become exact, or why they did not."""

    seconds: float
    status: str
    note: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def text(self) -> str:
        return f"{self.seconds:.2f}" if self.ok else f"n/c@{self.seconds:.0f}s"


async def cold_kpis(
    http: aiohttp.ClientSession, base: str, battery: str, window: str, timeout_s: float = 1200
) -> Kpis:
    """Seconds from the first request of a window until its KPIs are exact (or the renderer gives up)."""
    started = time.perf_counter()
    while True:
        build = await api_build(http, base, battery, window)
        elapsed = time.perf_counter() - started
        if build.status != "computing" or elapsed > timeout_s:
            return Kpis(elapsed, build.status, build.note)
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class PageLoad:
    """A page load: until it was ready, how long its own requests for figures and for Plotly took, and the same
    for a second window in the same browser (``again_s``: Plotly and the page's scripts cached, as for a viewer
    who comes back or switches windows)."""

    seconds: float
    figures_s: float
    plotly_s: float
    again_s: float = float("nan")


NOT_LOADED = PageLoad(float("nan"), float("nan"), float("nan"))

RESOURCE_JS = """(() => { const span = (part) => { const e = performance.getEntriesByType('resource')
  .filter(r => r.name.includes(part)); return e.length ? (e[e.length - 1].responseEnd - e[e.length - 1].startTime)
  / 1000 : NaN; }; return [span('/api/figures/'), span('plotly')]; })()"""


async def _until(page: Page, ready_js: str, started: float, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await page.evaluate(ready_js):
                return time.perf_counter() - started
        except RuntimeError:
            pass  # the document is still being replaced (no body yet)
        await asyncio.sleep(0.02)
    return float("nan")


async def page_load(base: str, paths: tuple[str, ...], ready_js: Callable[[str], str],
                    timeout_s: float = 600) -> PageLoad:
    """From navigation to ``paths[0]`` in a new browser until ``ready_js(path)`` holds (NaN when it never does),
    with the page's fetch of its figures and of Plotly (the rest is parsing and drawing in the browser); then
    ``paths[1]`` (if given) in the same browser."""
    async with open_page() as page:
        started = time.perf_counter()
        await page.goto(f"{base}{paths[0]}")
        seconds = await _until(page, ready_js(paths[0]), started, timeout_s)
        if math.isnan(seconds):  # never ready
            return NOT_LOADED
        figures_s, plotly_s = await page.evaluate(RESOURCE_JS)
        again = float("nan")
        if len(paths) > 1:
            started = time.perf_counter()
            await page.goto(f"{base}{paths[1]}")
            again = await _until(page, ready_js(paths[1]), started, timeout_s)
        return PageLoad(seconds, float(figures_s or "nan"), float(plotly_s or "nan"), again)


def panels_ready_js(path: str) -> str:
    """The battery page at ``path`` is loaded: every figure panel has rendered the page's own window (not the
    document before the navigation, where "every panel" of no panels would hold at once) and the SOC panel drew
    points. The diagnostics panel fills on its own and is no figure."""
    return (
        "(() => { if (location.pathname + location.search !== " + json.dumps(path) + ") return false;"
        " const key = document.body && document.body.dataset.windowKey;"
        " const panels = Array.from(document.querySelectorAll('.panel[data-figure]'))"
        ".filter(p => p.dataset.figure !== 'diagnostics');"
        " const soc = document.getElementById('panel-soc');"
        " return Boolean(key) && panels.length > 1 && soc !== null && Number(soc.dataset.points) > 0 &&"
        " panels.every(p => p.dataset.state === 'rendered' && p.dataset.windowKey === key); })()"
    )


async def battery_page_load(base: str, battery: str, *windows: str, timeout_s: float = 600) -> PageLoad:
    """Until every panel of ``/battery/{battery}?window=`` shows that window (a second window: in the same
    browser)."""
    paths = tuple(f"/battery/{battery}?window={window}" for window in windows)
    return await page_load(base, paths, panels_ready_js, timeout_s)


__all__ = [
    "NOT_LOADED",
    "Build",
    "Kpis",
    "Nodes",
    "PageLoad",
    "api_build",
    "battery_page_load",
    "cold_kpis",
    "page_load",
    "panels_ready_js",
    "wait_listed",
]
