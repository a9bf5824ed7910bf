"""Fleet view benchmark: the index page with 200 simulated batteries against the same page with 1, in one run.

Runs on its own: a private mosquitto and influxd (deploy/stack.py), then for each fleet size (the baseline of 1
battery first, then ``--batteries``) a fresh topic root with the recorder, the renderer and the simulator
(``BESS_BATTERIES`` = that many ids, a reading every ``--interval`` s each) as processes, and measures

* **page load**: navigation in headless Chromium until the fleet table has a row with a reading for every battery
  and the event stream is open (median of ``--loads``);
* **server**: ``GET /`` (the table written by the server), ``GET /api/fleet`` and ``GET /fleet.csv``
  (median of 20 each, bytes);
* **update rate**: readings applied to the table per second in the browser (a MutationObserver counts the rows'
  ``data-ts`` changes over ``--seconds``) against the rate the simulator publishes, and how old the readings on
  screen are (median and maximum over the rows, sampled every second);
* **sort**: one click on a header re-ordering the table (the page's handler, timed inside the page), and the
  page script's time per second (its 1 s tick: ages, totals, sort when sorted by a live column);
* the renderer's CPU over the measurement (it also draws every battery's figures for the retained topics).

Prints one line per fleet size and the ratios of the large fleet against the baseline.

    .venv/bin/python bench/fleet_view.py [--batteries 200] [--interval 2] [--seconds 20] [--loads 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from tests.support.browser import Page, chromium_path, open_page  # noqa: E402

ROWS_READY = (
    "(() => { const rows = document.querySelectorAll('#fleet tbody .battery-row');"
    " return document.body?.dataset.connected === 'true' && rows.length === {n} &&"
    " Array.from(rows).every(r => r.querySelector('[data-field=\"age\"]').dataset.ts)"
    " ? performance.now() : 0; })()"
)
COUNT_UPDATES = """(() => {
  window.__updates = 0;
  new MutationObserver((list) => { window.__updates += list.length; })
    .observe(document.querySelector('#fleet tbody'), {subtree: true, attributes: true, attributeFilter: ['data-ts']});
  return true; })()"""
AGES = """(() => Array.from(document.querySelectorAll('#fleet tbody [data-field="age"]'))
  .map(c => (Date.now() - Date.parse(c.dataset.ts)) / 1000))()"""
SORT = """(() => { const b = document.querySelector('#fleet th[data-sort-key="{key}"] button');
  const t0 = performance.now(); b.click(); return performance.now() - t0; })()"""
TICK_COST = """(() => { window.__busy = 0; window.__since = performance.now();
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__busy += e.duration; })
    .observe({type: 'longtask', buffered: false});
  return true; })()"""


@dataclass
class Result:
    batteries: int
    load_s: float
    index_ms: float
    index_kb: float
    api_ms: float
    csv_ms: float
    updates_per_s: float
    expected_per_s: float
    age_median_s: float
    age_max_s: float
    sort_ms: float
    long_task_ms_per_s: float
    renderer_cpu_pct: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_get(http: aiohttp.ClientSession, url: str, runs: int = 20) -> tuple[float, int]:
    """Median milliseconds of ``runs`` GETs (as a browser asks: gzip accepted), and the bytes on the wire."""
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        async with http.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as response:
            body = await response.read()
            response.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        size = len(body)
    return statistics.median(times), size


async def page_load(port: int, n: int) -> float:
    """Seconds from the start of navigation (the page's own clock) until the table is complete and live."""
    ready = ROWS_READY.replace("{n}", str(n))
    async with open_page() as page:
        await page.goto(f"http://127.0.0.1:{port}/?per_page=1000")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                at_ms = float(await page.evaluate(ready) or 0)
            except RuntimeError:
                at_ms = 0.0  # the document is still being replaced
            if at_ms:
                return at_ms / 1000  # ms since navigation start; polled every 20 ms
            await asyncio.sleep(0.02)
        raise SystemExit(f"the index never showed {n} rows with a reading")


async def live(page: Page, seconds: float) -> tuple[float, float, float, float]:
    """(readings applied per second, median age, max age, long-task ms per second) over ``seconds``."""
    await page.evaluate(COUNT_UPDATES)
    await page.evaluate(TICK_COST)
    ages: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.sleep(1.0)
        ages += await page.evaluate(AGES)
    elapsed = time.perf_counter() - started
    updates = float(await page.evaluate("window.__updates"))
    busy = float(await page.evaluate("window.__busy"))
    return updates / elapsed, statistics.median(ages), max(ages), busy / elapsed


async def measure(n: int, broker_port: int, influx_url: str, args: argparse.Namespace, logs: Path) -> Result:
    root = f"bench{n}/bess/v1"
    db = f"fleet{n}"
    stack.create_database(influx_url, db)
    port = stack.free_port()
    ids = [f"fleet-{i:03d}" for i in range(n)]
    env = {
        **os.environ,
        "BESS_MQTT_PORT": str(broker_port),
        "BESS_INFLUX_URL": influx_url,
        "BESS_INFLUX_DB": db,
        "BESS_TOPIC_ROOT": root,
        "BESS_DASHBOARD_PORT": str(port),
        "BESS_BATTERIES": ",".join(ids),
        "BESS_SIM_TELEMETRY_INTERVAL_S": str(args.interval),
        "BESS_LOG_LEVEL": "WARNING",
    }
    names = ("recorder", "renderer", "simulator")
    processes = {
        name: subprocess.Popen(  # noqa: ASYNC220 - start-up only
            [sys.executable, "-m", f"nodes.{name}"], env=env, cwd=ROOT,
            stdout=(logs / f"{name}-{n}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        for name in names
    }
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    async with http.get(f"{base}/api/fleet?per_page=1000") as response:
                        rows = (await response.json())["rows"]
                    if len(rows) == n and all(r["telemetry_ts"] and r["capacity_kwh"] for r in rows):
                        break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the renderer never listed {n} batteries with readings; see {logs}")
                await asyncio.sleep(0.5)
            await asyncio.sleep(args.interval * 2)  # past start-up: the renderer has drawn every battery once
            index_ms, index_bytes = await timed_get(http, f"{base}/?per_page=1000")  # one page: every battery
            api_ms, _ = await timed_get(http, f"{base}/api/fleet?per_page=1000")
            csv_ms, _ = await timed_get(http, f"{base}/fleet.csv")
        loads = [await page_load(port, n) for _ in range(args.loads)]
        async with open_page() as page:
            await page.goto(f"{base}/?per_page=1000")
            await page.wait_for(ROWS_READY.replace("{n}", str(n)), timeout=120, what=f"{n} rows")
            sort_ms = statistics.median([float(await page.evaluate(SORT.replace("{key}", key)))
                                         for key in ("battery", "soc", "power", "age", "battery") * 2])
            # sorted by the age, a live column: the 1 s tick re-sorts as readings arrive, the costliest case
            await page.evaluate(SORT.replace("{key}", "age"))
            renderer = processes["renderer"].pid
            cpu_before, wall_before = cpu_seconds(renderer), time.monotonic()
            rate, age_median, age_max, busy = await live(page, args.seconds)
            cpu = (cpu_seconds(renderer) - cpu_before) / (time.monotonic() - wall_before) * 100
        return Result(n, statistics.median(loads), index_ms, index_bytes / 1024, api_ms, csv_ms, rate,
                      n / args.interval, age_median, age_max, sort_ms, busy, cpu)
    finally:
        stack.stop_processes(list(processes.values()), 10)


def line(r: Result) -> str:
    return (f"{r.batteries:>9} {r.load_s:>8.2f} {r.index_ms:>8.1f} {r.index_kb:>8.0f} {r.api_ms:>8.1f} "
            f"{r.csv_ms:>7.1f} {r.updates_per_s:>9.1f} {r.expected_per_s:>9.1f} {r.age_median_s:>8.1f} "
            f"{r.age_max_s:>7.1f} {r.sort_ms:>7.1f} {r.long_task_ms_per_s:>8.1f} {r.renderer_cpu_pct:>8.0f}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batteries", type=int, default=200)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a battery's readings")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the update rate is measured")
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()
    if chromium_path() is None:
        raise SystemExit("chromium is not installed (deploy/test installs it)")
    base = Path(tempfile.mkdtemp(prefix="bess-bench-fleet-"))
    logs = base / "logs"
    logs.mkdir()
    broker = stack.start_mosquitto(base / "mosquitto")
    influxd = stack.start_influxd(base / "influxdb")
    try:
        results = [await measure(n, broker.port, influxd.url, args, logs) for n in (1, args.batteries)]
    finally:
        broker.stop()
        influxd.stop()
    print(f"{'batteries':>9} {'load s':>8} {'GET / ms':>8} {'/ kB gz':>8} {'api ms':>8} {'csv ms':>7} "
          f"{'upd/s':>9} {'sent/s':>9} {'age med':>8} {'age max':>7} {'sort ms':>7} {'busy ms/s':>8} "
          f"{'rend CPU%':>8}")
    for r in results:
        print(line(r))
    one, many = results
    print(f"ratio {many.batteries} / 1: page load x{many.load_s / one.load_s:.2f}, "
          f"GET / x{many.index_ms / one.index_ms:.1f}, updates applied "
          f"{many.updates_per_s / many.expected_per_s:.0%} of sent (1 battery: "
          f"{one.updates_per_s / one.expected_per_s:.0%}), median age on screen {many.age_median_s:.1f} s vs "
          f"{one.age_median_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
