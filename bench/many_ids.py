"""Many new battery ids at once: does a burst of ids slow the batteries already there?

Runs on its own: a private mosquitto and influxd (deploy/stack.py), then the gateway, recorder, renderer, planner,
homeassistant, alarms and market (synthetic prices) nodes and the simulator for ``battery-1`` only, each as a
process. After a baseline of ``--baseline`` seconds it writes ``--ids`` new battery ids over HTTP (the gateway's
``POST /write`` with the seed's body and ``battery``; ``--concurrency`` requests in flight) and watches for
``--after`` seconds more. Measured in both phases, from the outside:

* battery-1's live figure update interval: the times its retained ``figure/soc`` topic is published (median and
  maximum gap, ``mosquitto_sub``), next to the longest gap in its telemetry (the input: a loaded machine delays
  the simulator too);
* history requests the nodes send (every ``history/request`` message, counted for battery-1 and for other ids);
* the index page ``GET /`` size, plain and gzipped, and ``GET /api/fleet``;
* the planner's status reason length (its retained ``node/planner/status``);
* Home Assistant discovery publishes (``homeassistant/#``);
* each node's CPU (% of one core, /proc) and the renderer's resident memory.

Prints one line per phase and the ratios of the burst phase against the baseline, with the load average.

    .venv/bin/python bench/many_ids.py [--ids 2000] [--baseline 40] [--after 90] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402

NODES = ("recorder", "gateway", "renderer", "planner", "homeassistant", "alarms", "market", "simulator")
HA_PREFIX = "bench-ha"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages."""
    return Path("/proc/loadavg").read_text().split()[:3]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """A ``mosquitto_sub`` printing ``<unix time> <payload or topic>`` lines, read by a thread into a list."""

    def __init__(self, port: int, topic: str, fmt: str) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-t", topic,
             "-F", fmt], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, out: IO[bytes] | None) -> None:
        assert out is not None
        for raw in out:
            stamp, _, rest = raw.decode(errors="replace").rstrip("\n").partition(" ")
            try:
                self.lines.append((float(stamp), rest))
            except ValueError:
                continue

    def between(self, begin: float, end: float) -> list[tuple[float, str]]:
        return [(t, r) for t, r in list(self.lines) if begin <= t < end]

    def stop(self) -> None:
        stack.stop_process(self.proc, 5)


def retained(port: int, topic: str) -> str:
    """The retained payload of ``topic`` (empty if none within 3 s)."""
    done = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-t", topic,
                           "-C", "1", "-W", "3", "-F", "%p"], capture_output=True, check=False)
    return done.stdout.decode(errors="replace").strip()


@dataclass
class Phase:
    name: str
    seconds: float
    figure_gaps_s: list[float] = field(default_factory=list)
    telemetry_gap_max_s: float = 0.0
    gap_max_at_s: float = 0.0
    """When the longest figure gap began, seconds after the phase's start (the burst's)."""
    history_b1: int = 0
    history_other: int = 0
    history_other_ids: int = 0
    index_bytes: int = 0
    index_gz_bytes: int = 0
    index_ms: float = 0.0
    fleet_api_bytes: int = 0
    planner_reason_chars: int = 0
    ha_publishes: int = 0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    renderer_rss_mb: float = 0.0
    load: str = ""

    @property
    def gap_median(self) -> float:
        return statistics.median(self.figure_gaps_s) if self.figure_gaps_s else float("nan")

    @property
    def gap_max(self) -> float:
        return max(self.figure_gaps_s) if self.figure_gaps_s else float("nan")


def gaps(times: list[float], begin: float, end: float) -> list[float]:
    """Gaps between figure publishes in [begin, end), counting the open gap up to ``end`` (a figure that
    stops updating must show as a long gap, not as no data)."""
    inside = sorted(t for t in times if begin <= t < end)
    if not inside:
        return [end - begin]
    return [b - a for a, b in itertools.pairwise(inside)] + [end - inside[-1]]


