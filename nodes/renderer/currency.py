"""How amounts and prices are shown in their currency, and the rule that one battery's numbers share one (pure).

Prices, plans and KPIs carry an ISO 4217 code (:data:`~nodes.contract.messages.Currency`). The dashboard shows
the usual symbol for the currencies it knows (EUR €, GBP £, USD $, AUD A$) and the code itself for any other
(``DKK 1,234.00``), never a wrong symbol. Amounts in two currencies are never added or compared: a battery whose
prices and plan (or two price series) disagree gets :func:`mixed_currencies`' message instead of a number.
"""

from __future__ import annotations

from collections.abc import Iterable

from nodes.contract.messages import Schedule

SYMBOLS: dict[str, str] = {"EUR": "€", "GBP": "£", "USD": "$", "AUD": "A$"}
"""Symbols drawn in place of the code; every other currency is shown by its ISO 4217 code."""


def symbol(code: str) -> str:
    """``€`` for EUR, ``A$`` for AUD, ..., the code followed by a space for a currency without a known symbol."""
    return SYMBOLS.get(code, f"{code} ")


def money(value: float | None, code: str) -> str:
    """An amount with its currency: ``€1,234.50``, ``−A$12.00``, ``DKK 3.10``; ``—`` when unknown."""
    if value is None:
        return "—"
    sign = "" if value >= 0 else "−"
    return f"{sign}{symbol(code)}{abs(value):,.2f}"


def per_mwh(code: str) -> str:
    """The unit of a price in ``code``: ``€/MWh``, ``A$/MWh``, ``DKK/MWh``."""
    return f"{symbol(code).strip()}/MWh"


def mixed_currencies(prices: Iterable[str], schedule: Schedule | None = None) -> str | None:
    """Why one battery's numbers cannot be drawn together, or None when prices and plan share one currency.

    ``prices``: the currencies of the price slots in view (several when the zone's source changed currency).
    """
    found = sorted(set(prices))
    if len(found) > 1:
        return f"prices in {' and '.join(found)} in one view: amounts in different currencies are not added"
    if schedule is not None and found and schedule.currency != found[0]:
        return (
            f"prices are in {found[0]} but the plan is in {schedule.currency}: "
            "amounts in different currencies are not added or compared"
        )
    return None


__all__ = ["SYMBOLS", "mixed_currencies", "money", "per_mwh", "symbol"]
