"""A checked history plan -> Flux, the InfluxDB 2.x equivalent of :mod:`nodes.recorder.influxql` (pure).

The same guarantees hold: names come from :data:`nodes.recorder.table.SERIES`, the tag value is a checked id
written as an escaped Flux string, times are RFC 3339 literals made from datetimes, durations and limits are
integers. The result has the same shape as the InfluxQL one: one row per timestamp (``pivot``), all series
merged (``group()``), ascending time, at most ``limit + 1`` rows. Downsampling uses ``aggregateWindow`` with
``timeSrc: "_start"`` so a bucket is labelled with its start, as InfluxQL's ``GROUP BY time`` does.
"""

from __future__ import annotations

from datetime import datetime

from nodes.recorder.influxql import Plan
from nodes.recorder.points import query_time


def string(value: str) -> str:
    """A double-quoted Flux string literal (``\\``, ``"`` and the ``${`` of interpolation escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def time(value: datetime) -> str:
    """A Flux time literal (RFC 3339, UTC, microseconds), e.g. ``2025-01-16T10:00:00.000000Z``."""
    return query_time(value)


def to_flux(checked: Plan, bucket: str) -> str:
    """Render a checked :class:`Plan` as a Flux script reading ``bucket``."""
    series = checked.series
    # raw: the columns and the absent mask (the store applies it); means: the numeric columns (the currency of
    # a series that has one is asked for on its own: split_values)
    fields = series.numeric if checked.every_s else checked.query_columns
    field_test = " or ".join(f"r._field == {string(name)}" for name in fields if name not in series.tag_columns)
    lines = [
        f"from(bucket: {string(bucket)})",
        f"  |> range(start: {time(checked.begin)}, stop: {time(checked.end)})",
        f"  |> filter(fn: (r) => r._measurement == {string(series.measurement)}"
        f" and r[{string(series.tag)}] == {string(checked.tag_value)})",
        f"  |> filter(fn: (r) => {field_test})",
    ]
    if checked.every_s:
        # Merge the series of one field (e.g. several plan_ids) before the mean, like InfluxQL does.
        lines += [
            '  |> group(columns: ["_field"])',
            '  |> sort(columns: ["_time"])',
            f"  |> aggregateWindow(every: {int(checked.every_s)}s, fn: mean, createEmpty: false,"
            ' timeSrc: "_start")',
        ]
    lines += [
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "  |> group()",
        '  |> sort(columns: ["_time"])',
        f"  |> limit(n: {int(checked.limit) + 1})",
    ]
    return "\n".join(lines)


def split_values(checked: Plan, bucket: str) -> str:
    """The distinct values of the series' :attr:`~nodes.recorder.table.Series.split_by` field (its currencies)
    in the range, as ``_value`` (the InfluxQL store's ``SELECT DISTINCT``)."""
    series = checked.series
    if not series.split_by:
        raise ValueError(f"{series.measurement} has no field to split means by")
    return "\n".join([
        f"from(bucket: {string(bucket)})",
        f"  |> range(start: {time(checked.begin)}, stop: {time(checked.end)})",
        f"  |> filter(fn: (r) => r._measurement == {string(series.measurement)}"
        f" and r[{string(series.tag)}] == {string(checked.tag_value)})",
        f"  |> filter(fn: (r) => r._field == {string(series.split_by)})",
        '  |> keep(columns: ["_value"])',
        "  |> group()",
        '  |> distinct(column: "_value")',
        "  |> limit(n: 100)",
    ])


__all__ = ["split_values", "string", "time", "to_flux"]
