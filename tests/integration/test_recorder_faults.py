"""At least once, nothing lost: the recorder SIGKILLed mid-stream, and InfluxDB stopped while messages flow."""

from __future__ import annotations

import asyncio

import pytest

from nodes.contract.topics import TELEMETRY
from nodes.recorder.points import epoch_us
from nodes.runtime.bus import Bus
from tests.integration.test_recorder import Rig, make_publisher, publish_telemetry, telemetry
from tests.support.services import Services
from tests.support.waiting import wait_for_async

pytestmark = pytest.mark.integration

N = 10_000


async def publish_paced(bus: Bus, battery: str, n: int, chunk: int = 250) -> None:
    """Publish telemetry 0..n-1 (distinct timestamps) in chunks with a pause between, so the stream spans a while."""
    for start in range(0, n, chunk):
        await publish_telemetry(bus, battery, range(start, min(start + chunk, n)))
        await asyncio.sleep(0.02)


async def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(rig: Rig, publisher: Bus) -> None:
    first = rig.start()
    stream = asyncio.create_task(publish_paced(publisher, rig.battery, N))
    await wait_for_async(lambda: rig.count() >= 1000, 60, 0.05, what="the first batches stored")
    first.kill_now()  # SIGKILL: handlers waiting for a batch die with their messages unacknowledged
    at_kill = rig.count()
    assert at_kill < N, "the kill must happen mid-stream"

    second = rig.start()  # same client id: the broker redelivers the unacknowledged and the queued messages
    await stream
    await wait_for_async(lambda: rig.count() == N, 120, 0.2, what=f"{N} points after the restart")
    rows = rig.select('SELECT "soc_kwh" FROM "telemetry"')
    times = [row["time"] for row in rows]
    assert len(times) == len(set(times)) == N
    assert times == [epoch_us(telemetry(i).ts) for i in range(N)]
    assert [row["soc_kwh"] for row in rows] == [float(i) for i in range(N)]
    second.assert_alive()
    # The second instance got everything the first had not stored (plus redeliveries it rewrote harmlessly).
    await wait_for_async(lambda: (rig.counter("messages") or 0) >= N - at_kill, 10, 0.1, what="second's counters")


async def test_influxd_down_degrades_then_everything_is_stored(rig: Rig, publisher: Bus, services: Services) -> None:
    rig.start()
    await publisher.publish(TELEMETRY, telemetry(0), battery=rig.battery)
    await wait_for_async(lambda: rig.count() == 1, 15, 0.05, what="the first point")

    services.stop_influx()
    await publish_telemetry(publisher, rig.battery, range(1, 500))
    status = await wait_for_async(
        lambda: (s := rig.status()).get("state") == "degraded" and s, 20, 0.1, what="status degraded"
    )
    assert "store unavailable" in status["reason"]
    await wait_for_async(lambda: (rig.counter("retries") or 0) >= 2, 20, 0.1, what="retries while influxd is down")

    services.start_influx()
    await wait_for_async(lambda: rig.count() == 500, 60, 0.2, what="all 500 points after influxd is back")
    await wait_for_async(lambda: rig.status().get("state") == "online", 20, 0.1, what="status online again")
    assert rig.counter("rejected") == 0


async def test_broker_restart_mid_stream_loses_nothing(rig: Rig, publisher: Bus, services: Services) -> None:
    rig.start()
    await publish_telemetry(publisher, rig.battery, range(1000))
    await publisher.publish(TELEMETRY, telemetry(999), battery=rig.battery, wait_ack=True, timeout=30)
    services.stop_broker()  # clean stop: mosquitto saves sessions and queued messages, then restarts on them
    services.start_broker()
    fresh = await make_publisher(services, rig.env["BESS_TOPIC_ROOT"])  # the old one's clean session is gone
    try:
        await publish_telemetry(fresh, rig.battery, range(1000, 2000))
    finally:
        await fresh.stop()
    await wait_for_async(lambda: rig.count() == 2000, 60, 0.2, what="all 2000 points after the broker restart")
    await wait_for_async(lambda: rig.status().get("state") == "online", 20, 0.1, what="recorder online again")


async def test_sigterm_while_influxd_is_down_leaves_the_rest_for_the_next_instance(
    rig: Rig, publisher: Bus, services: Services
) -> None:
    rig.env["BESS_RECORDER_SHUTDOWN_FLUSH_S"] = "1"
    first = rig.start()
    services.stop_influx()
    await publish_telemetry(publisher, rig.battery, range(300))
    await wait_for_async(lambda: rig.counter("pending") == 300, 20, 0.1, what="300 points pending")
    assert first.stop(timeout=15) == 0  # bounded flush: gives up after 1 s, exits cleanly, acknowledges nothing
    log = first.log_text()
    assert "300 points not written" in log
    assert "Exception in callback" not in log
    services.start_influx()
    rig.start()  # the broker redelivers the 300 unacknowledged messages
    await wait_for_async(lambda: rig.count() == 300, 30, 0.2, what="all 300 points from the second instance")
