"""What the recorder stores: one row per stored topic (pure declarations, no I/O).

Each row says: the message topic the recorder subscribes to, the point builder that turns a message into line
protocol (:mod:`nodes.recorder.points`), and the series the query side reads back (measurement, the tag a query
filters on, its columns). Everything else is built from :data:`TABLE`: the node's subscriptions and handlers
(:mod:`nodes.recorder.node`), the history kinds and their queries (:data:`SERIES`, read by
:mod:`nodes.recorder.influxql` and :mod:`nodes.recorder.flux`). A new stored topic is one row here (and its point
builder; a new history kind is also a value of :data:`nodes.contract.messages.HistoryKind`).

=============  =================  ===========================================================  ==============
measurement    tags               fields                                                       time
=============  =================  ===========================================================  ==============
telemetry      battery            soc_kwh, power_kw, target_charge_kw, target_discharge_kw,    ``ts``
                                  source, and the BMS fields when the device reports them:
                                  pack_voltage_v, pack_current_a, cell_voltage_min/max_v,
                                  cell_temp_min/max_c, soh_pct, energy_(dis)charged_kwh_total,
                                  bms_alarms (comma-joined); a point without any of them says
                                  ``bms`` in its ``absent`` mask instead of naming all ten
command        battery            action, power_kw, command_id, source, valid_until, plan_id,  ``issued_at``
                                  text
state          battery            mode, power_kw, command_id, command_source, valid_until,     ``ts``
                                  limits_hit (comma-joined), reason
schedule       battery, plan_id   price_per_mwh, charge_kw, discharge_kw, soc_kwh, end,        slot ``start``
                                  created_at, currency (one point per slot)
plan           battery            plan_id, expected_revenue, baseline_revenue, currency,       ``created_at``
                                  soc_initial_kwh, slots, zone, solver, solve_ms, reason
                                  (written with each schedule, not a history kind)
prices         zone               price_per_mwh, end, issued_at, source, currency (per slot)   slot ``start``
alarms         battery, rule      state, severity, message, value, threshold, unit, raised_at  ``since``
                                  (one point per transition: raised, cleared)
kpi_15m        battery            the additive KPI integrals (:data:`points.KPI_SUMS`),         bucket
                                  first/last_sample_s, first/last_soc_kwh, currency,           ``start``
                                  computed_at (one point per 15-minute bucket of a KpiDay)
kpi_1d         battery            the same, summed over the day, and ``buckets`` (written with  day
                                  the buckets of each KpiDay; history kind ``kpi_day``)          ``00:00``
=============  =================  ===========================================================  ==============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from nodes.contract.messages import BMS_NUMBERS, HistoryKind, Telemetry
from nodes.contract.topics import ALARM, COMMAND, KPI_DAY, PRICES, SCHEDULE, STATE, TELEMETRY, Topic
from nodes.recorder import points

M = TypeVar("M", bound=msgspec.Struct)


@dataclass(frozen=True)
class Series:
    """How one history kind is stored: measurement, the tag a query filters on, and its columns."""

    measurement: str
    tag: str
    """The point's tag that names what it is about: the topic parameter it is taken from, and the
    :class:`~nodes.contract.messages.HistoryQuery` field a query names it in."""
    columns: tuple[str, ...]
    """Raw query columns in order (fields, plus tags such as ``plan_id`` that are worth returning)."""
    numeric: tuple[str, ...]
    """The float fields, the only ones a downsampled (mean) query returns."""
    optional: tuple[str, ...] = ()
    """Float fields a message may leave out; each point names the ones it left out in its
    :data:`~nodes.recorder.points.MASK` field."""
    blank_is_none: tuple[str, ...] = ()
    """Text fields a message may leave out: written as ``""`` (so a later record clears an earlier value), read as
    absent."""
    tag_columns: tuple[str, ...] = ()
    """Columns that are tags, not fields (a Flux query filters fields by name, and tags are not among them)."""
    split_by: str | None = None
    """A text field whose values are never averaged together: the ``currency`` of prices and plans. A downsampled
    answer names it in every row and has one row per bucket and value (a bucket holding EUR and AUD prices is
    two rows, each the mean of its own currency), never one mean over both."""
    mask_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Words of the ``absent`` mask that stand for several columns (``bms``: every BMS field), so a point of a
    device without a BMS does not spell out ten names."""

    def masked(self, mask: str) -> set[str]:
        """The columns an ``absent`` mask names, its group words expanded."""
        names = set(mask.split(",")) if mask else set()
        for word, columns in self.mask_groups.items():
            if word in names:
                names.update(columns)
        return names

    def mask_words(self, name: str) -> tuple[str, ...]:
        """The mask words that take column ``name`` out: its own name and any group holding it."""
        return (name, *(word for word, columns in self.mask_groups.items() if name in columns))

    def __post_init__(self) -> None:
        # the stale-values correction of means (optional fields) is not applied to per-currency means
        if self.split_by and self.optional:
            raise ValueError(f"{self.measurement}: a series split by {self.split_by} cannot have optional fields")


