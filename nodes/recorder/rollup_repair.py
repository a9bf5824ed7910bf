"""Rollup buckets made from a rewritten point, and their repair (pure: statements and lines, no I/O).

A point rewritten for its timestamp without a field keeps the earlier value in storage (InfluxDB merges the fields
of one point); raw reads drop it by the point's ``absent`` mask (:mod:`nodes.recorder.points`), a continuous query
cannot. ``rollups backfill`` (:func:`nodes.recorder.rollup_admin.correct_rewrites`) finds such points per chunk
(:func:`stale_statement`), reads their buckets' raw points (:func:`bucket_statement`), deletes the rollup point
(:func:`delete_bucket`) and writes it again from the points with each mask applied (:func:`corrected_line`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from nodes.recorder.influxql import ident, stale_condition, string_literal, time_literal
from nodes.recorder.points import MASK, escape_tag, number
from nodes.recorder.rollups import Rollup, epoch_us_of
from nodes.recorder.table import SERIES, Series


def series_of(rollup: Rollup) -> Series | None:
    """The raw series a stats rollup of raw points is made of (None for rollups of rollups and sum-only ones)."""
    if rollup.kind != "stats" or rollup.source_rp is not None:
        return None
    return next((s for s in SERIES.values() if s.measurement == rollup.source), None)


def stale_statement(rollup: Rollup, series: Series, begin: datetime, end: datetime, tag_value: str | None) -> str:
    """The raw points in ``[begin, end)`` whose ``absent`` names a field they still hold (a later write left it out:
    InfluxDB kept the earlier value, which the CQ rolled up), per tag value."""
    where = f"time >= {time_literal(begin)} AND time < {time_literal(end)} AND ({stale_condition(series)})"
    if tag_value is not None:
        where = f"{ident(rollup.tag)}={string_literal(tag_value)} AND {where}"
    return f"SELECT {ident(MASK)} FROM {ident(series.measurement)} WHERE {where} GROUP BY {ident(rollup.tag)}"


def bucket_statement(rollup: Rollup, series: Series, tag_value: str, bucket: datetime) -> str:
    """Every raw point of one bucket of one tag value, with its ``absent`` mask."""
    select = ",".join(ident(name) for name in (*rollup.fields, MASK))
    end = bucket + timedelta(seconds=rollup.resolution_s)
    return (f"SELECT {select} FROM {ident(series.measurement)} WHERE {ident(rollup.tag)}={string_literal(tag_value)}"
            f" AND time >= {time_literal(bucket)} AND time < {time_literal(end)}")


def delete_bucket(rollup: Rollup, tag_value: str, bucket: datetime) -> str:
    """Delete one rollup point (its measurement name is the rollup's alone, so DELETE's reach over every RP is
    harmless): rewriting it could not remove a field the corrected bucket no longer has."""
    end = bucket + timedelta(seconds=rollup.resolution_s)
    return (f"DELETE FROM {ident(rollup.name)} WHERE {ident(rollup.tag)}={string_literal(tag_value)} "
            f"AND time >= {time_literal(bucket)} AND time < {time_literal(end)}")


def corrected_line(rollup: Rollup, series: Series, tag_value: str, bucket: datetime,
                   rows: list[list[object]]) -> str | None:
    """The rollup point of one bucket from its raw rows (``[time, *fields, absent]`` in time order) with each
    point's ``absent`` mask applied, as the raw reads apply it; None when nothing is left."""
    parts: list[str] = []
    for i, name in enumerate(rollup.fields, start=1):
        values = [float(row[i]) for row in rows  # type: ignore[arg-type]
                  if row[i] is not None and name not in series.masked(str(row[-1] or ""))]
        if not values:
            continue
        stats = {"sum": sum(values), "min": min(values), "max": max(values), "last": values[-1]}
        parts += [f"{escape_tag(f'{name}_{stat}')}={number(value)}" for stat, value in stats.items()]
        parts.append(f"{escape_tag(f'{name}_count')}={len(values)}i")  # the CQ's count() is an integer field
    if not parts:
        return None
    key = f"{escape_tag(rollup.name)},{escape_tag(rollup.tag)}={escape_tag(tag_value)}"
    return f"{key} {','.join(parts)} {epoch_us_of(bucket)}"


__all__ = ["bucket_statement", "corrected_line", "delete_bucket", "series_of", "stale_statement"]
