"""A short soak in CI: 1,000 simulated batteries at 1 Hz for 20 s, with the recorder, the market (synthetic
prices), the planner (HiGHS, the autopilot on) and the alarms node up, on the real broker and database
(``bench/soak.py`` is the long version with every node).

What it checks, and what would fail without the fixes of issue 14:

* the simulator comes online with its 3,000 subscriptions (one SUBSCRIBE packet each ran out of packet ids);
* nothing lost: every reading the simulator published (its ``readings`` counter, in its last status) is in
  InfluxDB, per battery one for every tick;
* the backlog stays bounded: the readings not yet confirmed stored (the simulator's ``unconfirmed``: broker queue,
  recorder batch and the confirm interval together) never exceed five seconds of readings, and the recorder's
  ``pending`` never exceeds two batches (one being written, the next filling);
* the ticks keep to the clock: the readings' timestamps fall on whole seconds and no tick was skipped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from deploy import stack
from tests.conftest import RunNode
from tests.support.services import Services
from tests.support.soak import BusWatch, ProcessSampler, stored_count, usage_table
from tests.support.waiting import wait_for

BATTERIES = 1000
RUN_S = 20.0
BATCH_MAX_POINTS = 5000


def test_a_thousand_batteries_at_1_hz_lose_nothing_and_the_backlog_stays_bounded(
    services: Services, node_env: dict[str, str], run_node: RunNode, influx_db: str, topic_root: str
) -> None:
    env = {**node_env, "BESS_STATUS_INTERVAL_S": "1", "BESS_PLANNER_SOLVER": "highs", "BESS_PLANNER_WORKERS": "1",
           "BESS_PLANNER_AUTOPILOT": "true", "BESS_ALARMS_RESTORE_WAIT_S": "0"}
    since = datetime.now(UTC)
    nodes = {name: run_node(name, env) for name in ("recorder", "market", "planner", "alarms")}
    for proc in nodes.values():
        proc.wait_online(services.mqtt_host, services.mqtt_port, topic_root, timeout=30)
    watch = BusWatch(services.mqtt_port, topic_root, ["battery-0001", "battery-0500", "battery-1000"],
                     host=services.mqtt_host).start()
    simulator = run_node("simulator", {**env, "BESS_SIM_COUNT": str(BATTERIES), "BESS_SIM_SPECS": "varied",
                                       "BESS_SIM_TELEMETRY_INTERVAL_S": "1"})
    nodes["simulator"] = simulator
    sampler = ProcessSampler({name: proc.pid for name, proc in nodes.items()}).start()
    try:
        simulator.wait_online(services.mqtt_host, services.mqtt_port, topic_root, timeout=30)
        deadline = time.monotonic() + RUN_S
        wait_for(lambda: time.monotonic() > deadline or simulator.poll() is not None, timeout=RUN_S + 5,
                 interval=0.5, what="the run")
        simulator.assert_alive()
        unconfirmed = watch.values("simulator", "unconfirmed")
        pending = watch.values("recorder", "pending")
        stopping = time.monotonic()
        assert simulator.stop(timeout=30) == 0, "a clean stop (SIGTERM), not a SIGKILL"
        print(f"simulator stopped in {time.monotonic() - stopping:.1f} s")
        wait_for(lambda: watch.states.get("simulator") == "offline", timeout=15, what="the simulator's last status")
        readings = watch.counter("simulator", "readings") or 0
        ticks = watch.counter("simulator", "ticks") or 0
        wait_for(lambda: sum(stored_count(services.influx_url, influx_db, since).values()) >= readings,
                 timeout=30, interval=0.5, what="the recorder to store every reading")
        counts = stored_count(services.influx_url, influx_db, since)
        assert sum(counts.values()) == readings, "lost or doubled readings"
        assert len(counts) == BATTERIES
        # every tick published every battery (the SIGTERM may have cut the last one short)
        assert set(counts.values()) <= {ticks - 1, ticks}, (ticks, sorted(set(counts.values())))
        assert ticks >= RUN_S - 3, f"{ticks} ticks in {RUN_S} s: {watch.latest['simulator']}"
        assert watch.counter("simulator", "ticks_skipped") == 0, watch.latest["simulator"]
        assert unconfirmed, "the simulator's statuses were seen"
        assert max(unconfirmed) <= 5 * BATTERIES, f"backlog beyond 5 s of readings: {unconfirmed}"
        # one batch being written and the next one filling meanwhile: the recorder's own bound
        assert max(pending, default=0) <= 2 * BATCH_MAX_POINTS, pending
        stamps = stack_stamps(services.influx_url, influx_db, since)
        assert stamps, "readings of battery-0001 are queryable"
        assert all(ms % 1000 == 0 for ms in stamps), "readings on the tick: whole seconds"
    finally:
        sampler.stop()
        watch.stop()
        print("\n".join(usage_table(sampler.usage)))


def stack_stamps(influx_url: str, db: str, since: datetime) -> list[int]:
    """The timestamps (epoch ms) of battery-0001's readings since ``since``."""
    query = (f"SELECT soc_kwh FROM telemetry WHERE battery = 'battery-0001' AND "
             f"time >= '{since.isoformat().replace('+00:00', 'Z')}'")
    series = stack.influx_query(influx_url, query, db, epoch="ms")["results"][0].get("series") or []
    return [int(row[0]) for row in (series[0]["values"] if series else [])]
