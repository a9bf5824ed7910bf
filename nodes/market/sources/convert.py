"""From a parser's :class:`ParsedPrices` to the contract's PriceForecast (pure), and which currencies it carries.

The contract is read, not assumed: which currencies PriceForecast accepts comes from its ``currency`` field
(today ``Literal["EUR"]``), and the slot's price field name from PriceSlot (today ``price_eur_per_mwh``).
Issue 11 part B (currency-aware contract: ``price_per_mwh`` plus any ISO 4217 ``currency``) therefore needs no
edit here beyond dropping the old field name from :data:`_PRICE_FIELDS`. Until then a non-EUR series is refused
with :class:`UnsupportedCurrency` instead of being published as if it were EUR.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from nodes.contract.messages import PriceForecast, PriceSlot
from nodes.market.sources.prices import ParsedPrices, SourceError

_PRICE_FIELDS = ("price_per_mwh", "price_eur_per_mwh")  # new name first; part B drops the second
PRICE_FIELD = next(name for name in _PRICE_FIELDS if name in PriceSlot.__struct_fields__)


class UnsupportedCurrency(SourceError):
    """The prices are in a currency the PriceForecast contract cannot carry (yet)."""


class ContractViolation(SourceError):
    """The prices do not fit the PriceForecast contract (bounds, zone id, slot count)."""


def _contract_currencies() -> frozenset[str] | None:
    """The currencies PriceForecast accepts: a fixed set for a Literal field, None for "any ISO 4217 code"."""
    info = msgspec.inspect.type_info(PriceForecast)
    assert isinstance(info, msgspec.inspect.StructType)
    field = next(f for f in info.fields if f.name == "currency")
    if isinstance(field.type, msgspec.inspect.LiteralType):
        return frozenset(str(v) for v in field.type.values)
    return None


CONTRACT_CURRENCIES = _contract_currencies()


def currency_problem(currency: str) -> str | None:
    """Why prices in ``currency`` cannot be published yet, or None when the contract carries them."""
    if CONTRACT_CURRENCIES is None or currency.upper() in CONTRACT_CURRENCIES:
        return None
    carried = ", ".join(sorted(CONTRACT_CURRENCIES))
    return (
        f"prices are in {currency.upper()} but the PriceForecast contract carries only {carried} until the "
        "currency-aware contract (issue 11 part B) lands"
    )


def to_price_forecast(
    parsed: ParsedPrices,
    issued_at: datetime,
    *,
    source: str | None = None,
    begin: datetime | None = None,
    end: datetime | None = None,
) -> PriceForecast:
    """The PriceForecast of ``parsed`` (slots overlapping [begin, end) when given), validated by the contract."""
    problem = currency_problem(parsed.currency)
    if problem:
        raise UnsupportedCurrency(problem)
    slots = [
        {"start": s.start, "end": s.end, PRICE_FIELD: s.price_per_mwh}
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
