"""The fleet view: one row per battery and the fleet's totals, each number with how it is computed (pure).

The index page, ``GET /api/fleet`` and ``GET /fleet.csv`` show the same rows and totals, built here from the
latest messages the dashboard holds (telemetry, state, control mode, alarms, spec, plan); the clock is passed in.
The page's script keeps the rows live from the event stream and recomputes the totals with the same rules
(:data:`TOTALS_HOW` is sent with the page, so the words on screen are these).

Rules:

* **SOC %** is of the spec's capacity (``soc_kwh / capacity_kwh``); without a spec there is no percentage.
* **plan revenue today** is what the battery's current plan expects from its slots inside today (00:00 to
  24:00 UTC): per slot, (discharge - charge) x hours inside today x the slot's price, minus the wear cost of the
  discharged energy at the spec's ``cycle_cost_per_mwh`` (the planner's own objective, so a plan that lies
  wholly inside today shows its ``expected_revenue``). It is planned, not metered; the battery page's market
  panel has the realised revenue.
* **totals** count only batteries whose latest reading is at most :data:`FRESH_S` old (an old reading is not the
  fleet's state now); energy stored and power are sums of those readings, revenue is summed per currency (two
  currencies are never added).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from nodes.contract import energy
from nodes.contract.messages import SEVERITIES, Alarm, BatterySpec, BatteryState, Schedule, Severity, Telemetry

FRESH_S = 300.0
"""A reading at most this old counts towards the fleet's totals."""

REVENUE_HOW = (
    "What the current plan expects from its slots inside today (00:00–24:00 UTC): Σ (discharge − charge) kW × "
    "hours inside today × slot price / 1000, minus the cycle wear cost of the discharged energy (the spec's "
    "cycle_cost_per_mwh), as the planner scores a plan. Planned, not metered."
)
TOTALS_HOW: dict[str, str] = {
    "energy": (f"Σ of the latest SOC of the batteries whose reading is at most {FRESH_S:g} s old; the share is of "
               "the summed capacity of those with a spec."),
    "power": (f"Σ of the latest power of the batteries whose reading is at most {FRESH_S:g} s old "
              "(+ discharging, − charging): the fleet's net power."),
    "revenue": "Σ of the batteries' plan revenue today, per currency (never added across currencies). " + REVENUE_HOW,
    "alarms": "Alarms up now over every battery; the colour is the most urgent one.",
}


class FleetRow(msgspec.Struct, kw_only=True, frozen=True):
    """One battery as the fleet table shows it (``None``: not known yet, shown as a dash, never as 0)."""

    battery: str
    href: str
    soc_kwh: float | None = None
    capacity_kwh: float | None = None
    soc_min_kwh: float | None = None
    soc_max_kwh: float | None = None
    soc_pct: float | None = None
    """SOC as a percentage of the spec's capacity."""
    power_kw: float | None = None
    """+ discharging, - charging."""
    mode: str | None = None
    """What the battery reports doing (its state topic)."""
    control_mode: str | None = None
    """Who commands it now (autopilot, manual, idle; None: the planner's default)."""
    control: str = ""
    alarms: int = 0
    alarm_severity: Severity | None = None
    """The most urgent alarm up now."""
    alarm_rules: list[str] = msgspec.field(default_factory=list)
    revenue_today: float | None = None
    currency: str | None = None
    revenue_note: str = ""
    """Why there is no revenue today (no plan, no slot today)."""
    telemetry_ts: datetime | None = None
    telemetry_age_s: float | None = None
    fresh: bool = False
    """The reading is at most :data:`FRESH_S` old: it counts towards the totals."""
    notes: dict[str, str] = msgspec.field(default_factory=dict)
    """Per-battery notes from the nodes' statuses (e.g. the planner's "not planned: ...")."""


class FleetTotals(msgspec.Struct, kw_only=True, frozen=True):
    """The fleet's totals over its rows, each with the rule it follows (:data:`TOTALS_HOW`)."""

    batteries: int
    counted: int
    """Batteries with a fresh reading (the ones the energy and power totals sum)."""
    energy_kwh: float | None
    capacity_kwh: float | None
    """Σ capacity of the counted batteries that have a spec."""
    energy_pct: float | None
    power_kw: float | None
    power_counted: int
    """Counted batteries that report a power."""
    revenue_today: dict[str, float]
    """Currency -> Σ plan revenue today."""
    revenue_counted: int
    alarms: int
    alarm_severity: Severity | None
    how: dict[str, str]


