"""Telemetry rollups on a real influxd: created and checked by the recorder, back-filled, run live, and served.

The rollups are continuous queries (nodes/recorder/rollups.py); these tests prove the statements against influxd
1.6.7, with numpy over the raw points as the reference for every rollup value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from deploy import stack
from nodes.contract.messages import HistoryQuery, HistoryResult, Telemetry
from nodes.contract.topics import HISTORY
from nodes.recorder import rollups
from nodes.recorder.points import telemetry_line
from nodes.recorder.rollup_admin import RollupSettings, apply_raw_retention, backfill, ensure, read_coverage
from nodes.recorder.routing import Router
from nodes.recorder.store import Influx1Store, rows_of
from nodes.runtime.bus import Bus
from tests.integration.test_recorder import Rig, make_rig
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = datetime(2025, 3, 4, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
SECONDS = 2 * 3600 + 1500  # two whole hours and a partial third, at 1 Hz


def readings(battery: str, start: datetime, seconds: int, seed: int = 14) -> tuple[list[str], dict[str, Any]]:
    """``seconds`` 1 Hz readings from ``start`` (off the second grid by 250 ms): line protocol and the arrays.

    power_kw is left out of every 7th reading, the BMS fields are there only in the first hour (so buckets with
    and without them, and a field absent from whole buckets, are all covered)."""
    rng = np.random.default_rng(seed)
    t = np.array([start.timestamp() + i + 0.25 for i in range(seconds)])
    soc = rng.uniform(100.0, 900.0, seconds)
    power = rng.uniform(-250.0, 250.0, seconds)
    has_power = np.arange(seconds) % 7 != 0
    volts = rng.uniform(700.0, 800.0, seconds)
    has_bms = t < start.timestamp() + 3600
    lines = [
        telemetry_line(battery, Telemetry(
            ts=datetime.fromtimestamp(t[i], UTC), soc_kwh=float(soc[i]),
            power_kw=float(power[i]) if has_power[i] else None,
            pack_voltage_v=float(volts[i]) if has_bms[i] else None))
        for i in range(seconds)
    ]
    return lines, {"t": t, "soc_kwh": (soc, np.ones(seconds, bool)), "power_kw": (power, has_power),
                   "pack_voltage_v": (volts, has_bms)}


def expected(arrays: dict[str, Any], resolution_s: int) -> dict[tuple[int, str], dict[str, float]]:
    """numpy's sum, count, min, max and last per (bucket start, field)."""
    t = arrays["t"]
    out: dict[tuple[int, str], dict[str, float]] = {}
    buckets = (t // resolution_s).astype(np.int64) * resolution_s
    for field in ("soc_kwh", "power_kw", "pack_voltage_v"):
        values, present = arrays[field]
        for bucket in np.unique(buckets):
            mask = (buckets == bucket) & present
            if mask.any():
                v = values[mask]
                out[(int(bucket), field)] = {"sum": float(v.sum()), "count": float(mask.sum()), "min": float(v.min()),
                                             "max": float(v.max()), "last": float(v[-1])}
    return out


Stats = dict[tuple[int, str], dict[str, float]]


def stored(services: Services, db: str, rollup: rollups.Rollup, battery: str) -> Stats:
    """The rollup's points, in the same shape as :func:`expected`."""
    rows = services.influx_rows(db, f'SELECT * FROM "{rollup.rp}"."{rollup.name}" WHERE "battery"=\'{battery}\'')
    out: dict[tuple[int, str], dict[str, float]] = {}
    for row in rows:
        for field in ("soc_kwh", "power_kw", "pack_voltage_v"):
            if row.get(f"{field}_count") is not None:
                out[(int(row["time"]) // 1000, field)] = {s: float(row[f"{field}_{s}"]) for s in rollups.STATS}
    return out


def assert_same(found: dict[tuple[int, str], dict[str, float]], want: dict[tuple[int, str], dict[str, float]]) -> None:
    assert found.keys() == want.keys()
    for key, stats in want.items():
        for stat, value in stats.items():
            assert found[key][stat] == pytest.approx(value, rel=1e-12, abs=1e-9), (key, stat)


def our_cqs(services: Services, db: str) -> list[str]:
    """The names of the recorder's CQs on ``db``."""
    answer = stack.influx_query(services.influx_url, "SHOW CONTINUOUS QUERIES")
    return [str(row[0]) for result in answer["results"] for series in result.get("series") or []
            if series.get("name") == db for row in series.get("values") or [] if str(row[0]).startswith("bess_")]


def assert_close(mine: list[Any], theirs: list[Any]) -> None:
    """Means equal to float rounding, absent (None) where the other is."""
    assert [v is None for v in mine] == [v is None for v in theirs]
    assert [v for v in mine if v is not None] == pytest.approx([v for v in theirs if v is not None], rel=1e-12)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m nodes.recorder rollups ...`` with the test's environment."""
    return subprocess.run([sys.executable, "-m", "nodes.recorder", "rollups", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=120, check=False)


@pytest.fixture
async def store(services: Services, influx_db: str) -> AsyncIterator[Influx1Store]:
    s = Influx1Store(services.influx_url, influx_db)
    await s.open()
    yield s
    await s.close()


async def write(store: Influx1Store, lines: list[str]) -> None:
    for i in range(0, len(lines), 5000):
        outcome = await store.write(lines[i:i + 5000])
        assert not outcome.rejected


def test_the_recorder_creates_the_rollups_at_start_and_recreates_a_changed_one(
    services: Services, run_node: Callable[..., NodeProcess], node_env: dict[str, str], influx_db: str,
    battery_id: str,
) -> None:
    rig = make_rig(services, run_node, node_env, influx_db, battery_id)
    first = cli(rig.env, "check")
    assert first.returncode == 1, first.stdout
    assert "retention policy rollup_1m missing" in first.stdout
    assert "for telemetry_1m missing" in first.stdout

    proc = rig.start()
    wait_for(lambda: cli(rig.env, "check").returncode == 0, timeout=30, interval=0.5, what="rollups check passes")
    names = our_cqs(services, influx_db)
    assert len(names) == 2
    proc.stop()

    changed = {**rig.env, "BESS_RECORDER_ROLLUP_LATE_S": "1800", "BESS_RECORDER_ROLLUP_1H_RETENTION": "400d"}
    answer = cli(changed, "check")
    assert answer.returncode == 1
    assert "differs from the configured telemetry_1m rollup" in answer.stdout
    assert "retention policy rollup_1h keeps forever, configured 34560000s" in answer.stdout
    changed_rig = make_rig(services, run_node, {**node_env, **{k: v for k, v in changed.items()
                                                                if k.startswith("BESS_RECORDER_ROLLUP")}},
                           influx_db, battery_id)
    changed_rig.start()
    wait_for(lambda: cli(changed, "check").returncode == 0, timeout=30, interval=0.5, what="recreated")
    after = our_cqs(services, influx_db)
    assert len(after) == 2
    assert set(after) != set(names), "the changed CQs replaced the old ones"
    assert cli(rig.env, "check").returncode == 1, "the old settings are no longer what the server holds"

    off = make_rig(services, run_node, {**node_env, "BESS_RECORDER_ROLLUPS": "0"}, influx_db, battery_id)
    off.start()
    wait_for(lambda: not our_cqs(services, influx_db), timeout=30, what="rollups off: the CQs are dropped")
    assert cli(off.env, "check").returncode == 0


async def test_backfill_equals_numpy_over_the_raw_points_and_a_second_run_changes_nothing(
    services: Services, node_env: dict[str, str], influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    lines, arrays = readings(battery_id, T0, SECONDS)
    await write(store, lines)
    end = (T0 + timedelta(seconds=SECONDS + 1)).isoformat()
    run = cli(node_env, "backfill", "--begin", T0.isoformat(), "--end", end)
    assert run.returncode == 0, run.stderr
    assert "telemetry_1m: 1/1" in run.stdout
    assert "telemetry_1h: 1/1" in run.stdout
    minute = stored(services, influx_db, rollups.TELEMETRY_1M, battery_id)
    hour = stored(services, influx_db, rollups.TELEMETRY_1H, battery_id)
    assert_same(minute, expected(arrays, 60))
    assert_same(hour, expected(arrays, 3600))
    assert {key[0] for key in hour} == {int(T0.timestamp()) + h * 3600 for h in range(3)}

    again = cli(node_env, "backfill", "--begin", T0.isoformat(), "--end", end)
    assert again.returncode == 0, again.stderr
    assert stored(services, influx_db, rollups.TELEMETRY_1M, battery_id) == minute
    assert stored(services, influx_db, rollups.TELEMETRY_1H, battery_id) == hour


async def test_the_continuous_queries_roll_recent_points_on_the_real_clock(
    services: Services, influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    settings = RollupSettings(influx_db)
    await ensure(store, settings, datetime.now(UTC))
    start = rollups.align_down(datetime.now(UTC) - timedelta(minutes=4), 60)
    seconds = int((rollups.align_down(datetime.now(UTC), 60) - start).total_seconds())
    lines, arrays = readings(battery_id, start, seconds)
    await write(store, lines)
    want = expected(arrays, 60)
    # the 1-min CQ runs at the next minute boundary and re-rolls its 15-min look-back: at most ~61 s from here
    await wait_for_async(lambda: stored(services, influx_db, rollups.TELEMETRY_1M, battery_id).keys() == want.keys(),
                         timeout=80, interval=1.0, what="the 1-min CQ rolled the last minutes")
    assert_same(stored(services, influx_db, rollups.TELEMETRY_1M, battery_id), want)

    # late samples for a minute already rolled: the next run re-rolls its look-back and counts them
    late_at = start + timedelta(minutes=1, seconds=0.5)
    late = [telemetry_line(battery_id, Telemetry(ts=late_at + timedelta(seconds=i), soc_kwh=1.0)) for i in range(5)]
    await write(store, late)
    bucket = int((start + timedelta(minutes=1)).timestamp())
    count = want[(bucket, "soc_kwh")]["count"] + 5

    def rerolled() -> bool:
        return stored(services, influx_db, rollups.TELEMETRY_1M, battery_id)[(bucket, "soc_kwh")]["count"] == count

    await wait_for_async(rerolled, timeout=80, interval=1.0, what="the next CQ run re-rolled the late samples")
    assert stored(services, influx_db, rollups.TELEMETRY_1M, battery_id)[(bucket, "soc_kwh")]["min"] == 1.0


async def test_hourly_means_come_from_the_rollups_equal_the_raw_means_and_the_live_edge_is_stitched(
    services: Services, influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    lines, _ = readings(battery_id, T0, SECONDS)
    await write(store, lines)
    settings = RollupSettings(influx_db)
    await backfill(store, settings, T0, T0 + timedelta(seconds=SECONDS), progress=lambda _line: None)
    coverage = await read_coverage(store)
    assert coverage["telemetry_1m"].since == T0
    assert coverage["telemetry_1h"].since == T0
    # the live edge: 15 more minutes the CQs have not rolled yet ("now" is just after them)
    edge = T0 + timedelta(seconds=SECONDS)
    newer, _ = readings(battery_id, edge, 900, seed=15)
    await write(store, newer)
    now = edge + timedelta(seconds=900)

    query = HistoryQuery(kind="telemetry", battery=battery_id, begin=T0 - timedelta(minutes=17),
                         end=T0 + timedelta(hours=4), every_s=3600, limit=1000)
    raw = await store.query(query)
    router = Router({}, rows_of, {"telemetry_1m": 900, "telemetry_1h": 7200}, clock=lambda: now)
    store.router = router
    routed = await store.query(query)
    # whole hours from the 1-h rollup (its newest, still open to its CQ, from minutes), the live edge from raw
    assert router.served == {"telemetry_1h": 1, "telemetry_1m": 1, "raw": 2}
    assert routed.columns == raw.columns
    assert len(routed.rows) == len(raw.rows) == 3
    for mine, theirs in zip(routed.rows, raw.rows, strict=True):
        assert mine[0] == theirs[0]
        assert_close(mine[1:], theirs[1:])

    minute = HistoryQuery(kind="telemetry", battery=battery_id, begin=T0 + timedelta(seconds=30),
                          end=T0 + timedelta(hours=3), every_s=300, limit=1000)
    store.router = None
    raw_minutes = await store.query(minute)
    store.router = router
    routed_minutes = await store.query(minute)
    assert [r[0] for r in routed_minutes.rows] == [r[0] for r in raw_minutes.rows]
    for mine, theirs in zip(routed_minutes.rows, raw_minutes.rows, strict=True):
        assert_close(mine[1:], theirs[1:])

    # proof the hours are read from the rollup: without the raw points of the first two hours, the answer stays
    await store.influxql([f"DELETE FROM \"telemetry\" WHERE \"battery\"='{battery_id}' AND time >= "
                          f"'{T0.isoformat().replace('+00:00', 'Z')}' AND time < "
                          f"'{(T0 + timedelta(hours=2)).isoformat().replace('+00:00', 'Z')}'"])
    store.router = None
    assert len((await store.query(query)).rows) == 1, "the raw points of the first two hours are gone"
    store.router = router
    again = await store.query(query)
    assert again.rows[:2] == routed.rows[:2]


async def test_without_coverage_history_means_stay_on_raw_points(
    influx_db: str, store: Influx1Store, battery_id: str, caplog: pytest.LogCaptureFixture,
) -> None:
    lines, _ = readings(battery_id, T0, 900)
    await write(store, lines)
    await ensure(store, RollupSettings(influx_db), datetime.now(UTC))  # complete from now on only
    assert "rollups backfill --begin 2025-03-04T00:00:00.250000+00:00 --end" in caplog.text, "the log says how"
    router = Router({}, rows_of)
    store.router = router
    query = HistoryQuery(kind="telemetry", battery=battery_id, begin=T0, end=T0 + timedelta(hours=1), every_s=60,
                         limit=100)
    routed = await store.query(query)
    assert len(routed.rows) == 15
    assert router.served == {}, "nothing rolled covers 2025: the raw means answered"


async def test_backfill_corrects_buckets_whose_points_were_rewritten_without_a_field(
    services: Services, influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    lines, arrays = readings(battery_id, T0, 600)
    await write(store, lines)
    # three readings re-sent for their timestamps without power_kw: InfluxDB keeps the earlier value in storage
    rewritten = [61, 62, 185]
    power, has_power = arrays["power_kw"]
    await write(store, [telemetry_line(battery_id, Telemetry(
        ts=datetime.fromtimestamp(arrays["t"][i], UTC), soc_kwh=float(arrays["soc_kwh"][0][i]),
        pack_voltage_v=float(arrays["pack_voltage_v"][0][i]))) for i in rewritten])
    has_power = has_power.copy()
    has_power[rewritten] = False
    arrays["power_kw"] = (power, has_power)
    lines_out: list[str] = []
    await backfill(store, RollupSettings(influx_db), T0, T0 + timedelta(minutes=10), progress=lines_out.append)
    assert any("2 bucket(s) with rewritten points corrected" in line for line in lines_out), lines_out
    assert_same(stored(services, influx_db, rollups.TELEMETRY_1M, battery_id), expected(arrays, 60))
    assert_same(stored(services, influx_db, rollups.TELEMETRY_1H, battery_id), expected(arrays, 3600))


async def test_raw_retention_deletes_only_raw_points_the_rollups_and_the_kpi_days_cover(
    services: Services, influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    lines, _ = readings(battery_id, T0, 1800)
    await write(store, lines)
    await write(store, [f'command,battery={battery_id} action="idle",power_kw=0.0 {int(T0.timestamp()) * 10**6}'])
    settings = RollupSettings(influx_db, raw_retention_s=86_400)
    now = datetime.now(UTC)
    await ensure(store, settings, now)  # complete from now on: 2025 is not covered
    reason = await apply_raw_retention(store, settings, now)
    assert reason is not None
    assert "is kept" in reason
    assert services.influx_rows(influx_db, 'SELECT count("soc_kwh") FROM "telemetry"')[0]["count"] == 1800

    query = HistoryQuery(kind="telemetry", battery=battery_id, begin=T0, end=T0 + H, every_s=60, limit=100)
    before = await store.query(query)
    await backfill(store, settings, T0, T0 + H, progress=lambda _line: None)  # reaches the covered part
    kept = await apply_raw_retention(store, settings, now)
    assert kept is not None
    assert "KPI days" in kept, kept
    assert battery_id in kept
    assert services.influx_rows(influx_db, 'SELECT count("soc_kwh") FROM "telemetry"')[0]["count"] == 1800, (
        "the day's KPIs are not stored yet: its raw points must stay"
    )
    await write(store, [f"kpi_1d,battery={battery_id} buckets=96 {int(T0.timestamp()) * 10**6}"])
    assert await apply_raw_retention(store, settings, now) is None
    assert services.influx_rows(influx_db, 'SELECT count("soc_kwh") FROM "telemetry"') == [], "raw points deleted"
    assert services.influx_rows(influx_db, 'SELECT count("power_kw") FROM "command"')[0]["count"] == 1, "kept"
    store.router = Router({}, rows_of)
    after = await store.query(query)
    assert [row[0] for row in after.rows] == [row[0] for row in before.rows]
    for mine, theirs in zip(after.rows, before.rows, strict=True):
        assert_close(mine[1:], theirs[1:])


async def test_the_recorder_answers_hourly_history_requests_from_the_rollups(
    rig: Rig, store: Influx1Store, publisher: Bus,
) -> None:
    rig.start()
    battery_id = rig.battery
    lines, _ = readings(battery_id, T0, SECONDS)
    await write(store, lines)
    run = cli(rig.env, "backfill", "--begin", T0.isoformat(), "--end", (T0 + 3 * H).isoformat())
    assert run.returncode == 0, run.stderr
    query = HistoryQuery(kind="telemetry", battery=battery_id, begin=T0, end=T0 + 3 * H, every_s=3600)
    answer: HistoryResult = await publisher.request(HISTORY, query)
    assert answer.ok, answer.error
    raw = await store.query(query)  # this store has no router: means over raw points
    assert [row[0] for row in answer.rows] == [row[0] for row in raw.rows]
    for mine, theirs in zip(answer.rows, raw.rows, strict=True):
        assert_close(mine[1:], theirs[1:])
    await wait_for_async(lambda: (rig.counter("history_segments_telemetry_1h") or 0) >= 1, timeout=10,
                         what="the recorder says the 1-h rollup served it")


async def test_routed_means_equal_raw_means_for_random_ranges_and_buckets(
    influx_db: str, store: Influx1Store, battery_id: str,
) -> None:
    lines, _ = readings(battery_id, T0, SECONDS, seed=7)
    await write(store, lines)
    await backfill(store, RollupSettings(influx_db), T0, T0 + 2 * H, progress=lambda _line: None)  # not the rest
    rng = np.random.default_rng(2025)
    router = Router({}, rows_of)
    for _ in range(20):
        begin = T0 + timedelta(seconds=float(rng.uniform(-900, SECONDS)))
        end = begin + timedelta(seconds=float(rng.uniform(60, SECONDS)))
        every = int(rng.choice([60, 120, 300, 900, 3600, 7200]))
        query = HistoryQuery(kind="telemetry", battery=battery_id, begin=begin, end=end, every_s=every, limit=1000)
        store.router = None
        raw = await store.query(query)
        store.router = router
        routed = await store.query(query)
        assert [r[0] for r in routed.rows] == [r[0] for r in raw.rows], (begin, end, every)
        for mine, theirs in zip(routed.rows, raw.rows, strict=True):
            assert_close(mine[1:], theirs[1:])
    assert router.served.get("telemetry_1m", 0) + router.served.get("telemetry_1h", 0) >= 10
