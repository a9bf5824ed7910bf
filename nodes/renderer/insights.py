"""Market performance of a battery from what it actually did (pure: integrals and plan in, an Insights Struct out).

The integrals come from :mod:`nodes.renderer.ledger` (exact over the raw samples: measured power held until
the next sample, or the SOC change where no power is reported; every piece paid at its own price slot).
:func:`compute_insights` integrates a raw series directly (tests, the benchmark, short windows);
:func:`insights_from_totals` turns the ledger's sums over a window into the same Struct, so both agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
import numpy as np

from nodes.contract import energy
from nodes.contract.messages import DEFAULT_CURRENCY, BatterySpec, Schedule
from nodes.renderer import ledger
from nodes.renderer.currency import mixed_currencies
from nodes.renderer.ledger import MAX_HOLD_S, MAX_SPAN_S, Totals
from nodes.renderer.series import PriceSeries, TelemetrySeries, to_datetime

LOSS_TOLERANCE = 0.005
"""A computed efficiency loss below ``-LOSS_TOLERANCE`` x throughput means power and SOC readings disagree
(it is then not shown); a smaller negative value is rounding and shows as 0. A loss above the throughput
itself is a disagreement too (more lost than moved)."""

PowerSource = Literal["measured", "derived from SOC", "measured and derived from SOC", "none"]


class Insights(msgspec.Struct, kw_only=True, frozen=True):
    """Realised market performance over a period, next to what the plan expected.

    Units are in the field names; ``None`` means "cannot be known from the inputs" (no spec, no plan, no
    energy in that direction), never zero. ``status`` says whether the numbers are there at all
    (``computing``: the raw history is still being read; ``unavailable``: see ``note``).
    """

    begin: datetime | None = None
    end: datetime | None = None
    samples: int = 0
    realised_revenue: float = 0.0
    energy_charged_kwh: float = 0.0
    energy_discharged_kwh: float = 0.0
    derived_energy_kwh: float = 0.0
    """Part of the energy totals that comes from SOC changes (no power reported, or readings too far apart)."""
    power_source: PowerSource = "none"
    unpriced_energy_kwh: float = 0.0
    """Energy moved while no price slot was known; counted in the energy totals, not in the revenue."""
    gap_s: float = 0.0
    """Time inside the period that was not integrated: readings more than 6 h apart, or no SOC to derive from."""
    full_cycles: float | None = None
    avg_buy_price_per_mwh: float | None = None
    avg_sell_price_per_mwh: float | None = None
    soc_start_kwh: float | None = None
    soc_end_kwh: float | None = None
    efficiency_loss_kwh: float | None = None
    """Over measured intervals: energy charged - discharged - SOC gained; never negative (None if the
    readings disagree, see ``loss_note``)."""
    loss_note: str = ""
    cycle_cost: float | None = None
    """Wear cost of the discharged energy at the spec's ``cycle_cost_per_mwh``."""
    plan_id: str | None = None
    plan_revenue_to_date: float | None = None
    """What the plan's slots would have earned over the same period as the telemetry."""
    expected_revenue: float | None = None
    """The plan's own figure for its whole horizon (as the planner computed it)."""
    baseline_revenue: float | None = None
    """The planner's simple rule (charge in each day's cheapest slots, discharge in the dearest) on the plan's
    horizon, for comparison."""
    status: Literal["ok", "computing", "unavailable"] = "ok"
    note: str = ""
    currency: str = DEFAULT_CURRENCY
    """ISO 4217 code of every amount and price above: the prices' (and the plan's, which must agree)."""

    @property
    def spread_per_mwh(self) -> float | None:
        """Average sell price minus average buy price."""
        if self.avg_sell_price_per_mwh is None or self.avg_buy_price_per_mwh is None:
            return None
        return self.avg_sell_price_per_mwh - self.avg_buy_price_per_mwh


def plan_revenue(schedule: Schedule, begin_s: float | None = None, end_s: float | None = None) -> float:
    """Market revenue of the plan's slots, optionally only their part inside ``[begin_s, end_s)`` (plan currency)."""
    total = 0.0
    for slot in schedule.slots:
        start, end = slot.start.timestamp(), slot.end.timestamp()
        if begin_s is not None:
            start = max(start, begin_s)
        if end_s is not None:
            end = min(end, end_s)
        if end > start:
            net_kw = slot.discharge_kw - slot.charge_kw
            total += energy.value_at(energy.energy_kwh(net_kw, end - start), slot.price_per_mwh)
    return total


def _ratio_price(money: float, kwh: float) -> float | None:
    # money / kWh * 1000 = money/MWh (one currency); nothing moved means no average price, not 0
    return money / kwh * energy.KWH_PER_MWH if kwh > 1e-9 else None


def _source(measured_kwh: float, derived_kwh: float) -> PowerSource:
    if derived_kwh > 1e-9:
        return "measured and derived from SOC" if measured_kwh > 1e-9 else "derived from SOC"
    return "measured" if measured_kwh > 1e-9 else "none"


