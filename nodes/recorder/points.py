"""Messages -> InfluxDB line protocol (pure: no I/O, no clock).

One function per message type returns the lines to write. Which topic each serves, and the layout of every
measurement (its tags, fields and time), is declared once in :mod:`nodes.recorder.table`.

Why it is written this way:

* **A repeated timestamp means the later write replaces the whole record.** InfluxDB merges the fields of two
  writes of one point (same measurement, tags and time): a re-sent record without ``power_kw`` would keep the
  earlier record's ``power_kw``, a record nobody wrote. So every point writes every column: optional text fields
  as ``""`` (read back as absent), and telemetry's optional numbers, which have no "empty" value, are named in the
  point's ``absent`` field (``absent="power_kw"``; ``""`` when none is missing). Readers drop the values a point's
  ``absent`` names, raw and in means alike (:mod:`nodes.recorder.store`). Points stored before this rule have no
  ``absent`` field and are read as they are.

* Timestamps come from the message, never from the time of arrival, at microsecond precision (the writer uses
  ``precision=u``). InfluxDB keys a point by measurement + tags + time, so a redelivered message rewrites the
  same point: at-least-once delivery becomes exactly-once storage.
* Numbers are always written as floats (``700.0``; line protocol integers would be ``700i``). A field keeps the
  type of its first write, so one integer would make every later float a "field type conflict".
* Timestamps inside fields (``valid_until``, ``end``...) are RFC 3339 strings, optional fields that are ``None``
  are left out, and non-finite numbers are left out (line protocol has no NaN or infinity).

Escaping (tested against influxd, see ``tests/unit/test_points.py`` and ``tests/integration/test_store_contract.py``):
tag values and field keys escape ``,`` ``=`` and space with a backslash; string field values escape ``\\`` and
``"``. Two things line protocol cannot carry in a tag value are replaced by ``_``: a line break (it would end the
line) and a trailing backslash (it would escape the delimiter after it). Tag values in this system are ids, so
this only guards against a malformed ``plan_id``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from nodes.contract.messages import (
    BMS_NUMBERS,
    KPI_SAMPLE_COLUMNS,
    KPI_SUM_FIELDS,
    Alarm,
    BatteryState,
    Command,
    KpiDay,
    PriceForecast,
    Schedule,
    Telemetry,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": "_", "\r": "_"})
_isfinite = math.isfinite
_TAG_SPECIAL = frozenset(",= \n\r\\")


MASK = "absent"
"""The string field naming the optional float fields a point's message left out (comma-joined, ``""`` if none)."""


# -- scalars ---------------------------------------------------------------------------------------------------


def epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch, computed exactly (integer arithmetic, no float rounding)."""
    if ts.tzinfo is None:  # the contract demands aware datetimes; a naive one is taken as UTC
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _ONE_US


def _utc_text(utc: datetime) -> str:
    # not strftime: "%Y" does not zero-pad years below 1000, which would make the text unparseable
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )


def rfc3339(ts: datetime) -> str:
    """``2025-01-16T10:00:00Z`` (or ``...00.250000Z`` when there are microseconds), always in UTC.

    A contract-valid time whose UTC value lies outside years 1-9999 (``9999-12-31T23:59:59-01:00``) cannot be
    a ``datetime`` in UTC; it is written as given (ISO 8601 with its offset) instead of failing the message.
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    try:
        utc = ts.astimezone(UTC)
    except OverflowError:
        return ts.isoformat()
    text = _utc_text(utc)
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"


INFLUX_MIN_TIME = datetime(1677, 9, 22, tzinfo=UTC)
INFLUX_MAX_TIME = datetime(2262, 4, 11, tzinfo=UTC)
"""InfluxDB stores nanoseconds in an int64: nothing exists outside this range, so queries are clamped to it."""


