"""History benchmark (issue 14): real telemetry rates, then every dashboard window against raw points.

Scenarios (``--scenario``):

* ``year1hz``: one battery, a reading every second for 365 days (31,536,000 points);
* ``fleet``: 100 batteries, a reading every 10 s for 30 days (25,920,000 points).

``--days`` and ``--batteries`` make either small (``--days 1``: a smoke run in seconds). The telemetry is what the
simulator sends (SOC, power, both targets, source; ``--bms`` adds the pack's BMS fields, which halves the load
rate), following a real year of DE-LU hourly prices when ``../shared/data/prices`` is there (stored as the market
node stores a forecast), else synthetic ones. It runs on its own: a private mosquitto and influxd on free ports
(``deploy/stack.py``), line protocol written straight into influxd (2 writers, ``precision=s``; points/s, load
time and size on disk printed), then the recorder as a process. If the recorder has them, the telemetry rollups
are back-filled (``python -m nodes.recorder rollups backfill``, then ``rollups check``), and the KPI buckets
(``python -m nodes.renderer kpis backfill``), each timed; without them a note says so. Then per window (24 h,
7 d, 30 d and, for a year, 1 y), on one battery:

* ``kpi cold``: the renderer restarted (nothing cached), the first request of the window until its KPIs are exact
  (read from the store: KPI buckets, or raw rows integrated in pages); ``n/c``: the renderer refused (too many raw
  rows) after that long;
* ``kpi warm``: the same window asked again (its history and KPIs cached, every figure drawn again);
* ``build``: ``GET /api/figures/..?window=`` of a window nobody asked for yet (a minute shorter each run, so the
  history is read from the recorder again): history over MQTT -> recorder -> InfluxDB -> exact KPIs -> every
  figure (median of ``--runs``);
* ``history``: the recorder's answer alone (the downsampled ``HistoryQuery`` the renderer sends for the window);
* ``raw means``: InfluxDB computing the same window's means from raw points (the query a dashboard without rollups
  makes: ``mean()`` of every number over ``telemetry`` ``GROUP BY time(bucket)``), and ``ratio`` = raw means /
  history, measured in the same run;
* ``page``: the battery page with that window in headless Chromium, until every panel has rendered with data.

For the fleet also the index (``GET /``) and ``/api/fleet``. The last line says whether the targets hold (issue 14:
every window's build and page < 1 s, the 1-year window < 0.5 s). The data directory is deleted at the end unless
``--keep``. The machine's load average is printed with the numbers (``/proc/loadavg``).

    .venv/bin/python bench/history.py --scenario year1hz            # 31.5 M points: loading alone takes minutes
    .venv/bin/python bench/history.py --scenario fleet
    .venv/bin/python bench/history.py --scenario year1hz --days 1 --runs 1 --no-browser   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _history_data as data  # noqa: E402
import _history_probe as probe  # noqa: E402

from deploy import stack  # noqa: E402
from nodes.contract.messages import HistoryQuery, HistoryResult, Telemetry  # noqa: E402
from nodes.contract.topics import HISTORY, TELEMETRY  # noqa: E402
from nodes.recorder.table import SERIES  # noqa: E402
from nodes.renderer.history import bucket_seconds  # noqa: E402
from nodes.runtime.bus import Bus, MqttSettings  # noqa: E402
from tests.support.browser import chromium_path  # noqa: E402

ZONE = "de-lu"
DB = "bench"
WINDOWS = {"24 h": ("24h", 86_400), "7 d": ("7d", 7 * 86_400), "30 d": ("30d", 30 * 86_400),
           "1 y": ("365d", 365 * 86_400)}
SCENARIOS = {
    # name: (batteries, seconds between readings, days, windows)
    "year1hz": (1, 1, 365, ("24 h", "7 d", "30 d", "1 y")),
    "fleet": (100, 10, 30, ("24 h", "7 d", "30 d")),
}
KPI_BACKFILL_ALL = 10
"""Up to this many batteries every one's KPI days are back-filled; beyond, only the measured one."""
TARGET_S = 1.0
TARGET_YEAR_S = 0.5
MAX_POINTS = 2000  # the renderer's default BESS_RENDERER_MAX_POINTS: what the history request asks for


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Row:
    """The numbers of one window."""

    label: str
    kpi_cold: probe.Kpis
    kpi_warm_s: float
    build_s: float
    history_s: float
    history_rows: int
    raw_s: float
    raw_rows: int
    page: probe.PageLoad
    soc_points: int
    load: str

    @property
    def ratio(self) -> float:
        return self.raw_s / self.history_s if self.history_s > 0 else math.nan

    def line(self) -> str:
        return (f"{self.label:>5} {self.kpi_cold.text():>10} {self.kpi_warm_s:>9.3f} {self.build_s:>8.3f} "
                f"{self.history_s:>9.3f} {self.history_rows:>6,} {self.raw_s:>9.3f} {self.ratio:>7.1f} "
                f"{self.page.seconds:>7.3f} {self.page.figures_s:>7.3f} {self.page.plotly_s:>7.3f} "
                f"{self.page.again_s:>7.3f} {self.soc_points:>6,}  {self.load}")


