"""Market performance of a battery from what it actually did (pure: series and plan in, an Insights Struct out).

The energy model is a zero-order hold: a telemetry sample's ``power_kw`` holds until the next sample, which is
how a setpoint-driven battery behaves. Every hold interval is split at price-slot boundaries so each piece is
paid at the price of the slot it falls in; revenue = power x hours x price / 1000 (kW x h x EUR/MWh -> EUR),
positive when discharging (selling), negative when charging (buying). A hold longer than
``max(max_gap_s, 3 x median sample spacing)`` is a data gap: nothing is integrated across it.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import numpy as np

from nodes.contract.messages import BatterySpec, Schedule
from nodes.renderer.series import FloatArray, PriceSeries, TelemetrySeries, to_datetime

DEFAULT_MAX_GAP_S = 900.0
"""Hold intervals longer than this (and than 3x the median spacing) are treated as missing data."""


class Insights(msgspec.Struct, kw_only=True, frozen=True):
    """Realised market performance over the telemetry window, next to what the plan expected.

    Units are in the field names; ``None`` means "cannot be known from the inputs" (no spec, no plan, no
    energy in that direction), never zero.
    """

    begin: datetime | None = None
    end: datetime | None = None
    samples: int = 0
    realised_revenue_eur: float = 0.0
    energy_charged_kwh: float = 0.0
    energy_discharged_kwh: float = 0.0
    unpriced_energy_kwh: float = 0.0
    """Energy moved while no price slot was known; counted in the energy totals, not in the revenue."""
    gap_s: float = 0.0
    """Time inside the window that was not integrated because samples were too far apart."""
    full_cycles: float | None = None
    avg_buy_price_eur_per_mwh: float | None = None
    avg_sell_price_eur_per_mwh: float | None = None
    soc_start_kwh: float | None = None
    soc_end_kwh: float | None = None
    efficiency_loss_kwh: float | None = None
    """charged - discharged - (soc_end - soc_start): energy bought but neither sold nor still stored."""
    cycle_cost_eur: float | None = None
    """Wear cost of the discharged energy at the spec's ``cycle_cost_eur_per_mwh``."""
    plan_id: str | None = None
    plan_revenue_to_date_eur: float | None = None
    """What the plan's slots would have earned over the same window as the telemetry."""
    expected_revenue_eur: float | None = None
    """The plan's own figure for its whole horizon (as the planner computed it)."""
    baseline_revenue_eur: float | None = None

    @property
    def spread_eur_per_mwh(self) -> float | None:
        """Average sell price minus average buy price."""
        if self.avg_sell_price_eur_per_mwh is None or self.avg_buy_price_eur_per_mwh is None:
            return None
        return self.avg_sell_price_eur_per_mwh - self.avg_buy_price_eur_per_mwh


