"""``python -m nodes.recorder migrate``: rewrite the points stored under the field names of before currencies.

Until prices and plans named their currency (issue 11), the recorder stored ``price_eur_per_mwh`` (prices,
schedule) and ``expected_revenue_eur`` / ``baseline_revenue_eur`` (plan), with no ``currency`` field: every
amount was EUR. Reads now ask for ``price_per_mwh``, ``expected_revenue``, ``baseline_revenue`` and
``currency``, so those points are not found until they are rewritten once:

- For each measurement (schedule, plan, prices, in that order), day by day from its first old point to its last,
  the points holding the old field are read with InfluxQL (``GROUP BY *``: with their tags).
- A point without a ``currency`` was written before the change: the same point (measurement, tags, time) is
  written again with the new fields (the old values) and ``currency="EUR"``. InfluxDB merges the fields of one
  point, so everything else in it stays; the old field stays too (InfluxDB 1.x cannot drop a field) and is
  never read.
- A point with a ``currency`` was written (or rewritten) since: it is left alone, its values are the newer ones.

Idempotent (a second run finds nothing to do) and safe to interrupt (run it again). ``--dry-run`` only counts.
The database settings are the recorder's (``BESS_INFLUX_URL``, ``BESS_INFLUX_DB``, its login); it speaks the v1
API (``BESS_STORE=influx1``: InfluxDB 1.x, and the v1-compatible API of 2.x and 3.x).

:func:`pending` is the recorder's start-up check: how many points of the small measurements (plan, prices;
migrated last) still wait, so a forgotten migration is named in the log instead of a history that seems empty.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import DEFAULT_CURRENCY
from nodes.recorder.config import RecorderConfig
from nodes.recorder.influxql import ident, time_literal
from nodes.recorder.points import escape_key, escape_tag, number, quote_string
from nodes.recorder.store import Influx1Store, StoreError, StoreUnavailable
from nodes.runtime.config import load_or_exit

CURRENCY = "currency"
DAY = timedelta(days=1)
BATCH = 5000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rename:
    """The old and new names of one measurement's money fields; ``renames[0]`` is always written."""

    measurement: str
    renames: tuple[tuple[str, str], ...]

    @property
    def marker(self) -> str:
        """The old field every old point of this measurement holds."""
        return self.renames[0][0]


RENAMES: tuple[Rename, ...] = (
    Rename("schedule", (("price_eur_per_mwh", "price_per_mwh"),)),
    Rename("plan", (("expected_revenue_eur", "expected_revenue"), ("baseline_revenue_eur", "baseline_revenue"))),
    Rename("prices", (("price_eur_per_mwh", "price_per_mwh"),)),
)
"""Schedule first: it is the big one, and the start-up check (:func:`pending`) looks only at the two others."""


@dataclass
class Outcome:
    """What the migration found in one measurement."""

    measurement: str
    old: int = 0
    """points holding the old field"""
    rewritten: int = 0
    """... written again with the new names and currency EUR (or that would be, in a dry run)"""
    current: int = 0
    """... that already name a currency (written or rewritten since): left alone"""

    def text(self, dry_run: bool) -> str:
        """One line for the operator."""
        rename = next(r for r in RENAMES if r.measurement == self.measurement)
        names = ", ".join(f"{old} -> {new}" for old, new in rename.renames)
        verb = "to rewrite" if dry_run else "rewritten"
        return (
            f"{self.measurement}: points under the old names ({names}): {self.old}; {verb} with currency "
            f"{DEFAULT_CURRENCY}: {self.rewritten}; already naming a currency, left alone: {self.current}"
        )


