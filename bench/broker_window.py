"""What a broker crash loses, and what saving more often costs: ``python bench/broker_window.py``.

mosquitto keeps sessions (and the QoS 1 messages queued in them) as periodic snapshots of its in-memory
database, not as a log: ``autosave_interval N`` saves every N seconds, ``autosave_on_changes true`` makes N a
number of changes (queued messages, retained messages, subscription changes) instead. A SIGKILL loses what
changed since the last snapshot. The messages that matter are those the broker acknowledged to a publisher
(PUBACK) and had not yet delivered to, and had acknowledged by, a subscriber that stores them: the recorder.

Two measurements, each with this repository's mosquitto config (deploy/stack.py) and one setting varied:

``window``  A persistent QoS 1 session (the recorder's) exists and is saved, but nothing drains it (the recorder
            is dead, or InfluxDB is down and its window is full). A publisher sends numbered messages at
            ``--rate`` msg/s (the ingest bench's rate by default); the broker is SIGKILLed at a random moment
            and restarted, the session is drained, and ``lost`` = PUBACKed but never delivered, also in seconds
            of traffic. Repeated ``--trials`` times.
``cost``    ``--cost-s`` seconds at ``--cost-rate`` msg/s (20k), once with a subscriber draining live and once into
            a saved session nobody drains (the snapshot grows with the backlog, so every save writes more).
            Prints the rate reached, the broker's CPU use and its longest stall (mosquitto saves in its only
            thread: no PUBACK goes out meanwhile).

The box has 2 cores shared with the publisher, the subscriber and other work: numbers move by +-20 %.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gmqtt  # noqa: E402
from gmqtt.storage import PersistentStorage  # noqa: E402

from deploy import stack  # noqa: E402

T = TypeVar("T")
TOPIC = "bench/window/b{0:02d}/telemetry"
FILTER = "bench/window/+/telemetry"
SUBSCRIBER = "bench-window-recorder"
# ~150 bytes, like a Telemetry message; the sequence number leads so the drain can parse it back cheaply
BODY = b',"ts":"2025-01-16T10:00:00.000000Z","soc_kwh":700.0,"power_kw":-50.0,"target_charge_kw":100.0,"x":0}'


@dataclass(frozen=True)
class Setting:
    """One broker persistence setting."""

    label: str
    interval: int
    on_changes: bool = False


SETTINGS = (
    Setting("autosave_interval 5 (shipped before)", 5),
    Setting("autosave_interval 1", 1),
    Setting("autosave_on_changes, every 10000 changes", 10_000, on_changes=True),
    Setting("autosave_on_changes, every 1000 changes", 1_000, on_changes=True),
)


@dataclass(kw_only=True, eq=False)
class Broker(stack.Mosquitto):
    """deploy/stack.py's mosquitto with ``autosave_on_changes`` when asked."""

    on_changes: bool = False

    def config_text(self) -> str:
        return super().config_text() + ("autosave_on_changes true\n" if self.on_changes else "")


def start(workdir: Path, setting: Setting) -> Broker:
    broker = Broker(base_dir=workdir, port=stack.free_port(), autosave_interval=setting.interval,
                    die_with_parent=True, on_changes=setting.on_changes)
    return broker.start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def save_now(broker: Broker) -> None:
    """SIGUSR1 makes mosquitto write its database; return once the file is newer than the signal."""
    db = broker.data_dir / "mosquitto.db"
    mark = time.time()
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (db.exists() and db.stat().st_mtime >= mark):
        if time.monotonic() > deadline:
            raise RuntimeError("mosquitto did not save on SIGUSR1")
        time.sleep(0.02)


def make_session(broker: Broker) -> None:
    """The recorder's persistent session (MQTT 3.1.1, clean session off), subscribed at QoS 1, then offline."""
    with stack.MiniMqtt(broker.host, broker.port, client_id=SUBSCRIBER, clean_session=False) as client:
        client.subscribe(FILTER, qos=1)
    save_now(broker)  # a session that existed before the last save, as a long-running recorder's does


def drain(broker: Broker, quiet_s: float = 1.5) -> set[int]:
    """Connect as the recorder's session again and take every queued message; the sequence numbers seen."""
    seen: set[int] = set()
    with stack.MiniMqtt(broker.host, broker.port, client_id=SUBSCRIBER, clean_session=False, timeout=10) as client:
        for message in client.messages(timeout=quiet_s):
            seen.add(int(message.payload[7:message.payload.index(b",")]))
    return seen