HEADER = (f"{'window':>5} {'kpi cold s':>10} {'kpi warm':>9} {'build s':>8} {'history s':>9} {'rows':>6} "
          f"{'raw means':>9} {'ratio':>7} {'page s':>7} {'p.figs':>7} {'p.plotly':>7} {'p.again':>7} {'drawn':>6}"
          "  load average")


def raw_means_query(battery: str, begin: datetime, end: datetime, every_s: int) -> str:
    """The means a dashboard without rollups asks InfluxDB for: every number of the raw telemetry per bucket."""
    series = SERIES["telemetry"]
    select = ",".join(f'mean("{name}") AS "{name}"' for name in series.numeric)
    return (f'SELECT {select} FROM "telemetry" WHERE "battery"=\'{battery}\' '
            f"AND time >= '{begin.isoformat().replace('+00:00', 'Z')}' "
            f"AND time < '{end.isoformat().replace('+00:00', 'Z')}' GROUP BY time({every_s}s) fill(none)")


def timed_raw_means(url: str, battery: str, begin: datetime, end: datetime, every_s: int) -> tuple[float, int]:
    """Seconds InfluxDB takes for the raw means of the window (no client timeout: a year takes a while)."""
    query = urllib.parse.urlencode({"db": DB, "q": raw_means_query(battery, begin, end, every_s), "epoch": "u"})
    started = time.perf_counter()
    with urllib.request.urlopen(f"{url}/query?{query}", timeout=1800) as response:
        answer = json.loads(response.read())
    seconds = time.perf_counter() - started
    (result,) = answer["results"]
    if "error" in result:
        raise SystemExit(f"raw means: {result['error']}")
    return seconds, sum(len(series["values"]) for series in result.get("series", []))


async def timed_history(bus: Bus, battery: str, begin: datetime, end: datetime) -> tuple[float, int]:
    """The recorder's answer to the renderer's history request for the window (downsampled as it asks)."""
    started = time.perf_counter()
    result: HistoryResult = await bus.request(
        HISTORY,
        HistoryQuery(kind="telemetry", battery=battery, begin=begin, end=end,
                     every_s=bucket_seconds(begin, end, MAX_POINTS), limit=100_000),
        timeout=1200,
    )
    if not result.ok:
        raise SystemExit(f"history {begin}..{end}: {result.error}")
    return time.perf_counter() - started, len(result.rows)


async def run_step(nodes: probe.Nodes, what: str, argv: list[str], *, quiet: bool = False) -> float | None:
    """Run one back-fill or check; print its outcome (``quiet``: only a failure); the seconds it took (None when
    it failed)."""
    started = time.perf_counter()
    done = await asyncio.to_thread(nodes.run_cli, *argv)
    seconds = time.perf_counter() - started
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    if done.returncode != 0 or not quiet:
        print(f"{what}: {'ok' if done.returncode == 0 else f'exit {done.returncode}'} in {seconds:.1f} s "
              f"(`python -m {' '.join(argv)}`){': ' + ' | '.join(tail) if tail else ''}", flush=True)
    return seconds if done.returncode == 0 else None