def migrated_line(rename: Rename, tags: Mapping[str, str], time_us: int, values: Mapping[str, Any]) -> str | None:
    """The point to write for one stored point (pure), or None when it needs nothing: it names a currency
    already, or holds no old value. ``values``: the point's old and new fields and its currency (None: absent)."""
    if values.get(CURRENCY) not in (None, ""):
        return None
    fields: list[str] = []
    for old, new in rename.renames:
        value = values.get(new)
        if value is None:
            value = values.get(old)
        text = None if value is None or isinstance(value, bool) else number(float(value))
        if text is not None:
            fields.append(f"{escape_key(new)}={text}")
    if not fields:
        return None
    fields.append(f"{escape_key(CURRENCY)}={quote_string(DEFAULT_CURRENCY)}")
    tag_text = "".join(f",{escape_key(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    return f"{escape_key(rename.measurement)}{tag_text} {','.join(fields)} {time_us}"


def _has(field: str) -> str:
    # a float field is present when it compares (the stale-values query tests presence the same way)
    return f"({ident(field)} >= 0 OR {ident(field)} < 0)"


def _at(time_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=time_us)


async def _bounds(store: Influx1Store, rename: Rename) -> tuple[int, int] | None:
    """First and last time (us) of the measurement's old points, or None when it has none."""
    marker, measurement = ident(rename.marker), ident(rename.measurement)
    first, last = await store.influxql(
        [f"SELECT first({marker}) FROM {measurement}", f"SELECT last({marker}) FROM {measurement}"]
    )
    times = [series["values"][0][0] for answer in (first, last) for series in answer.get("series") or []]
    return (int(min(times)), int(max(times))) if times else None


def _points(answer: Mapping[str, Any]) -> list[tuple[dict[str, str], int, dict[str, Any]]]:
    """``(tags, time_us, fields)`` of every row of a ``GROUP BY *`` answer."""
    found: list[tuple[dict[str, str], int, dict[str, Any]]] = []
    for series in answer.get("series") or []:
        tags = {str(k): str(v) for k, v in (series.get("tags") or {}).items()}
        columns = series["columns"]
        for row in series["values"]:
            values = dict(zip(columns, row, strict=True))
            found.append((tags, int(values.pop("time")), values))
    return found


async def migrate_measurement(store: Influx1Store, rename: Rename, *, dry_run: bool = False) -> Outcome:
    """Rewrite one measurement's old points (see the module docstring); returns what it found."""
    outcome = Outcome(rename.measurement)
    bounds = await _bounds(store, rename)
    if bounds is None:
        return outcome
    columns = [name for pair in rename.renames for name in pair] + [CURRENCY]
    select = ",".join(ident(name) for name in columns)
    cursor, last = bounds
    while cursor <= last:
        pending: list[str] = []
        until = min(cursor + DAY // timedelta(microseconds=1), last + 1)
        (answer,) = await store.influxql([
            f"SELECT {select} FROM {ident(rename.measurement)} WHERE {_has(rename.marker)}"
            f" AND time >= {time_literal(_at(cursor))} AND time < {time_literal(_at(until))} GROUP BY *"
        ])
        for tags, time_us, values in _points(answer):
            outcome.old += 1
            point = migrated_line(rename, tags, time_us, values)
            if point is None:
                outcome.current += 1
                continue
            outcome.rewritten += 1
            pending.append(point)
        # written right after the day is read: a point the recorder rewrites meanwhile (with a currency) is
        # clobbered only in that moment, not during the whole run
        if not dry_run:
            for start in range(0, len(pending), BATCH):
                await _write(store, pending[start : start + BATCH])
        cursor = until
    return outcome


async def _write(store: Influx1Store, lines: list[str]) -> None:
    result = await store.write(lines)
    if result.rejected:
        first = result.rejected[0]
        raise StoreError(f"InfluxDB refused {len(result.rejected)} rewritten points, e.g. {first.reason}")


async def pending(store: Influx1Store) -> dict[str, int]:
    """Points of plan and prices stored under the old names and not migrated yet, per measurement (only those
    with some): the recorder's start-up check."""
    found: dict[str, int] = {}
    for rename in RENAMES[1:]:
        marker, measurement = ident(rename.marker), ident(rename.measurement)
        total, done = await store.influxql([
            f"SELECT count({marker}) FROM {measurement}",
            f"SELECT count({marker}) FROM {measurement} WHERE {ident(CURRENCY)} =~ /./",
        ])
        counts = [sum(int(s["values"][0][1]) for s in answer.get("series") or []) for answer in (total, done)]
        if counts[0] > counts[1]:
            found[rename.measurement] = counts[0] - counts[1]
    return found


def hint(waiting: Mapping[str, int]) -> str:
    """The log line naming the points that wait for the migration."""
    counts = ", ".join(f"{count} {measurement}" for measurement, count in waiting.items())
    return (
        f"points stored under the field names of before currencies are not read until migrated ({counts} points): "
        "run `python -m nodes.recorder migrate` once (README: Upgrade notes)"
    )


async def run(config: RecorderConfig, *, dry_run: bool, out: Any = sys.stdout) -> int:
    """Migrate every measurement of :data:`RENAMES`; 0 when done, 1 when the database failed us."""
    store = Influx1Store(
        config.influx_url, config.influx_db, username=config.influx_username, password=config.influx_password,
        token=config.influx_token, timeout_s=max(config.influx_timeout_s, 60.0),
    )
    try:
        print(f"{'checking' if dry_run else 'migrating'} {config.influx_url} database {config.influx_db!r}",
              file=out)
        # one statement alone first: 1.x names a missing database only then ("not executed" for several)
        await store.influxql([f"SELECT * FROM {ident(RENAMES[-1].measurement)} LIMIT 1"])
        for rename in RENAMES:
            outcome = await migrate_measurement(store, rename, dry_run=dry_run)
            print(outcome.text(dry_run), file=out, flush=True)
    except (StoreUnavailable, StoreError) as exc:
        print(f"recorder migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print("dry run: nothing written" if dry_run else "done: old points are read under the new names", file=out)
    return 0


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``python -m nodes.recorder migrate [--dry-run]``."""
    parser = argparse.ArgumentParser(
        prog="python -m nodes.recorder migrate",
        description="Rewrite prices and plans stored before they named their currency (once; safe to repeat).",
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would be rewritten, write nothing")
    args = parser.parse_args(argv)
    config = load_or_exit(RecorderConfig, "recorder migrate", environ)
    if config.store != "influx1":
        print("recorder migrate: it speaks InfluxQL (the v1 API): run it with BESS_STORE=influx1 against the v1 "
              "API of your server (InfluxDB 2.x: its v1 compatibility API with a DBRP mapping)", file=sys.stderr)
        return 2
    return asyncio.run(run(config, dry_run=args.dry_run))


__all__ = ["RENAMES", "Outcome", "Rename", "hint", "main", "migrate_measurement", "migrated_line", "pending", "run"]