def utc_day(now: datetime) -> tuple[datetime, datetime]:
    """Today in UTC: ``[00:00, 24:00)`` of ``now``'s UTC date."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def plan_revenue_between(schedule: Schedule, spec: BatterySpec | None, begin: datetime, end: datetime
                         ) -> float | None:
    """What ``schedule`` expects to earn inside ``[begin, end)`` (see the module docstring); None without a slot
    there. A slot partly inside counts for its part inside."""
    market = 0.0
    discharged_kwh = 0.0
    inside = False
    for slot in schedule.slots:
        lo, hi = max(slot.start, begin), min(slot.end, end)
        if hi <= lo:
            continue
        inside = True
        hours = energy.hours_between(lo, hi)
        market += energy.value_at((slot.discharge_kw - slot.charge_kw) * hours, slot.price_per_mwh)
        discharged_kwh += slot.discharge_kw * hours
    if not inside:
        return None
    wear = energy.value_at(discharged_kwh, spec.cycle_cost_per_mwh) if spec is not None else 0.0
    return market - wear


def most_urgent(alarms: Iterable[Alarm]) -> Severity | None:
    """The highest severity among raised alarms (None: none up)."""
    ranks = [SEVERITIES.index(a.severity) for a in alarms if a.state == "raised"]
    return SEVERITIES[max(ranks)] if ranks else None


def fleet_row(
    battery: str,
    *,
    now: datetime,
    telemetry: Telemetry | None = None,
    state: BatteryState | None = None,
    control_mode: str | None = None,
    control_text: str = "",
    alarms: Sequence[Alarm] = (),
    spec: BatterySpec | None = None,
    schedule: Schedule | None = None,
    notes: Mapping[str, str] | None = None,
) -> FleetRow:
    """One battery's row from the latest messages about it."""
    up = [a for a in alarms if a.state == "raised"]
    soc = telemetry.soc_kwh if telemetry is not None else None
    age = (now - telemetry.ts).total_seconds() if telemetry is not None else None
    revenue: float | None = None
    note = ""
    if schedule is None:
        note = "no plan received"
    else:
        revenue = plan_revenue_between(schedule, spec, *utc_day(now))
        if revenue is None:
            note = "the current plan has no slot today (UTC)"
    return FleetRow(
        battery=battery,
        href=f"/battery/{battery}",
        soc_kwh=soc,
        capacity_kwh=spec.capacity_kwh if spec else None,
        soc_min_kwh=spec.soc_min_kwh if spec else None,
        soc_max_kwh=spec.soc_max_kwh if spec else None,
        soc_pct=soc / spec.capacity_kwh * 100.0 if soc is not None and spec is not None else None,
        power_kw=telemetry.power_kw if telemetry is not None else None,
        mode=state.mode if state is not None else None,
        control_mode=control_mode,
        control=control_text,
        alarms=len(up),
        alarm_severity=most_urgent(up),
        alarm_rules=[a.rule for a in sorted(up, key=lambda a: -SEVERITIES.index(a.severity))],
        revenue_today=revenue,
        currency=schedule.currency if schedule is not None and revenue is not None else None,
        revenue_note=note,
        telemetry_ts=telemetry.ts if telemetry is not None else None,
        telemetry_age_s=round(age, 1) if age is not None else None,
        fresh=age is not None and age <= FRESH_S,
        notes=dict(notes or {}),
    )


def fleet_totals(rows: Sequence[FleetRow]) -> FleetTotals:
    """The totals row of the fleet table (see the module docstring for the rules)."""
    counted = [r for r in rows if r.fresh and r.soc_kwh is not None]
    with_capacity = [r for r in counted if r.capacity_kwh is not None]
    powered = [r for r in counted if r.power_kw is not None]
    energy_kwh = sum(r.soc_kwh or 0.0 for r in counted) if counted else None
    capacity = sum(r.capacity_kwh or 0.0 for r in with_capacity) if with_capacity else None
    stored_with_capacity = sum(r.soc_kwh or 0.0 for r in with_capacity)
    revenue: dict[str, float] = {}
    revenue_rows = [r for r in rows if r.revenue_today is not None and r.currency is not None]
    for r in revenue_rows:
        revenue[r.currency or ""] = revenue.get(r.currency or "", 0.0) + (r.revenue_today or 0.0)
    severities = [r.alarm_severity for r in rows if r.alarm_severity is not None]
    return FleetTotals(
        batteries=len(rows),
        counted=len(counted),
        energy_kwh=energy_kwh,
        capacity_kwh=capacity,
        energy_pct=stored_with_capacity / capacity * 100.0 if capacity else None,
        power_kw=sum(r.power_kw or 0.0 for r in powered) if powered else None,
        power_counted=len(powered),
        revenue_today=dict(sorted(revenue.items())),
        revenue_counted=len(revenue_rows),
        alarms=sum(r.alarms for r in rows),
        alarm_severity=max(severities, key=SEVERITIES.index) if severities else None,
        how=dict(TOTALS_HOW),
    )


__all__ = [
    "FRESH_S",
    "REVENUE_HOW",
    "TOTALS_HOW",
    "FleetRow",
    "FleetTotals",
    "fleet_row",
    "fleet_totals",
    "most_urgent",
    "plan_revenue_between",
    "utc_day",
]
