"""Latency benchmark: device publish -> stored and queryable, -> on the dashboard, and forecast -> plan -> command.

    .venv/bin/python -m bench.latency [--rates 1000,5000,10000] [--seconds 20] [--batteries 200] [--viewers 4]
                                      [--poll-ms 20] [--plan-fleets 1,100,1000] [--solver highs] [--workers 2]

Runs on its own: a private mosquitto and influxd (``deploy/stack.py``, free loopback ports, the stack's broker
config: ``max_inflight_messages 1000``, ``max_queued_messages 0``), the recorder and the renderer as processes
(``python -m nodes.<name>``, their default settings), then for each rate:

1. a paced publisher process (:mod:`bench.latency_publish`) sends ``rate x seconds`` Telemetry messages at QoS 1,
   round-robin over ``--batteries`` ids, each stamped with its send time in ``ts``;
2. **publish -> queryable**: :class:`bench.latency_probes.QueryProbe` polls InfluxDB every ``--poll-ms`` for the
   new points of ``--viewers`` sampled batteries (each gets ``rate / batteries`` messages per second, the same
   share as every other battery); "queryable" is an InfluxQL SELECT on the recorder's database returning it;
3. **publish -> dashboard**: one :class:`bench.latency_probes.DashboardProbe` (an SSE client on the renderer's
   ``GET /events?battery=..``, the default window's page: figure events too; ``--no-figures``: a page on a window
   of its own) per sampled battery records when each reading's ``telemetry`` event arrives;
4. **nothing lost**: after the publisher's last PUBACK, the bench waits until InfluxDB holds every message of the
   run (``count(soc_kwh)`` over the run's time range) and prints how long after the last publish that was;
5. CPU (% of one core over the run) and resident memory of every process.

Readings of the first second of a run are left out (the renderer's first render of a battery is not the steady
state). Then, for each ``--plan-fleets`` size, **forecast -> schedule -> first autopilot command** through a
planner process (:mod:`bench.latency_plan`). The last lines are ``targets:`` (issue 14: at 5,000 msg/s publish ->
dashboard p99 < 100 ms and publish -> queryable p99 < 500 ms). The bench, the nodes and the servers share the
machine's cores: the load average is printed with every rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench import latency_plan  # noqa: E402
from bench.latency_probes import (  # noqa: E402
    DashboardProbe,
    QueryProbe,
    cpu_seconds,
    load_average,
    pct,
    rss_mb,
    summary,
)
from bench.latency_publish import battery_id  # noqa: E402
from deploy import stack  # noqa: E402
from tests.support.nodes import NodeProcess, start_node  # noqa: E402

DB = "bench"
WARMUP_S = 1.0
TARGET_RATE = 5000
TARGET_DASHBOARD_P99_MS = 100.0
TARGET_QUERYABLE_P99_MS = 500.0
STARVED_BEHIND_MS = 100.0
"""A publisher this far behind its pace could not get the CPU: the run measured the machine's load."""


@dataclass
class RateResult:
    rate: int
    sent: int
    achieved: float
    behind_max_ms: float
    queryable_ms: list[float]
    dashboard_ms: list[float]
    dashboard_expected: int
    query_ms: list[float]
    stored: int
    drained_s: float
    cpu: dict[str, float]
    cpu_us: dict[str, float]
    rss: dict[str, float]
    load: str


