"""BESS_MARKET_SOURCE and friends: defaults, back-compatibility, and one clear line per wrong combination."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.market.config import MarketConfig
from nodes.market.node import Market
from nodes.runtime.config import ConfigError, load
from nodes.runtime.memory import MemoryBus

CSV = Path(__file__).resolve().parents[1] / "fixtures" / "market" / "README.md"  # any existing file


def config(**env: str) -> MarketConfig:
    return load(MarketConfig, {f"BESS_{k.upper()}": v for k, v in env.items()})


def test_defaults_are_the_offline_synthetic_feed() -> None:
    cfg = config()
    assert (cfg.source, cfg.live) == ("synthetic", False)
    assert cfg.problems() == []
    assert Market(cfg, MemoryBus("market")).source is not None


def test_a_csv_alone_still_selects_the_replay() -> None:
    assert config(market_csv=str(CSV)).source == "csv"
    assert config(market_source="csv", market_csv=str(CSV)).problems() == []
    assert config(market_source="csv").problems() == ["BESS_MARKET_SOURCE=csv needs BESS_MARKET_CSV"]


def test_unknown_source_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="BESS_MARKET_SOURCE"):
        config(market_source="octopus")


def test_entsoe_needs_a_token_and_never_prints_it(tmp_path: Path) -> None:
    (problem,) = config(market_source="entsoe").problems()
    assert "BESS_ENTSOE_TOKEN or BESS_ENTSOE_TOKEN_FILE" in problem
    ok = config(market_source="entsoe", entsoe_token="tok-123")
    assert ok.problems() == []
    assert ok.live
    assert ok.token() == "tok-123"
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    assert config(market_source="entsoe", entsoe_token_file=str(token_file)).token() == "tok-from-file"
    both = config(market_source="entsoe", entsoe_token="a", entsoe_token_file=str(token_file)).problems()
    assert both == ["set BESS_ENTSOE_TOKEN or BESS_ENTSOE_TOKEN_FILE, not both"]
    missing = config(market_source="entsoe", entsoe_token_file=str(tmp_path / "nope")).problems()
    assert missing[0].startswith("BESS_ENTSOE_TOKEN_FILE: cannot read")
    # a problem in another setting does not echo the token
    text = "; ".join(config(market_source="entsoe", entsoe_token="tok-123", market_retry_s="0").problems())
    assert "tok-123" not in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"market_source": "awattar", "market_zone": "fr"}, "awattar has no prices for zone fr (it serves: de-lu, at)"),
        ({"market_source": "energy-charts", "market_zone": "xx"}, "not in the zone table"),
        ({"market_source": "nordpool", "market_zone": "se3", "market_currency": "USD"}, "nordpool offers EUR"),
        ({"market_source": "energy-charts", "market_speed": "10"}, "BESS_MARKET_SPEED applies to the synthetic"),
        ({"market_source": "energy-charts", "market_dayahead_at": "25:00"}, "BESS_MARKET_DAYAHEAD_AT must be HH:MM"),
        ({"market_source": "energy-charts", "market_stale_after_h": "0"}, "BESS_MARKET_STALE_AFTER_H must be > 0"),
        ({"market_source": "energy-charts", "energy_charts_url": "ftp://x"}, "must start with http"),
        ({"market_source": "entsoe", "entsoe_token": "t", "market_currency": "EUR"}, "does not apply to entsoe"),
        ({"market_currency": "eur"}, "BESS_MARKET_CURRENCY='eur' is not an ISO 4217 code: three capital letters"),
        ({"market_currency": "EURO"}, "BESS_MARKET_CURRENCY='EURO' is not an ISO 4217 code"),
        ({"market_source": "csv", "market_csv": str(CSV), "market_currency": "A$"}, "is not an ISO 4217 code"),
        ({"market_source": "nordpool", "market_zone": "se3", "market_currency": "sek"}, "three capital letters"),
        ({"market_source": "entsoe", "entsoe_token": "t", "market_csv": str(CSV)}, "BESS_MARKET_CSV is only read"),
    ],
)  # fmt: skip
def test_wrong_combinations_are_one_clear_line_each(env: dict[str, str], message: str) -> None:
    problems = config(**env).problems()
    assert any(message in p for p in problems), problems


def test_live_settings_are_derived() -> None:
    cfg = config(market_source="energidataservice", market_zone="dk1", market_dayahead_at="13:05",
                 energidataservice_url="http://127.0.0.1:9/")  # fmt: skip
    assert cfg.problems() == []
    assert cfg.currency == "EUR"
    assert cfg.dayahead_at.hour == 13
    assert cfg.base_url() == "http://127.0.0.1:9/"
    # no offline source behind a live one: nothing can be replayed
    assert Market(cfg, MemoryBus("market")).source is None


@pytest.mark.parametrize(
    "env",
    [
        {"market_source": "aemo", "market_zone": "nsw1"},
        {"market_source": "nordpool", "market_zone": "se3", "market_currency": "SEK"},
        {"market_source": "energidataservice", "market_zone": "dk1", "market_currency": "DKK"},
    ],
)
def test_non_eur_sources_are_accepted_now_that_the_contract_carries_any_currency(env: dict[str, str]) -> None:
    assert config(**env).problems() == []


@pytest.mark.parametrize(
    "env",
    [
        {"market_currency": "AUD"},
        {"market_source": "synthetic", "market_currency": "GBP"},
        {"market_source": "csv", "market_csv": str(CSV), "market_currency": "AUD"},
        {"market_csv": str(CSV), "market_currency": "DKK"},
    ],
)
def test_offline_sources_take_the_currency_of_their_prices(env: dict[str, str]) -> None:
    cfg = config(**env)
    assert cfg.problems() == []
    assert cfg.currency == env["market_currency"]


def test_offline_sources_default_to_eur() -> None:
    assert config().currency == "EUR"
    assert config(market_csv=str(CSV)).currency == "EUR"
