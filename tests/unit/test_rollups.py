"""The rollups' pure parts: definitions and statements (rollups.py), routing and merging (routing.py), the upkeep's
state (rollup_keeper.py). The statements themselves are proven on influxd in tests/integration/test_rollups.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import HistoryQuery, NodeState
from nodes.recorder import influxql, rollup_repair, rollups, routing
from nodes.recorder.rollup_admin import RollupSettings, ensure
from nodes.recorder.rollup_keeper import Conditions, keep
from nodes.recorder.rollups import TELEMETRY_1H, TELEMETRY_1M, RetentionPolicy
from nodes.recorder.store import Influx1Store, StoreError, WriteOutcome
from tests.support.waiting import wait_for_async

T0 = datetime(2025, 3, 4, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_the_1_min_rollup_keeps_sum_count_min_max_last_of_every_numeric_telemetry_field() -> None:
    select = rollups.rollup_select("bess", TELEMETRY_1M)
    assert select.startswith('SELECT sum("soc_kwh") AS "soc_kwh_sum",count("soc_kwh") AS "soc_kwh_count",'
                             'min("soc_kwh") AS "soc_kwh_min",max("soc_kwh") AS "soc_kwh_max",'
                             'last("soc_kwh") AS "soc_kwh_last",')
    assert 'INTO "bess"."rollup_1m"."telemetry_1m" FROM "telemetry" GROUP BY time(60s), "battery"' in select
    assert len(TELEMETRY_1M.columns()) == 5 * len(influxql.SERIES["telemetry"].numeric)
    assert "last(\"pack_voltage_v\") AS \"pack_voltage_v_last\"" in select  # the BMS fields too


def test_the_1_h_rollup_is_built_from_the_1_min_one() -> None:
    select = rollups.rollup_select("bess", TELEMETRY_1H)
    assert ('sum("soc_kwh_sum") AS "soc_kwh_sum",sum("soc_kwh_count") AS "soc_kwh_count",min("soc_kwh_min") AS '
            '"soc_kwh_min",max("soc_kwh_max") AS "soc_kwh_max",last("soc_kwh_last") AS "soc_kwh_last"') in select
    assert 'FROM "bess"."rollup_1m"."telemetry_1m" GROUP BY time(3600s), "battery"' in select


def test_a_sum_only_rollup_row_for_additive_fields() -> None:
    kpi = rollups.sum_rollup("kpi_15m", "kpi_1h", ("energy_charged_kwh", "revenue"))
    assert rollups.rollup_select("bess", kpi) == (
        'SELECT sum("energy_charged_kwh") AS "energy_charged_kwh",sum("revenue") AS "revenue" INTO '
        '"bess"."rollup_1h"."kpi_1h" FROM "kpi_15m" GROUP BY time(3600s), "battery"')
    assert kpi.marker == "energy_charged_kwh"
    by_currency = rollups.sum_rollup("kpi_15m", "kpi_1h", ("revenue",), extra_tags=("currency",))
    assert rollups.rollup_select("bess", by_currency).endswith('GROUP BY time(3600s), "battery", "currency"')
    cq = rollups.continuous_query("bess", kpi, 900)
    assert "RESAMPLE EVERY 3600s FOR 7200s" in cq.text


def test_look_backs_and_the_cq_text() -> None:
    assert rollups.look_back_s(TELEMETRY_1M, 900) == 900
    assert rollups.look_back_s(TELEMETRY_1M, 61) == 120  # whole buckets
    assert rollups.look_back_s(TELEMETRY_1H, 900) == 7200  # the hour the minutes touch, and the one before
    assert rollups.look_back_s(TELEMETRY_1H, 5400) == 10800
    cq = rollups.continuous_query("bess", TELEMETRY_1M, 900)
    assert cq.text.startswith(f'CREATE CONTINUOUS QUERY "{cq.name}" ON "bess" RESAMPLE EVERY 60s FOR 900s BEGIN SELECT')
    assert cq.text.endswith("END")
    assert rollups.owner(cq.name) is TELEMETRY_1M
    assert rollups.owner("bess_telemetry_1m") is None
    assert rollups.owner("someone_elses_cq") is None
    other = rollups.continuous_query("bess", TELEMETRY_1M, 1800)
    assert other.name != cq.name, "a changed setting is a new name"
    assert other.content == cq.content, "... whose points hold the same"


def test_retention_settings() -> None:
    assert rollups.retention_s("inf") is None
    assert rollups.retention_s("30d") == 30 * 86400
    assert rollups.retention_s("52w") == 52 * 7 * 86400
    for bad in ("30 days", "10m", "-1d", ""):
        with pytest.raises(ValueError, match="retention"):
            rollups.retention_s(bad)
    assert rollups.go_duration_s("0s") is None
    assert rollups.go_duration_s("720h0m0s") == 30 * 86400
    assert rollups.go_duration_s("1h30m0s") == 5400


def test_differences_create_alter_drop_and_recreate() -> None:
    cqs = [rollups.continuous_query("db", r, 900) for r in rollups.ROLLUPS]
    rps = [RetentionPolicy("rollup_1m", 400 * 86400), RetentionPolicy("rollup_1h", None)]
    fresh = rollups.differences("db", cqs, rps, [], {"autogen": None})
    kinds = [c.statement.split(" ")[0:2] for c in fresh]
    assert kinds == [["CREATE", "RETENTION"]] * 2 + [["CREATE", "CONTINUOUS"]] * 2
    assert all(c.missing for c in fresh if c.rollup is not None)
    assert fresh[0].statement == 'CREATE RETENTION POLICY "rollup_1m" ON "db" DURATION 34560000s REPLICATION 1'

    ok = rollups.differences("db", cqs, rps, [cq.name for cq in cqs] + ["not_ours"],
                             {"autogen": None, "rollup_1m": 400 * 86400, "rollup_1h": None})
    assert ok == []

    old = rollups.continuous_query("db", TELEMETRY_1M, 300)
    changed = rollups.differences("db", cqs, rps, [old.name, cqs[1].name],
                                  {"autogen": None, "rollup_1m": None, "rollup_1h": None})
    assert [c.statement for c in changed] == [
        'ALTER RETENTION POLICY "rollup_1m" ON "db" DURATION 34560000s',  # never dropped: it holds the rollups
        f'DROP CONTINUOUS QUERY "{old.name}" ON "db"',
        cqs[0].text,
    ]
    assert not changed[2].missing, "replaced, not missing: its coverage may stay"


def test_chunks_are_whole_buckets_cut_at_utc_days() -> None:
    parts = rollups.chunks(T0 + timedelta(minutes=5, seconds=30), T0 + timedelta(days=2, seconds=1), 60)
    assert parts == [(T0 + timedelta(minutes=5), T0 + timedelta(days=1)),
                     (T0 + timedelta(days=1), T0 + timedelta(days=2)),
                     (T0 + timedelta(days=2), T0 + timedelta(days=2, minutes=1))]
    assert rollups.backfill_statement("db", TELEMETRY_1M, *parts[0], "b1").endswith(
        "WHERE \"battery\"='b1' AND time >= '2025-03-04T00:05:00.000000Z' AND time < '2025-03-05T00:00:00.000000Z' "
        'GROUP BY time(60s), "battery"')


def test_first_complete_bucket_of_a_new_cq() -> None:
    created = T0 + timedelta(hours=5, minutes=7, seconds=20)
    # its first run (05:08) covers 04:53..05:08; one bucket more for safety
    assert rollups.first_complete(TELEMETRY_1M, created, 900) == T0 + timedelta(hours=4, minutes=54)


def test_segments_serve_whole_covered_buckets_from_the_coarsest_level() -> None:
    levels = [(TELEMETRY_1M, T0, T0 + 5 * H + 10 * M), (TELEMETRY_1H, T0, T0 + 4 * H)]
    begin, end = T0 - 17 * M, T0 + 5 * H + 12 * M + timedelta(seconds=3)
    assert routing.segments(begin, end, levels) == [
        (None, begin, T0),  # before coverage: raw
        (TELEMETRY_1H, T0, T0 + 4 * H),
        (TELEMETRY_1M, T0 + 4 * H, T0 + 5 * H + 10 * M),  # the newest hour: minutes
        (None, T0 + 5 * H + 10 * M, end),  # the live edge: raw
    ]
    inner = routing.segments(T0 + 30 * M + timedelta(seconds=5), T0 + 2 * H, levels)
    assert inner == [(None, T0 + 30 * M + timedelta(seconds=5), T0 + 31 * M), (TELEMETRY_1M, T0 + 31 * M, T0 + H),
                     (TELEMETRY_1H, T0 + H, T0 + 2 * H)]
    assert routing.segments(begin, end, []) == [(None, begin, end)]


def _plan(every_s: int | None, begin: datetime = T0, end: datetime = T0 + 3 * H) -> influxql.Plan:
    return influxql.plan(HistoryQuery(kind="telemetry", battery="b1", begin=begin, end=end, every_s=every_s,
                                      limit=10))


def test_which_rollups_may_serve_a_request() -> None:
    assert routing.chain(_plan(3600)) == (TELEMETRY_1M, TELEMETRY_1H)
    assert routing.chain(_plan(7200)) == (TELEMETRY_1M, TELEMETRY_1H)
    assert routing.chain(_plan(300)) == (TELEMETRY_1M,)
    assert routing.chain(_plan(44)) == ()
    assert routing.chain(_plan(None)) == ()
    prices = influxql.plan(HistoryQuery(kind="prices", zone="de", begin=T0, end=T0 + H, every_s=3600))
    assert routing.chain(prices) == (), "only telemetry has rollups"


def test_segments_add_up_sums_and_counts_so_a_mean_is_never_a_mean_of_means() -> None:
    checked = _plan(3600)
    n = len(checked.series.numeric)
    sums: routing.Sums = {}
    bucket = int(T0.timestamp()) * 1_000_000

    def row(soc_sum: float, soc_n: int, power_sum: float | None, power_n: int | None) -> list[Any]:
        values: list[Any] = [None] * (2 * n)
        values[0:4] = [soc_sum, soc_n, power_sum, power_n]
        return [bucket, *values]

    routing.add_rows(sums, [row(300.0, 3, 10.0, 1)])  # a rollup's 3 points
    routing.add_rows(sums, [row(100.0, 1, None, None)])  # one raw point at the edge, without power
    (merged,) = routing.mean_rows(checked, sums)
    assert merged[0] == bucket
    assert merged[1] == 100.0  # 400 / 4: not the mean of 100 and 100 weighted as halves
    assert merged[2] == 10.0
    columns = checked.query_columns
    assert merged[columns.index(influxql.count_column("power_kw")) + 1] == 1


def test_stale_values_are_taken_out_of_raw_sums() -> None:
    checked = _plan(3600)
    sums: routing.Sums = {}
    bucket = int(T0.timestamp()) * 1_000_000
    values: list[Any] = [None] * (2 * len(checked.series.numeric))
    values[0:4] = [300.0, 3, 30.0, 2]
    routing.add_rows(sums, [[bucket, *values]])
    optional = checked.series.optional
    stale = [bucket + 5, "power_kw", *[20.0 if name == "power_kw" else None for name in optional]]
    routing.take_out_stale(checked, sums, [stale])
    (merged,) = routing.mean_rows(checked, sums)
    assert merged[2] == 10.0  # (30 - 20) / (2 - 1)


def test_conditions_keep_the_node_degraded_while_any_part_is() -> None:
    seen: list[tuple[NodeState, str]] = []
    conditions = Conditions(lambda state, reason: seen.append((state, reason)))
    store, rollup = conditions.setter("store"), conditions.setter("rollups")
    rollup("degraded", "rollups not maintained")
    store("degraded", "store unavailable")
    store("online", "")
    assert seen[-1] == ("degraded", "rollups not maintained"), "the store's recovery does not hide the rollups"
    rollup("online", "")
    assert seen[-1] == ("online", "")


class _Refusing(Influx1Store):
    """A store whose server refuses every statement, as one without CQs (InfluxDB 3) or admin rights does."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "db")

    async def influxql(self, statements: list[str]) -> list[dict[str, Any]]:
        raise StoreError("query failed: error parsing query: found CONTINUOUS, expected ...")


