"""Rollups on the server: create and check them, back-fill a past range, read their coverage, apply raw retention.

The statements come from :mod:`nodes.recorder.rollups` (pure); this module runs them through
:meth:`Influx1Store.influxql` (InfluxDB 1.x's v1 API; InfluxDB 3 answers the v1 API but has no CQs, so
:func:`ensure` fails there with the server's reason and history stays on raw means).

Coverage (:data:`rollups.COVERAGE`, one point per rollup): the first bucket from which the rollup is complete, and
the hash of the SELECT that filled it. The query router (:mod:`nodes.recorder.routing`) uses a rollup only from
there on and only while the hash is the configured one; before it, history is served from raw points (correct,
slower). A rollup whose CQ is created fresh is complete from its first run's look-back; a rollup whose CQ was
missing (dropped by hand, or rollups were off for a while) may have missed points, so its coverage starts again
there, and so does that of every rollup built on it. ``backfill`` moves coverage back to the start of its range
when the range reaches the covered part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.recorder import raw_guard, rollup_repair, rollups
from nodes.recorder.influxql import ident, time_literal
from nodes.recorder.rollups import ContinuousQuery, RetentionPolicy, Rollup
from nodes.recorder.store import Influx1Store, StoreError

log = logging.getLogger("bess.recorder.rollups")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RollupSettings:
    """What should exist on the server (from the recorder's ``BESS_RECORDER_ROLLUP*`` settings)."""

    database: str
    late_s: int = 900
    retention_1m_s: int | None = None
    retention_1h_s: int | None = None
    raw_retention_s: int | None = None
    rollups: tuple[Rollup, ...] = rollups.ROLLUPS

    @classmethod
    def from_config(cls, config: Any) -> RollupSettings:
        """From a :class:`~nodes.recorder.config.RecorderConfig` (already checked by ``problems()``)."""
        return cls(
            database=config.influx_db,
            late_s=config.recorder_rollup_late_s,
            retention_1m_s=rollups.retention_s(config.recorder_rollup_1m_retention),
            retention_1h_s=rollups.retention_s(config.recorder_rollup_1h_retention),
            raw_retention_s=rollups.retention_s(config.recorder_raw_retention),
        )

    def retention(self, rp: str) -> int | None:
        """The configured duration of one of the rollups' retention policies (None: forever)."""
        return {"rollup_1m": self.retention_1m_s, "rollup_1h": self.retention_1h_s}.get(rp)

    def cqs(self) -> list[ContinuousQuery]:
        """The continuous queries that should exist."""
        return [rollups.continuous_query(self.database, r, self.late_s) for r in self.rollups]

    def rps(self) -> list[RetentionPolicy]:
        """The retention policies that should exist (one per rollup RP, in first-use order)."""
        names = list(dict.fromkeys(r.rp for r in self.rollups))
        return [RetentionPolicy(name, self.retention(name)) for name in names]


@dataclass(frozen=True)
class Coverage:
    """Since when a rollup is complete, and the hash of what filled it."""

    since: datetime
    content: str


@dataclass
class EnsureReport:
    """What :func:`ensure` found and did."""

    changes: list[rollups.Change] = field(default_factory=list)
    coverage: dict[str, Coverage] = field(default_factory=dict)


async def shown(store: Influx1Store) -> tuple[list[str], dict[str, int | None]]:
    """The CQ names on the store's database and its retention policies (name -> duration s, None = infinite)."""
    db = store.database
    cq_answer, rp_answer = await store.influxql(["SHOW CONTINUOUS QUERIES", f"SHOW RETENTION POLICIES ON {ident(db)}"])
    names = [str(row[0]) for series in cq_answer.get("series") or [] if series.get("name") == db
             for row in series.get("values") or []]
    rps: dict[str, int | None] = {}
    for series in rp_answer.get("series") or []:
        columns = series["columns"]
        for row in series.get("values") or []:
            rps[str(row[columns.index("name")])] = rollups.go_duration_s(str(row[columns.index("duration")]))
    return names, rps


async def check(store: Influx1Store, settings: RollupSettings) -> list[rollups.Change]:
    """Every difference between the server and the settings (empty: all as configured)."""
    names, rps = await shown(store)
    return rollups.differences(settings.database, settings.cqs(), settings.rps(), names, rps)


async def read_coverage(store: Influx1Store) -> dict[str, Coverage]:
    """Every rollup's coverage point (rollup name -> coverage)."""
    (answer,) = await store.influxql([rollups.coverage_query()])
    found: dict[str, Coverage] = {}
    for series in answer.get("series") or []:
        columns = series["columns"]
        for row in series.get("values") or []:
            since_us, content, name = (row[columns.index(c)] for c in ("since_us", "content", "rollup"))
            if isinstance(since_us, int) and isinstance(name, str):
                found[name] = Coverage(_EPOCH + timedelta(microseconds=since_us), str(content or ""))
    return found


async def write_coverage(store: Influx1Store, rollup: Rollup, coverage: Coverage) -> None:
    """Store a rollup's coverage (replaces the previous one)."""
    outcome = await store.write([rollups.coverage_line(rollup, coverage.since, coverage.content)])
    if outcome.rejected:
        raise RuntimeError(f"coverage of {rollup.name} refused: {outcome.rejected[0].reason}")


async def ensure(store: Influx1Store, settings: RollupSettings, now: datetime) -> EnsureReport:
    """Make the server hold the configured RPs and CQs (create what is missing, replace what differs, log each),
    and keep each rollup's coverage true. Raises StoreError (e.g. no admin rights, no CQs on this server) or
    StoreUnavailable."""
    report = EnsureReport(changes=await check(store, settings))
    failed: list[str] = []
    done: list[rollups.Change] = []
    for change in report.changes:  # each on its own: a retention only an admin may alter keeps no CQ from running
        log.warning("rollups: %s: running %s", change.problem, change.statement[:160])
        try:
            await store.influxql([change.statement])
            done.append(change)
        except StoreError as exc:
            failed.append(f"{change.problem}: {exc}")
    coverage = await read_coverage(store)
    cqs = {cq.rollup.name: cq for cq in settings.cqs()}
    created = {c.rollup.name: c for c in done if c.rollup is not None and c.statement.startswith("CREATE")}
    restarted: set[str] = set()
    for rollup in settings.rollups:  # finer first: a rollup built on a restarted one restarts too
        cq = cqs[rollup.name]
        old = coverage.get(rollup.name)
        made = created.get(rollup.name)
        source_restarted = rollup.source in restarted
        if old is not None and old.content == cq.content and not source_restarted and (
                made is None or not made.missing):
            continue  # unchanged, or the same SELECT under a new look-back: its points stay valid
        since = rollups.first_complete(rollup, now, settings.late_s)
        source = coverage.get(rollup.source)
        if source is not None and rollup.source_rp is not None:
            since = max(since, rollups.align_up(source.since, rollup.resolution_s))
        coverage[rollup.name] = Coverage(since, cq.content)
        restarted.add(rollup.name)
        await write_coverage(store, rollup, coverage[rollup.name])
        if old is not None:
            log.warning("rollups: %s is complete only from %s on (its CQ was %s); to serve older history from it "
                        "run: python -m nodes.recorder rollups backfill --begin %s --end %s", rollup.name,
                        since.isoformat(), "missing" if made is not None and made.missing else "changed",
                        old.since.isoformat(), since.isoformat())
        elif rollup.source_rp is None and (first := await _first_point(store, rollup, since)) is not None:
            log.warning("rollups: %s is new; the history before %s (from %s) is served from raw points until "
                        "you run: python -m nodes.recorder rollups backfill --begin %s --end %s", rollup.name,
                        since.isoformat(), first.isoformat(), first.isoformat(), since.isoformat())
    report.coverage = coverage
    if failed:
        raise StoreError("; ".join(failed))
    return report


Progress = Callable[[str], None]


async def backfill(store: Influx1Store, settings: RollupSettings, begin: datetime, end: datetime, *,
                   battery: str | None = None, progress: Progress = print) -> int:
    """Compute every rollup for ``[begin, end)`` (widened to whole buckets of the coarsest rollup, day-sized
    chunks, finer rollups first) with the CQs' own SELECT ... INTO; idempotent (a bucket is a point keyed by its
    time and tag, written again the same). Moves each rollup's coverage back to ``begin`` when the range reaches
    it (not for one battery: the others are not rolled). Returns the points written."""
    written = 0
    for change in await check(store, settings):  # the RPs must exist to write into (the CQs are the recorder's)
        if change.statement.startswith("CREATE RETENTION POLICY"):
            progress(f"{change.problem}: creating it")
            await store.influxql([change.statement])
    coverage = await read_coverage(store)
    # whole buckets of the coarsest rollup at every level: a 1-h bucket is then made of 60 minutes that were all
    # rolled from raw points just before, never of the minutes up to --end alone (a partial hour that looks final)
    outer = max(r.resolution_s for r in settings.rollups)
    begin, end = rollups.align_down(begin, outer), rollups.align_up(end, outer)
    for rollup in settings.rollups:
        parts = rollups.chunks(begin, end, rollup.resolution_s)
        count = 0
        for i, (lo, hi) in enumerate(parts, 1):
            (answer,) = await store.influxql([rollups.backfill_statement(store.database, rollup, lo, hi, battery)])
            count += _written(answer)
            fixed = await correct_rewrites(store, rollup, lo, hi, battery)
            note = f", {fixed} bucket(s) with rewritten points corrected" if fixed else ""
            progress(f"{rollup.name}: {i}/{len(parts)} {lo.isoformat()} .. {hi.isoformat()}: {count} points so far"
                     f"{note}")
        written += count
        if battery is not None or not parts:
            continue
        content = rollups.content_hash(store.database, rollup)
        old = coverage.get(rollup.name)
        since = parts[0][0]
        source = coverage.get(rollup.source)
        if rollup.source_rp is not None and source is not None:
            since = max(since, rollups.align_up(source.since, rollup.resolution_s))
        if old is not None and old.content == content and parts[-1][1] < old.since and await _has_points(
                store, rollup, parts[-1][1], old.since):
            progress(f"{rollup.name}: the range ends before {old.since.isoformat()}, where the rollup is complete "
                     "from: back-fill up to there to serve this range from it")
            continue
        if old is None or old.content != content or since < old.since:
            coverage[rollup.name] = Coverage(since, content)
            await write_coverage(store, rollup, coverage[rollup.name])
            progress(f"{rollup.name}: complete from {since.isoformat()}")
    return written


async def correct_rewrites(store: Influx1Store, rollup: Rollup, begin: datetime, end: datetime,
                           battery: str | None = None) -> int:
    """Recompute the buckets of ``[begin, end)`` holding a point a later write left a field out of (the CQ rolled
    the value InfluxDB kept), from their raw points with the ``absent`` masks applied; returns how many."""
    series = rollup_repair.series_of(rollup)
    if series is None or not series.optional:
        return 0
    (answer,) = await store.influxql([rollup_repair.stale_statement(rollup, series, begin, end, battery)])
    buckets: set[tuple[str, datetime]] = set()
    for part in answer.get("series") or []:
        tag_value = str((part.get("tags") or {}).get(rollup.tag, ""))
        for row in part.get("values") or []:
            at = _EPOCH + timedelta(microseconds=int(row[0]))
            buckets.add((tag_value, rollups.align_down(at, rollup.resolution_s)))
    for tag_value, bucket in sorted(buckets):
        (raw,) = await store.influxql([rollup_repair.bucket_statement(rollup, series, tag_value, bucket)])
        rows = [list(values) for part in raw.get("series") or [] for values in part.get("values") or []]
        line = rollup_repair.corrected_line(rollup, series, tag_value, bucket, rows)
        await store.influxql([rollup_repair.delete_bucket(rollup, tag_value, bucket)])
        if line is not None:
            outcome = await store.write([line], retention_policy=rollup.rp)
            if outcome.rejected:
                raise RuntimeError(f"corrected {rollup.name} point refused: {outcome.rejected[0].reason}")
    return len(buckets)


async def _first_point(store: Influx1Store, rollup: Rollup, before: datetime) -> datetime | None:
    """The time of the source's first point before ``before`` (None: it has none)."""
    source = rollups.source_ref(store.database, rollup)
    (answer,) = await store.influxql([f"SELECT first({ident(rollup.fields[0])}) FROM {source} WHERE time < "
                                      f"{time_literal(before)}"])
    for series in answer.get("series") or []:
        for row in series.get("values") or []:
            return _EPOCH + timedelta(microseconds=int(row[0]))
    return None


async def _has_points(store: Influx1Store, rollup: Rollup, begin: datetime, end: datetime) -> bool:
    """Does the rollup's source hold points in ``[begin, end)`` (a gap back-filled ranges do not bridge)?"""
    source = rollups.source_ref(store.database, rollup)
    field = rollup.fields[0] if rollup.source_rp is None or rollup.kind == "sum" else f"{rollup.fields[0]}_count"
    (answer,) = await store.influxql([f"SELECT first({ident(field)}) FROM {source} WHERE time >= "
                                      f"{time_literal(begin)} AND time < {time_literal(end)}"])
    return bool(answer.get("series"))


def _written(answer: dict[str, Any]) -> int:
    for series in answer.get("series") or []:
        if series.get("name") == "result" and "written" in series.get("columns", ()):
            return sum(int(row[series["columns"].index("written")]) for row in series["values"])
    return 0


async def apply_raw_retention(store: Influx1Store, settings: RollupSettings, now: datetime,
                              measurement: str = "telemetry") -> str | None:
    """Delete raw ``measurement`` points older than the raw retention, but only where the 1-min rollup covers them
    (never a point no rollup holds) and, per battery, only up to the first day whose KPI day is not stored
    (:mod:`nodes.recorder.raw_guard`). Returns a reason when it must keep some (coverage starts later, or KPI days
    are missing), else None."""
    if settings.raw_retention_s is None:
        return None
    minute = next(r for r in settings.rollups if r.source == measurement and r.source_rp is None)
    cutoff = rollups.align_down(now - timedelta(seconds=settings.raw_retention_s), minute.resolution_s)
    covered = (await read_coverage(store)).get(minute.name)
    if covered is None or covered.content != rollups.content_hash(store.database, minute) or covered.since >= cutoff:
        since = "nowhere" if covered is None else f"from {covered.since.isoformat()}"
        return (f"raw {measurement} older than {cutoff.isoformat()} is kept: {minute.name} is complete {since} "
                "(run rollups backfill to cover it)")
    # per battery, never past a day whose KPI day is not stored yet (nodes.recorder.raw_guard says why)
    (oldest,) = await store.influxql([raw_guard.first_query(measurement, minute.fields[0], covered.since, cutoff)])
    first_day = raw_guard.earliest_day(oldest)
    if first_day is None:
        return None  # nothing left to delete
    begin = max(first_day, covered.since)
    upper = cutoff + timedelta(seconds=raw_guard.KPI_SPAN_S)
    data, stored = await store.influxql([
        raw_guard.days_query(rollups.target_ref(store.database, minute), minute.marker, begin, upper),
        raw_guard.days_query(ident("kpi_1d"), "buckets", begin, upper),
    ])
    battery_limits = raw_guard.limits(raw_guard.days_of(data), raw_guard.days_of(stored), cutoff)
    statements = raw_guard.delete_statements(measurement, begin, battery_limits)
    if statements:
        await store.influxql(statements)
    held = raw_guard.held_back(battery_limits, cutoff)
    return raw_guard.describe(held, battery_limits) if held else None


__all__ = [
    "Coverage", "EnsureReport", "RollupSettings", "apply_raw_retention", "backfill", "check", "correct_rewrites",
    "ensure",
    "read_coverage", "shown", "write_coverage",
]
