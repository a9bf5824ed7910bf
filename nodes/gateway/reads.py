"""``GET /read`` without I/O: query parameters -> :class:`ReadQuery`, recorder answer -> records or CSV.

Query parameters: ``begin`` (required), ``end`` (default: now), ``battery``, ``every`` (``30s``, ``1m``,
``15m``, ``1h``, ``1d``: downsampled means), ``format`` (``json`` or ``csv``), ``limit`` (first N rows).
Timestamps are RFC 3339 with a zone. A ``+`` in an offset that arrives as a space (an unencoded ``+01:00`` in a
URL decodes to `` 01:00``) is put back, so ``begin=2025-01-16T10:00:00+01:00`` works unencoded.

Decisions: ``begin`` must be strictly before ``end``; an unknown or repeated parameter is a 422 (strict, like
the bodies, and exactly as openapi.json documents them: ``every`` is lower case without spaces, ``format`` is
``json`` or ``csv``); ``every`` that would produce more buckets than the row limit is refused before asking.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from nodes.contract.messages import HistoryResult, UtcDatetime
from nodes.gateway.bodies import AlarmRecord, ReadRecord
from nodes.gateway.errors import ApiError, check_battery

ALLOWED = frozenset({"begin", "end", "battery", "every", "format", "limit"})
_EVERY = re.compile(r"([0-9]{1,9})(s|m|h|d)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_MAX_EVERY_S = 366 * 86_400
_SPACE_OFFSET = re.compile(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")

# One column set for both answers: the JSON records and the CSV columns are ReadRecord's fields, so a value the
# JSON answer has is never missing from the CSV of the same query. The seed's columns come first, in the order
# CSV readers already know; any other field follows in declaration order.
_CSV_FIRST = ("timestamp", "SOC", "target_charge", "target_discharge")
_FIELDS = msgspec.structs.fields(ReadRecord)
CSV_COLUMNS: tuple[tuple[str, str], ...] = tuple(  # (CSV header / JSON key, ReadRecord attribute)
    (f.encode_name, f.name)
    for f in sorted(_FIELDS, key=lambda f: _CSV_FIRST.index(f.encode_name) if f.encode_name in _CSV_FIRST
                    else len(_CSV_FIRST) + _FIELDS.index(f))
)
_BMS_ATTRS = frozenset({"pack_voltage_v", "pack_current_a", "cell_voltage_min_v", "cell_voltage_max_v",
                        "cell_temp_min_c", "cell_temp_max_c", "soh_pct", "energy_charged_kwh_total",
                        "energy_discharged_kwh_total", "bms_alarms"})
SEED_COLUMNS = tuple(c for c in CSV_COLUMNS if c[1] not in _BMS_ATTRS)
"""The columns of every CSV answer; the BMS columns follow only when a record of the answer has one."""
CSV_HEADER = ",".join(header for header, _ in SEED_COLUMNS)

# recorder column -> ReadRecord attribute: the record's value attributes are named as the recorder's columns
_COLUMNS = {f.name: f.name for f in _FIELDS if f.name not in ("timestamp", "bms_alarms")}


class ReadQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated ``GET /read`` request."""

    battery: str
    begin: datetime
    end: datetime
    every_s: int | None = None
    csv: bool = False
    limit: int
    limit_given: bool = False


def parse_time(value: str, field: str) -> datetime:
    """An RFC 3339 timestamp with a zone, or a 422 naming ``field``."""
    text = _SPACE_OFFSET.sub(r"\1+\2", value.strip())
    try:
        return msgspec.convert(text, UtcDatetime)
    except msgspec.ValidationError as exc:
        reason = str(exc).replace("`", "")
        raise ApiError(
            422, f"{field}={value!r} is not an RFC 3339 timestamp with a zone ({reason}); e.g. 2025-01-16T10:00:00Z",
            field,
        ) from None


def parse_every(value: str) -> int:
    """``30s``/``1m``/``15m``/``1h``/``1d`` -> seconds, or a 422 on ``every``."""
    match = _EVERY.fullmatch(value)
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else 0
    if not 1 <= seconds <= _MAX_EVERY_S:
        raise ApiError(
            422, f"every={value!r} is not an interval: use a whole number with s, m, h or d (e.g. 1m, 15m, 1h)",
            "every",
        )
    return seconds


