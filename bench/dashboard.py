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
* the page load in headless Chromium on ``/battery/..?window=..``: until every figure panel has rendered that
  window (before issue 14 the wait also held on the blank page before navigation: its 0.08-0.13 s measured
  nothing);
* then (unless ``--no-restart``), once every final day's KPI integrals are stored (``kpi_15m``, published by the
  renderer), the ``kind="kpi"`` read of the whole span and, after a renderer restart, the cold KPIs of the whole
  span again: from 96 stored rows per day instead of the raw rows (the sum of the cold reads above).

The battery, the loader and the viewer's side are shared with ``bench/history.py`` (``bench/_history_data.py``,
``bench/_history_probe.py``); this one keeps the 1-minute year and its in-process raw baseline.

Target (issue): each < 1 s (the cold KPI read excepted: it happens once per day of history). Baseline printed
next to it: the same figures built in this process from the raw rows without downsampling (what a dashboard that
skips the recorder's GROUP BY would do).

    .venv/bin/python bench/dashboard.py [--days 365] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _history_data as data  # noqa: E402
import _history_probe as probe  # noqa: E402
import aiohttp  # noqa: E402

from deploy import stack  # noqa: E402
from nodes.contract.messages import HistoryQuery, HistoryResult, Telemetry  # noqa: E402
from nodes.contract.topics import HISTORY, TELEMETRY  # noqa: E402
from nodes.renderer.figures import render_all, to_message  # noqa: E402
from nodes.renderer.history import bucket_seconds  # noqa: E402
from nodes.renderer.insights import compute_insights  # noqa: E402
from nodes.renderer.series import PriceSeries, TelemetrySeries  # noqa: E402
from nodes.runtime.bus import Bus, MqttSettings  # noqa: E402
from tests.support.browser import chromium_path  # noqa: E402

BATTERY = "bench-1"
ZONE = "de-lu"
WINDOWS = {"24 h": ("24h", 86_400), "30 d": ("30d", 30 * 86_400), "1 y": ("365d", 365 * 86_400)}
MAX_POINTS = 2000


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


def stored_days(url: str, db: str) -> int:
    """Complete days in ``kpi_15m`` (96 buckets each)."""
    rows = stack.influx_rows(url, db, f"SELECT count(\"samples\") FROM \"kpi_15m\" WHERE \"battery\"='{BATTERY}'")
    return int(rows[0]["count"]) // 96 if rows else 0


async def cold_from_stored(
    http: aiohttp.ClientSession, nodes: probe.Nodes, bus: Bus, *, end: datetime, days: int, soc_kwh: float,
    cold_raw_s: float,
) -> None:
    """Restart the renderer once every final day is stored (kpi_15m) and time the cold KPIs of the whole window
    again: now 96 stored rows per day instead of the raw ones. Also times the ``kind="kpi"`` read of the window."""
    deadline = time.monotonic() + 120
    previous = -1
    while (count := stored_days(nodes.influx_url, nodes.db)) != previous or count < days - 2:
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
    nodes.stop("renderer")
    nodes.start("renderer")
    await bus.publish(TELEMETRY, Telemetry(ts=end, soc_kwh=soc_kwh, power_kw=0.0), battery=BATTERY)
    await probe.wait_listed(http, nodes.url, [BATTERY], 30)
    window = WINDOWS["1 y"][0] if days >= 365 else f"{days}d"
    cold = await probe.cold_kpis(http, nodes.url, BATTERY, window, 600)
    print(f"kpi_15m: {count} days stored; over MQTT the kind=kpi read of {len(answer.rows):,} bucket rows "
          f"{query_s:.3f} s, the kind=kpi_day read of {len(totals.rows):,} day totals {totals_s:.3f} s (what a "
          "window reads for its whole days)")
    print(f"cold KPIs of the {window} window after a renderer restart, from stored days: {cold.seconds:.2f} s "
          f"(from raw rows above: {cold_raw_s:.2f} s, {cold_raw_s / cold.seconds:.1f}x)")


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
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start_s = int(end.timestamp()) - args.days * data.DAY_S
    profile = data.fleet_profiles(1, prefix="bench")
    prices, _where = data.hourly_prices(start_s, args.days * 24 + 48)
    stack.influx_write(influxd.url, db, data.price_lines(ZONE, start_s, prices, end), precision="u")
    loaded = data.load(influxd.url, db, data.telemetry_batches(profile, start_s, args.days, 60, prices))
    print(f"loaded {loaded.points:,} one-minute telemetry points in {loaded.seconds:.1f} s")

    nodes = probe.Nodes(broker.port, influxd.url, db, base / "logs",
                        extra_env={"BESS_RENDERER_HISTORY_TIMEOUT_S": "60", "BESS_INFLUX_TIMEOUT_S": "10"})
    bus = Bus("bench-dashboard", MqttSettings(mqtt_port=broker.port, topic_root=nodes.root))
    bus.enable_requests(HISTORY)
    try:
        nodes.start("recorder")
        nodes.start("renderer")
        await bus.start()
        # the renderer learns the battery from telemetry; one live message makes it draw this battery
        await bus.publish(TELEMETRY, Telemetry(ts=end, soc_kwh=profile[0].soc_floor_kwh, power_kw=0.0),
                          battery=BATTERY)
        print(f"{'window':>6} {'cold KPIs s':>12} {'build median s':>15} {'raw rows':>9} {'raw build s':>12} "
              f"{'ratio':>6} {'page load s':>12}")
        async with aiohttp.ClientSession() as http:
            await probe.wait_listed(http, nodes.url, [BATTERY], 30)
            colds: dict[str, float] = {}
            for label, (window, window_s) in WINDOWS.items():
                begin = end - timedelta(seconds=min(window_s, args.days * 86_400))
                cold = await probe.cold_kpis(http, nodes.url, BATTERY, window, 600)
                if not cold.ok:
                    raise SystemExit(f"KPIs for {window}: {cold.status} {cold.note}")
                # a window nobody asked for yet (a minute shorter each run): nothing cached but the KPI rollups,
                # so each run reads the window's history from the recorder like a new viewer's first request
                fresh = [f"{window_s // 60 - k}m" for k in range(1, args.runs + 1)]
                timings = [(await probe.api_build(http, nodes.url, BATTERY, key)).seconds for key in fresh]
                raw_seconds, raw_rows = await build_figures(bus, begin, end, raw=True)
                median = statistics.median(timings)
                page = f"{window_s // 60 - args.runs - 1}m"  # not read yet either
                load = await probe.battery_page_load(nodes.url, BATTERY, page) if chromium_path() else float("nan")
                print(f"{label:>6} {cold.seconds:>12.2f} {median:>15.3f} {raw_rows:>9,} {raw_seconds:>12.3f} "
                      f"{raw_seconds / median:>6.1f} {load:>12.3f}")
                colds[label] = cold.seconds
            if not args.no_restart:
                await cold_from_stored(http, nodes, bus, end=end, days=args.days, soc_kwh=profile[0].soc_floor_kwh,
                                       cold_raw_s=sum(colds.values()))
    finally:
        await bus.stop()
        nodes.stop_all()
        broker.stop()
        influxd.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