def gap_start(times: list[float], begin: float, end: float) -> float:
    """When the longest gap of :func:`gaps` began."""
    inside = [begin, *sorted(t for t in times if begin <= t < end), end]
    return max(itertools.pairwise(inside), key=lambda p: p[1] - p[0])[0]


async def write_ids(gateway: str, ids: list[str], concurrency: int) -> tuple[float, dict[int, int]]:
    """POST /write once per id (the seed's body with ``battery``); seconds taken and statuses by code."""
    codes: dict[int, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for battery in ids:
        queue.put_nowait(battery)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            battery = queue.get_nowait()
            body = {"SOC": 500, "target_discharge": 0, "target_charge": 100, "battery": battery,
                    "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
            try:
                async with http.post(f"{gateway}/write", json=body) as response:
                    await response.read()
                    codes[response.status] = codes.get(response.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError):
                codes[0] = codes.get(0, 0) + 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return time.perf_counter() - started, codes


async def index_size(http: aiohttp.ClientSession, base: str) -> tuple[int, int, float, int]:
    """(plain bytes, gzipped bytes, ms, /api/fleet bytes) of the index page."""
    started = time.perf_counter()
    async with http.get(f"{base}/", headers={"Accept-Encoding": "identity"}) as response:
        plain = await response.read()
    ms = (time.perf_counter() - started) * 1000
    async with http.get(f"{base}/api/fleet") as response:
        api = await response.read()
    return len(plain), len(gzip.compress(plain, 6)), ms, len(api)


async def measure(args: argparse.Namespace, broker_port: int, influx_url: str, logs: Path) -> list[Phase]:
    root = "bench-ids/bess/v1"
    db = "many_ids"
    stack.create_database(influx_url, db)
    dash, gw = stack.free_port(), stack.free_port()
    env = {
        **os.environ,
        "BESS_MQTT_PORT": str(broker_port),
        "BESS_INFLUX_URL": influx_url,
        "BESS_INFLUX_DB": db,
        "BESS_TOPIC_ROOT": root,
        "BESS_DASHBOARD_PORT": str(dash),
        "BESS_GATEWAY_PORTS": str(gw),
        "BESS_BATTERIES": "battery-1",
        "BESS_MARKET_SOURCE": "synthetic",
        "BESS_HA_DISCOVERY_PREFIX": HA_PREFIX,
        "BESS_PLANNER_WORKERS": "1",
        "BESS_LOG_LEVEL": "WARNING",
    }
    figures = Watch(broker_port, f"{root}/battery/battery-1/figure/soc", "%U %t")
    telemetry = Watch(broker_port, f"{root}/battery/battery-1/telemetry", "%U %t")
    history = Watch(broker_port, f"{root}/history/request", "%U %p")
    ha = Watch(broker_port, f"{HA_PREFIX}/#", "%U %t")
    watches = (figures, telemetry, history, ha)
    processes = {
        name: subprocess.Popen(  # noqa: ASYNC220 - start-up only
            [sys.executable, "-m", f"nodes.{name}"], env=env, cwd=ROOT,
            stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
        )
        for name in NODES
    }
    base = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while not figures.lines:
            if time.monotonic() > deadline:
                raise SystemExit(f"battery-1's figures never arrived; see {logs}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(args.warmup)
        phases: list[Phase] = []
        async with aiohttp.ClientSession() as http:
            for name, seconds in (("baseline", args.baseline), (f"+{args.ids} ids", args.after)):
                phase = Phase(name, seconds)
                cpu0 = {n: cpu_seconds(p.pid) for n, p in processes.items()}
                t0 = time.time()
                if name != "baseline":
                    ids = [f"burst-{i:05d}" for i in range(args.ids)]
                    took, codes = await write_ids(f"http://127.0.0.1:{gw}", ids, args.concurrency)
                    print(f"wrote {args.ids} ids in {took:.1f} s: {codes}", flush=True)
                await asyncio.sleep(max(0.0, t0 + seconds - time.time()))
                t1 = time.time()
                phase.cpu_pct = {n: (cpu_seconds(p.pid) - cpu0[n]) / (t1 - t0) * 100 for n, p in processes.items()}
                phase.renderer_rss_mb = rss_mb(processes["renderer"].pid)
                phase.figure_gaps_s = gaps([t for t, _ in figures.lines], t0, t1)
                phase.gap_max_at_s = gap_start([t for t, _ in figures.lines], t0, t1) - t0
                phase.telemetry_gap_max_s = max(gaps([t for t, _ in telemetry.lines], t0, t1))
                others: set[str] = set()
                for _, payload in history.between(t0, t1):
                    try:
                        battery = json.loads(payload).get("battery")
                    except ValueError:
                        battery = None
                    if battery == "battery-1":
                        phase.history_b1 += 1
                    elif battery:
                        phase.history_other += 1
                        others.add(battery)
                phase.history_other_ids = len(others)
                phase.ha_publishes = len(ha.between(t0, t1))
                phase.index_bytes, phase.index_gz_bytes, phase.index_ms, phase.fleet_api_bytes = (
                    await index_size(http, base))
                status = retained(broker_port, f"{root}/node/planner/status")
                try:
                    phase.planner_reason_chars = len(json.loads(status).get("reason") or "")
                except ValueError:
                    phase.planner_reason_chars = -1
                phase.load = " ".join(loadavg())
                phases.append(phase)
                print(f"{name}: done", flush=True)
        return phases
    finally:
        stack.stop_processes(list(processes.values()), 10)
        for watch in watches:
            watch.stop()


def report(phases: list[Phase]) -> None:
    print(f"{'phase':>12} {'s':>4} {'fig gap med':>11} {'max':>6} {'tel max':>7} {'hist b1':>7} {'hist other':>10} "
          f"{'other ids':>9} {'index kB':>8} {'gz kB':>6} {'index ms':>8} {'api kB':>7} {'reason':>6} "
          f"{'HA pubs':>7} {'rend MB':>7}")
    for p in phases:
        print(f"{p.name:>12} {p.seconds:>4.0f} {p.gap_median:>11.1f} {p.gap_max:>6.1f} {p.telemetry_gap_max_s:>7.1f} "
              f"{p.history_b1:>7} "
              f"{p.history_other:>10} {p.history_other_ids:>9} {p.index_bytes / 1024:>8.0f} "
              f"{p.index_gz_bytes / 1024:>6.0f} {p.index_ms:>8.0f} {p.fleet_api_bytes / 1024:>7.0f} "
              f"{p.planner_reason_chars:>6} {p.ha_publishes:>7} {p.renderer_rss_mb:>7.0f}")
    print("longest figure gap began at: " + ", ".join(f"{p.name} +{p.gap_max_at_s:.0f} s" for p in phases))
    print("CPU % of one core per node:")
    for p in phases:
        print(f"  {p.name:>12}: " + ", ".join(f"{n} {v:.0f}" for n, v in p.cpu_pct.items()) + f"  (load {p.load})")
    base, burst = phases
    print(f"ratio burst/baseline: battery-1 figure gap median x{burst.gap_median / base.gap_median:.1f}, "
          f"max x{burst.gap_max / base.gap_max:.1f}; history requests x"
          f"{(burst.history_b1 + burst.history_other) / max(1, base.history_b1 + base.history_other):.1f}; "
          f"index x{burst.index_bytes / max(1, base.index_bytes):.1f}; renderer CPU "
          f"x{burst.cpu_pct['renderer'] / max(0.1, base.cpu_pct['renderer']):.1f}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=2000)
    parser.add_argument("--baseline", type=float, default=40.0, help="seconds measured before the burst")
    parser.add_argument("--after", type=float, default=90.0, help="seconds measured from the burst's start")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bess-bench-ids-"))
    logs = base / "logs"
    logs.mkdir()
    broker = stack.start_mosquitto(base / "mosquitto")
    influxd = stack.start_influxd(base / "influxdb")
    try:
        phases = await measure(args, broker.port, influxd.url, logs)
    finally:
        broker.stop()
        influxd.stop()
    report(phases)
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
