"""A battery's realised revenue today, for ``battery/{battery}/revenue`` (pure: the clock and the KPIs passed in).

"Today" starts at midnight on the day's clock (``BESS_RENDERER_DAY_TZ``; unset: the local clock of the
renderer's price zone when the zone table knows it, else UTC). The number is the dashboard's own KPI
(:class:`nodes.renderer.insights.Insights` over ``[midnight, now]`` from the exact ledger), so Home Assistant and
the dashboard agree for the same period. Nothing is published while that KPI is still being read or cannot be
known (``status`` not ``ok``), or while no price or plan names the currency: a partial or unitless sum would look
like a real one.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nodes.contract.messages import CURRENCY_RE, DayRevenue
from nodes.market.sources.zones import ZONES
from nodes.renderer.insights import Insights


def day_clock(setting: str, zone: str) -> tuple[tzinfo, str]:
    """The clock of "today" and its name: the setting's IANA zone, else the price zone's local clock, else UTC.

    Raises :class:`ValueError` for a setting that is no IANA zone.
    """
    if setting:
        try:
            return ZoneInfo(setting), setting
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"BESS_RENDERER_DAY_TZ={setting!r} is not an IANA time zone (e.g. Europe/Berlin)"
                             ) from None
    known = ZONES.get(zone)
    if known is not None:
        return known.tz, str(known.tz)
    return UTC, "UTC"


def day_start(now: datetime, clock: tzinfo) -> datetime:
    """Midnight of ``now``'s day on ``clock``, as a UTC instant."""
    local = now.astimezone(clock)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def day_revenue(insights: Insights, start: datetime, tz_name: str, now: datetime, *,
                currency_known: bool) -> DayRevenue | None:
    """The message for the KPIs of ``[start, now]``, or None when there is nothing true to say yet."""
    if insights.status != "ok" or not currency_known or not CURRENCY_RE.fullmatch(insights.currency):
        return None
    return DayRevenue(
        day_start=start,
        tz=tz_name[:64],
        computed_at=now,
        realised_revenue=insights.realised_revenue,
        currency=insights.currency,
        until=insights.end,
        samples=insights.samples,
        energy_charged_kwh=max(0.0, insights.energy_charged_kwh),
        energy_discharged_kwh=max(0.0, insights.energy_discharged_kwh),
        unpriced_energy_kwh=max(0.0, insights.unpriced_energy_kwh),
        gap_s=max(0.0, insights.gap_s),
    )


__all__ = ["day_clock", "day_revenue", "day_start"]
