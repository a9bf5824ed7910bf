"""What a soak run measures, shared by ``bench/soak.py`` and ``tests/integration/test_soak.py``.

* :class:`ProcessSampler`: every ``interval_s`` each node's CPU (% of one core, from ``/proc/<pid>/stat``'s
  utime + stime) and RSS (``/proc/<pid>/status``), summed over the node's process group, so the planner's solver
  workers count as the planner (``deploy/up`` and the tests start every node in a session of its own).
* :class:`BusWatch`: the retained and live ``node/+/status`` of every node (its counters: the recorder's
  ``pending``, the simulator's ``readings`` and ``unconfirmed``) sampled over time, and the recorder's
  ``battery/<id>/stored`` marks of a few batteries: how long after a reading's own timestamp the recorder says
  it is stored (the end-to-end lag, the confirm interval included).
* :func:`stored_count`: the telemetry points in InfluxDB since the start, per battery.

Standard library and ``deploy`` only (it runs in the benchmark's and the test's process, next to the nodes).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from deploy import stack

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: mosquitto's count of messages it holds: retained ones, and those queued or in flight for any session
BROKER_STORED = "$SYS/broker/store/messages/count"
#: ... of which retained (the rest is queued for sessions or in flight: the broker's backlog)
BROKER_RETAINED = "$SYS/broker/retained messages/count"
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(process group, utime + stime in clock ticks, RSS pages)`` of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command: state ppid pgrp session ... utime(12) stime(13) ... rss(22), counted from state = 0
    return int(fields[2]), int(fields[11]) + int(fields[12]), int(fields[21])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


@dataclass
class NodeUsage:
    """One node's samples: CPU in % of one core per interval, RSS in MB."""

    cpu_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def summary(self) -> tuple[float, float, float]:
        """``(CPU mean, CPU p95, RSS max)``; zeros without samples."""
        if not self.cpu_pct:
            return 0.0, 0.0, max(self.rss_mb, default=0.0)
        return statistics.fmean(self.cpu_pct), percentile(self.cpu_pct, 0.95), max(self.rss_mb)


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 when there are none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ProcessSampler:
    """Samples the CPU and RSS of named process groups in a background thread (start, then stop)."""

    def __init__(self, pids: Mapping[str, int], interval_s: float = 1.0) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self.usage = {name: NodeUsage() for name in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def _totals(self) -> dict[str, tuple[int, int]]:
        """name -> (CPU ticks, RSS pages) of every process in the node's group (or the pid alone)."""
        leaders = {pid: name for name, pid in self.pids.items()}
        totals = dict.fromkeys(self.pids, (0, 0))
        for pid in _all_pids():
            stat = _stat(pid)
            if stat is None:
                continue
            group, ticks, rss = stat
            name = leaders.get(pid) or leaders.get(group)
            if name is not None:
                cpu, pages = totals[name]
                totals[name] = (cpu + ticks, pages + rss)
        return totals

    def _run(self) -> None:
        before, at = self._totals(), time.monotonic()
        while not self._stop.wait(self.interval_s):
            now_totals, now = self._totals(), time.monotonic()
            elapsed = max(now - at, 1e-6)
            for name, (ticks, pages) in now_totals.items():
                if pages == 0:
                    continue  # gone (stopped at the end of the run)
                self.usage[name].cpu_pct.append(100.0 * (ticks - before[name][0]) / _TICKS_PER_S / elapsed)
                self.usage[name].rss_mb.append(pages * _PAGE_KB / 1024)
            before, at = now_totals, now

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class BusWatch:
    """Node statuses over time and the stored marks of a few batteries, read by a plain MQTT client in a thread."""

    def __init__(self, port: int, root: str, sample_batteries: Iterable[str], host: str = stack.HOST) -> None:
        self.root = root
        self.latest: dict[str, dict[str, int]] = {}
        #: node -> counter -> [(monotonic time, value)] of every status seen
        self.series: dict[str, dict[str, list[tuple[float, int]]]] = {}
        self.states: dict[str, str] = {}
        self.lag_s: list[float] = []
        #: the broker's messages in store (retained, queued, in flight) every ``sys_interval`` (mosquitto: 10 s)
        self.broker_stored: list[int] = []
        self.broker_retained: list[int] = []
        self._client = stack.MiniMqtt(host, port, keepalive=0, timeout=5.0)
        self._client.subscribe([f"{root}/node/+/status", BROKER_STORED, BROKER_RETAINED,
                                *(f"{root}/battery/{b}/stored" for b in sample_batteries)], qos=0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="soak-bus-watch", daemon=True)

    def _run(self) -> None:
        status_prefix, node_level = f"{self.root}/node/", len(self.root.split("/")) + 1
        while not self._stop.is_set():
            try:
                message = self._client.receive(timeout=0.5)
            except (OSError, stack.MqttError):
                return
            if message is None or not message.payload:
                continue
            seen = time.time()
            if message.topic in (BROKER_STORED, BROKER_RETAINED):
                with contextlib.suppress(ValueError):
                    (self.broker_stored if message.topic == BROKER_STORED else self.broker_retained).append(
                        int(message.payload))
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                body = json.loads(message.payload)
                if message.topic.startswith(status_prefix):
                    self._status(message.topic.split("/")[node_level], body)
                elif not message.retain:  # a mark: how old the newest stored reading is by now
                    self.lag_s.append(seen - datetime.fromisoformat(body["ts"]).timestamp())

    def _status(self, node: str, body: dict[str, object]) -> None:
        counters = body.get("counters")
        if not isinstance(counters, dict):
            return
        now = time.monotonic()
        with self._lock:
            self.latest[node] = {k: int(v) for k, v in counters.items() if isinstance(v, int | float)}
            self.states[node] = str(body.get("state"))
            for name, value in self.latest[node].items():
                self.series.setdefault(node, {}).setdefault(name, []).append((now, value))

    def counter(self, node: str, name: str) -> int | None:
        """The newest value of a node's counter, or None when none was seen."""
        with self._lock:
            return self.latest.get(node, {}).get(name)

    def values(self, node: str, name: str) -> list[int]:
        """Every value of a node's counter seen so far, in order."""
        with self._lock:
            return [value for _, value in self.series.get(node, {}).get(name, [])]

    def broker_queued(self) -> list[int]:
        """The broker's messages in store that are not retained (queued for sessions, in flight), every 10 s."""
        return [stored - retained for stored, retained in zip(self.broker_stored, self.broker_retained, strict=False)]

    def start(self) -> BusWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()


def stored_count(influx_url: str, db: str, since: datetime) -> dict[str, int]:
    """battery -> telemetry points stored with a timestamp from ``since`` on."""
    query = (f"SELECT count(soc_kwh) FROM telemetry WHERE time >= '{since.isoformat().replace('+00:00', 'Z')}' "
             "GROUP BY battery")
    result = stack.influx_query(influx_url, query, db)
    counts: dict[str, int] = {}
    for series in result["results"][0].get("series") or []:
        counts[series["tags"]["battery"]] = int(series["values"][0][1])
    return counts


def usage_table(usage: Mapping[str, NodeUsage]) -> list[str]:
    """The per-node table: CPU mean and p95 (% of one core), RSS max (MB)."""
    lines = [f"{'node':<14} {'cpu mean %':>10} {'cpu p95 %':>10} {'rss max MB':>11}"]
    for name, samples in usage.items():
        mean, p95, rss = samples.summary()
        lines.append(f"{name:<14} {mean:>10.1f} {p95:>10.1f} {rss:>11.0f}")
    return lines


__all__ = ["BusWatch", "NodeUsage", "ProcessSampler", "percentile", "stored_count", "usage_table"]
