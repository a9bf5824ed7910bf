"""HTTP bodies -> contract messages (pure: the clock passed in; a body that does not fit is an :class:`ApiError`).

``POST /write`` records become :class:`~nodes.contract.messages.Telemetry` (``source="gateway"``, the timestamp
checked for plausibility and converted to UTC); ``POST /prices`` bodies become a
:class:`~nodes.contract.messages.PriceForecast` (slots in time order, without overlap). The routes
(:mod:`nodes.gateway.app`) decode the body strictly first (:mod:`nodes.gateway.bodies`), then call these.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nodes.contract import plausibility
from nodes.contract.messages import PriceForecast, PriceSlot, Telemetry
from nodes.gateway.bodies import PricesBody, WriteBody
from nodes.gateway.errors import ApiError, ImplausibleTimestamp


def check_timestamp(ts: datetime, now: datetime, field: str = "timestamp") -> datetime:
    """``ts`` in UTC if it is plausible (:mod:`nodes.contract.plausibility`), else a 422 on ``field``."""
    problem = plausibility.timestamp_problem(ts, now, field)
    if problem is not None:
        raise ImplausibleTimestamp(422, problem, field)
    return ts.astimezone(UTC)


def to_telemetry(body: WriteBody, now: datetime, field_prefix: str = "") -> Telemetry:
    """The contract Telemetry for one write record (timestamp checked and converted to UTC)."""
    return Telemetry(
        ts=check_timestamp(body.timestamp, now, f"{field_prefix}timestamp"),
        soc_kwh=body.soc_kwh,
        power_kw=body.power_kw,
        target_charge_kw=body.target_charge_kw,
        target_discharge_kw=body.target_discharge_kw,
        source="gateway",
    )


def to_price_forecast(body: PricesBody) -> PriceForecast:
    """The contract PriceForecast; every slot must end after it starts and slots must be in time order."""
    previous_end: datetime | None = None
    for i, slot in enumerate(body.slots):
        if slot.end <= slot.start:
            raise ApiError(422, f"slots[{i}]: end must be after start", f"slots[{i}].end")
        if previous_end is not None and slot.start < previous_end:
            raise ApiError(422, f"slots[{i}] starts before slots[{i - 1}] ends: slots must be in time order, "
                           "without overlap", f"slots[{i}].start")
        previous_end = slot.end
    return PriceForecast(
        zone=body.zone,
        issued_at=body.issued_at.astimezone(UTC),
        slots=[
            PriceSlot(start=s.start.astimezone(UTC), end=s.end.astimezone(UTC), price_per_mwh=s.price_per_mwh)
            for s in body.slots
        ],
        currency=body.currency,
        source=body.source or "gateway",
    )


__all__ = ["check_timestamp", "to_price_forecast", "to_telemetry"]