async def test_a_server_that_cannot_hold_the_rollups_makes_the_recorder_degraded_with_the_reason() -> None:
    seen: list[tuple[NodeState, str]] = []
    task = asyncio.create_task(keep(_Refusing(), RollupSettings("db"), lambda s, r: seen.append((s, r)),
                                    recheck_s=3600))
    try:
        await wait_for_async(lambda: seen, timeout=5, what="the rollups' state")
    finally:
        task.cancel()
    assert seen[0][0] == "degraded"
    assert "rollups not maintained, history means come from raw points" in seen[0][1]
    assert "CONTINUOUS" in seen[0][1]


def test_a_corrected_bucket_leaves_out_what_each_point_s_mask_names() -> None:
    series = rollup_repair.series_of(TELEMETRY_1M)
    assert series is not None
    assert rollup_repair.series_of(TELEMETRY_1H) is None, "1-h buckets are rebuilt from corrected minutes"
    fields = TELEMETRY_1M.fields
    row1: list[object] = [0, *[None] * len(fields), "bms"]
    row1[1 + fields.index("soc_kwh")], row1[1 + fields.index("power_kw")] = 10.0, 5.0
    row2: list[object] = [1, *[None] * len(fields), "power_kw,bms"]  # rewritten without power: 7.0 is stale
    row2[1 + fields.index("soc_kwh")], row2[1 + fields.index("power_kw")] = 20.0, 7.0
    line = rollup_repair.corrected_line(TELEMETRY_1M, series, "b1", T0, [row1, row2])
    assert line is not None
    assert line.startswith("telemetry_1m,battery=b1 soc_kwh_sum=30.0,soc_kwh_min=10.0,soc_kwh_max=20.0,")
    assert "soc_kwh_last=20.0,soc_kwh_count=2i," in line
    assert "power_kw_sum=5.0,power_kw_min=5.0,power_kw_max=5.0,power_kw_last=5.0,power_kw_count=1i" in line
    assert line.endswith(f" {int(T0.timestamp()) * 1_000_000}")
    assert "pack_voltage_v" not in line
    assert rollup_repair.delete_bucket(TELEMETRY_1M, "b1", T0) == (
        "DELETE FROM \"telemetry_1m\" WHERE \"battery\"='b1' AND time >= '2025-03-04T00:00:00.000000Z' "
        "AND time < '2025-03-04T00:01:00.000000Z'")


