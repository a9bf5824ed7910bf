"""Measured limits the other benchmarks do not give: the broker's QoS 1 rate and InfluxDB 1.x's write rate.

    .venv/bin/python -m bench.limits [--broker-n 200000] [--influx-points 1000000] [--batch 5000]

Runs on its own (``deploy/stack.py``: a private mosquitto with the stack's config and a private influxd on free
loopback ports) and prints one line per limit, with the load average:

* **broker**: ``mosquitto_pub -l -q 1`` (C client, one connection, one line of stdin = one message) publishes N
  telemetry payloads (the JSON a device sends, ~130 B) to one topic per battery of 100, and ``mosquitto_sub -q 1``
  receives them; the rate is the subscriber's first to last message. No Python on the path: this is mosquitto's
  own QoS 1 forwarding rate on this machine (publisher -> broker -> subscriber, both acknowledged).
* **influxdb**: POST /write?precision=u of line protocol as the recorder writes it (``telemetry,battery=..`` with
  six fields), ``--batch`` points per request, sequential requests from one writer, then two writers at once;
  points/s and fields/s (6 per point) from the first request to the last answer.

* **bus intake**: one node's bus (:class:`nodes.runtime.bus.Bus`: gmqtt, QoS 1, decode, dispatch) with a
  handler that does nothing receives N telemetry messages from the same C publishers; CPU microseconds per
  message (this process's CPU time over the run, load-independent) and the rate. Every node pays this per
  message before its own work; ``--no-coalesce`` measures it with one socket write per PUBACK (gmqtt's own way,
  before :func:`nodes.runtime.gmqtt_internals.coalesce_pubacks`).

The other limits of README "Scaling out" come from ``bench/ingest.py`` (recorder replicas), ``bench/fleet.py``
(planner) and ``bench/latency.py`` (renderer and end-to-end latency).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.latency_probes import load_average  # noqa: E402
from deploy import stack  # noqa: E402
from nodes.contract.messages import Telemetry  # noqa: E402
from nodes.contract.topics import TELEMETRY  # noqa: E402
from nodes.recorder.points import telemetry_line  # noqa: E402
from nodes.runtime import gmqtt_internals  # noqa: E402
from nodes.runtime.bus import Bus, Delivery, MqttSettings  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
BATTERIES = 100
FIELDS_PER_POINT = 6  # soc_kwh, power_kw, target_charge_kw, target_discharge_kw, source, absent


def _telemetry(i: int) -> Telemetry:
    return Telemetry(ts=T0 + timedelta(milliseconds=i), soc_kwh=500.0 + (i % 1000) / 10, power_kw=-100.5,
                     target_charge_kw=100.0, target_discharge_kw=50.0)


def _publishers(port: int, root: str, n: int, payload: bytes) -> list[threading.Thread]:
    """Four ``mosquitto_pub -l -q 1`` (one battery topic each) fed n / 4 lines each, started in threads."""
    def feed(proc: subprocess.Popen[bytes], count: int) -> None:
        assert proc.stdin is not None
        proc.stdin.write((payload + b"\n") * count)
        proc.stdin.close()
        proc.wait()

    threads = []
    for k in range(4):
        pub = subprocess.Popen(
            ["mosquitto_pub", "-p", str(port), "-q", "1", "-l", "-t",
             TELEMETRY.name(root=root, battery=f"b{k:03d}")],
            stdin=subprocess.PIPE, preexec_fn=stack.request_parent_death_signal,  # noqa: PLW1509
        )
        threads.append(threading.Thread(target=feed, args=(pub, n // 4)))
    for t in threads:
        t.start()
    return threads


async def bus_intake(port: int, n: int) -> tuple[float, float]:
    """(CPU us per message, msg/s) of a Bus receiving n telemetry messages with a no-op handler."""
    root = f"intake{time.monotonic_ns() % 10**6}/bess/v1"
    bus = Bus("limits", MqttSettings(mqtt_port=port, topic_root=root), persistent=False)
    done = asyncio.Event()
    seen = 0
    first = [0.0, 0.0]

    async def handler(_params: dict[str, str], _message: Telemetry, _delivery: Delivery) -> None:
        nonlocal seen
        if seen == 0:
            first[:] = [time.perf_counter(), time.process_time()]
        seen += 1
        if seen == n:
            done.set()

    bus.subscribe(TELEMETRY, handler)
    await bus.start()
    threads = _publishers(port, root, n, TELEMETRY.encode(_telemetry(0)))
    await asyncio.wait_for(done.wait(), 600)
    wall, cpu = time.perf_counter() - first[0], time.process_time() - first[1]
    for t in threads:
        await asyncio.to_thread(t.join)
    await bus.stop()
    return cpu / n * 1e6, n / wall


def broker_rate(port: int, n: int) -> tuple[float, int]:
    """(msg/s subscriber first -> last, payload bytes) of N QoS 1 messages through mosquitto, C clients only."""
    root = "limits/bess/v1"
    payload = TELEMETRY.encode(_telemetry(0))
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-q", "1", "-C", str(n + 1), "-F", "%U", "-t", f"{root}/probe",
         "-t", TELEMETRY.filter(root=root)],
        stdout=subprocess.PIPE, text=True, preexec_fn=stack.request_parent_death_signal,  # noqa: PLW1509
    )
    assert sub.stdout is not None
    with stack.MiniMqtt(stack.HOST, port) as client:  # retained: the subscriber is up once it prints the probe
        client.publish(f"{root}/probe", b"probe", qos=1, retain=True)
    sub.stdout.readline()
    # -l publishes every stdin line to one topic: 4 publishers, one battery topic each (what a gateway or a bridge
    # does: few connections, many messages)
    threads = _publishers(port, root, n, payload)
    out, _ = sub.communicate(timeout=600)
    for t in threads:
        t.join()
    stamps = [float(s) for s in out.split()]
    if len(stamps) != n:
        raise RuntimeError(f"mosquitto_sub got {len(stamps)} of {n}")
    return n / (stamps[-1] - stamps[0]), len(payload)


def influx_rate(url: str, points: int, batch: int, writers: int) -> float:
    """Points/s of ``points`` telemetry points written in ``batch``-point requests by ``writers`` threads."""
    db = f"limits{writers}"
    stack.create_database(url, db)
    bodies = []
    for start in range(0, points, batch):
        lines = [telemetry_line(f"b{i % BATTERIES:03d}", _telemetry(i)) for i in range(start, min(points, start +
                                                                                                   batch))]
        bodies.append("\n".join(lines).encode())
    target = f"{url}/write?db={db}&precision=u"

    def write(share: list[bytes]) -> None:
        for body in share:
            with urllib.request.urlopen(urllib.request.Request(target, data=body, method="POST"), timeout=60) as r:
                if r.status != 204:
                    raise RuntimeError(f"write answered {r.status}")

    threads = [threading.Thread(target=write, args=(bodies[k::writers],)) for k in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    counted = stack.influx_query(url, 'SELECT count("soc_kwh") FROM "telemetry"', db)["results"][0]["series"]
    if int(counted[0]["values"][0][1]) != points:
        raise RuntimeError(f"influxd holds {counted} of {points} points")
    return points / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker-n", type=int, default=200_000, help="messages through the broker (multiple of 4)")
    parser.add_argument("--influx-points", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000, help="points per write request (the recorder's batch)")
    parser.add_argument("--bus-n", type=int, default=100_000, help="messages into one node's bus")
    parser.add_argument("--no-coalesce", action="store_true", help="bus intake with one socket write per PUBACK")
    args = parser.parse_args()
    args.broker_n -= args.broker_n % 4
    args.bus_n -= args.bus_n % 4
    if args.no_coalesce:
        gmqtt_internals.coalesce_pubacks = lambda: None  # what Bus() calls: gmqtt's one write per PUBACK
    workdir = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    broker = stack.start_mosquitto(workdir / "mosquitto", die_with_parent=True)
    influxd = stack.start_influxd(workdir / "influxdb", die_with_parent=True)
    try:
        rate, size = broker_rate(broker.port, args.broker_n)
        print(f"broker (mosquitto QoS 1, mosquitto_pub -l x4 -> mosquitto_sub, {size} B payloads): {rate:,.0f} msg/s "
              f"({args.broker_n:,} messages); load average {load_average()}", flush=True)
        us, rate = asyncio.run(bus_intake(broker.port, args.bus_n))
        acks = "one write each" if args.no_coalesce else "coalesced per loop turn"
        print(f"bus intake (one node's Bus, QoS 1, no-op handler, PUBACKs {acks}): {us:.1f} us CPU per message, "
              f"{rate:,.0f} msg/s ({args.bus_n:,} messages); load average {load_average()}", flush=True)
        for writers in (1, 2):
            points = influx_rate(influxd.url, args.influx_points, args.batch, writers)
            print(f"influxdb 1.6 write ({writers} writer(s), {args.batch:,} points per request, line protocol as the "
                  f"recorder writes it): {points:,.0f} points/s, {points * FIELDS_PER_POINT:,.0f} fields/s "
                  f"({args.influx_points:,} points); load average {load_average()}", flush=True)
    finally:
        broker.stop()
        influxd.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