@dataclass(frozen=True)
class Stored(Generic[M]):
    """One stored topic: where messages come from, how they become points, how they are read back."""

    kind: HistoryKind
    """The history kind a :class:`~nodes.contract.messages.HistoryQuery` names to read this series."""
    topic: Topic[M]
    lines: Callable[[str, M], list[str]]
    """``lines(tag value, message)``: the line-protocol points of one message."""
    series: Series
    device_reading: Callable[[M], datetime | None] | None = None
    """The time of a device's own reading, for the ``battery/{battery}/stored`` marks (None: not one)."""


def _device_reading(message: Telemetry) -> datetime | None:
    return message.ts if message.source == "device" else None


TABLE: tuple[Stored[Any], ...] = (
    Stored(
        "telemetry",
        TELEMETRY,
        points.telemetry_lines,
        Series(
            "telemetry",
            "battery",
            ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", "source", *BMS_NUMBERS,
             "bms_alarms"),
            ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", *BMS_NUMBERS),
            optional=("power_kw", "target_charge_kw", "target_discharge_kw", *BMS_NUMBERS),
            mask_groups={points.BMS_MASK: (*BMS_NUMBERS, "bms_alarms")},
        ),
        device_reading=_device_reading,
    ),
    Stored(
        "command",
        COMMAND,
        points.command_lines,
        Series(
            "command",
            "battery",
            ("action", "power_kw", "command_id", "source", "valid_until", "plan_id", "text"),
            ("power_kw",),
            blank_is_none=("plan_id", "text"),
        ),
    ),
    Stored(
        "state",
        STATE,
        points.state_lines,
        Series(
            "state",
            "battery",
            ("mode", "power_kw", "command_id", "command_source", "valid_until", "limits_hit", "reason"),
            ("power_kw",),
            blank_is_none=("command_id", "command_source", "valid_until"),
        ),
    ),
    Stored(
        "schedule",
        SCHEDULE,
        points.schedule_lines,
        Series(
            "schedule",
            "battery",
            ("plan_id", "price_per_mwh", "charge_kw", "discharge_kw", "soc_kwh", "end", "created_at", "currency"),
            ("price_per_mwh", "charge_kw", "discharge_kw", "soc_kwh"),
            tag_columns=("plan_id",),
            split_by="currency",
        ),
    ),
    Stored(
        "prices",
        PRICES,
        points.prices_lines,
        Series(
            "prices",
            "zone",
            ("price_per_mwh", "end", "issued_at", "source", "currency"),
            ("price_per_mwh",),
            split_by="currency",
        ),
    ),
    Stored(
        "alarms",
        ALARM,
        points.alarm_lines,
        Series(
            "alarms",
            "battery",
            ("rule", "state", "severity", "message", "value", "threshold", "unit", "raised_at"),
            ("value", "threshold"),
            optional=("value", "threshold"),
            blank_is_none=("unit", "raised_at"),
            tag_columns=("rule",),
        ),
    ),
    Stored(
        "kpi",
        KPI_DAY,
        points.kpi_lines,
        Series(
            "kpi_15m",
            "battery",
            (*points.KPI_SUMS, *points.KPI_SAMPLE, "currency", "computed_at"),
            (*points.KPI_SUMS, *points.KPI_SAMPLE),
            optional=points.KPI_SAMPLE,
        ),
    ),
)
"""Every stored topic, in the order the recorder subscribes to them."""

KPI_DAY_SERIES = Series(
    "kpi_1d",
    "battery",
    (*points.KPI_SUMS, *points.KPI_SAMPLE, "buckets", "currency", "computed_at"),
    (*points.KPI_SUMS, *points.KPI_SAMPLE, "buckets"),
    optional=points.KPI_SAMPLE,
)
"""Written by the ``kpi`` row's point builder (one day point next to the 96 buckets), read as ``kpi_day``."""

SERIES: dict[HistoryKind, Series] = {**{row.kind: row.series for row in TABLE}, "kpi_day": KPI_DAY_SERIES}
"""The query side's view of :data:`TABLE`: history kind -> how it is stored."""


__all__ = ["SERIES", "TABLE", "Series", "Stored"]