class _NoAdmin(Influx1Store):
    """A server holding the RPs with other durations, whose login may not alter them (secure mode's recorder)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "db")
        self.ran: list[str] = []

    async def influxql(self, statements: list[str]) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for statement in statements:
            self.ran.append(statement)
            if statement.startswith("ALTER"):
                raise StoreError("query failed: error authorizing query: requires admin privilege")
            if statement.startswith("SHOW RETENTION"):
                values = [["autogen", "0s"], ["rollup_1m", "0s"], ["rollup_1h", "0s"]]
                answers.append({"series": [{"columns": ["name", "duration"], "values": values}]})
            else:
                answers.append({})
        return answers

    async def write(self, lines: list[str], *, retention_policy: str | None = None) -> WriteOutcome:
        return WriteOutcome(written=len(lines))


async def test_a_retention_only_an_admin_may_alter_keeps_no_cq_from_being_created() -> None:
    store = _NoAdmin()
    settings = RollupSettings("db", retention_1h_s=400 * 86400)
    with pytest.raises(StoreError, match=r"rollup_1h keeps forever, configured 34560000s.*admin privilege"):
        await ensure(store, settings, T0)
    created = [s for s in store.ran if s.startswith("CREATE CONTINUOUS QUERY")]
    assert len(created) == 2, "both CQs were created all the same"
