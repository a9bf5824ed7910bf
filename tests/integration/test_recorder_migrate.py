"""``python -m nodes.recorder migrate`` on a real influxd: points stored before prices named their currency.

The points are written exactly as the recorder wrote them before the rename (``price_eur_per_mwh``,
``expected_revenue_eur``, no ``currency``). Before the migration the history reads do not find their prices and
the recorder says so at start; after it they read as EUR, raw and in means, and a point written since under the
new names keeps its newer value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy import stack
from nodes.contract.messages import HistoryQuery, HistoryResult, PriceForecast, PriceSlot
from nodes.contract.topics import HISTORY
from nodes.recorder.points import epoch_us, prices_lines
from nodes.runtime.bus import Bus
from tests.integration.test_recorder import Rig
from tests.support.nodes import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

DAY0 = datetime(2025, 9, 28, 22, 0, tzinfo=UTC)  # three CET days before the upgrade
Q = timedelta(minutes=15)
SLOTS = 3 * 96
HINT = "run `python -m nodes.recorder migrate` once"
NOTHING_WAITS = "no points wait for python -m nodes.recorder migrate"


def old_price(i: int) -> float:
    return round(-20.0 + (i % 96) * 1.5, 2)


def old_lines(battery: str) -> list[str]:
    """Prices, two plans and their slots as the recorder of before the currency rename wrote them."""
    lines = [
        f'prices,zone=de-lu price_eur_per_mwh={old_price(i)},end="{(DAY0 + (i + 1) * Q).isoformat()}",'
        f'issued_at="{DAY0.isoformat()}",source="replay of de.csv" {epoch_us(DAY0 + i * Q)}'
        for i in range(SLOTS)
    ]
    for n, created in enumerate((DAY0, DAY0 + timedelta(days=1))):
        plan_id = f"p-old-{n}"
        lines.append(
            f'plan,battery={battery} plan_id="{plan_id}",expected_revenue_eur={12.5 + n},baseline_revenue_eur=8.0,'
            f'soc_initial_kwh=500.0,slots=4.0,zone="de-lu",solver="cbc",solve_ms=20.0,reason="" {epoch_us(created)}'
        )
        lines += [
            f"schedule,battery={battery},plan_id={plan_id} price_eur_per_mwh={old_price(i)},charge_kw=0.0,"
            f'discharge_kw=50.0,soc_kwh={400.0 - 10 * i},end="{(created + (i + 1) * Q).isoformat()}",'
            f'created_at="{created.isoformat()}" {epoch_us(created + i * Q)}'
            for i in range(4)
        ]
    return lines


def migrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nodes.recorder", "migrate", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )


async def ask(bus: Bus, **query: Any) -> HistoryResult:
    answer: HistoryResult = await bus.request(HISTORY, HistoryQuery(**query))
    assert answer.ok, answer.error
    return answer


def column(answer: HistoryResult, name: str) -> list[Any]:
    i = answer.columns.index(name)
    return [row[i] for row in answer.rows]


async def test_migrate_makes_points_of_before_the_currency_rename_readable(rig: Rig, publisher: Bus) -> None:
    stack.influx_write(rig.services.influx_url, rig.db, old_lines(rig.battery), precision="u")
    # one slot the feed published again after the upgrade: under the new names, with its (newer) price
    newer = PriceForecast(zone="de-lu", issued_at=DAY0 + timedelta(days=2), source="ENTSO-E", slots=[
        PriceSlot(start=DAY0 + 5 * Q, end=DAY0 + 6 * Q, price_per_mwh=77.7)])
    stack.influx_write(rig.services.influx_url, rig.db, prices_lines("de-lu", newer), precision="u")
    span: dict[str, Any] = {"begin": DAY0, "end": DAY0 + 3 * timedelta(days=1)}

    rig.env["BESS_LOG_LEVEL"] = "DEBUG"  # the check says it found nothing only at DEBUG
    recorder = rig.start()
    wait_for(lambda: HINT in recorder.log_text(), 20, 0.1, what="the recorder naming the migration")
    assert "(2 plan, 287 prices points)" in recorder.log_text()  # the slot written since is not waiting
    wait_for(lambda: rig.counter("unmigrated_points") == 289, 10, 0.2, what="the unmigrated_points counter")
    before = await ask(publisher, kind="prices", zone="de-lu", limit=1000, **span)
    assert [p for p in column(before, "price_per_mwh") if p is not None] == [77.7]  # the old prices: not found

    dry = migrate(rig.env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "prices: points under the old names (price_eur_per_mwh -> price_per_mwh): 288; to rewrite" in dry.stdout
    assert "to rewrite with currency EUR: 287; already naming a currency, left alone: 1" in dry.stdout
    assert rig.count("prices", "price_per_mwh") == 1  # nothing written

    done = migrate(rig.env)
    assert done.returncode == 0, done.stderr
    assert "schedule: points under the old names (price_eur_per_mwh -> price_per_mwh): 8; rewritten with " \
           "currency EUR: 8" in done.stdout
    assert "plan: points under the old names (expected_revenue_eur -> expected_revenue, baseline_revenue_eur -> " \
           "baseline_revenue): 2; rewritten with currency EUR: 2" in done.stdout
    assert "rewritten with currency EUR: 287; already naming a currency, left alone: 1" in done.stdout
    assert done.stderr == ""

    # raw: every old slot under its new name, in EUR; the slot written since keeps its newer price
    after = await ask(publisher, kind="prices", zone="de-lu", limit=1000, **span)
    expected = [77.7 if i == 5 else old_price(i) for i in range(SLOTS)]
    assert column(after, "price_per_mwh") == expected
    assert set(column(after, "currency")) == {"EUR"}
    assert column(after, "source") == ["ENTSO-E" if i == 5 else "replay of de.csv" for i in range(SLOTS)]
    # means (issue 11: they name the currency)
    daily = await ask(publisher, kind="prices", zone="de-lu", every_s=86400, **span)
    assert set(column(daily, "currency")) == {"EUR"}
    assert sum(column(daily, "price_per_mwh")) > 0
    plans = await ask(publisher, kind="schedule", battery=rig.battery, limit=100, **span)
    assert column(plans, "price_per_mwh") == [old_price(i) for i in range(4)] * 2
    assert set(column(plans, "currency")) == {"EUR"}
    (plan, _) = sorted(rig.select("SELECT * FROM plan"), key=lambda r: r["time"])
    assert (plan["expected_revenue"], plan["baseline_revenue"], plan["currency"]) == (12.5, 8.0, "EUR")

    again = migrate(rig.env)
    assert again.returncode == 0
    assert again.stdout.count("rewritten with currency EUR: 0;") == 3  # idempotent

    # restarted, the recorder finds nothing waiting (both runs log to the same file)
    assert recorder.stop() == 0
    restarted = rig.start()
    wait_for(lambda: NOTHING_WAITS in restarted.log_text(), 20, 0.1, what="the restarted recorder's check")
    assert restarted.log_text().count(HINT) == 1  # from the first start only
    assert rig.counter("unmigrated_points") is None


def test_migrate_refuses_what_it_cannot_do(rig: Rig) -> None:
    env = {**rig.env, "BESS_STORE": "influx2", "BESS_INFLUX_TOKEN": "t", "BESS_INFLUX_ORG": "o"}
    refused = migrate(env)
    assert refused.returncode == 2
    assert "BESS_STORE=influx1" in refused.stderr
    missing = migrate({**rig.env, "BESS_INFLUX_DB": "no_such_db_here"})
    assert missing.returncode == 1
    assert "database not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