async def backfill(nodes: probe.Nodes, batteries: list[str], begin: datetime, end: datetime) -> None:
    """The other parts' back-fills, when this tree has them (detected by their ``--help``); the telemetry rollups
    and the KPI days at the same time (they read the same raw points and write different measurements)."""
    span = ["--begin", begin.isoformat().replace("+00:00", "Z"), "--end", end.isoformat().replace("+00:00", "Z")]

    async def rollups() -> None:
        if await asyncio.to_thread(nodes.has_cli, "nodes.recorder", "rollups", "backfill"):
            await run_step(nodes, "telemetry rollups back-fill", ["nodes.recorder", "rollups", "backfill", *span])
            await run_step(nodes, "telemetry rollups check", ["nodes.recorder", "rollups", "check"])
        else:
            print("telemetry rollups: none in this tree (`python -m nodes.recorder rollups backfill` absent): "
                  "history windows are means over raw points", flush=True)

    async def kpis() -> None:
        if not await asyncio.to_thread(nodes.has_cli, "nodes.renderer", "kpis", "backfill"):
            print("KPI buckets: none in this tree (`python -m nodes.renderer kpis backfill` absent): a cold KPI read "
                  "integrates raw rows", flush=True)
            return
        started = time.perf_counter()
        chosen = batteries if len(batteries) <= KPI_BACKFILL_ALL else batteries[:1]
        if chosen != batteries:
            print(f"KPI days back-fill: only {chosen[0]}, the battery whose windows are measured (one process per "
                  f"battery; the renderer computes the others' days when someone views them)", flush=True)
        for i, battery in enumerate(chosen):
            argv = ["nodes.renderer", "kpis", "backfill", "--battery", battery, *span]
            if await run_step(nodes, f"KPI days back-fill {battery}", argv, quiet=i > 0) is None:
                break
        print(f"KPI days back-fill of {len(chosen)} battery(ies): {time.perf_counter() - started:.1f} s",
              flush=True)

    started = time.perf_counter()
    await asyncio.gather(rollups(), kpis())
    print(f"back-fills done in {time.perf_counter() - started:.1f} s (both at once)", flush=True)


@dataclass
class Viewer:
    """What measuring a window needs: the nodes, the bench's own bus and HTTP session, and the batteries."""

    nodes: probe.Nodes
    bus: Bus
    http: aiohttp.ClientSession
    args: argparse.Namespace
    batteries: list[str]
    end: datetime
    soc_kwh: dict[str, float]

    async def cold_renderer(self) -> None:
        """Restart the renderer (nothing cached) and wait until it draws the batteries again."""
        self.nodes.stop("renderer")
        self.nodes.start("renderer")
        for battery in self.batteries:  # it learns batteries from live telemetry: one reading each
            reading = Telemetry(ts=self.end, soc_kwh=self.soc_kwh[battery], power_kw=0.0)
            await self.bus.publish(TELEMETRY, reading, battery=battery)
        await probe.wait_listed(self.http, self.nodes.url, self.batteries)

    async def window(self, label: str, battery: str) -> Row:
        """Every number of one window on ``battery``."""
        window, window_s = WINDOWS[label]
        nodes, http, runs = self.nodes, self.http, self.args.runs
        await self.cold_renderer()
        cold = await probe.cold_kpis(http, nodes.url, battery, window)
        warm = await probe.api_build(http, nodes.url, battery, window)
        # a window nobody asked for yet (a minute shorter each run): only the KPIs are cached
        fresh = [f"{window_s // 60 - k}m" for k in range(1, runs + 1)]
        builds = [await probe.api_build(http, nodes.url, battery, key) for key in fresh]
        now = datetime.now(UTC)
        begin = now - timedelta(seconds=window_s)
        history_s, history_rows = await timed_history(self.bus, battery, begin, now)
        every = bucket_seconds(begin, now, MAX_POINTS) or 1
        raw_s, raw_rows = await asyncio.to_thread(timed_raw_means, nodes.influx_url, battery, begin, now, every)
        page = probe.NOT_LOADED
        if chromium_path() and not self.args.no_browser:  # windows not read yet either: a full build each
            page = await probe.battery_page_load(nodes.url, battery, f"{window_s // 60 - runs - 1}m",
                                                 f"{window_s // 60 - runs - 2}m")
        return Row(label, cold, warm.seconds, statistics.median(b.seconds for b in builds), history_s,
                   history_rows, raw_s, raw_rows, page, builds[-1].soc_points, loadavg())

    async def fleet_pages(self) -> None:
        """The index and ``/api/fleet`` with every battery listed (median of 5 GETs each)."""
        for path in ("/", "/api/fleet"):
            timings = []
            size = 0
            for _ in range(5):
                started = time.perf_counter()
                async with self.http.get(self.nodes.url + path) as response:
                    size = len(await response.read())
                    response.raise_for_status()
                timings.append(time.perf_counter() - started)
            print(f"fleet {path}: {statistics.median(timings) * 1000:.0f} ms median of 5, {size:,} bytes "
                  f"({len(self.batteries)} batteries); load average {loadavg()}", flush=True)


