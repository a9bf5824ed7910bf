"""From a parser's :class:`ParsedPrices` to the contract's PriceForecast (pure).

The forecast carries the series' own ISO 4217 currency (AUD from AEMO, DKK from Energi Data Service, ...): no
currency is converted or refused here; the contract's ``Currency`` pattern still rejects a malformed code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from nodes.contract.messages import PriceForecast
from nodes.market.sources.prices import ParsedPrices, SourceError


class ContractViolation(SourceError):
    """The prices do not fit the PriceForecast contract (bounds, zone id, currency code, slot count)."""


def to_price_forecast(
    parsed: ParsedPrices,
    issued_at: datetime,
    *,
    source: str | None = None,
    begin: datetime | None = None,
    end: datetime | None = None,
) -> PriceForecast:
    """The PriceForecast of ``parsed`` (slots overlapping [begin, end) when given), validated by the contract."""
    slots = [
        {"start": s.start, "end": s.end, "price_per_mwh": s.price_per_mwh}
        for s in parsed.slots
        if (begin is None or s.end > begin) and (end is None or s.start < end)
    ]
    payload: dict[str, Any] = {
        "zone": parsed.zone,
        "issued_at": issued_at,
        "slots": slots,
        "currency": parsed.currency,
        "source": (source or parsed.source)[:64],
    }
    try:
        return msgspec.convert(payload, PriceForecast)
    except msgspec.ValidationError as exc:
        raise ContractViolation(f"the prices do not fit the PriceForecast contract: {exc}") from None
