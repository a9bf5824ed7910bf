"""What each panel of a battery page exports as CSV: the data its figure is drawn from (pure: a Scene in, a Table out).

One export per panel (``series`` is the panel's figure id, plus ``telemetry`` for every telemetry column at
once), over the viewer's window, with the rows the figure draws: raw samples when they fit, else the recorder's
bucket means (``bucket_s`` says which: empty for a sample, else the row is the mean over
``[time_utc, time_utc + bucket_s)``). Columns carry their unit in the name; times are UTC (``_utc``), whatever zone
the page displays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec
import numpy as np

from nodes.contract.messages import BMS_NUMBERS
from nodes.renderer import fleet as fleet_rules
from nodes.renderer.csvout import Table
from nodes.renderer.diagnosis import DiagnosticsPanel, csv_rows
from nodes.renderer.draw import Scene
from nodes.renderer.fleet import FleetRow, FleetTotals
from nodes.renderer.series import TelemetrySeries, to_datetime

TELEMETRY_SERIES: Final = {
    "telemetry": ("soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw", *BMS_NUMBERS),
    "soc": ("soc_kwh",),
    "power": ("power_kw", "target_charge_kw", "target_discharge_kw"),
    "cells": BMS_NUMBERS,
}
SERIES: Final = (*TELEMETRY_SERIES, "prices", "schedule", "insights", "alarms", "diagnostics")
"""Every ``series`` an export may name."""
MEANS_NOTE = "rows with bucket_s are means over [time_utc, time_utc + bucket_s); rows without are raw samples"


def _column(series: TelemetrySeries, name: str) -> np.ndarray:
    if name in BMS_NUMBERS:
        return series.column(name)
    values: np.ndarray = getattr(series, name)
    return values


def telemetry_table(name: str, series: TelemetrySeries, columns: Sequence[str]) -> Table:
    """Telemetry rows: ``time_utc``, ``bucket_s`` and ``columns`` (all NaN columns of a BMS-less battery kept:
    the header does not change with the data)."""
    spans = series.spans
    data = [_column(series, c) for c in columns]
    rows = [
        [to_datetime(t), None if not np.isfinite(s) else float(s), *(float(col[i]) for col in data)]
        for i, (t, s) in enumerate(zip(series.time_s.tolist(), spans.tolist(), strict=True))
    ]
    note = MEANS_NOTE if series.is_aggregated else "raw samples"
    return Table(name, ("time_utc", "bucket_s", *columns), rows, note)


def scene_table(series_name: str, scene: Scene) -> Table:
    """The export ``series_name`` (one of :data:`SERIES` but ``diagnostics``) of a battery's scene."""
    if series_name in TELEMETRY_SERIES:
        return telemetry_table(series_name, scene.telemetry, TELEMETRY_SERIES[series_name])
    if series_name == "prices":
        prices = scene.prices
        ix = prices.currency_ix if prices.currency_ix is not None else np.zeros(len(prices))
        rows = [[to_datetime(s), to_datetime(e), float(p), prices.codes[int(c)]]
                for s, e, p, c in zip(prices.start_s.tolist(), prices.end_s.tolist(),
                                      prices.price_per_mwh.tolist(), ix.tolist(), strict=True)]
        return Table("prices", ("slot_start_utc", "slot_end_utc", "price_per_mwh", "currency"), rows,
                     "price slots overlapping the window (and the plan ahead on a live window)")
    if series_name == "schedule":
        schedule = scene.schedule
        lo, hi = scene.x_range
        slots = [] if schedule is None else [s for s in schedule.slots if s.end > lo and s.start < hi]
        rows = [[s.start, s.end, s.price_per_mwh, schedule.currency if schedule else None, s.charge_kw,
                 s.discharge_kw, s.discharge_kw - s.charge_kw, s.soc_kwh, schedule.plan_id if schedule else None]
                for s in slots]
        note = "the current plan's slots in the view" if schedule is not None else "no plan received"
        return Table("schedule", ("slot_start_utc", "slot_end_utc", "price_per_mwh", "currency", "charge_kw",
                                  "discharge_kw", "net_power_kw", "soc_end_kwh", "plan_id"), rows, note)
    if series_name == "insights":
        values = msgspec.structs.asdict(scene.insights)
        rows = [[f"{name}_utc" if isinstance(value, datetime) else name, value] for name, value in values.items()]
        return Table("insights", ("kpi", "value"), rows,
                     "the market panel's numbers; amounts in the row 'currency', units in the names")
    if series_name == "alarms":
        alarms = sorted(scene.alarms, key=lambda a: a.since)
        rows = [[a.since, a.state, a.rule, a.severity, a.message, a.value, a.threshold, a.unit or None,
                 a.raised_at] for a in alarms]
        return Table("alarms", ("since_utc", "state", "rule", "severity", "message", "value", "threshold", "unit",
                                "raised_at_utc"), rows, scene.alarms_note or "alarm transitions in the window")
    raise ValueError(f"unknown export {series_name!r}")


def diagnostics_table(panel: DiagnosticsPanel) -> Table:
    """The diagnostics panel as CSV (one row per diagnostic)."""
    columns, rows = csv_rows(panel)
    return Table("diagnostics", columns, rows, panel.note or panel.status)


def fleet_table(rows: Sequence[FleetRow], totals: FleetTotals) -> Table:
    """The fleet table as CSV: one row per battery, then the totals row (``battery`` = ``TOTAL``)."""
    columns = ("battery", "soc_kwh", "soc_pct_of_capacity", "capacity_kwh", "power_kw", "mode", "control_mode",
               "alarms_active", "alarm_severity", "alarm_rules", "plan_revenue_today_utc", "currency",
               "telemetry_time_utc", "telemetry_age_s", "counted_in_totals")
    body: list[list[object]] = [
        [r.battery, r.soc_kwh, r.soc_pct, r.capacity_kwh, r.power_kw, r.mode, r.control_mode, r.alarms,
         r.alarm_severity, " ".join(r.alarm_rules) or None, r.revenue_today, r.currency, r.telemetry_ts,
         r.telemetry_age_s, r.fresh]
        for r in rows
    ]
    # one currency: the revenue total fits its column; several are never added, so the cell stays empty
    single = next(iter(totals.revenue_today.items())) if len(totals.revenue_today) == 1 else None
    body.append(["TOTAL", totals.energy_kwh, totals.energy_pct, totals.capacity_kwh, totals.power_kw, None, None,
                 totals.alarms, totals.alarm_severity, None, single[1] if single else None,
                 single[0] if single else None, None, None, totals.counted])
    note = (f"TOTAL: energy and power over the {totals.counted} batteries with a reading at most "
            f"{fleet_rules.FRESH_S:g} s old; revenue per currency")
    return Table("fleet", columns, body, note)


__all__ = ["MEANS_NOTE", "SERIES", "TELEMETRY_SERIES", "diagnostics_table", "fleet_table", "scene_table",
           "telemetry_table"]