def query_time(value: datetime) -> str:
    """A query bound: RFC 3339 UTC with microseconds, clamped into what InfluxDB can hold."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = INFLUX_MAX_TIME if value.year > 5000 else INFLUX_MIN_TIME
    utc = min(max(utc, INFLUX_MIN_TIME), INFLUX_MAX_TIME)
    return f"{_utc_text(utc)}.{utc.microsecond:06d}Z"


def rfc3339_from_us(us: int) -> str:
    """:func:`rfc3339` of a microsecond epoch timestamp (what queries return with ``epoch=u``)."""
    return rfc3339(_EPOCH + timedelta(microseconds=us))


@lru_cache(maxsize=4096)
def escape_tag(value: str) -> str:
    """Escape a tag key, tag value or field key (cached: tag values are a small set of ids)."""
    if not _TAG_SPECIAL.intersection(value):
        return value
    escaped = value.translate(_TAG_ESCAPES)
    kept = escaped.rstrip("\\")
    # A trailing backslash would escape the space or comma after it: line protocol cannot express it.
    return kept + "_" * (len(escaped) - len(kept))


escape_key = escape_tag


def quote_string(value: str) -> str:
    """A string field value: double-quoted, with ``\\`` and ``"`` escaped (line breaks are allowed as is)."""
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def number(value: float) -> str | None:
    """A float field value (``700`` -> ``700.0``), or ``None`` for NaN/infinity, which cannot be stored."""
    value = float(value)
    return repr(value) if math.isfinite(value) else None


# -- building lines --------------------------------------------------------------------------------------------