class _Acks(PersistentStorage):  # type: ignore[misc]
    """gmqtt's outbound store, recording which sequence numbers the broker acknowledged."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.room = asyncio.Event()
        self.room.set()
        self.seq_of: dict[int, int] = {}
        self.next_seq = 0
        self.acked: set[int] = set()
        self.last_ack = time.monotonic()
        self.max_stall_s = 0.0
        self.target: int | None = None
        self.all_acked = asyncio.Event()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.seq_of[mid] = self.next_seq
        if len(self._messages) >= self.window:
            self.room.clear()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        seq = self.seq_of.pop(mid, None)
        if seq is not None:
            self.acked.add(seq)
        if self.target is not None and len(self.acked) >= self.target:
            self.all_acked.set()
        now = time.monotonic()
        self.max_stall_s = max(self.max_stall_s, now - self.last_ack)
        self.last_ack = now
        if len(self._messages) <= self.window // 2:
            self.room.set()


def payload(seq: int) -> bytes:
    return b'{"seq":' + str(seq).encode() + BODY


async def publish(broker: Broker, *, rate: float | None, n: int | None, stop_after_s: float | None,
                  window: int = 500) -> tuple[_Acks, float]:
    """Publish numbered QoS 1 messages (paced at ``rate`` if given) until ``n`` are acknowledged or
    ``stop_after_s`` passed; returns the acknowledgements and the seconds taken."""
    acks = _Acks(window)
    acks.target = n
    client = gmqtt.Client(f"bench-window-pub-{uuid.uuid4().hex[:6]}", persistent_storage=acks)
    client.set_config({"reconnect_retries": 0})
    await client.connect(broker.host, broker.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while (n is None or acks.next_seq < n) and (stop_after_s is None or loop.time() - started < stop_after_s):
            if not acks.room.is_set():
                left = None if stop_after_s is None else started + stop_after_s - loop.time()
                try:
                    await asyncio.wait_for(acks.room.wait(), left)
                except TimeoutError:
                    break  # the broker is gone: no PUBACK frees the window any more
            client.publish(TOPIC.format(acks.next_seq % 10), payload(acks.next_seq), qos=1)
            acks.next_seq += 1
            if rate is not None and acks.next_seq % 50 == 0:
                ahead = started + acks.next_seq / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the publisher
        if n is not None:
            await acks.all_acked.wait()
    finally:
        elapsed = loop.time() - started
    if n is not None:
        await client.disconnect()
    return acks, elapsed


async def _quietly(work: Coroutine[Any, Any, T]) -> T:
    # the publisher's gmqtt client keeps trying to reconnect to the killed broker; that is expected here
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
    return await work


async def _killer(broker: Broker, after_s: float) -> float:
    await asyncio.sleep(after_s)
    broker.kill()
    return time.monotonic()


def window_trial(workdir: Path, setting: Setting, rate: float, kill_after_s: float) -> dict[str, float]:
    """One crash: how many acknowledged messages were never delivered."""
    broker = start(workdir, setting)
    try:
        make_session(broker)

        async def run() -> _Acks:
            killer = asyncio.create_task(_killer(broker, kill_after_s))
            acks, _ = await publish(broker, rate=rate, n=None, stop_after_s=kill_after_s + 0.05)
            await killer
            return acks

        acks = asyncio.run(_quietly(run()))
        broker.start()
        seen = drain(broker)
    finally:
        broker.stop()
    lost = len(acks.acked - seen)
    return {"acked": len(acks.acked), "delivered": len(seen & acks.acked), "lost": lost, "lost_s": lost / rate}


def cost_run(workdir: Path, setting: Setting, rate: float, seconds: float, *, drained: bool) -> dict[str, float]:
    """``seconds`` at ``rate``: msg/s reached, broker CPU and stall, with a live subscriber or a growing backlog."""
    n = int(rate * seconds)
    broker = start(workdir, setting)
    try:
        make_session(broker)
        sub = None
        if drained:
            import subprocess

            sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-q", "1", "-c", "-i", SUBSCRIBER,
                                    "-t", FILTER, "-C", str(n)], stdout=subprocess.DEVNULL)
            time.sleep(0.3)  # let it connect before the stream starts (a benchmark, not a test)
        assert broker.pid is not None
        cpu0 = cpu_seconds(broker.pid)
        acks, elapsed = asyncio.run(publish(broker, rate=rate, n=n, stop_after_s=None))
        cpu = cpu_seconds(broker.pid) - cpu0
        if sub is not None:
            sub.wait(60)
        size = (broker.data_dir / "mosquitto.db").stat().st_size
    finally:
        broker.stop(30)
    return {"rate": n / elapsed, "broker_cpu": cpu / elapsed, "stall_ms": acks.max_stall_s * 1000,
            "db_mb": size / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=7000.0, help="msg/s in the window test (bench/ingest rate)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cost-rate", type=float, default=20_000.0, help="msg/s in the cost test")
    parser.add_argument("--cost-s", type=float, default=10.0, help="seconds per cost run")
    parser.add_argument("--only", choices=["window", "cost"], help="run one of the two measurements")
    parser.add_argument("--settings", default="0,1,2,3", help="indexes into the settings list (default all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # gmqtt reports every failed reconnect to the killed broker
    chosen = [SETTINGS[int(i)] for i in args.settings.split(",")]
    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="bench-window-") as tmp:
        for k, setting in enumerate(chosen):
            if args.only in (None, "window"):
                trials = [window_trial(Path(tmp) / f"w{k}-{t}", setting, args.rate, rng.uniform(6.0, 9.0))
                          for t in range(args.trials)]
                lost = [t["lost"] for t in trials]
                print(f"window  {setting.label:<42} at {args.rate:,.0f} msg/s: lost {lost} "
                      f"(max {max(lost) / args.rate:.2f} s of traffic) of {[t['acked'] for t in trials]} acked",
                      flush=True)
            if args.only in (None, "cost"):
                for drained in (True, False):
                    r = cost_run(Path(tmp) / f"c{k}-{drained}", setting, args.cost_rate, args.cost_s,
                                 drained=drained)
                    print(f"cost    {setting.label:<42} {'drained' if drained else 'backlog'}: "
                          f"{r['rate']:,.0f} msg/s of {args.cost_rate:,.0f}, broker CPU {r['broker_cpu']:.0%}, "
                          f"longest stall {r['stall_ms']:.0f} ms, db {r['db_mb']:.1f} MB", flush=True)
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
