"""Soak: 1,000 simulated batteries at 1 Hz with every node of ``deploy/up`` running, for a few minutes.

Run: ``.venv/bin/python -m bench.soak [--batteries 1000] [--interval 1] [--duration 180] [--keep]``.

It starts a private stack with ``deploy/stack.py up`` itself (the same command as ``deploy/up``: mosquitto,
influxd and every default node as its own process, on free loopback ports, under a temp ``BESS_VAR_DIR``): the
simulator with ``BESS_SIM_COUNT`` batteries of varied specs (``BESS_SIM_SPECS=varied``) ticking every
``--interval`` s, the market's synthetic prices, the planner with HiGHS in 2 workers and the autopilot on (as
the README recommends for a fleet), recorder, renderer, gateway, homeassistant and alarms. Every node reports
its status every 5 s (``BESS_STATUS_INTERVAL_S=5``; the default is 30).

While it runs it samples each process group's CPU (% of one core) and RSS every second
(:class:`tests.support.soak.ProcessSampler`), the recorder's ``pending`` and the simulator's ``unconfirmed``
(readings not yet confirmed stored: the whole backlog from the device to the database) from their statuses, and
the age of the newest stored reading of 50 batteries when the recorder confirms it (``battery/<id>/stored``).
Then it stops the simulator, waits for the recorder to store what is left and checks that every reading the
simulator published (its ``readings`` counter) is in InfluxDB: ``lost: 0``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from deploy.launch import running_pids  # noqa: E402
from deploy.settings import UpConfig  # noqa: E402
from nodes.simulator.fleet import fleet_ids  # noqa: E402
from tests.support.soak import BusWatch, ProcessSampler, percentile, stored_count, usage_table  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

ORDER = ("simulator", "recorder", "planner", "renderer", "gateway", "homeassistant", "alarms", "market",
         "mosquitto", "influxd")


#: every node's status interval in the run (default 30 s): the recorder's and the simulator's backlog counters are
#: sampled from their statuses; 5 s gives 36 samples in 3 minutes without making statuses a load of their own
STATUS_INTERVAL_S = 5


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stack_env(args: argparse.Namespace, var_dir: Path) -> dict[str, str]:
    """The settings of the private stack: free ports, the fleet, the planner for a fleet."""
    gateway = f"{stack.free_port()},{stack.free_port()}"
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BESS_")},
        "BESS_VAR_DIR": str(var_dir),
        "BESS_MQTT_PORT": str(stack.free_port()),
        "BESS_INFLUX_PORT": str(stack.free_port()),
        "BESS_GATEWAY_PORTS": gateway,
        "BESS_DASHBOARD_PORT": str(stack.free_port()),
        "BESS_UP_TIMEOUT": "90",
        "BESS_BATTERIES": fleet_ids(args.batteries)[0],  # the alarms node watches it from its start
        "BESS_SIM_COUNT": str(args.batteries),
        "BESS_SIM_SPECS": "varied",
        "BESS_SIM_TELEMETRY_INTERVAL_S": str(args.interval),
        "BESS_PLANNER_SOLVER": "highs",
        "BESS_PLANNER_WORKERS": "2",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_STATUS_INTERVAL_S": str(STATUS_INTERVAL_S),
    }


def up(env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with log.open("ab") as out:
        code = subprocess.run([sys.executable, "deploy/stack.py", "up"], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise SystemExit(f"deploy/stack.py up failed ({code}); see {log}")
    return time.monotonic() - started


def down(env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run([sys.executable, "deploy/stack.py", "down"], cwd=ROOT, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=False)


def run(args: argparse.Namespace, workdir: Path) -> int:
    var_dir = workdir / "var"
    env = stack_env(args, var_dir)
    up_log = workdir / "up.log"
    print(f"{args.batteries} batteries every {args.interval:g} s ({args.batteries / args.interval:,.0f} readings/s), "
          f"{args.duration:.0f} s, every node of deploy/up; load average before: {loadavg()}")
    since = datetime.now(UTC)
    try:
        took = up(env, up_log)
        cfg = UpConfig.from_env(ROOT, env)
        pids = running_pids(cfg)
        names = [n for n in ORDER if n in pids] + [n for n in pids if n not in ORDER]
        print(f"up in {took:.1f} s: {', '.join(names)}")
        sampled = fleet_ids(args.batteries)[:: max(1, args.batteries // 50)]
        watch = BusWatch(cfg.mqtt_port, cfg.topic_root, sampled)
        watch.start()
        sampler = ProcessSampler({n: pids[n] for n in names}).start()
        time.sleep(args.duration)  # the run itself: sampled meanwhile by the two threads
        sampler.stop()
        load_during = loadavg()
        unconfirmed = watch.values("simulator", "unconfirmed")
        pending = watch.values("recorder", "pending")
        stack.terminate_pids([pids["simulator"]], timeout=20)
        wait_for(lambda: watch.states.get("simulator") == "offline", timeout=30, what="the simulator's last status")
        readings = watch.counter("simulator", "readings") or 0
        caught_up = time.monotonic()
        try:
            wait_for(lambda: sum(stored_count(cfg.influx_url, cfg.influx_db, since).values()) >= readings,
                     timeout=120, interval=1.0, what="the recorder to store every reading")
        except AssertionError as exc:
            print(f"not caught up: {exc}")
        drained_s = time.monotonic() - caught_up
        counts = stored_count(cfg.influx_url, cfg.influx_db, since)
        watch.stop()
        stored = sum(counts.values())
        sim = watch.latest.get("simulator", {})
        recorder = watch.latest.get("recorder", {})
        print()
        print("\n".join(usage_table(sampler.usage)))
        print()
        lag = watch.lag_s
        print(f"readings published {readings:,} by {len(counts):,} batteries ({readings / args.duration:,.0f}/s); "
              f"stored {stored:,}; ticks {sim.get('ticks', 0)}, skipped {sim.get('ticks_skipped', 0)}, "
              f"longest tick {sim.get('tick_work_ms_max', 0)} ms, latest start {sim.get('tick_late_ms_max', 0)} ms")
        print(f"backlog: simulator unconfirmed max {max(unconfirmed, default=0):,}, at the end "
              f"{unconfirmed[-1] if unconfirmed else 0:,}; recorder pending max {max(pending, default=0):,}, "
              f"at the end {pending[-1] if pending else 0:,}; recorder batches {recorder.get('batches', 0):,}, "
              f"retries {recorder.get('retries', 0)}, rejected {recorder.get('rejected', 0)}; drained after the stop "
              f"in {drained_s:.1f} s")
        received = {node: f"{counters.get('received', 0)}/{counters.get('published', 0)}"
                    for node, counters in sorted(watch.latest.items())}
        print(f"broker messages queued for sessions or in flight (in store less retained), every 10 s: "
              f"{', '.join(f'{n:,}' for n in watch.broker_queued())}; retained "
              f"{watch.broker_retained[-1] if watch.broker_retained else 0:,}")
        print(f"messages received/published per node by its last status: {received}")
        print(f"lag (reading time -> stored mark seen, 1 s confirm interval included): p50 "
              f"{percentile(lag, 0.5):.2f} s, p99 {percentile(lag, 0.99):.2f} s, max {max(lag, default=0):.2f} s "
              f"({len(lag):,} marks of {len(sampled)} batteries)")
        print(f"load average during the run: {load_during}")
        print(f"lost: {readings - stored}")
        return 0 if readings == stored else 1
    finally:
        down(env, up_log)
        if args.keep:
            print(f"logs: {var_dir / 'log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batteries", type=int, default=1000, help="simulated batteries (default 1000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings (default 1)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds to run (default 180)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (node logs) afterwards")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    try:
        return run(args, workdir)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
