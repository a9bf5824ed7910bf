"""Rollup benchmark: history means of a 1 Hz battery served from raw points vs from the rollups.

Starts a private influxd (deploy/stack.py, free ports), loads ``--days`` of 1 Hz telemetry for one battery (line
protocol from the recorder's own mapping), times ``python -m nodes.recorder rollups backfill``'s work over it
(in process), then for each window the renderer draws (24 h, 7 d, 30 d, and 1 y when the data spans it; the
bucket the renderer asks for, :func:`nodes.renderer.history.bucket_seconds` with 2000 points) times the history
query through the recorder's store: means over raw points (``router`` off, as before) and routed to the rollups.
Prints the medians, the ratio, and checks that both answers agree (max relative difference of the means).

The complete benchmark of issue 14 (a year at 1 Hz, 100 batteries, page loads) is ``bench/history.py``.

    .venv/bin/python bench/rollups.py [--days 30] [--runs 5] [--every-s 1]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from nodes.contract.messages import HistoryQuery, HistoryResult, Telemetry  # noqa: E402
from nodes.recorder.points import telemetry_line  # noqa: E402
from nodes.recorder.rollup_admin import RollupSettings, backfill, ensure  # noqa: E402
from nodes.recorder.routing import Router  # noqa: E402
from nodes.recorder.store import Influx1Store, rows_of  # noqa: E402
from nodes.renderer.history import bucket_seconds  # noqa: E402

BATTERY = "bench-1"
WINDOWS = {"24 h": 1, "7 d": 7, "30 d": 30, "1 y": 365}
MAX_POINTS = 2000


async def load(store: Influx1Store, end: datetime, days: int, every_s: int = 1) -> float:
    """``days`` of readings every ``every_s`` up to ``end``; returns the seconds it took."""
    started = time.perf_counter()
    start = end - timedelta(days=days)
    day_s = 86_400 // every_s
    rng = np.random.default_rng(14)
    for day in range(days):
        t0 = start + timedelta(days=day)
        i = np.arange(day_s) * every_s
        phase = 2 * math.pi * (day * 86_400 + i) / 43_200.0
        soc = 500 + 400 * np.sin(phase)
        power = -250 * np.cos(phase) + rng.normal(0, 5, day_s)
        lines = [telemetry_line(BATTERY, Telemetry(ts=t0 + timedelta(seconds=int(i[k])), soc_kwh=float(soc[k]),
                                                   power_kw=float(power[k]))) for k in range(day_s)]
        for k in range(0, day_s, 20_000):
            outcome = await store.write(lines[k:k + 20_000])
            assert not outcome.rejected
    return time.perf_counter() - started


async def timed(store: Influx1Store, query: HistoryQuery, runs: int) -> tuple[float, HistoryResult]:
    """Median seconds of ``runs`` queries (each window a second shorter, so nothing is cached) and the last answer."""
    times: list[float] = []
    answer: HistoryResult | None = None
    for run in range(runs):
        shifted = HistoryQuery(kind=query.kind, battery=query.battery, begin=query.begin + timedelta(seconds=run),
                               end=query.end, every_s=query.every_s, limit=query.limit)
        started = time.perf_counter()
        answer = await store.query(shifted)
        times.append(time.perf_counter() - started)
    assert answer is not None
    return statistics.median(times), answer


def max_relative_difference(a: HistoryResult, b: HistoryResult) -> float:
    """Largest relative difference between two answers' means (same buckets required)."""
    assert [r[0] for r in a.rows] == [r[0] for r in b.rows], "the same buckets"
    worst = 0.0
    for x, y in zip(a.rows, b.rows, strict=True):
        for u, v in zip(x[1:], y[1:], strict=True):
            if u is not None and v is not None:
                worst = max(worst, abs(u - v) / max(abs(v), 1e-9))
    return worst


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--every-s", type=int, default=1, help="seconds between readings (60: a year loads fast; "
                        "the rollups hold one row a minute and an hour either way, so their reads cost the same)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bess-bench-rollups-"))
    influxd = stack.start_influxd(base / "influxdb")
    db = "bench"
    stack.create_database(influxd.url, db)
    store = Influx1Store(influxd.url, db, timeout_s=600)
    await store.open()
    try:
        end = datetime.now(UTC).replace(microsecond=0)
        settings = RollupSettings(db)
        await ensure(store, settings, end)
        seconds = await load(store, end, args.days, args.every_s)
        points = args.days * 86_400 // args.every_s
        print(f"loaded {points:,} points (one every {args.every_s} s, {args.days} d) in {seconds:.1f} s "
              f"({points / seconds:,.0f}/s)")
        started = time.perf_counter()
        written = await backfill(store, settings, end - timedelta(days=args.days), end, progress=lambda _l: None)
        rolled = time.perf_counter() - started
        print(f"back-fill: {written:,} rollup points in {rolled:.1f} s ({args.days / rolled:.2f} days of history "
              "a second)")
        router = Router({}, rows_of)
        print(f"{'window':>6} {'every_s':>8} {'rows':>5} {'raw means':>10} {'rollups':>9} {'ratio':>6}  max rel diff")
        for name, days in WINDOWS.items():
            if days > args.days:
                continue
            begin = end - timedelta(days=days)
            every = bucket_seconds(begin, end, MAX_POINTS)
            query = HistoryQuery(kind="telemetry", battery=BATTERY, begin=begin, end=end, every_s=every,
                                 limit=100_000)
            store.router = None
            raw_s, raw = await timed(store, query, args.runs)
            store.router = router
            routed_s, routed = await timed(store, query, args.runs)
            print(f"{name:>6} {every:>8} {len(routed.rows):>5} {raw_s * 1000:>8.0f} ms {routed_s * 1000:>6.0f} ms "
                  f"{raw_s / routed_s:>5.0f}x  {max_relative_difference(routed, raw):.1e}")
        print(f"segments served: {router.served}; load average {os.getloadavg()[0]:.2f}")
    finally:
        await store.close()
        influxd.stop()


if __name__ == "__main__":
    asyncio.run(main())
