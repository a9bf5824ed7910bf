"""Ingest benchmark: how close does the at-least-once recorder get to the raw broker rate?

Starts its own mosquitto and influxd in a temp dir (``deploy/stack.py``) and the recorder as a subprocess
(``python -m nodes.recorder``), then publishes N telemetry messages (QoS 1, distinct timestamps, pre-encoded)
from one Python publisher as fast as it can. Two consumers read the same stream at the same time:

1. raw: ``mosquitto_sub -q 1 -C N`` (C, QoS 1, prints nothing but timestamps): first to last message;
2. recorder: from the first message published until ``count(soc_kwh) == N`` in InfluxDB, i.e. every message
   decoded, written and acknowledged.

The last line is ``ratio: 0.NN`` (recorder rate / raw rate).

    .venv/bin/python bench/ingest.py [-n 100000] [--batteries 10] [--separate] [--recorders 1]

``--separate`` runs the raw subscriber and the recorder in two passes instead of side by side, so neither
competes with the other for the two cores (each pass publishes the N messages again, to a fresh database).
``--recorders K`` runs K recorders in one MQTT 5 shared subscription group (``$share/recorder/...``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gmqtt  # noqa: E402
from gmqtt.storage import PersistentStorage  # noqa: E402

from deploy import stack  # noqa: E402
from nodes.contract.messages import Telemetry  # noqa: E402
from nodes.contract.topics import TELEMETRY  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MOSQUITTO_DEFAULT_INFLIGHT = 20


@dataclass
class Stack:
    broker: stack.Mosquitto
    influxd: stack.Influxd
    root: str


@dataclass(kw_only=True, eq=False)
class _Broker(stack.Mosquitto):
    """deploy/stack.py's mosquitto, optionally with a larger ``max_inflight_messages``."""

    inflight: int = 0

    def config_text(self) -> str:
        extra = f"max_inflight_messages {self.inflight}\n" if self.inflight else ""
        return super().config_text() + extra


def start_broker(base_dir: Path, inflight: int) -> stack.Mosquitto:
    broker = _Broker(base_dir=base_dir, port=stack.free_port(), inflight=inflight, die_with_parent=True)
    return broker.start()


def payloads(n: int, batteries: int, root: str) -> list[tuple[str, bytes]]:
    """N (topic, JSON) pairs with distinct timestamps, round-robin over the batteries."""
    topics = [TELEMETRY.name(root=root, battery=f"b{b:02d}") for b in range(batteries)]
    return [
        (
            topics[i % batteries],
            TELEMETRY.encode(
                Telemetry(
                    ts=T0 + timedelta(milliseconds=i),
                    soc_kwh=500.0 + (i % 1000) / 10,
                    power_kw=-100.5,
                    target_charge_kw=100.0,
                    target_discharge_kw=50.0,
                )
            ),
        )
        for i in range(n)
    ]


