"""The price feed's settings (``BESS_MARKET_*``, ``BESS_ENTSOE_*`` and one base URL per provider).

``BESS_MARKET_SOURCE`` picks where prices come from: ``synthetic`` (the default; ``csv`` when only
``BESS_MARKET_CSV`` is set, as before) | ``csv`` | ``entsoe`` | ``energy-charts`` | ``awattar`` | ``nordpool`` |
``energidataservice`` | ``aemo``. The base URLs exist so a test (or a proxy) can stand in for the provider.
Invalid combinations are reported at start-up (exit 2, one line); the token is never part of a message.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Literal

from nodes.contract.messages import CURRENCY_RE, DEFAULT_CURRENCY
from nodes.contract.topics import id_problems
from nodes.market.sources import SOURCES, awattar, source
from nodes.market.sources import aemo as aemo_source
from nodes.market.sources import energidataservice as eds_source
from nodes.market.sources import energy_charts as energy_charts_source
from nodes.market.sources import entsoe as entsoe_source
from nodes.market.sources import nordpool as nordpool_source
from nodes.market.sources.zones import ZONES
from nodes.runtime.config import MqttSettings

SourceName = Literal["synthetic", "csv", "entsoe", "energy-charts", "awattar", "nordpool", "energidataservice", "aemo"]
OFFLINE_SOURCES = ("synthetic", "csv")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class MarketConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_MARKET_*`` settings."""

    market_zone: str = "de-lu"
    #: unset: ``csv`` when BESS_MARKET_CSV is set, else ``synthetic``
    market_source: SourceName | None = None
    market_csv: str | None = None
    market_step_s: int = 3600
    market_speed: float = 1.0
    #: the currency to ask for where the provider offers several (nordpool, energidataservice); for csv the
    #: file's currency, for synthetic a label (ISO 4217, three capital letters; unset: the source's default)
    market_currency: str | None = None
    #: degraded when the known prices do not cover the next this many hours
    market_stale_after_h: float = 6.0
    #: how often to ask again while tomorrow is missing after publication time, or after a failed request
    market_retry_s: float = 600.0
    #: when the day-ahead result is expected (CET/CEST, HH:MM): the first request for tomorrow
    market_dayahead_at: str = "12:45"
    #: seconds one HTTP request may take
    market_timeout_s: float = 30.0
    entsoe_token: str | None = None
    entsoe_token_file: str | None = None
    entsoe_url: str = entsoe_source.DEFAULT_URL
    energy_charts_url: str = energy_charts_source.DEFAULT_URL
    #: unset: api.awattar.de for de-lu, api.awattar.at for at
    awattar_url: str | None = None
    nordpool_url: str = nordpool_source.DEFAULT_URL
    energidataservice_url: str = eds_source.DEFAULT_URL
    aemo_url: str = aemo_source.DEFAULT_URL

    @property
    def source(self) -> str:
        """The price source in effect."""
        if self.market_source is not None:
            return self.market_source
        return "csv" if self.market_csv else "synthetic"

    @property
    def live(self) -> bool:
        """Whether prices come from a provider over the network."""
        return self.source not in OFFLINE_SOURCES

    @property
    def currency(self) -> str:
        """The currency of the published prices: asked for, the file's, or the source's default when unset."""
        if self.market_currency:
            return self.market_currency
        spec = SOURCES.get(self.source)
        return spec.currencies[0] if spec and spec.currencies else DEFAULT_CURRENCY

    @property
    def dayahead_at(self) -> time:
        """``market_dayahead_at`` as a time of day (CET/CEST)."""
        match = _HHMM.match(self.market_dayahead_at)
        if not match:
            raise ValueError("BESS_MARKET_DAYAHEAD_AT must be HH:MM")
        return time(int(match.group(1)), int(match.group(2)))

    @property
    def stale_after(self) -> timedelta:
        """``market_stale_after_h`` as a duration."""
        return timedelta(hours=self.market_stale_after_h)

    def token(self) -> str:
        """The ENTSO-E security token (from the variable or the file); '' when neither is set."""
        if self.entsoe_token:
            return self.entsoe_token.strip()
        if self.entsoe_token_file:
            return Path(self.entsoe_token_file).read_text(encoding="utf-8").strip()
        return ""

    def base_url(self) -> str | None:
        """The configured base URL of the live source."""
        return {
            "entsoe": self.entsoe_url,
            "energy-charts": self.energy_charts_url,
            "awattar": self.awattar_url,
            "nordpool": self.nordpool_url,
            "energidataservice": self.energidataservice_url,
            "aemo": self.aemo_url,
        }.get(self.source)

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.market_zone, "BESS_MARKET_ZONE")
        if self.market_csv and not Path(self.market_csv).is_file():
            found.append(f"BESS_MARKET_CSV: no such file {self.market_csv}")
        if self.market_step_s not in (900, 1800, 3600):
            found.append("BESS_MARKET_STEP_S must be 900, 1800 or 3600")
        if self.market_speed <= 0:
            found.append("BESS_MARKET_SPEED must be > 0")
        if self.market_source == "csv" and not self.market_csv:
            found.append("BESS_MARKET_SOURCE=csv needs BESS_MARKET_CSV")
        if self.market_csv and self.market_source not in (None, "csv"):
            found.append(f"BESS_MARKET_CSV is only read with BESS_MARKET_SOURCE=csv (not {self.market_source})")
        if self.market_currency is not None and not CURRENCY_RE.fullmatch(self.market_currency):
            found.append(
                f"BESS_MARKET_CURRENCY={self.market_currency!r} is not an ISO 4217 code: three capital letters, "
                "e.g. EUR, AUD, GBP"
            )
        if self.live:
            found.extend(self._live_problems())
        return found

    def _live_problems(self) -> list[str]:
        name = self.source
        spec = source(name)
        found: list[str] = []
        zone = ZONES.get(self.market_zone)
        if zone is None:
            found.append(f"BESS_MARKET_ZONE {self.market_zone!r} is not in the zone table ({', '.join(ZONES)})")
        elif not spec.serves(zone):
            served = ", ".join(z.id for z in ZONES.values() if spec.serves(z))
            found.append(f"BESS_MARKET_SOURCE={name} has no prices for zone {zone.id} (it serves: {served})")
        if self.market_speed != 1.0:
            found.append("BESS_MARKET_SPEED applies to the synthetic and csv sources only (a market runs in real time)")
        if self.market_currency and not spec.currencies:
            found.append(f"BESS_MARKET_CURRENCY does not apply to {name} (it answers in the zone's own currency)")
        elif spec.currencies and self.currency not in spec.currencies and CURRENCY_RE.fullmatch(self.currency):
            found.append(f"BESS_MARKET_CURRENCY={self.currency}: {name} offers {', '.join(spec.currencies)}")
        if name == "entsoe":
            found.extend(self._token_problems())
        url = self.base_url() or (awattar.default_url(zone) if zone is not None and zone.awattar else "")
        if url and not url.startswith(("http://", "https://")):
            found.append(f"the {name} base URL must start with http:// or https://")
        if self.market_stale_after_h <= 0:
            found.append("BESS_MARKET_STALE_AFTER_H must be > 0")
        if self.market_retry_s < 1:
            found.append("BESS_MARKET_RETRY_S must be >= 1")
        if self.market_timeout_s <= 0:
            found.append("BESS_MARKET_TIMEOUT_S must be > 0")
        if not _HHMM.match(self.market_dayahead_at):
            found.append("BESS_MARKET_DAYAHEAD_AT must be HH:MM (CET/CEST), e.g. 12:45")
        return found

    def _token_problems(self) -> list[str]:
        if self.entsoe_token and self.entsoe_token_file:
            return ["set BESS_ENTSOE_TOKEN or BESS_ENTSOE_TOKEN_FILE, not both"]
        if self.entsoe_token_file:
            try:
                token = Path(self.entsoe_token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                return [f"BESS_ENTSOE_TOKEN_FILE: cannot read {self.entsoe_token_file} ({exc.strerror})"]
            return [] if token else [f"BESS_ENTSOE_TOKEN_FILE: {self.entsoe_token_file} is empty"]
        if not (self.entsoe_token or "").strip():
            return [
                "BESS_MARKET_SOURCE=entsoe needs a Transparency Platform security token: "
                "BESS_ENTSOE_TOKEN or BESS_ENTSOE_TOKEN_FILE"
            ]
        return []