class _Fields:
    """Collects ``key=value`` pairs of one point, skipping absent and non-finite values."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = []

    def num(self, key: str, value: float | None) -> _Fields:
        if value is not None:
            text = number(value)
            if text is not None:
                self.parts.append(f"{escape_key(key)}={text}")
        return self

    def text(self, key: str, value: str | None) -> _Fields:
        if value is not None:
            self.parts.append(f"{escape_key(key)}={quote_string(value)}")
        return self

    def time(self, key: str, value: datetime | None) -> _Fields:
        return self.text(key, None if value is None else rfc3339(value))


def line(measurement: str, tags: dict[str, str], fields: _Fields, ts: datetime) -> str | None:
    """One point, or ``None`` when it has no field left (line protocol needs at least one)."""
    if not fields.parts:
        return None
    tag_text = "".join(f",{escape_key(k)}={escape_tag(v)}" for k, v in tags.items() if v)
    return f"{escape_key(measurement)}{tag_text} {','.join(fields.parts)} {epoch_us(ts)}"


def _present(*lines: str | None) -> list[str]:
    return [text for text in lines if text is not None]


# -- one function per message ----------------------------------------------------------------------------------


def telemetry_line(battery: str, msg: Telemetry) -> str:
    """``telemetry,battery=..`` at ``ts``: the hot path (every device, every second), so one inline f-string.

    Each number field is ``key=1.5,`` when present and finite, else nothing and its name goes into ``absent``;
    ``source`` and ``absent`` always end the fields, so a later write of the same point replaces all of it.
    The BMS fields (:func:`bms_fields`) come before ``source`` when the device reports any; a reading without
    any of them says :data:`BMS_MASK` in ``absent`` (one word for all ten). Decoded messages are finite by the
    contract's bounds; the checks guard Structs built in code.
    """
    s, p, c, d = msg.soc_kwh, msg.power_kw, msg.target_charge_kw, msg.target_discharge_kw
    source = msg.source
    if '"' in source or "\\" in source:
        source = source.replace("\\", "\\\\").replace('"', '\\"')
    ts = msg.ts
    stamp = (ts - _EPOCH) // _ONE_US if ts.tzinfo is not None else epoch_us(ts)
    has_p = p is not None and _isfinite(p)
    has_c = c is not None and _isfinite(c)
    has_d = d is not None and _isfinite(d)
    absent = "" if has_p and has_c and has_d else _absent(has_p, has_c, has_d)
    bms, missing = bms_fields(msg)
    absent = f"{absent},{missing}" if absent and missing else absent or missing
    return (
        f"telemetry,battery={escape_tag(battery)} "
        f"{f'soc_kwh={float(s)!r},' if _isfinite(s) else ''}"
        f"{f'power_kw={float(p)!r},' if has_p else ''}"  # type: ignore[arg-type]
        f"{f'target_charge_kw={float(c)!r},' if has_c else ''}"  # type: ignore[arg-type]
        f"{f'target_discharge_kw={float(d)!r},' if has_d else ''}"  # type: ignore[arg-type]
        f'{bms}source="{source}",{MASK}="{absent}" {stamp}'
    )


BMS_MASK = "bms"
"""The ``absent`` word of a telemetry point without any BMS field (the BMS numbers and ``bms_alarms``)."""


def bms_fields(msg: Telemetry) -> tuple[str, str]:
    """The BMS fields of a reading as line protocol (``"pack_voltage_v=812.4,...,"``) and the mask of those it
    leaves out: :data:`BMS_MASK` when it has none at all (every device without a BMS), else their names."""
    values = [getattr(msg, name) for name in BMS_NUMBERS]
    codes = msg.bms_alarms
    if codes is None and all(v is None for v in values):
        return "", BMS_MASK
    parts: list[str] = []
    missing: list[str] = []
    for name, value in zip(BMS_NUMBERS, values, strict=True):
        text = None if value is None else number(value)
        if text is None:
            missing.append(name)
        else:
            parts.append(f"{name}={text},")
    if codes is None:
        missing.append("bms_alarms")
    else:
        parts.append(f"bms_alarms={quote_string(','.join(codes))},")
    return "".join(parts), ",".join(missing)


@lru_cache(maxsize=8)
def _absent(has_p: bool, has_c: bool, has_d: bool) -> str:
    names = zip(("power_kw", "target_charge_kw", "target_discharge_kw"), (has_p, has_c, has_d), strict=True)
    return ",".join(name for name, present in names if not present)


def telemetry_lines(battery: str, msg: Telemetry) -> list[str]:
    """:func:`telemetry_line` as a list, like the other mappings."""
    return [telemetry_line(battery, msg)]


def command_lines(battery: str, msg: Command) -> list[str]:
    """``command,battery=..`` at ``issued_at``."""
    fields = (
        _Fields()
        .text("action", msg.action)
        .num("power_kw", msg.power_kw)
        .text("command_id", msg.command_id)
        .text("source", msg.source)
        .time("valid_until", msg.valid_until)
        .text("plan_id", msg.plan_id or "")
        .text("text", msg.text or "")
    )
    return _present(line("command", {"battery": battery}, fields, msg.issued_at))


def state_lines(battery: str, msg: BatteryState) -> list[str]:
    """``state,battery=..`` at ``ts``; ``limits_hit`` is joined with commas."""
    fields = (
        _Fields()
        .text("mode", msg.mode)
        .num("power_kw", msg.power_kw)
        .text("command_id", msg.command_id or "")
        .text("command_source", msg.command_source or "")
        .text("valid_until", "" if msg.valid_until is None else rfc3339(msg.valid_until))
        .text("limits_hit", ",".join(msg.limits_hit))
        .text("reason", msg.reason)
    )
    return _present(line("state", {"battery": battery}, fields, msg.ts))


def schedule_lines(battery: str, msg: Schedule) -> list[str]:
    """One ``schedule,battery=..,plan_id=..`` point per slot at its start, plus one ``plan`` point."""
    created_at = rfc3339(msg.created_at)
    tags = {"battery": battery, "plan_id": msg.plan_id}
    slots = [
        line(
            "schedule",
            tags,
            _Fields()
            .num("price_per_mwh", slot.price_per_mwh)
            .num("charge_kw", slot.charge_kw)
            .num("discharge_kw", slot.discharge_kw)
            .num("soc_kwh", slot.soc_kwh)
            .time("end", slot.end)
            .text("created_at", created_at)
            .text("currency", msg.currency),
            slot.start,
        )
        for slot in msg.slots
    ]
    plan = line(
        "plan",
        {"battery": battery},
        _Fields()
        .text("plan_id", msg.plan_id)
        .num("expected_revenue", msg.expected_revenue)
        .num("baseline_revenue", msg.baseline_revenue)
        .text("currency", msg.currency)
        .num("soc_initial_kwh", msg.soc_initial_kwh)
        .num("slots", float(len(msg.slots)))
        .text("zone", msg.zone)
        .text("solver", msg.solver)
        .num("solve_ms", msg.solve_ms)
        .text("reason", msg.reason),
        msg.created_at,
    )
    return _present(*slots, plan)


def prices_lines(zone: str, msg: PriceForecast) -> list[str]:
    """One ``prices,zone=..`` point per slot at its start (a newer forecast overwrites the same slot)."""
    issued_at = rfc3339(msg.issued_at)
    return _present(
        *(
            line(
                "prices",
                {"zone": zone},
                _Fields()
                .num("price_per_mwh", slot.price_per_mwh)
                .time("end", slot.end)
                .text("issued_at", issued_at)
                .text("source", msg.source)
                .text("currency", msg.currency),
                slot.start,
            )
            for slot in msg.slots
        )
    )


def alarm_lines(battery: str, msg: Alarm) -> list[str]:
    """``alarms,battery=..,rule=..`` at ``since``: one point per transition (raised, cleared; an update of a raised
    alarm keeps its ``since`` and replaces that point). ``value``/``threshold`` left out are named in ``absent``."""
    missing = ",".join(name for name, value in (("value", msg.value), ("threshold", msg.threshold))
                       if value is None or number(value) is None)
    fields = (
        _Fields()
        .text("state", msg.state)
        .text("severity", msg.severity)
        .text("message", msg.message)
        .num("value", msg.value)
        .num("threshold", msg.threshold)
        .text("unit", msg.unit)
        .text("raised_at", "" if msg.raised_at is None else rfc3339(msg.raised_at))
        .text(MASK, missing)
    )
    return _present(line("alarms", {"battery": battery, "rule": msg.rule}, fields, msg.since))


KPI_SUMS = KPI_SUM_FIELDS
"""The additive fields of a ``kpi_15m`` point (an hourly rollup is their sum)."""
KPI_SAMPLE = KPI_SAMPLE_COLUMNS
"""The first/last sample of a bucket; times as float epoch seconds (so a rollup can take min() and max())."""


def kpi_lines(battery: str, msg: KpiDay) -> list[str]:
    """One ``kpi_15m,battery=..`` point per bucket at its start. Every field is written each time (a recomputed
    day replaces its points whole); a bucket without a sample names the first/last fields in ``absent``."""
    currencies = ",".join(msg.currencies)
    computed_at = rfc3339(msg.computed_at)
    out: list[str] = []
    for bucket in msg.buckets:
        fields = _Fields()
        for name in KPI_SUMS:
            fields.num(name, getattr(bucket, name))
        sample = (
            None if bucket.first_ts is None else bucket.first_ts.timestamp(),
            bucket.first_soc_kwh,
            None if bucket.last_ts is None else bucket.last_ts.timestamp(),
            bucket.last_soc_kwh,
        )
        for name, value in zip(KPI_SAMPLE, sample, strict=True):
            fields.num(name, value)
        missing = ",".join(name for name, value in zip(KPI_SAMPLE, sample, strict=True) if value is None)
        fields.text("currency", currencies).text("computed_at", computed_at).text(MASK, missing)
        out.extend(_present(line("kpi_15m", {"battery": battery}, fields, bucket.start)))
    out.extend(_present(kpi_day_line(battery, msg)))
    return out


def kpi_day_line(battery: str, msg: KpiDay) -> str | None:
    """``kpi_1d,battery=..`` at the day's start: the day's sums (``math.fsum``: correctly rounded), its first and
    last sample, and how many buckets it has. Why a point of its own: a year of KPIs is 365 of these instead of
    35,040 bucket rows (the renderer reads buckets only for days a window cuts)."""
    buckets = msg.buckets
    first = next((b for b in buckets if b.first_ts is not None), None)
    last = next((b for b in reversed(buckets) if b.last_ts is not None), None)
    fields = _Fields()
    for name in KPI_SUMS:
        fields.num(name, math.fsum(getattr(b, name) for b in buckets))
    sample = (
        None if first is None or first.first_ts is None else first.first_ts.timestamp(),
        None if first is None else first.first_soc_kwh,
        None if last is None or last.last_ts is None else last.last_ts.timestamp(),
        None if last is None else last.last_soc_kwh,
    )
    for name, value in zip(KPI_SAMPLE, sample, strict=True):
        fields.num(name, value)
    missing = ",".join(name for name, value in zip(KPI_SAMPLE, sample, strict=True) if value is None)
    fields.num("buckets", float(len(buckets)))
    fields.text("currency", ",".join(msg.currencies)).text("computed_at", rfc3339(msg.computed_at))
    return line("kpi_1d", {"battery": battery}, fields.text(MASK, missing), msg.day)


__all__ = [
    "BMS_MASK",
    "KPI_SAMPLE",
    "KPI_SUMS",
    "MASK",
    "alarm_lines",
    "bms_fields",
    "command_lines",
    "epoch_us",
    "escape_key",
    "escape_tag",
    "kpi_day_line",
    "kpi_lines",
    "line",
    "number",
    "prices_lines",
    "quote_string",
    "rfc3339",
    "rfc3339_from_us",
    "schedule_lines",
    "state_lines",
    "telemetry_line",
    "telemetry_lines",
]