class _Window(PersistentStorage):  # type: ignore[misc]
    """gmqtt's outbound QoS 1 store, plus an event for "fewer than ``limit`` messages await their PUBACK"."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.room = asyncio.Event()
        self.room.set()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if len(self._messages) >= self.limit:
            self.room.clear()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        if len(self._messages) <= self.limit // 2:
            self.room.set()


async def publish(services: Stack, messages: list[tuple[str, bytes]], window: int) -> tuple[float, float]:
    """Publish everything at QoS 1 from one gmqtt client, keeping at most ``window`` messages unacknowledged
    (below the broker's receive maximum, which gmqtt would otherwise overflow); return (start, end), end being
    the broker's PUBACK of the last message."""
    storage = _Window(window)
    client = gmqtt.Client(f"bench-pub-{uuid.uuid4().hex[:6]}", persistent_storage=storage)
    await client.connect(stack.HOST, services.broker.port)
    started = time.time()
    for topic, payload in messages:
        if not storage.room.is_set():
            await storage.room.wait()
        client.publish(topic, payload, qos=1)
    await storage.wait_empty()
    finished = time.time()
    await client.disconnect()
    return started, finished


def start_raw_subscriber(services: Stack, n: int) -> subprocess.Popen[str]:
    """mosquitto_sub at QoS 1 on the telemetry filter; returns once it is subscribed (a retained probe arrived)."""
    probe = f"{services.root}/bench/probe"
    with stack.MiniMqtt(stack.HOST, services.broker.port) as client:
        client.publish(probe, b"probe", qos=1, retain=True)
    proc = subprocess.Popen(
        [
            "mosquitto_sub", "-p", str(services.broker.port), "-q", "1", "-V", "mqttv5", "-C", str(n + 1),
            "-F", "%t %U", "-t", probe, "-t", TELEMETRY.filter(root=services.root),
        ],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=stack.request_parent_death_signal,  # noqa: PLW1509 - dies with the bench
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith(probe):
        raise RuntimeError(f"mosquitto_sub did not see the probe: {first!r}")
    return proc


def raw_result(proc: subprocess.Popen[str], n: int) -> tuple[float, float]:
    """(first, last) receive times of the N messages mosquitto_sub printed."""
    out, _ = proc.communicate(timeout=600)
    stamps = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line]
    if len(stamps) != n:
        raise RuntimeError(f"mosquitto_sub got {len(stamps)} of {n} messages")
    return stamps[0], stamps[-1]


def start_recorders(
    services: Stack, db: str, count: int, log_dir: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Append ``count`` recorder processes to ``procs`` (one shared subscription group when more than one) and
    wait until all are online."""
    node_ids = []
    for k in range(count):
        node_id = f"recorder-bench-{uuid.uuid4().hex[:6]}"
        env = {
            **os.environ,
            "BESS_MQTT_PORT": str(services.broker.port),
            "BESS_INFLUX_URL": services.influxd.url,
            "BESS_INFLUX_DB": db,
            "BESS_TOPIC_ROOT": services.root,
            "BESS_NODE_ID": node_id,
            "BESS_LOG_LEVEL": "WARNING",
        }
        if count > 1:
            env["BESS_RECORDER_SHARE_GROUP"] = "recorder"
        log = (log_dir / f"recorder-{k}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "nodes.recorder"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=stack.request_parent_death_signal,  # noqa: PLW1509 - no leftover recorder on a crash
            )
        )
        node_ids.append(node_id)
    deadline = time.monotonic() + 30
    for node_id, proc in zip(node_ids, procs, strict=True):
        topic = f"{services.root}/node/{node_id}/status"
        while b'"online"' not in stack.read_retained(stack.HOST, services.broker.port, topic, 1.0).get(topic, b""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"recorder {node_id} did not come online; see {log_dir}")
            time.sleep(0.05)


def influx_count(services: Stack, db: str) -> int:
    result = stack.influx_query(services.influxd.url, 'SELECT count("soc_kwh") FROM "telemetry"', db)
    series = result["results"][0].get("series") or []
    return int(series[0]["values"][0][1]) if series else 0


def wait_stored(services: Stack, db: str, n: int, timeout: float = 900) -> float:
    """Poll InfluxDB until ``count == n``; return the time it was first seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = influx_count(services, db)
        if seen >= n:
            if seen != n:
                raise RuntimeError(f"{seen} points for {n} messages")
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {n} points after {timeout} s")
        time.sleep(0.05)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    stack.stop_processes(procs, 20)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s ({n} in {seconds:.2f} s)"


def run(args: argparse.Namespace, workdir: Path) -> float:
    broker = start_broker(workdir / "mosquitto", args.inflight)
    influxd = stack.start_influxd(workdir / "influxdb", die_with_parent=True)
    services = Stack(broker, influxd, f"bench{uuid.uuid4().hex[:6]}/bess/v1")
    n = args.n
    window = max(1, min(args.window, (args.inflight or MOSQUITTO_DEFAULT_INFLIGHT) - 1))
    messages = payloads(n, args.batteries, services.root)
    print(f"{n} telemetry messages, {sum(len(p) for _, p in messages) / n:.0f} B each, {args.batteries} batteries, "
          f"{args.recorders} recorder(s), {'separate passes' if args.separate else 'raw and recorder side by side'}, "
          f"broker max_inflight_messages {args.inflight or 'default (20)'}, publisher window {window}")
    recorders: list[subprocess.Popen[bytes]] = []
    raw: subprocess.Popen[str] | None = None
    try:
        db = "bench1"
        stack.create_database(influxd.url, db)
        if not args.separate:
            start_recorders(services, db, args.recorders, workdir, recorders)
        raw = start_raw_subscriber(services, n)
        pub_start, pub_end = asyncio.run(publish(services, messages, window))
        raw_first, raw_last = raw_result(raw, n)
        print(f"publisher (QoS 1, PUBACK of the last):      {rate(n, pub_end - pub_start)}")
        raw_rate = n / (raw_last - raw_first)
        print(f"raw broker (mosquitto_sub QoS 1):           {rate(n, raw_last - raw_first)}")
        if args.separate:
            db = "bench2"
            stack.create_database(influxd.url, db)
            start_recorders(services, db, args.recorders, workdir, recorders)
            pub_start, pub_end = asyncio.run(publish(services, messages, window))
            print(f"publisher, second pass:                     {rate(n, pub_end - pub_start)}")
        stored_at = wait_stored(services, db, n)
        recorder_rate = n / (stored_at - pub_start)
        print(f"recorder (first publish -> count == N):     {rate(n, stored_at - pub_start)}")
        return float(recorder_rate / raw_rate)
    finally:
        if raw is not None and raw.poll() is None:
            raw.kill()
            raw.wait()
        stop(recorders)
        broker.stop()
        influxd.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="messages to publish (default 100000)")
    parser.add_argument("--batteries", type=int, default=10, help="distinct battery topics (default 10)")
    parser.add_argument("--separate", action="store_true", help="measure raw and recorder in two passes")
    parser.add_argument("--recorders", type=int, default=1, help="recorders in a shared subscription (default 1)")
    parser.add_argument("--inflight", type=int, default=1000,
                        help="broker max_inflight_messages: the receive maximum a publisher gets (default 1000; "
                             "0 = deploy/stack.py's config, i.e. mosquitto's default 20)")
    parser.add_argument("--window", type=int, default=500,
                        help="publisher's unacknowledged messages (default 500, capped below the receive maximum)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    ratio = run(args, workdir)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    else:
        print(f"logs: {workdir}")
    print(f"ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