class Bench:
    """The servers and nodes of one benchmark run."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.broker = stack.start_mosquitto(workdir / "mosquitto", die_with_parent=True)
        self.influxd = stack.start_influxd(workdir / "influxdb", die_with_parent=True)
        stack.create_database(self.influxd.url, DB)
        self.root = f"lat{uuid.uuid4().hex[:6]}/bess/v1"
        self.dashboard_port = stack.free_port()
        self.nodes: dict[str, NodeProcess] = {}

    def start_nodes(self) -> None:
        env = {"BESS_MQTT_PORT": str(self.broker.port), "BESS_TOPIC_ROOT": self.root, "BESS_INFLUX_URL":
               self.influxd.url, "BESS_INFLUX_DB": DB, "BESS_DASHBOARD_PORT": str(self.dashboard_port),
               "BESS_LOG_LEVEL": "WARNING"}
        if self.args.batch_delay_ms is not None:
            env["BESS_RECORDER_BATCH_MAX_DELAY_MS"] = str(self.args.batch_delay_ms)
        profile = ["-m", "cProfile", "-o", str(self.workdir / "renderer.prof")] if self.args.profile else []
        for name in ("recorder", "renderer"):
            if name == "renderer" and profile:
                self.nodes[name] = profiled_node(name, env, self.workdir / "logs", profile)
            else:
                self.nodes[name] = start_node(name, env, log_dir=self.workdir / "logs")
        for proc in self.nodes.values():
            proc.wait_online(stack.HOST, self.broker.port, self.root, timeout=60)

    def stop(self) -> None:
        stack.stop_processes(list(self.nodes.values()), 20)
        self.broker.stop()
        self.influxd.stop()

    def pids(self) -> dict[str, int]:
        pids = {name: proc.pid for name, proc in self.nodes.items()}
        for name, server in (("mosquitto", self.broker), ("influxd", self.influxd)):
            if server.pid is not None:
                pids[name] = server.pid
        return pids

    def publisher(self, rate: int, seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.latency_publish", "--port", str(self.broker.port), "--root", self.root,
             "--rate", str(rate), "--seconds", str(seconds), "--batteries", str(self.args.batteries)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
            preexec_fn=stack.request_parent_death_signal,  # noqa: PLW1509 - dies with the bench
        )

    def count(self, begin_s: float, end_s: float) -> int:
        q = (f'SELECT count("soc_kwh") FROM "telemetry" WHERE time >= {int(begin_s * 1e6)}u '
             f"AND time <= {int(end_s * 1e6)}u")
        series = stack.influx_query(self.influxd.url, q, DB)["results"][0].get("series") or []
        return int(series[0]["values"][0][1]) if series else 0

    async def wait_stored(self, begin_s: float, end_s: float, sent: int, last_s: float) -> tuple[int, float]:
        """Poll ``count`` until every message is there (or 120 s pass); (stored, seconds after ``last_s``)."""
        deadline = time.monotonic() + 120
        while True:
            stored = await asyncio.to_thread(self.count, begin_s, end_s)
            if stored >= sent or time.monotonic() > deadline:
                return stored, time.time() - last_s
            await asyncio.sleep(0.05)

    async def warm_up(self, http: aiohttp.ClientSession) -> None:
        """One reading per battery, then wait until the renderer lists every battery with it."""
        proc = self.publisher(self.args.batteries, 1.0)
        await asyncio.to_thread(proc.communicate)
        url = f"http://{stack.HOST}:{self.dashboard_port}/api/batteries"
        deadline = time.monotonic() + 120
        while True:
            async with http.get(url) as r:
                listed = [b for b in (await r.json())["batteries"] if b["telemetry_ts"]]
            if len(listed) >= self.args.batteries:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the renderer lists {len(listed)} of {self.args.batteries} batteries")
            await asyncio.sleep(0.2)

    async def run_rate(self, http: aiohttp.ClientSession, rate: int) -> RateResult:
        args = self.args
        sampled = [battery_id(i * args.batteries // args.viewers) for i in range(args.viewers)]
        since = time.time()
        url = f"http://{stack.HOST}:{self.dashboard_port}"
        viewers = [DashboardProbe(url, b, since_s=since, figures=not args.no_figures) for b in sampled]
        poller = QueryProbe(self.influxd.url, DB, sampled, poll_s=args.poll_ms / 1000, since_s=since)
        tasks = [asyncio.create_task(v.run(http)) for v in viewers]
        await asyncio.wait_for(asyncio.gather(*(v.connected.wait() for v in viewers)), 30)
        tasks.append(asyncio.create_task(poller.run(http)))
        pids = self.pids()
        proc = self.publisher(rate, args.seconds)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        wall_before = time.monotonic()
        out, _ = await asyncio.to_thread(proc.communicate)
        cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        wall = time.monotonic() - wall_before
        load = load_average()
        pub = json.loads(out.strip().splitlines()[-1])
        cpu = {name: (cpu_after[name] - cpu_before[name]) / wall * 100 for name in pids}
        cpu["publisher"] = pub["cpu_s"] / wall * 100
        cpu_us = {name: (cpu_after[name] - cpu_before[name]) / pub["sent"] * 1e6 for name in pids}
        stored, drained = await self.wait_stored(pub["first_s"], pub["last_s"], pub["sent"], pub["last_s"])
        await asyncio.sleep(0.5)  # the probes' last answers (a reading stored is on its way to the poller)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        begin, end = pub["first_s"] + WARMUP_S, pub["last_s"]
        per_battery = rate / args.batteries * (end - begin)
        return RateResult(
            rate=rate, sent=pub["sent"], achieved=pub["sent"] / max(pub["last_s"] - pub["first_s"], 1e-9),
            behind_max_ms=pub["behind_max_ms"], queryable_ms=poller.latencies_ms(begin, end),
            dashboard_ms=[ms for v in viewers for ms in v.latencies_ms(begin, end)],
            dashboard_expected=round(per_battery * len(viewers)), query_ms=poller.query_ms, stored=stored,
            drained_s=drained, load=load,
            cpu=cpu, cpu_us=cpu_us, rss={name: rss_mb(pid) for name, pid in pids.items()},
        )


def profiled_node(name: str, env: dict[str, str], logs: Path, profile: list[str]) -> NodeProcess:
    """``python -m cProfile -o .. -m nodes.<name>``: the profile is written when the node stops (SIGTERM)."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        proc = NodeProcess([sys.executable, *profile, "-m", f"nodes.{name}"], cwd=ROOT, env={**os.environ, **env},
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                           preexec_fn=stack.parent_death_preexec())
    proc.name, proc.log_path = name, log_path
    return proc


