"""What ``bench/latency.py`` measures with: the dashboard's event stream, the database poller, percentiles, CPU.

* :class:`DashboardProbe`: one SSE client on ``GET /events?battery=B`` of the renderer: the stream a battery page
  on the default window reads (its ``figure`` events too, each figure redrawn about once a second, so a reading
  may wait behind a figure being written, as in a browser); ``figures=False`` is the stream of a page on a
  window of its own (``&figures=0``: states, telemetry, alarms, no figures). For each ``telemetry`` event it
  records arrival (wall clock, when its ``data:`` line was read) minus the reading's ``ts`` (the publisher's send
  time). The stream carries the latest value: a reading replaced in a
  slow client's queue before it was written is never sent, so ``received`` can be below what was published.
* :class:`QueryProbe`: "queryable" means an InfluxQL ``SELECT`` on the recorder's database (the same database
  the recorder's history answers and the dashboard read from) returns the point. It polls every ``poll_s`` for
  the sampled batteries' new points; a point's latency is the arrival of the first answer holding it minus its
  ``ts``. So the number includes up to one poll interval of waiting plus the query's own time (both reported:
  the true "became queryable" instant is on average half a poll interval earlier).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values_ms: list[float]) -> str:
    """``p50 .. ms  p99 .. ms  max .. ms  (n=..)``."""
    if not values_ms:
        return "p50 n/a  p99 n/a  max n/a  (n=0: nothing arrived)"
    return (f"p50 {pct(values_ms, 0.5):7.1f} ms  p99 {pct(values_ms, 0.99):7.1f} ms  "
            f"max {max(values_ms):7.1f} ms  (n={len(values_ms)})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (``/proc/<pid>/status`` VmRSS); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def load_average() -> str:
    """``/proc/loadavg``'s 1, 5 and 15 minute averages."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _ts_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class DashboardProbe:
    """Telemetry events of one battery's dashboard stream, as (send ts s, arrival s) from ``since_s`` on."""

    url: str
    battery: str
    since_s: float = 0.0
    figures: bool = True
    samples: list[tuple[float, float]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def latencies_ms(self, begin_s: float, end_s: float) -> list[float]:
        return [(arrived - sent) * 1000 for sent, arrived in self.samples if begin_s <= sent <= end_s]

    async def run(self, http: aiohttp.ClientSession) -> None:
        """Read the stream until cancelled."""
        params = {"battery": self.battery, "figures": "1" if self.figures else "0"}
        async with http.get(f"{self.url}/events", params=params, timeout=aiohttp.ClientTimeout(total=None)) as r:
            r.raise_for_status()
            self.connected.set()
            kind = ""
            async for raw in r.content:  # a line at a time (a figure's data line is ~100 kB: no limit hit)
                arrived = time.time()
                line = raw.rstrip(b"\n")
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: ") and kind == "telemetry":
                    sent = _ts_s(json.loads(line[6:])["data"]["ts"])
                    if sent >= self.since_s:
                        self.samples.append((sent, arrived))


@dataclass
class QueryProbe:
    """Polls InfluxDB for the new points of ``batteries`` every ``poll_s``; see the module docstring."""

    influx_url: str
    db: str
    batteries: list[str]
    poll_s: float = 0.02
    since_s: float = 0.0
    samples: list[tuple[float, float]] = field(default_factory=list)
    query_ms: list[float] = field(default_factory=list)
    _seen: set[tuple[str, int]] = field(default_factory=set)

    def latencies_ms(self, begin_s: float, end_s: float) -> list[float]:
        return [(arrived - sent) * 1000 for sent, arrived in self.samples if begin_s <= sent <= end_s]

    async def run(self, http: aiohttp.ClientSession) -> None:
        """Poll until cancelled."""
        which = " OR ".join(f"\"battery\" = '{b}'" for b in self.batteries)
        watermark_us = int(self.since_s * 1e6)
        while True:
            started = time.monotonic()
            # look back 5 s behind the newest point seen: a batch may land a point older than a newer one
            q = (f'SELECT "soc_kwh", "battery" FROM "telemetry" WHERE ({which}) '
                 f"AND time > {max(int(self.since_s * 1e6), watermark_us - 5_000_000)}u")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{self.influx_url}/query",
                                    params={"db": self.db, "q": q, "epoch": "u"}) as r:
                    body = await r.json()
                arrived = time.time()
                self.query_ms.append((time.monotonic() - started) * 1000)
                for series in body["results"][0].get("series") or []:
                    columns = series["columns"]
                    at, who = columns.index("time"), columns.index("battery")
                    for row in series["values"]:
                        key = (row[who], int(row[at]))
                        if key not in self._seen:
                            self._seen.add(key)
                            self.samples.append((key[1] / 1e6, arrived))
                            watermark_us = max(watermark_us, key[1])
            await asyncio.sleep(max(0.0, self.poll_s - (time.monotonic() - started)))
