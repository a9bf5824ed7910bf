"""How far raw telemetry may be deleted per battery without losing a KPI day (issue 14, raw retention).

Why: the rollups keep the *figures* of deleted raw telemetry, but the exact KPIs of a day (energy, revenue,
cycles) come from the renderer's energy model over the raw samples and are stored as ``kpi_1d`` / ``kpi_15m``
only once a window needed the day or ``python -m nodes.renderer kpis backfill`` ran. Deleting the raw samples
of a day whose KPI day is not stored would lose that day's KPIs for good. So raw retention deletes, per battery,
only up to the first day that has readings but no stored KPI day, less :data:`KPI_SPAN_S` (a KPI day also reads
the samples that far around it).

    begin       <- the day of the oldest raw point not deleted yet (the ranges below start there)
    data_days   <- the 1-min rollup's readings per battery and UTC day (1,440 rows a battery-day at most)
    stored_days <- kpi_1d's points per battery and UTC day
    limits(...) -> per battery: delete raw points before this time
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from nodes.recorder.influxql import ident, string_literal, time_literal

KPI_SPAN_S: Final = 6 * 3600
"""= ``nodes.renderer.ledger.MAX_SPAN_S`` (a test holds them equal): a KPI day depends on the samples this far
before and after it."""
DAY_S: Final = 86_400
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

Days = dict[str, set[int]]
"""battery -> UTC day numbers (days since 1970-01-01)."""


def limits(data_days: Days, stored_days: Days, cutoff: datetime) -> dict[str, datetime]:
    """Per battery with readings: raw points before the returned time may go. That is ``cutoff``, or earlier: the
    start of the first day with readings and no stored KPI day, less :data:`KPI_SPAN_S`."""
    out: dict[str, datetime] = {}
    for battery, days in data_days.items():
        missing = sorted(days - stored_days.get(battery, set()))
        limit = cutoff
        if missing:
            limit = min(cutoff, _EPOCH + timedelta(seconds=missing[0] * DAY_S - KPI_SPAN_S))
        out[battery] = limit
    return out


def days_query(measurement_ref: str, field: str, begin: datetime, end: datetime) -> str:
    """The days with points of ``field`` per battery in ``[begin, end)`` (whole UTC days, epoch-aligned)."""
    return (f"SELECT count({ident(field)}) FROM {measurement_ref} WHERE time >= {time_literal(begin)} "
            f"AND time < {time_literal(end)} GROUP BY time(1d), {ident('battery')} fill(none)")


def first_query(measurement: str, field: str, begin: datetime, end: datetime) -> str:
    """The oldest raw point of each battery in ``[begin, end)``: where the day queries need to start (the raw
    points before it are deleted already, so the range stays a few hours long instead of the whole history)."""
    return (f"SELECT first({ident(field)}) FROM {ident(measurement)} WHERE time >= {time_literal(begin)} "
            f"AND time < {time_literal(end)} GROUP BY {ident('battery')}")


def earliest_day(answer: dict[str, Any]) -> datetime | None:
    """The start of the UTC day of the oldest point in a :func:`first_query` answer (None: no point)."""
    times = [row[0] for series in answer.get("series") or [] for row in series.get("values") or []
             if isinstance(row[0], int)]
    if not times:
        return None
    return _EPOCH + timedelta(days=min(times) // (DAY_S * 1_000_000))


def days_of(answer: dict[str, Any]) -> Days:
    """Parse a :func:`days_query` answer (``epoch=u``) into battery -> day numbers with a non-zero count."""
    found: Days = {}
    for series in answer.get("series") or []:
        battery = (series.get("tags") or {}).get("battery")
        if not isinstance(battery, str) or not battery:
            continue
        for time_us, count in series.get("values") or []:
            if isinstance(time_us, int) and isinstance(count, int | float) and count > 0:
                found.setdefault(battery, set()).add(time_us // (DAY_S * 1_000_000))
    return found


def delete_statements(measurement: str, since: datetime, battery_limits: dict[str, datetime]) -> list[str]:
    """One ``DELETE`` per battery whose limit lies after ``since`` (the start of the rolled-up range)."""
    return [
        f"DELETE FROM {ident(measurement)} WHERE {ident('battery')}={string_literal(battery)} "
        f"AND time >= {time_literal(since)} AND time < {time_literal(limit)}"
        for battery, limit in sorted(battery_limits.items())
        if limit > since
    ]


def held_back(battery_limits: dict[str, datetime], cutoff: datetime) -> list[str]:
    """The batteries whose raw points are kept past the retention (a KPI day of theirs is not stored yet)."""
    return sorted(battery for battery, limit in battery_limits.items() if limit < cutoff)


def describe(held: Iterable[str], battery_limits: dict[str, datetime]) -> str:
    """The log line for batteries held back, naming the back-fill that releases them."""
    names = list(held)
    first = min(battery_limits[b] for b in names)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"raw telemetry of {len(names)} battery(ies) ({shown}) is kept from {first.isoformat()}: their KPI days"
            " there are not stored yet (python -m nodes.renderer kpis backfill --battery B --begin .. --end ..)")


__all__ = [
    "KPI_SPAN_S", "days_of", "days_query", "delete_statements", "describe", "earliest_day", "first_query", "held_back",
    "limits",
]