def insights_from_totals(
    sums: Totals,
    spec: BatterySpec | None = None,
    schedule: Schedule | None = None,
    currency: str | None = None,
) -> Insights:
    """The :class:`Insights` of ledger sums over a period, priced in ``currency`` (default: the plan's).

    The caller checks that the prices behind ``sums`` and the plan share that currency
    (:func:`nodes.renderer.currency.mixed_currencies`); the sums themselves do not know it.
    """
    charged, discharged = sums[ledger.CHARGED], sums[ledger.DISCHARGED]
    derived = sums[ledger.DERIVED]
    throughput = charged + discharged
    measured = throughput - derived

    loss: float | None = None
    loss_note = ""
    if measured > 1e-9:
        raw_loss = sums[ledger.LOSS]
        if raw_loss > measured:
            # more "lost" than moved: the SOC fell faster than the reported power explains (a wrong power
            # reading, a meter on the other side of a load, or a sped-up simulation), not an efficiency
            loss_note = (
                f"power and SOC readings disagree: the SOC fell {raw_loss:,.1f} kWh more than the power explains"
            )
        elif raw_loss >= 0:
            loss = raw_loss
        elif raw_loss >= -LOSS_TOLERANCE * measured:
            loss = 0.0
        else:
            loss_note = f"power and SOC readings disagree by {-raw_loss:,.1f} kWh"
    elif derived > 1e-9:
        loss_note = "not measurable: power is derived from SOC"

    cycles = cycle_cost = None
    if spec is not None:
        # what the meter saw leave the battery, over the usable range (the planner counts what left the cells)
        cycles = energy.full_cycles(discharged, spec)
        cycle_cost = energy.value_at(discharged, spec.cycle_cost_per_mwh)

    plan_to_date = None
    if schedule is not None and sums.begin_s is not None and sums.end_s is not None and sums.end_s > sums.begin_s:
        plan_to_date = plan_revenue(schedule, sums.begin_s, sums.end_s)

    return Insights(
        begin=None if sums.begin_s is None else to_datetime(sums.begin_s),
        end=None if sums.end_s is None else to_datetime(sums.end_s),
        samples=round(sums[ledger.SAMPLES]),
        realised_revenue=sums[ledger.REVENUE],
        energy_charged_kwh=charged,
        energy_discharged_kwh=discharged,
        derived_energy_kwh=derived,
        power_source=_source(measured, derived),
        unpriced_energy_kwh=sums[ledger.UNPRICED],
        gap_s=sums[ledger.GAP_S],
        full_cycles=cycles,
        avg_buy_price_per_mwh=_ratio_price(sums[ledger.BUY_MONEY], sums[ledger.PRICED_CHARGED]),
        avg_sell_price_per_mwh=_ratio_price(sums[ledger.SELL_MONEY], sums[ledger.PRICED_DISCHARGED]),
        soc_start_kwh=sums.soc_start_kwh,
        soc_end_kwh=sums.soc_end_kwh,
        efficiency_loss_kwh=loss,
        loss_note=loss_note,
        cycle_cost=cycle_cost,
        plan_id=None if schedule is None else schedule.plan_id,
        plan_revenue_to_date=plan_to_date,
        expected_revenue=None if schedule is None else schedule.expected_revenue,
        baseline_revenue=None if schedule is None else schedule.baseline_revenue,
        currency=currency or (DEFAULT_CURRENCY if schedule is None else schedule.currency),
    )


def compute_insights(
    telemetry: TelemetrySeries,
    prices: PriceSeries,
    spec: BatterySpec | None = None,
    schedule: Schedule | None = None,
    *,
    max_hold_s: float = MAX_HOLD_S,
    max_span_s: float = MAX_SPAN_S,
) -> Insights:
    """Realised revenue, energy, cycles, average prices and efficiency loss from the first to the last sample
    of a raw ``telemetry`` series (the same integrals as the ledger's). Prices in several currencies, or in
    another than the plan's, give ``unavailable`` with the reason, never a sum across currencies."""
    problem = mixed_currencies(prices.currencies, schedule)
    if problem is not None:
        return pending("unavailable", problem, schedule)
    code = next(iter(prices.currencies), None)
    if len(telemetry) == 0:
        return insights_from_totals(ledger.totals([]), spec, schedule, code)
    first, last = float(telemetry.time_s[0]), float(telemetry.time_s[-1])
    edges = np.array([first, np.nextafter(last, np.inf)])
    buckets = ledger.integrate(telemetry, prices, edges, max_hold_s=max_hold_s, max_span_s=max_span_s)
    return insights_from_totals(ledger.totals([buckets]), spec, schedule, code)


def pending(status: Literal["computing", "unavailable"], note: str, schedule: Schedule | None = None) -> Insights:
    """Insights without numbers yet (or at all): the figure says why instead of showing a wrong number."""
    return Insights(
        status=status,
        note=note,
        plan_id=None if schedule is None else schedule.plan_id,
        expected_revenue=None if schedule is None else schedule.expected_revenue,
        baseline_revenue=None if schedule is None else schedule.baseline_revenue,
        currency=DEFAULT_CURRENCY if schedule is None else schedule.currency,
    )
