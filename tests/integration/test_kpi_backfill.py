"""``python -m nodes.renderer kpis backfill`` against a real InfluxDB (issue 14, part B): it stores the final
days of a past range as the renderer computes them, exactly, once (a second run finds them stored)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from deploy import stack
from nodes.contract.messages import HistoryQuery
from nodes.recorder.points import telemetry_line
from nodes.recorder.store import Influx1Store
from nodes.renderer import kpi_store, ledger
from nodes.renderer.kpis import KpiBook, compute_day
from nodes.renderer.ledger import DAY_S
from nodes.renderer.series import PriceSeries, TelemetrySeries
from tests.integration.test_kpi_days import price, price_lines, readings
from tests.support.services import Services

pytestmark = pytest.mark.integration


def backfill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodes.renderer", "kpis", "backfill", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False)


async def test_backfill_stores_the_days_the_renderer_would_compute_once(
    node_env: dict[str, str], services: Services, influx_db: str
) -> None:
    now_s = int(datetime.now(UTC).timestamp())
    day = math.floor(now_s / DAY_S) - 5
    points = readings(day * DAY_S - 3600, day * DAY_S + 20 * 3600)  # from the evening before into the day
    stack.influx_write(services.influx_url, influx_db, [telemetry_line("bf", t) for t in points], precision="u")
    stack.influx_write(services.influx_url, influx_db, price_lines(day * DAY_S - 2 * 86400, 5 * 24), precision="u")
    span = ["--battery", "bf", "--begin", datetime.fromtimestamp((day - 1) * DAY_S, UTC).isoformat(),
            "--end", datetime.fromtimestamp((day + 1) * DAY_S, UTC).isoformat()]

    first = backfill(node_env, *span)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert sum(line.endswith("stored") and "already" not in line for line in lines) == 2, first.stdout
    assert "2 day(s) computed and stored" in lines[-1]

    store = Influx1Store(services.influx_url, influx_db)
    await store.open()
    try:
        result = await store.query(HistoryQuery(kind="kpi", battery="bf", begin=datetime.fromtimestamp(
            (day - 1) * DAY_S, UTC), end=datetime.fromtimestamp((day + 1) * DAY_S, UTC), limit=1000))
    finally:
        await store.close()
    stored = {c.day: c for c in kpi_store.chunks_from_result(result)}
    assert sorted(stored) == [day - 1, day]
    # what the renderer computes from the same rows, bit for bit
    series = TelemetrySeries.from_arrays(np.array([p.ts.timestamp() for p in points]),
                                         np.array([p.soc_kwh for p in points]),
                                         np.array([p.power_kw for p in points]))
    start = np.arange(day * DAY_S - 2 * 86400, day * DAY_S + 3 * 86400, 3600.0)
    prices = PriceSeries.from_arrays(start, start + 3600.0, np.array([price(s) for s in start]))
    for d in (day - 1, day):
        want = compute_day(d, series, prices, now_s, KpiBook())
        assert np.array_equal(stored[d].buckets.sums, want.buckets.sums), d
        assert stored[d].currencies == ("EUR",)
    assert stored[day].buckets.sums[:, ledger.DISCHARGED].sum() > 100

    again = backfill(node_env, *span)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already stored") == 2
    assert "0 day(s) computed" in again.stdout
    forced = backfill(node_env, *span, "--force")
    assert "2 day(s) computed and stored" in forced.stdout, forced.stdout