def starved(r: RateResult) -> bool:
    """True when the publisher fell behind its pace (the machine had no CPU for it): say so next to the numbers."""
    return r.behind_max_ms > STARVED_BEHIND_MS


def report(r: RateResult, args: argparse.Namespace) -> list[str]:
    lost = r.sent - r.stored
    warning = ([f"  WARNING: the publisher fell {r.behind_max_ms:.0f} ms behind its pace (> {STARVED_BEHIND_MS:.0f} "
                "ms): the machine had no CPU to spare, so these latencies measure its load; re-run on a quiet one"]
               if starved(r) else [])
    lines = [
        f"rate {r.rate:,} msg/s: sent {r.sent:,} in {args.seconds:g} s ({r.achieved:,.0f} msg/s achieved, pacing "
        f"at most {r.behind_max_ms:.0f} ms behind), {args.batteries} batteries, QoS 1; load average {r.load}",
        f"  publish -> queryable (InfluxDB SELECT, polled every {args.poll_ms:g} ms, query p50 "
        f"{pct(r.query_ms, 0.5):.1f} ms): {summary(r.queryable_ms)}",
        f"  publish -> dashboard (SSE telemetry event, {'no figures' if args.no_figures else 'with figures'}): "
        f"{summary(r.dashboard_ms)}; {len(r.dashboard_ms)} of "
        f"{r.dashboard_expected} readings of the {args.viewers} viewed batteries shown (the rest replaced by a "
        "newer one in the stream's queue)",
        f"  stored {r.stored:,} of {r.sent:,} " + ("(nothing lost)" if lost == 0 else f"({lost:,} MISSING)")
        + f", all stored {r.drained_s:.2f} s after the last publish",
        "  CPU % of one core: " + ", ".join(f"{n} {c:.0f}" for n, c in r.cpu.items())
        + "; RSS MB: " + ", ".join(f"{n} {m:.0f}" for n, m in r.rss.items()),
        "  CPU per message (us: the run's CPU / its messages; time-driven work such as the renderer's redraws is "
        "included, so it is an upper bound that shrinks as the rate grows): "
        + ", ".join(f"{n} {c:.0f}" for n, c in r.cpu_us.items()),
    ]
    return lines[:1] + warning + lines[1:]