def load_history(
    url: str, base: Path, args: argparse.Namespace, profiles: list[data.BatteryProfile], *, start_s: int,
    days: int, step_s: int, end: datetime,
) -> data.LoadReport:
    """Prices, then every battery's telemetry straight into influxd; prints what it took."""
    stack.create_database(url, DB)
    prices, where = data.hourly_prices(start_s, days * 24 + 48)
    stack.influx_write(url, DB, data.price_lines(ZONE, start_s, prices, end), precision="u")
    print(f"prices: {where}", flush=True)
    bodies = data.telemetry_batches(profiles, start_s, days, step_s, prices, bms=args.bms,
                                    batch_lines=args.batch_lines)
    loaded = data.load(url, DB, bodies, writers=args.writers, label="telemetry points")
    stored = data.disk_bytes(base / "influxdb" / "data", base / "influxdb" / "wal")
    print(f"loaded {loaded.points:,} telemetry points in {loaded.seconds:.1f} s = {loaded.points_per_s:,.0f} "
          f"points/s ({args.writers} writers, {loaded.retries} retries); on disk {data.human_bytes(stored)} "
          f"(data + WAL right after the load, before compaction); load average {loadavg()}", flush=True)
    return loaded


def targets(rows: list[Row]) -> str:
    """Each window's build, its page in a new browser and again in the same browser, against the issue's target."""

    def verdict(seconds: float, limit: float) -> str:
        if math.isnan(seconds):
            return "not measured"
        return f"{seconds:.3f} s {'met' if seconds < limit else 'NOT met'}"

    parts = []
    for row in rows:
        limit = TARGET_YEAR_S if row.label == "1 y" else TARGET_S
        parts.append(f"{row.label} (< {limit:g} s): build {verdict(row.build_s, limit)}, page "
                     f"{verdict(row.page.seconds, limit)}, page again {verdict(row.page.again_s, limit)}")
    return "targets: " + "; ".join(parts)


