"""The paced device publisher of ``bench/latency.py``, as its own process (so its CPU is not the measuring one's).

    python -m bench.latency_publish --port P --root R --rate 5000 --seconds 20 --batteries 200

Publishes ``rate x seconds`` Telemetry messages at QoS 1 (retained, as a device does), round-robin over the
battery ids of :func:`battery_id`, paced: every 2 ms it publishes what is due by then (never a burst ahead of
time; when it falls behind it catches up and says by how much). Each message's ``ts`` is the wall-clock time
right before it is handed to the client, which writes it to the socket at the next loop turn: that ``ts`` is the
"publish" instant every latency of the benchmark starts from. At most ``--window`` messages wait for their PUBACK
(below the broker's ``max_inflight_messages`` of 1000, which gmqtt would otherwise overflow).

Prints one JSON line: ``{"sent", "first_s", "last_s", "acked_s", "behind_max_ms", "cpu_s"}`` (wall-clock seconds;
``cpu_s``: the process's CPU time, start-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gmqtt  # noqa: E402

from bench.ingest import _Window  # noqa: E402
from nodes.contract.messages import Telemetry  # noqa: E402
from nodes.contract.topics import TELEMETRY  # noqa: E402

TICK_S = 0.002


def battery_id(i: int) -> str:
    """The i-th simulated battery of the benchmark (0-based)."""
    return f"lat-{i:04d}"


async def publish(host: str, port: int, root: str, *, rate: float, seconds: float, batteries: int,
                  window: int) -> dict[str, float]:
    """Publish paced telemetry; return what :mod:`bench.latency` reads (see the module docstring)."""
    storage = _Window(window)
    client = gmqtt.Client(f"bench-lat-pub-{uuid.uuid4().hex[:6]}", persistent_storage=storage)
    await client.connect(host, port)
    topics = [TELEMETRY.name(root=root, battery=battery_id(b)) for b in range(batteries)]
    encode = TELEMETRY.encode
    total = round(rate * seconds)
    sent = 0
    behind_max_s = 0.0
    first_s = time.time()
    start = time.monotonic()
    while sent < total:
        elapsed = time.monotonic() - start
        due = min(total, int(elapsed * rate) + 1)
        behind_max_s = max(behind_max_s, (due - sent) / rate - TICK_S)
        while sent < due:
            if not storage.room.is_set():
                await storage.room.wait()
            i = sent
            now = datetime.now(UTC)
            payload = encode(Telemetry(ts=now, soc_kwh=100.0 + (i % 500) / 10, power_kw=-25.0 + (i % 7),
                                       target_charge_kw=50.0, target_discharge_kw=50.0))
            client.publish(topics[i % batteries], payload, qos=1, retain=True)
            sent += 1
        await asyncio.sleep(TICK_S)
    last_s = time.time()
    await storage.wait_empty()
    acked_s = time.time()
    await client.disconnect()
    return {"sent": sent, "first_s": first_s, "last_s": last_s, "acked_s": acked_s,
            "behind_max_ms": max(0.0, behind_max_s) * 1000, "cpu_s": time.process_time()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--rate", type=float, required=True, help="messages per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--batteries", type=int, required=True)
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(publish(args.host, args.port, args.root, rate=args.rate, seconds=args.seconds,
                                 batteries=args.batteries, window=args.window))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