def parse_read_query(
    pairs: Iterable[tuple[str, str]], *, now: datetime, default_battery: str, max_rows: int
) -> ReadQuery:
    """Validate the query parameters of ``GET /read``; raise :class:`ApiError` (422) naming the parameter."""
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in ALLOWED:
            raise ApiError(422, f"unknown query parameter {key!r} (allowed: {', '.join(sorted(ALLOWED))})", key)
        if key in params:
            raise ApiError(422, f"query parameter {key!r} is given more than once", key)
        params[key] = value
    if "begin" not in params:
        raise ApiError(422, "missing query parameter begin (RFC 3339 with a zone, e.g. 2025-01-16T09:00:00Z)", "begin")
    begin = parse_time(params["begin"], "begin")
    end = parse_time(params["end"], "end") if "end" in params else now
    if begin >= end:
        raise ApiError(422, f"begin ({begin.isoformat()}) must be before end ({end.isoformat()})", "begin")
    battery = check_battery(params.get("battery", default_battery))
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(422, f"format={params['format']!r}: use json or csv", "format")
    every_s = parse_every(params["every"]) if "every" in params else None
    limit = max_rows
    if "limit" in params:
        raw = params["limit"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= max_rows:
            raise ApiError(422, f"limit={params['limit']!r}: use a whole number from 1 to {max_rows}", "limit")
        limit = int(raw)
    if every_s is not None:
        buckets = int((end - begin).total_seconds() // every_s) + 1
        if buckets > max_rows:
            raise ApiError(
                422,
                f"every={params['every']} over this range gives {buckets} intervals, more than {max_rows}: "
                "use a coarser every or a shorter range",
                "every",
            )
    return ReadQuery(
        battery=battery, begin=begin, end=end, every_s=every_s, csv=fmt == "csv", limit=limit,
        limit_given="limit" in params,
    )


ALARM_PARAMS = frozenset({"begin", "end", "battery", "limit"})
ALARMS_DEFAULT_S = 86_400


def parse_alarms_query(
    pairs: Iterable[tuple[str, str]], *, now: datetime, default_battery: str, max_rows: int
) -> ReadQuery:
    """Validate ``GET /alarms`` (``begin`` defaults to a day before ``end``); 422 naming the parameter."""
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in ALARM_PARAMS:
            raise ApiError(422, f"unknown query parameter {key!r} (allowed: {', '.join(sorted(ALARM_PARAMS))})", key)
        if key in params:
            raise ApiError(422, f"query parameter {key!r} is given more than once", key)
        params[key] = value
    end = parse_time(params["end"], "end") if "end" in params else now
    begin = parse_time(params["begin"], "begin") if "begin" in params else end - timedelta(seconds=ALARMS_DEFAULT_S)
    if begin >= end:
        raise ApiError(422, f"begin ({begin.isoformat()}) must be before end ({end.isoformat()})", "begin")
    limit = max_rows
    if "limit" in params:
        raw = params["limit"]
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= max_rows:
            raise ApiError(422, f"limit={raw!r}: use a whole number from 1 to {max_rows}", "limit")
        limit = int(raw)
    battery = check_battery(params.get("battery", default_battery))
    return ReadQuery(battery=battery, begin=begin, end=end, limit=limit, limit_given="limit" in params)


def to_alarm_records(result: HistoryResult) -> list[AlarmRecord]:
    """The recorder's ``alarms`` rows as records (oldest first); a row that is not an alarm is skipped."""
    records: list[AlarmRecord] = []
    for row in result.rows:
        values = dict(zip(result.columns, row, strict=False))
        values["time"] = values.get("time")
        try:
            records.append(msgspec.convert(values, AlarmRecord))
        except msgspec.ValidationError:
            continue  # not written by this recorder's alarm points (a hand-made point): nothing to show
    return records


def _number(value: Any) -> float | None:
    # JSON numbers from the recorder; bool is an int subclass and is not a measurement.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def to_records(result: HistoryResult) -> list[ReadRecord]:
    """The recorder's rows as records in the seed's shape (oldest first; rows without any value are skipped)."""
    index = {name.removeprefix("mean_"): i for i, name in enumerate(result.columns)}
    time_at = index.get("time", 0)
    picks = [(attr, index[col]) for col, attr in _COLUMNS.items() if col in index]
    codes_at = index.get("bms_alarms")
    records: list[ReadRecord] = []
    for row in result.rows:
        values = {attr: _number(row[i]) for attr, i in picks if i < len(row)}
        if time_at >= len(row) or all(v is None for v in values.values()):
            continue
        codes = row[codes_at] if codes_at is not None and codes_at < len(row) else None
        # the recorder stores the codes comma-joined (a code has no comma); "" is "none reported"
        alarms = (codes.split(",") if codes else []) if isinstance(codes, str) else None
        records.append(ReadRecord(timestamp=str(row[time_at]), bms_alarms=alarms, **values))
    return records


def _cell(value: str | float | list[str] | None) -> str:
    if isinstance(value, list):
        text = ",".join(value)  # one cell, quoted as RFC 4180 says when it holds a comma
        return f'"{text}"' if "," in text else text
    return "" if value is None else str(value)


def to_csv(records: list[ReadRecord]) -> str:
    """CSV with the header :data:`CSV_HEADER` (the JSON record's keys; empty cells for missing values), then the
    BMS columns any record has (a device without a BMS gets the seed's columns, nothing more)."""
    reported = {attr for r in records for attr in _BMS_ATTRS if getattr(r, attr) is not None}
    columns = [c for c in CSV_COLUMNS if c[1] not in _BMS_ATTRS or c[1] in reported]
    out = io.StringIO()
    out.write(",".join(header for header, _ in columns) + "\n")
    for r in records:
        out.write(",".join(_cell(getattr(r, attr)) for _, attr in columns) + "\n")
    return out.getvalue()


__all__ = [
    "CSV_COLUMNS", "CSV_HEADER", "SEED_COLUMNS", "ReadQuery", "parse_alarms_query", "parse_every",
    "parse_read_query", "parse_time", "to_alarm_records", "to_csv", "to_records",
]
