"""Rollups InfluxDB 1.x maintains itself: what they are, and the InfluxQL that makes them (pure: no I/O, no clock).

A rollup is one row of :data:`ROLLUPS`: a target measurement in its own retention policy, filled by a continuous
query (CQ) from a source measurement at a fixed resolution, grouped by the series' tag (``battery``).

=================  ===============  ======  ============  ======================================================
target             source           res.    RP            fields per source field ``f``
=================  ===============  ======  ============  ======================================================
``telemetry_1m``   ``telemetry``    1 min   rollup_1m     ``f_sum``, ``f_count``, ``f_min``, ``f_max``, ``f_last``
``telemetry_1h``   ``telemetry_1m`` 1 h     rollup_1h     the same, from the 1-min rows: sum of sums, sum of counts,
                                                          min of mins, max of maxes, last of lasts
=================  ===============  ======  ============  ======================================================

Why sums and counts, not means: a mean over any number of buckets is ``sum(f_sum) / sum(f_count)``, exactly the
mean of the raw points (never a mean of means), so a window's answer does not depend on the resolution it was
served from. The 1-h rollup reads the 1-min one (60 rows an hour instead of 3,600 raw points), which keeps the
CQs cheap. A "sum-only" row (:data:`SUM`: every field is additive, e.g. the energy/revenue integrals of
``kpi_15m``) rolls each field up as ``sum(f) AS f``: declare it with :func:`sum_rollup`.

The CQs run ``RESAMPLE EVERY <res> FOR <look-back>``: every run recomputes the buckets of the look-back
(``BESS_RECORDER_ROLLUP_LATE_S``, default 15 min for 1 min; the 1-h look-back is derived: every hour touched by
the 1-min look-back, plus one), so late samples (recorder batches, a device that delivers after an outage) are
rolled in. Later samples are rolled by ``python -m nodes.recorder rollups backfill`` over their range.

A point rewritten for its timestamp without a field keeps the earlier value in storage (InfluxDB merges fields);
raw reads drop it by the ``absent`` mask, a CQ cannot. The back-fill recomputes such buckets from their raw points
with the mask applied (:mod:`nodes.recorder.rollup_repair`).

Each CQ's name carries a hash of its text (``bess_telemetry_1m_<hash>``): the recorder compares names, not the
text the server normalises, so a changed setting is a different name (drop the old, create the new).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from nodes.recorder.influxql import ident, string_literal, time_literal
from nodes.recorder.table import SERIES

Kind = Literal["stats", "restats", "sum"]
STATS: tuple[str, ...] = ("sum", "count", "min", "max", "last")
"""The per-bucket aggregates of a stats rollup, in field order (``soc_kwh_sum``, ``soc_kwh_count``, ...)."""
SUM: Kind = "sum"
CQ_PREFIX = "bess_"
"""Every CQ the recorder manages is named ``bess_<target>_<hash>``; others are never touched."""
COVERAGE = "rollup_coverage"
"""The measurement (default RP, one point per rollup at time 0) saying since when a rollup is complete."""


@dataclass(frozen=True)
class Rollup:
    """One rollup measurement, the CQ that fills it and the retention policy that holds it."""

    name: str
    """Target measurement (``telemetry_1m``)."""
    source: str
    """Source measurement: raw (in the database's default RP, where the recorder writes) or another rollup."""
    source_rp: str | None
    """The source's retention policy; None: the database's default one."""
    resolution_s: int
    rp: str
    """The retention policy holding this rollup (its own duration, never the default RP)."""
    tag: str
    fields: tuple[str, ...]
    """The source's numeric fields rolled up (for ``restats``: the raw field names, ``f`` of ``f_sum``)."""
    kind: Kind = "stats"
    extra_tags: tuple[str, ...] = ()
    """Further tags kept apart (grouped by) besides :attr:`tag`, e.g. a ``currency`` tag of KPI buckets: amounts
    in two currencies are never summed together."""

    def columns(self) -> tuple[str, ...]:
        """The target's fields."""
        if self.kind == "sum":
            return self.fields
        return tuple(f"{name}_{stat}" for name in self.fields for stat in STATS)

    @property
    def marker(self) -> str:
        """A field every target point has (its newest point's time says how far the rollup has got)."""
        return self.fields[0] if self.kind == "sum" else f"{self.fields[0]}_count"


def stats_rollups(kind: str, measurement: str) -> tuple[Rollup, Rollup]:
    """The 1-min rollup of a raw measurement (from the history kind's numeric fields) and the 1-h one on top."""
    series = SERIES[kind]  # type: ignore[index]
    minute = Rollup(f"{measurement}_1m", measurement, None, 60, "rollup_1m", series.tag, series.numeric)
    hour = Rollup(f"{measurement}_1h", minute.name, minute.rp, 3600, "rollup_1h", series.tag, series.numeric,
                  "restats")
    return minute, hour


def sum_rollup(source: str, target: str, fields: tuple[str, ...], *, tag: str = "battery",
               extra_tags: tuple[str, ...] = (), resolution_s: int = 3600, rp: str = "rollup_1h",
               source_rp: str | None = None) -> Rollup:
    """A rollup of additive fields (each ``sum(f) AS f``), e.g. ``sum_rollup("kpi_15m", "kpi_1h", FIELDS)``; add
    it to :data:`ROLLUPS` and the recorder creates, checks and back-fills it like the others."""
    return Rollup(target, source, source_rp, resolution_s, rp, tag, fields, SUM, extra_tags)


TELEMETRY_1M, TELEMETRY_1H = stats_rollups("telemetry", "telemetry")
ROLLUPS: tuple[Rollup, ...] = (TELEMETRY_1M, TELEMETRY_1H)
"""Every rollup the recorder maintains, finer before coarser (a coarser one reads a finer one)."""
ROUTES: dict[str, tuple[Rollup, ...]] = {"telemetry": (TELEMETRY_1M, TELEMETRY_1H)}
"""History kind -> the stats rollups that can answer its means, finer first."""


# -- settings -> what should exist --------------------------------------------------------------------------------


_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_GO_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def retention_s(text: str) -> int | None:
    """A retention setting (``inf``, ``30d``, ``720h``, ``52w``) in seconds; None for ``inf`` (keep forever).
    InfluxDB refuses durations under 1 h; so does this."""
    text = text.strip().lower()
    if text in ("inf", "infinite", "0"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"a retention is 'inf' or a number with s, m, h, d or w (e.g. 30d), got {text!r}")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds < 3600:
        raise ValueError(f"a retention must be at least 1h (InfluxDB's minimum), got {text!r}")
    return seconds


def go_duration_s(text: str) -> int | None:
    """A duration as ``SHOW RETENTION POLICIES`` prints it (``720h0m0s``; ``0s`` = infinite) in seconds."""
    total = sum(float(n) * _GO_UNIT_S[unit] for n, unit in _GO_PART.findall(text))
    return None if total == 0 else round(total)


def look_back_s(rollup: Rollup, late_s: int) -> int:
    """How far back each CQ run recomputes: ``late_s`` for a rollup of raw points (at least two buckets), and for
    one built on a finer rollup every one of its buckets the finer look-back touches, plus one."""
    res = rollup.resolution_s
    if rollup.source_rp is None:
        return max(2 * res, -(-late_s // res) * res)
    return (-(-late_s // res) + 1) * res


@dataclass(frozen=True)
class RetentionPolicy:
    """A retention policy the rollups need (never the default one)."""

    name: str
    duration_s: int | None
    """None: infinite."""


def influx_duration(seconds: int | None) -> str:
    """``INF`` or whole seconds (``2592000s``)."""
    return "INF" if seconds is None else f"{int(seconds)}s"


def create_rp(database: str, rp: RetentionPolicy) -> str:
    """``CREATE RETENTION POLICY`` (not DEFAULT: raw writes and every other measurement stay where they are)."""
    return (f"CREATE RETENTION POLICY {ident(rp.name)} ON {ident(database)} "
            f"DURATION {influx_duration(rp.duration_s)} REPLICATION 1")


def alter_rp(database: str, rp: RetentionPolicy) -> str:
    """``ALTER RETENTION POLICY ... DURATION`` (never dropped: that would delete the rollups it holds)."""
    return f"ALTER RETENTION POLICY {ident(rp.name)} ON {ident(database)} DURATION {influx_duration(rp.duration_s)}"


# -- statements ---------------------------------------------------------------------------------------------------


def _select_list(rollup: Rollup) -> str:
    if rollup.kind == "sum":
        parts = [f"sum({ident(f)}) AS {ident(f)}" for f in rollup.fields]
    elif rollup.kind == "stats":
        parts = [f"{stat}({ident(f)}) AS {ident(f'{f}_{stat}')}" for f in rollup.fields for stat in STATS]
    else:  # from a finer stats rollup: sums and counts add, extremes and last carry over
        again = {"sum": "sum", "count": "sum", "min": "min", "max": "max", "last": "last"}
        parts = [f"{again[stat]}({ident(f'{f}_{stat}')}) AS {ident(f'{f}_{stat}')}"
                 for f in rollup.fields for stat in STATS]
    return ",".join(parts)


def target_ref(database: str, rollup: Rollup) -> str:
    """``"db"."rollup_1m"."telemetry_1m"``."""
    return f"{ident(database)}.{ident(rollup.rp)}.{ident(rollup.name)}"


def source_ref(database: str, rollup: Rollup) -> str:
    """The source measurement, in its RP (the raw one without: the database's default RP, as written)."""
    if rollup.source_rp is None:
        return ident(rollup.source)
    return f"{ident(database)}.{ident(rollup.source_rp)}.{ident(rollup.source)}"


def rollup_select(database: str, rollup: Rollup, where: str = "") -> str:
    """The ``SELECT ... INTO ... GROUP BY time(res), tag`` of a rollup (the CQ's body; with ``where`` a back-fill)."""
    condition = f" WHERE {where}" if where else ""
    return (f"SELECT {_select_list(rollup)} INTO {target_ref(database, rollup)} FROM {source_ref(database, rollup)}"
            f"{condition} GROUP BY time({rollup.resolution_s}s), "
            f"{', '.join(ident(tag) for tag in (rollup.tag, *rollup.extra_tags))}")


def content_hash(database: str, rollup: Rollup) -> str:
    """What the rollup's points hold (its SELECT): the same hash means old points stay valid."""
    return hashlib.sha256(rollup_select(database, rollup).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class ContinuousQuery:
    """One CQ as it should exist."""

    rollup: Rollup
    name: str
    text: str
    content: str
    """:func:`content_hash` of its SELECT."""


def continuous_query(database: str, rollup: Rollup, late_s: int) -> ContinuousQuery:
    """The CQ of ``rollup``: its name holds a hash of its whole text, so any change is a new name."""
    res = rollup.resolution_s
    body = (f"ON {ident(database)} RESAMPLE EVERY {res}s FOR {look_back_s(rollup, late_s)}s "
            f"BEGIN {rollup_select(database, rollup)} END")
    name = f"{CQ_PREFIX}{rollup.name}_{hashlib.sha256(body.encode()).hexdigest()[:8]}"
    return ContinuousQuery(rollup, name, f"CREATE CONTINUOUS QUERY {ident(name)} {body}",
                           content_hash(database, rollup))


def drop_cq(database: str, name: str) -> str:
    """``DROP CONTINUOUS QUERY``."""
    return f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(database)}"


def owner(cq_name: str, rollups: tuple[Rollup, ...] = ROLLUPS) -> Rollup | None:
    """The rollup a CQ of ours (``bess_<target>_<hash8>``) fills; None for anyone else's CQ."""
    for rollup in rollups:
        prefix = f"{CQ_PREFIX}{rollup.name}_"
        if cq_name.startswith(prefix) and re.fullmatch(r"[0-9a-f]{8}", cq_name[len(prefix):]):
            return rollup
    return None


# -- comparing with what the server has ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between what should exist and what does, with the statement that fixes it."""

    problem: str
    statement: str
    rollup: Rollup | None = None
    missing: bool = False
    """A rollup had no CQ at all (it may have missed points: its coverage starts again)."""


def differences(
    database: str,
    cqs: list[ContinuousQuery],
    rps: list[RetentionPolicy],
    shown_cqs: list[str],
    shown_rps: dict[str, int | None],
) -> list[Change]:
    """What to do so the server holds exactly ``cqs`` and ``rps``: ``shown_cqs`` are the CQ names on the database,
    ``shown_rps`` its retention policies (name -> duration s, None = infinite). Statements in order: RPs first
    (a CQ writing into a missing RP fails), then old CQs dropped before their replacements are created."""
    changes: list[Change] = []
    for rp in rps:
        if rp.name not in shown_rps:
            changes.append(Change(f"retention policy {rp.name} missing", create_rp(database, rp)))
        elif shown_rps[rp.name] != rp.duration_s:
            changes.append(Change(
                f"retention policy {rp.name} keeps {_describe(shown_rps[rp.name])}, configured "
                f"{_describe(rp.duration_s)}", alter_rp(database, rp)))
    wanted = {cq.name for cq in cqs}
    rollups = tuple(cq.rollup for cq in cqs)
    for name in shown_cqs:
        found = owner(name, rollups)
        if found is not None and name not in wanted:
            changes.append(Change(f"continuous query {name} differs from the configured {found.name} rollup",
                                  drop_cq(database, name), found))
    for cq in cqs:
        if cq.name not in shown_cqs:
            had_one = any(owner(name, rollups) == cq.rollup for name in shown_cqs)
            problem = (f"continuous query {cq.name} for {cq.rollup.name} missing" if not had_one
                       else f"continuous query {cq.name} for {cq.rollup.name} to be created")
            changes.append(Change(problem, cq.text, cq.rollup, missing=not had_one))
    return changes


def _describe(seconds: int | None) -> str:
    return "forever" if seconds is None else f"{seconds}s"


# -- coverage: since when a rollup is complete ---------------------------------------------------------------------


def align_up(ts: datetime, seconds: int) -> datetime:
    """``ts`` rounded up to a multiple of ``seconds`` since the epoch (bucket boundaries are epoch-aligned)."""
    us = epoch_us_of(ts)
    step = seconds * 1_000_000
    return _from_us(-(-us // step) * step)


def align_down(ts: datetime, seconds: int) -> datetime:
    """``ts`` rounded down to a multiple of ``seconds`` since the epoch."""
    us = epoch_us_of(ts)
    step = seconds * 1_000_000
    return _from_us(us // step * step)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us_of(ts: datetime) -> int:
    """Microseconds since the epoch (exact)."""
    return (ts.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def first_complete(rollup: Rollup, created_at: datetime, late_s: int) -> datetime:
    """The first bucket a CQ created at ``created_at`` fills completely: its first run covers its look-back."""
    return align_up(created_at - timedelta(seconds=look_back_s(rollup, late_s)), rollup.resolution_s) + timedelta(
        seconds=rollup.resolution_s)


def coverage_line(rollup: Rollup, since: datetime, content: str) -> str:
    """The coverage point of ``rollup`` (time 0, so each write replaces the last)."""
    return (f'{COVERAGE},rollup={rollup.name} since_us={epoch_us_of(since)}i,content="{content}" 0')


def coverage_query() -> str:
    """Every rollup's coverage point."""
    return f"SELECT {ident('since_us')},{ident('content')},{ident('rollup')} FROM {ident(COVERAGE)}"


# -- back-fill ----------------------------------------------------------------------------------------------------


def chunks(begin: datetime, end: datetime, resolution_s: int, chunk_s: int = 86_400) -> list[tuple[datetime, datetime]]:
    """``[begin, end)`` widened to whole buckets and cut at UTC day boundaries (each a back-fill statement)."""
    lo, hi = align_down(begin, resolution_s), align_up(end, resolution_s)
    out: list[tuple[datetime, datetime]] = []
    while lo < hi:
        cut = min(hi, align_down(lo, chunk_s) + timedelta(seconds=chunk_s))
        out.append((lo, cut))
        lo = cut
    return out


def backfill_statement(database: str, rollup: Rollup, begin: datetime, end: datetime, tag_value: str | None = None
                       ) -> str:
    """The rollup's SELECT ... INTO for ``[begin, end)`` (whole buckets), of one tag value or all."""
    where = f"time >= {time_literal(begin)} AND time < {time_literal(end)}"
    if tag_value is not None:
        where = f"{ident(rollup.tag)}={string_literal(tag_value)} AND {where}"
    return rollup_select(database, rollup, where)


__all__ = [
    "COVERAGE",
    "CQ_PREFIX",
    "ROLLUPS",
    "ROUTES",
    "STATS",
    "SUM",
    "TELEMETRY_1H",
    "TELEMETRY_1M",
    "Change",
    "ContinuousQuery",
    "RetentionPolicy",
    "Rollup",
    "align_down",
    "align_up",
    "alter_rp",
    "backfill_statement",
    "chunks",
    "content_hash",
    "continuous_query",
    "coverage_line",
    "coverage_query",
    "create_rp",
    "differences",
    "drop_cq",
    "epoch_us_of",
    "first_complete",
    "go_duration_s",
    "influx_duration",
    "look_back_s",
    "owner",
    "retention_s",
    "rollup_select",
    "source_ref",
    "stats_rollups",
    "sum_rollup",
    "target_ref",
]
