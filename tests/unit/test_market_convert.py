"""ParsedPrices -> contract PriceForecast, in the series' own currency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import PriceForecast
from nodes.contract.topics import PRICES
from nodes.market.sources.convert import (
    ContractViolation,
    to_price_forecast,
)
from nodes.market.sources.prices import ParsedPrices, ParseError, Slot, finish

T0 = datetime(2025, 1, 15, 23, tzinfo=UTC)
H = timedelta(hours=1)


def parsed(currency: str = "EUR", count: int = 3) -> ParsedPrices:
    return finish(
        "de-lu", currency, [Slot(T0 + i * H, T0 + (i + 1) * H, -500.0 + i * 2250.0) for i in range(count)], "entsoe"
    )


def test_eur_prices_become_a_valid_forecast() -> None:
    forecast = to_price_forecast(parsed(), issued_at=T0, source="ENTSO-E A44 day-ahead")
    assert isinstance(forecast, PriceForecast)
    assert forecast.currency == "EUR"
    assert [s.price_per_mwh for s in forecast.slots] == [-500.0, 1750.0, 4000.0]
    assert forecast.slots[0].start == T0
    # it survives the wire: encode with the topic's encoder, decode with its decoder
    assert PRICES.decode(PRICES.encode(forecast)) == forecast


def test_the_window_keeps_overlapping_slots_only() -> None:
    forecast = to_price_forecast(parsed(count=5), issued_at=T0, begin=T0 + H, end=T0 + 3 * H)
    assert [s.start for s in forecast.slots] == [T0 + H, T0 + 2 * H]


def test_other_currencies_are_carried_not_refused() -> None:
    forecast = to_price_forecast(parsed("AUD"), issued_at=T0)
    assert forecast.currency == "AUD"
    assert PRICES.decode(PRICES.encode(forecast)).currency == "AUD"


def test_contract_bounds_still_apply() -> None:
    bad = ParsedPrices("DE_LU", "EUR", parsed().slots, "entsoe")
    with pytest.raises(ContractViolation, match=r"do not fit the PriceForecast contract: .*zone"):
        to_price_forecast(bad, issued_at=T0)


def test_finish_rejects_overlaps_bad_currency_and_empty() -> None:
    with pytest.raises(ParseError, match="overlap"):
        finish("x", "EUR", [Slot(T0, T0 + H, 1.0), Slot(T0 + H / 2, T0 + 2 * H, 1.0)], "s")
    with pytest.raises(ParseError, match="ISO 4217"):
        finish("x", "Euro", [Slot(T0, T0 + H, 1.0)], "s")
    from nodes.market.sources.prices import NoData

    with pytest.raises(NoData):
        finish("x", "EUR", [], "s")