async def run(args: argparse.Namespace) -> int:
    count, step_s, default_days, labels = SCENARIOS[args.scenario]
    if args.windows:
        labels = tuple(label.strip() for label in args.windows.split(","))
        unknown = [label for label in labels if label not in WINDOWS]
        if unknown:
            raise SystemExit(f"--windows: unknown {unknown}; use {', '.join(WINDOWS)}")
    count = args.batteries or count
    days = args.days or default_days
    profiles = data.fleet_profiles(count)
    batteries = [p.battery for p in profiles]
    # the data ends at the last full hour (prices are hourly slots); the minutes since are the live ones
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start_s = int(end.timestamp()) - days * data.DAY_S
    points = count * days * data.DAY_S // step_s
    print(f"scenario {args.scenario}: {count} battery(ies) x {days} d, a reading every {step_s} s = {points:,} points"
          f"{' with BMS fields' if args.bms else ''}; load average {loadavg()}", flush=True)

    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bess-bench-history-"))
    marker = base / "loaded.json"
    what = {"scenario": args.scenario, "batteries": count, "days": days, "step_s": step_s, "bms": args.bms}
    reuse = json.loads(marker.read_text()) if marker.is_file() else None
    if reuse is not None and reuse["what"] != what:
        raise SystemExit(f"{base} holds {reuse['what']}, not {what}: give another --data-dir")
    base.mkdir(parents=True, exist_ok=True)
    broker = stack.start_mosquitto(base / "mosquitto")
    influxd = stack.start_influxd(base / "influxdb")
    nodes = probe.Nodes(broker.port, influxd.url, DB, base / "logs")
    bus = Bus("bench-history", MqttSettings(mqtt_port=broker.port, topic_root=nodes.root))
    try:
        if reuse is None:
            loaded = load_history(influxd.url, base, args, profiles, start_s=start_s, days=days,
                                  step_s=step_s, end=end)
            if loaded.points != points:
                raise SystemExit(f"loaded {loaded.points:,} of {points:,} points")
            marker.write_text(json.dumps({"what": what, "start_s": start_s, "end_s": int(end.timestamp()),
                                          "load_s": loaded.seconds, "points_per_s": loaded.points_per_s}))
        else:
            start_s, end = int(reuse["start_s"]), datetime.fromtimestamp(int(reuse["end_s"]), UTC)
            print(f"reusing {points:,} points loaded into {base} up to {end:%Y-%m-%d %H:%M}Z (their load took "
                  f"{reuse['load_s']:.1f} s = {reuse['points_per_s']:,.0f} points/s)", flush=True)

        if args.load_only:
            return 0
        print(f"recorder online in {nodes.start('recorder'):.1f} s", flush=True)
        # up to now, not to the data's end: the rollups' coverage must join the live CQs' (which start when the
        # recorder creates them), or the history before is still served from raw points
        if args.no_backfill:
            print("back-fills skipped (--no-backfill): the data directory keeps those of an earlier run", flush=True)
        else:
            await backfill(nodes, batteries, datetime.fromtimestamp(start_s, UTC), datetime.now(UTC))
        size = data.disk_bytes(base / "influxdb" / "data", base / "influxdb" / "wal")
        print(f"on disk after back-fills: {data.human_bytes(size)}", flush=True)
        bus.enable_requests(HISTORY)
        await bus.start()
        soc = {p.battery: p.soc_floor_kwh for p in profiles}
        rows: list[Row] = []
        print(f"windows on {batteries[0]} (build median of {args.runs}; times in s; ratio = raw means / history):")
        print(HEADER, flush=True)
        async with aiohttp.ClientSession() as http:
            viewer = Viewer(nodes, bus, http, args, batteries, end, soc)
            for label in labels:
                row = await viewer.window(label, batteries[0])
                rows.append(row)
                print(row.line(), flush=True)
                if not row.kpi_cold.ok:
                    print(f"      kpi {row.kpi_cold.status}: {row.kpi_cold.note}", flush=True)
            if count > 1:
                await viewer.fleet_pages()
        final = data.disk_bytes(base / "influxdb" / "data", base / "influxdb" / "wal")
        print(f"database on disk at the end: {data.human_bytes(final)} ({final / max(points, 1):.1f} bytes a point)")
        print(targets(rows), flush=True)
    finally:
        await bus.stop()
        nodes.stop_all()
        broker.stop()
        influxd.stop()
        if args.keep or args.data_dir:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="year1hz")
    parser.add_argument("--days", type=int, default=0, help="days of history (default: the scenario's)")
    parser.add_argument("--batteries", type=int, default=0, help="batteries (default: the scenario's)")
    parser.add_argument("--runs", type=int, default=3, help="fresh-window builds per window (median)")
    parser.add_argument("--bms", action="store_true", help="also the BMS fields (about half the load rate)")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batch-lines", type=int, default=40_000)
    parser.add_argument("--windows", help="a comma-separated subset, e.g. '24 h,7 d' (default: the scenario's)")
    parser.add_argument("--no-browser", action="store_true", help="skip the page loads in Chromium")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--no-backfill", action="store_true", help="with --data-dir: keep an earlier run's back-fills")
    parser.add_argument("--load-only", action="store_true", help="stop after loading (into --data-dir, for later)")
    parser.add_argument("--data-dir", help="keep the data here; a later run with the same scenario reuses it "
                        "(no second load; the back-fills run again)")
    args = parser.parse_args()
    if args.days < 0 or args.batteries < 0 or args.runs < 1:
        parser.error("--days, --batteries >= 0 and --runs >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
