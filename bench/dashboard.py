"""Dashboard benchmark: a year of one-minute telemetry, then figure builds and page loads per window.

Runs on its own: starts a private mosquitto and influxd (deploy/stack.py), loads 525,600 one-minute telemetry
points and a year of hourly prices straight into InfluxDB (line protocol from the recorder's own mapping), starts
the recorder and the renderer as processes, then for the 24 h, 30 d and 1 y windows measures

* the figure build as the renderer does it for a viewer's window, over HTTP (``GET /api/figures/..?window=``,
  a window a minute shorter each run so nothing is cached but the KPI rollups): history request over MQTT ->
  recorder -> InfluxQL (downsampled to the window) -> series -> exact KPIs from the rollups -> every figure ->
  Figure messages (median of several runs);
* the first such request's wait for exact KPIs ("cold": the raw rows of the window are read once, in pages,
  and integrated into 15-minute rollups; later windows reuse them);
* the page load in headless Chromium on ``/battery/..?window=..``: until the SOC, power, prices and KPI panels
  have rendered with data (the others have none in this benchmark);
* then (unless ``--no-restart``), once every final day's KPI integrals are stored (``kpi_15m``, published by the
  renderer), the ``kind="kpi"`` (buckets) and ``kind="kpi_day"`` (day totals) reads of the whole span and, after a
  renderer restart, the cold KPIs of the whole span again: from the stored days instead of the raw rows (the sum
  of the cold reads above); that time includes the window's figure builds (history means over raw rows).

Target (issue): each < 1 s (the cold KPI read excepted: it happens once per day of history). Baseline printed
next to it: the same figures built in this process from the raw rows without downsampling (what a dashboard that
skips the recorder's GROUP BY would do).

    .venv/bin/python bench/dashboard.py [--days 365] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from nodes.contract.messages import HistoryQuery, HistoryResult, PriceForecast, PriceSlot, Telemetry  # noqa: E402
from nodes.contract.topics import HISTORY, TELEMETRY  # noqa: E402
from nodes.recorder.points import prices_lines, telemetry_line  # noqa: E402
from nodes.renderer.figures import render_all, to_message  # noqa: E402
from nodes.renderer.history import bucket_seconds  # noqa: E402
from nodes.renderer.insights import compute_insights  # noqa: E402
from nodes.renderer.series import PriceSeries, TelemetrySeries  # noqa: E402
from nodes.runtime.bus import Bus, MqttSettings  # noqa: E402
from tests.support.browser import chromium_path, open_page  # noqa: E402

BATTERY = "bench-1"
ZONE = "de-lu"
WINDOWS = {"24 h": ("24h", 86_400), "30 d": ("30d", 30 * 86_400), "1 y": ("365d", 365 * 86_400)}
MAX_POINTS = 2000


def telemetry_lines(end: datetime, days: int) -> list[str]:
    """One point a minute: a battery cycling twice a day between 100 and 900 kWh."""
    minutes = days * 1440
    start = end - timedelta(minutes=minutes)
    t = np.arange(minutes)
    phase = 2 * math.pi * t / 720.0
    soc = 500 + 400 * np.sin(phase)
    power = 250 * np.cos(phase) * -1
    return [
        telemetry_line(
            BATTERY,
            Telemetry(ts=start + timedelta(minutes=int(i)), soc_kwh=float(soc[i]), power_kw=float(power[i])),
        )
        for i in range(minutes)
    ]


def price_lines(end: datetime, days: int) -> list[str]:
    """Hourly prices over the same span."""
    hours = days * 24 + 48
    start = end - timedelta(days=days)
    slots = [
        PriceSlot(
            start=start + timedelta(hours=h),
            end=start + timedelta(hours=h + 1),
            price_per_mwh=80.0 + 60.0 * math.sin(2 * math.pi * h / 24.0),
        )
        for h in range(hours)
    ]
    return prices_lines(ZONE, PriceForecast(zone=ZONE, issued_at=end, slots=slots))


async def build_figures(bus: Bus, begin: datetime, end: datetime, *, raw: bool) -> tuple[float, int]:
    """History over MQTT + every figure, as the renderer does it; returns (seconds, telemetry rows)."""
    started = time.perf_counter()
    every = None if raw else bucket_seconds(begin, end, MAX_POINTS)
    telemetry: HistoryResult = await bus.request(
        HISTORY,
        HistoryQuery(kind="telemetry", battery=BATTERY, begin=begin, end=end, every_s=every, limit=1_000_000),
        timeout=120,
    )
    prices: HistoryResult = await bus.request(
        HISTORY,
        HistoryQuery(kind="prices", zone=ZONE, begin=begin, end=end, every_s=None, limit=100_000),
        timeout=60,
    )
    series = TelemetrySeries.from_history(telemetry)
    price_series = PriceSeries.from_history(prices)
    insights = compute_insights(series, price_series, None, None)
    figures = render_all(series, price_series, None, None, insights, now=end)
    for figure_id, figure in figures.items():
        to_message(figure, figure_id, BATTERY, end)
    return time.perf_counter() - started, len(telemetry.rows)


async def api_build(http: aiohttp.ClientSession, base: str, window: str) -> tuple[float, str]:
    """Seconds for one ``GET /api/figures`` of ``window`` and the KPI status it answered with."""
    started = time.perf_counter()
    async with http.get(f"{base}/api/figures/{BATTERY}", params={"window": window}) as response:
        response.raise_for_status()
        answer = await response.json()
    status = answer["figures"]["insights"]["layout"]["meta"]["insights"]["status"]
    return time.perf_counter() - started, str(status)


async def cold_kpis(http: aiohttp.ClientSession, base: str, window: str) -> float:
    """Seconds from the first request of a window until its KPIs are exact (read and integrated)."""
    started = time.perf_counter()
    while True:
        _seconds, status = await api_build(http, base, window)
        if status == "ok":
            return time.perf_counter() - started
        if status != "computing" or time.perf_counter() - started > 600:
            raise SystemExit(f"KPIs for {window}: {status}")
        await asyncio.sleep(0.2)


async def page_load(port: int, window: str) -> float:
    """Seconds from navigation until every panel shows data, the window given in the URL."""
    base = f"http://127.0.0.1:{port}"
    async with open_page() as page:
        started = time.perf_counter()
        await page.goto(f"{base}/battery/{BATTERY}?window={window}")
        # the panels with data in this benchmark (no cells, plan or alarms here: those stay at 0 points); the list
        # must exist first (every() of an empty list is true before the page has built its panels)
        await page.wait_for(
            "['soc', 'power', 'prices', 'insights'].every(id => {"
            " const p = document.getElementById('panel-' + id);"
            " return p !== null && p.dataset.state === 'rendered' && Number(p.dataset.points) > 0; })",
            timeout=60,
            what="the SOC, power, prices and KPI panels rendered with data",
        )
        return time.perf_counter() - started


def stored_days(url: str, db: str) -> int:
    """Complete days in ``kpi_15m`` (96 buckets each)."""
    rows = stack.influx_rows(url, db, f"SELECT count(\"samples\") FROM \"kpi_15m\" WHERE \"battery\"='{BATTERY}'")
    return int(rows[0]["count"]) // 96 if rows else 0


async def wait_online(port: int, root: str, name: str, logs: Path) -> None:
    topic = f"{root}/node/{name}/status"
    deadline = time.monotonic() + 60
    while b'"online"' not in stack.read_retained("127.0.0.1", port, topic).get(topic, b""):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not come online; see {logs}")
        await asyncio.sleep(0.2)


async def cold_from_stored(
    http: aiohttp.ClientSession, url: str, bus: Bus, *, env: dict[str, str], logs: Path, root: str, mqtt_port: int,
    influx_url: str, db: str, renderer: subprocess.Popen[bytes], end: datetime, days: int, cold_raw_s: float,
) -> subprocess.Popen[bytes]:
    """Restart the renderer once every final day is stored (kpi_15m) and time the cold KPIs of the whole window
    again: now 96 stored rows per day instead of the raw ones. Also times the ``kind="kpi"`` read of the window."""
    deadline = time.monotonic() + 120
    previous = -1
    while (count := stored_days(influx_url, db)) != previous or count < days - 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {count} of about {days} days were stored in kpi_15m")
        previous = count
        await asyncio.sleep(1.0)
    started = time.perf_counter()
    answer: HistoryResult = await bus.request(HISTORY, HistoryQuery(
        kind="kpi", battery=BATTERY, begin=end - timedelta(days=days), end=end, limit=1_000_000), timeout=120)
    query_s = time.perf_counter() - started
    started = time.perf_counter()
    totals: HistoryResult = await bus.request(HISTORY, HistoryQuery(
        kind="kpi_day", battery=BATTERY, begin=end - timedelta(days=days), end=end, limit=100_000), timeout=120)
    totals_s = time.perf_counter() - started
    stack.stop_process(renderer, 30)
    renderer = subprocess.Popen(  # noqa: ASYNC220 - the benchmark's own restart
        [sys.executable, "-m", "nodes.renderer"], env=env, cwd=ROOT,
        stdout=(logs / "renderer-restarted.log").open("wb"), stderr=subprocess.STDOUT,
    )
    await wait_online(mqtt_port, root, "renderer", logs)
    await bus.publish(TELEMETRY, Telemetry(ts=end, soc_kwh=500.0, power_kw=0.0), battery=BATTERY)
    deadline = time.monotonic() + 30
    while True:
        async with http.get(f"{url}/api/batteries") as response:
            if BATTERY in [b["battery"] for b in (await response.json())["batteries"]]:
                break
        if time.monotonic() > deadline:
            raise SystemExit("the restarted renderer never listed the battery")
        await asyncio.sleep(0.1)
    window = WINDOWS["1 y"][0] if days >= 365 else f"{days}d"
    cold = await cold_kpis(http, url, window)
    print(f"kpi_15m: {count} days stored; over MQTT the kind=kpi read of {len(answer.rows):,} bucket rows "
          f"{query_s:.3f} s, the kind=kpi_day read of {len(totals.rows):,} day totals {totals_s:.3f} s (what a "
          "window reads for its whole days)")
    print(f"cold KPIs of the {window} window after a renderer restart, from stored days: {cold:.2f} s "
          f"(from raw rows above: {cold_raw_s:.2f} s, {cold_raw_s / cold:.1f}x)")
    return renderer


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-restart", action="store_true",
                        help="skip the cold KPIs from stored days (kpi_15m) after a renderer restart")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bess-bench-dashboard-"))
    broker = stack.start_mosquitto(base / "mosquitto")
    influxd = stack.start_influxd(base / "influxdb")
    db = "bench"
    stack.create_database(influxd.url, db)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    started = time.perf_counter()
    lines = telemetry_lines(end, args.days)
    for i in range(0, len(lines), 20_000):
        stack.influx_write(influxd.url, db, lines[i : i + 20_000], precision="u")
    stack.influx_write(influxd.url, db, price_lines(end, args.days), precision="u")
    print(f"loaded {len(lines):,} one-minute telemetry points in {time.perf_counter() - started:.1f} s")

    root = "bench/bess/v1"
    dashboard_port = stack.free_port()
    env = {
        **os.environ,
        "BESS_MQTT_PORT": str(broker.port),
        "BESS_INFLUX_URL": influxd.url,
        "BESS_INFLUX_DB": db,
        "BESS_TOPIC_ROOT": root,
        "BESS_DASHBOARD_PORT": str(dashboard_port),
        "BESS_RENDERER_HISTORY_TIMEOUT_S": "60",
        "BESS_RENDERER_FIGURE_CACHE_S": "0",  # every request builds: that is what is measured
    }
    logs = base / "logs"
    logs.mkdir()
    processes = [
        subprocess.Popen(  # noqa: ASYNC220 - start-up only
            [sys.executable, "-m", f"nodes.{name}"],
            env=env,
            cwd=ROOT,
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name in ("recorder", "renderer")
    ]
    for name in ("recorder", "renderer"):  # requests are not retained: wait until both listen
        topic = f"{root}/node/{name}/status"
        deadline = time.monotonic() + 60
        while b'"online"' not in stack.read_retained("127.0.0.1", broker.port, topic).get(topic, b""):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not come online; see {logs}")
            time.sleep(0.2)  # noqa: ASYNC251 - start-up only, nothing else runs yet
    bus = Bus("bench-dashboard", MqttSettings(mqtt_port=broker.port, topic_root=root))
    bus.enable_requests(HISTORY)
    await bus.start()
    try:
        # the renderer learns the battery from telemetry; one live message makes it draw this battery
        await bus.publish(TELEMETRY, Telemetry(ts=end, soc_kwh=500.0, power_kw=0.0), battery=BATTERY)
        print(f"{'window':>6} {'cold KPIs s':>12} {'build median s':>15} {'raw rows':>9} {'raw build s':>12} "
              f"{'ratio':>6} {'page load s':>12}")
        url = f"http://127.0.0.1:{dashboard_port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:  # the live message above must have reached the renderer
                async with http.get(f"{url}/api/batteries") as response:
                    if BATTERY in [b["battery"] for b in (await response.json())["batteries"]]:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the renderer never listed the battery")
                await asyncio.sleep(0.1)
            colds: dict[str, float] = {}
            for label, (window, window_s) in WINDOWS.items():
                begin = end - timedelta(seconds=min(window_s, args.days * 86_400))
                cold = await cold_kpis(http, url, window)
                # a window nobody asked for yet (a minute shorter each run): nothing cached but the KPI rollups,
                # so each run reads the window's history from the recorder like a new viewer's first request
                fresh = [f"{window_s // 60 - k}m" for k in range(1, args.runs + 1)]
                timings = [(await api_build(http, url, key))[0] for key in fresh]
                raw_seconds, raw_rows = await build_figures(bus, begin, end, raw=True)
                median = statistics.median(timings)
                load = await page_load(dashboard_port, window) if chromium_path() else float("nan")
                print(f"{label:>6} {cold:>12.2f} {median:>15.3f} {raw_rows:>9,} {raw_seconds:>12.3f} "
                      f"{raw_seconds / median:>6.1f} {load:>12.3f}")
                colds[label] = cold
            if not args.no_restart:
                processes[1] = await cold_from_stored(
                    http, url, bus, env=env, logs=logs, root=root, mqtt_port=broker.port, influx_url=influxd.url,
                    db=db, renderer=processes[1], end=end, days=args.days, cold_raw_s=sum(colds.values()))
    finally:
        await bus.stop()
        stack.stop_processes(processes, 10)
        broker.stop()
        influxd.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