def targets(results: list[RateResult]) -> str:
    at = [r for r in results if r.rate == TARGET_RATE]
    if not at:
        return f"targets: not checked ({TARGET_RATE:,} msg/s was not among --rates)"
    r = at[0]
    dash, query = pct(r.dashboard_ms, 0.99), pct(r.queryable_ms, 0.99)
    verdict = ("met" if dash < TARGET_DASHBOARD_P99_MS else "MISSED",
               "met" if query < TARGET_QUERYABLE_P99_MS else "MISSED")
    return (f"targets: at {TARGET_RATE:,} msg/s publish -> dashboard p99 {dash:.1f} ms (< "
            f"{TARGET_DASHBOARD_P99_MS:.0f} ms: {verdict[0]}), publish -> queryable p99 {query:.1f} ms (< "
            f"{TARGET_QUERYABLE_P99_MS:.0f} ms: {verdict[1]}); load average {r.load}"
            + (" (STARVED run: the publisher fell behind its pace; not a verdict on the system)" if starved(r) else ""))


async def run(args: argparse.Namespace, workdir: Path) -> int:
    bench = Bench(args, workdir)
    results: list[RateResult] = []
    try:
        bench.start_nodes()
        print(f"latency bench: {os.cpu_count()} cores, load average {load_average()}; recorder + renderer "
              f"(default settings{'' if args.batch_delay_ms is None else f', batch delay {args.batch_delay_ms} ms'})"
              f", {args.viewers} viewed/sampled batteries of {args.batteries}; the first {WARMUP_S:g} s of each "
              "run is left out", flush=True)
        async with aiohttp.ClientSession() as http:
            await bench.warm_up(http)
            for rate in args.rates:
                result = await bench.run_rate(http, rate)
                results.append(result)
                print("\n".join(report(result, args)), flush=True)
        stack.stop_processes(list(bench.nodes.values()), 20)
        bench.nodes.clear()
        for n in args.plan_fleets:
            plan = await latency_plan.measure(bench.broker.port, n, args.solver, args.workers, workdir)
            print("\n".join(plan.lines(args.solver, args.workers)) + f"; load average {load_average()}", flush=True)
    finally:
        bench.stop()
    print(targets(results))
    return 0 if all(r.stored == r.sent for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--rates", type=ints, default=[1000, 5000, 10000], help="msg/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="publishing time per rate (default 20)")
    parser.add_argument("--batteries", type=int, default=200, help="battery ids the telemetry is spread over")
    parser.add_argument("--viewers", type=int, default=4, help="sampled batteries: SSE clients and polled ids")
    parser.add_argument("--no-figures", action="store_true",
                        help="viewers on a window of their own (no figure events in their streams)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="InfluxDB poll interval (default 20 ms)")
    parser.add_argument("--batch-delay-ms", type=int, default=None,
                        help="BESS_RECORDER_BATCH_MAX_DELAY_MS for the recorder (default: its own default)")
    parser.add_argument("--plan-fleets", type=ints, default=[1, 100, 1000], help="planner fleet sizes ('' none)")
    parser.add_argument("--solver", default="highs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs) afterwards")
    parser.add_argument("--profile", action="store_true",
                        help="run the renderer under cProfile (<temp dir>/renderer.prof; implies --keep)")
    args = parser.parse_args()
    if args.viewers > args.batteries:
        parser.error("--viewers must not exceed --batteries")
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    code = asyncio.run(run(args, workdir))
    if args.keep or args.profile:
        print(f"logs: {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