def _hold_pieces(
    telemetry: TelemetrySeries, prices: PriceSeries, max_gap_s: float
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Pieces of constant power and price: (energy kWh, price EUR/MWh or NaN, hours), plus the gap seconds."""
    has_power = np.isfinite(telemetry.power_kw)
    t = telemetry.time_s[has_power]
    p = telemetry.power_kw[has_power]
    if t.size < 2:
        empty = np.empty(0)
        return empty, empty, empty, 0.0
    spacing = np.diff(t)
    limit = max(max_gap_s, 3.0 * float(np.median(spacing)))
    is_gap = spacing > limit
    gap_s = float(spacing[is_gap].sum())
    # Breakpoints: every sample plus every slot boundary inside the telemetry span.
    bounds = np.concatenate([prices.start_s, prices.end_s])
    bounds = bounds[(bounds > t[0]) & (bounds < t[-1])]
    edges = np.union1d(t, bounds)
    piece_start = edges[:-1]
    hours = np.diff(edges) / 3600.0
    sample = np.searchsorted(t, piece_start, side="right") - 1
    hours = np.where(is_gap[sample], 0.0, hours)
    energy = p[sample] * hours
    price = prices.price_at(piece_start)
    return energy, price, hours, gap_s


def _weighted_price(energy: FloatArray, price: FloatArray) -> float | None:
    priced = np.isfinite(price) & (energy > 0)
    total = float(energy[priced].sum())
    if total <= 0:
        return None
    return float((energy[priced] * price[priced]).sum() / total)


def plan_revenue_eur(schedule: Schedule, begin_s: float | None = None, end_s: float | None = None) -> float:
    """Market revenue of the plan's slots, optionally only their part inside ``[begin_s, end_s)`` (EUR)."""
    total = 0.0
    for slot in schedule.slots:
        start, end = slot.start.timestamp(), slot.end.timestamp()
        if begin_s is not None:
            start = max(start, begin_s)
        if end_s is not None:
            end = min(end, end_s)
        if end > start:
            net_kw = slot.discharge_kw - slot.charge_kw
            total += net_kw * (end - start) / 3600.0 * slot.price_eur_per_mwh / 1000.0
    return total


def compute_insights(
    telemetry: TelemetrySeries,
    prices: PriceSeries,
    spec: BatterySpec | None = None,
    schedule: Schedule | None = None,
    *,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> Insights:
    """Realised revenue, energy, cycles, average prices and efficiency loss over ``telemetry``'s window.

    Pass the full-resolution series when you have it (bucket means from :func:`downsample` keep energy for
    regular sampling, but blur the buy/sell split inside a bucket).
    """
    energy, price, _hours, gap_s = _hold_pieces(telemetry, prices, max_gap_s)
    priced = np.isfinite(price)
    revenue = float((energy[priced] * price[priced]).sum() / 1000.0)
    charged_pieces = np.where(energy < 0, -energy, 0.0)
    discharged_pieces = np.where(energy > 0, energy, 0.0)
    charged = float(charged_pieces.sum())
    discharged = float(discharged_pieces.sum())

    soc = telemetry.soc_kwh[np.isfinite(telemetry.soc_kwh)]
    soc_start = float(soc[0]) if soc.size else None
    soc_end = float(soc[-1]) if soc.size else None
    loss = None
    if soc_start is not None and soc_end is not None and energy.size:
        loss = charged - discharged - (soc_end - soc_start)

    cycles = None
    cycle_cost = None
    if spec is not None:
        usable = spec.soc_max_kwh - spec.soc_min_kwh
        cycles = discharged / usable if usable > 0 else None
        cycle_cost = discharged / 1000.0 * spec.cycle_cost_eur_per_mwh

    n = len(telemetry)
    begin_s = float(telemetry.time_s[0]) if n else None
    end_s = float(telemetry.time_s[-1]) if n else None
    plan_to_date = None
    if schedule is not None and begin_s is not None and end_s is not None and end_s > begin_s:
        plan_to_date = plan_revenue_eur(schedule, begin_s, end_s)

    return Insights(
        begin=None if begin_s is None else to_datetime(begin_s),
        end=None if end_s is None else to_datetime(end_s),
        samples=n,
        realised_revenue_eur=revenue,
        energy_charged_kwh=charged,
        energy_discharged_kwh=discharged,
        unpriced_energy_kwh=float(np.abs(energy[~priced]).sum()),
        gap_s=gap_s,
        full_cycles=cycles,
        avg_buy_price_eur_per_mwh=_weighted_price(charged_pieces, price),
        avg_sell_price_eur_per_mwh=_weighted_price(discharged_pieces, price),
        soc_start_kwh=soc_start,
        soc_end_kwh=soc_end,
        efficiency_loss_kwh=loss,
        cycle_cost_eur=cycle_cost,
        plan_id=None if schedule is None else schedule.plan_id,
        plan_revenue_to_date_eur=plan_to_date,
        expected_revenue_eur=None if schedule is None else schedule.expected_revenue_eur,
        baseline_revenue_eur=None if schedule is None else schedule.baseline_revenue_eur,
    )
