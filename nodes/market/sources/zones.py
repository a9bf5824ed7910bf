"""The zone table (pure): one zone id -> each provider's name for it, the zone's clock and currency.

Zone ids are the project's (``[a-z0-9_-]``, used in topics: ``market/{zone}/prices``). Per provider:

- ``eic``: the ENTSO-E Energy Identification Code of the bidding zone (``in_Domain``/``out_Domain`` of A44),
  from the ENTSO-E Transparency Platform's area code list (BZN codes);
- ``nordpool``: the Nord Pool data portal ``deliveryArea`` (Germany is ``GER``, Romania ``TEL``);
- ``eds``: the Energi Data Service ``PriceArea`` (``DE`` for DE-LU);
- ``energy_charts``: the Energy-Charts ``bzn`` parameter;
- ``awattar``: the aWATTar API country (``de`` -> api.awattar.de, ``at`` -> api.awattar.at);
- ``aemo``: the AEMO NEM ``REGIONID``.

``tz`` is the zone's local clock; its delivery day follows :attr:`Zone.delivery_tz` (the coupled European auction
runs on CET/CEST days for every zone, the NEM on NEM time, UTC+10 all year).
``currency`` is the zone's local currency (informational: ENTSO-E and Energy-Charts publish EUR for every
European zone; Nord Pool and Energi Data Service answer in the currency asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

#: NEM time: AEST, UTC+10, no daylight saving in any NEM region's market clock
NEM_TIME = timezone(timedelta(hours=10), "NEM")
#: the clock of the European day-ahead auction (SDAC, Nord Pool, EPEX): delivery days and publication run on CET/CEST
PUBLICATION_TZ = ZoneInfo("Europe/Brussels")


@dataclass(frozen=True)
class Zone:
    """One bidding zone / market region and its name at each provider (None: that provider has no prices)."""

    id: str
    name: str
    tz: tzinfo
    currency: str = "EUR"
    eic: str | None = None
    nordpool: str | None = None
    eds: str | None = None
    energy_charts: str | None = None
    awattar: str | None = None
    aemo: str | None = None

    @property
    def delivery_tz(self) -> tzinfo:
        """The clock of the zone's delivery day: CET/CEST for the coupled European day-ahead auction (also for
        zones whose local clock differs, e.g. Finland or Portugal), NEM time for NEM regions."""
        return NEM_TIME if self.aemo is not None else PUBLICATION_TZ


def _eu(
    zone_id: str,
    name: str,
    tz: str,
    eic: str,
    *,
    currency: str = "EUR",
    nordpool: str | None = None,
    eds: str | None = None,
    energy_charts: str | None = None,
    awattar: str | None = None,
) -> Zone:
    return Zone(zone_id, name, ZoneInfo(tz), currency, eic, nordpool, eds, energy_charts, awattar)


def _nem(zone_id: str, name: str) -> Zone:
    return Zone(zone_id, name, NEM_TIME, "AUD", aemo=zone_id.upper())


_TABLE: tuple[Zone, ...] = (
    _eu("de-lu", "Germany-Luxembourg", "Europe/Berlin", "10Y1001A1001A82H",
        nordpool="GER", eds="DE", energy_charts="DE-LU", awattar="de"),
    _eu("at", "Austria", "Europe/Vienna", "10YAT-APG------L", nordpool="AT", energy_charts="AT", awattar="at"),
    _eu("be", "Belgium", "Europe/Brussels", "10YBE----------2", nordpool="BE", energy_charts="BE"),
    _eu("nl", "Netherlands", "Europe/Amsterdam", "10YNL----------L", nordpool="NL", energy_charts="NL"),
    _eu("fr", "France", "Europe/Paris", "10YFR-RTE------C", nordpool="FR", energy_charts="FR"),
    _eu("es", "Spain", "Europe/Madrid", "10YES-REE------0", energy_charts="ES"),
    _eu("pt", "Portugal", "Europe/Lisbon", "10YPT-REN------W", energy_charts="PT"),
    _eu("ch", "Switzerland", "Europe/Zurich", "10YCH-SWISSGRIDZ", currency="CHF", energy_charts="CH"),
    _eu("cz", "Czechia", "Europe/Prague", "10YCZ-CEPS-----N", currency="CZK", energy_charts="CZ"),
    _eu("pl", "Poland", "Europe/Warsaw", "10YPL-AREA-----S", currency="PLN", nordpool="PL", energy_charts="PL"),
    _eu("dk1", "Denmark West (DK1)", "Europe/Copenhagen", "10YDK-1--------W", currency="DKK",
        nordpool="DK1", eds="DK1", energy_charts="DK1"),
    _eu("dk2", "Denmark East (DK2)", "Europe/Copenhagen", "10YDK-2--------M", currency="DKK",
        nordpool="DK2", eds="DK2", energy_charts="DK2"),
    _eu("se1", "Sweden SE1 (Luleå)", "Europe/Stockholm", "10Y1001A1001A44P", currency="SEK",
        nordpool="SE1", energy_charts="SE1"),
    _eu("se2", "Sweden SE2 (Sundsvall)", "Europe/Stockholm", "10Y1001A1001A45N", currency="SEK",
        nordpool="SE2", energy_charts="SE2"),
    _eu("se3", "Sweden SE3 (Stockholm)", "Europe/Stockholm", "10Y1001A1001A46L", currency="SEK",
        nordpool="SE3", eds="SE3", energy_charts="SE3"),
    _eu("se4", "Sweden SE4 (Malmö)", "Europe/Stockholm", "10Y1001A1001A47J", currency="SEK",
        nordpool="SE4", eds="SE4", energy_charts="SE4"),
    _eu("no1", "Norway NO1 (Oslo)", "Europe/Oslo", "10YNO-1--------2", currency="NOK",
        nordpool="NO1", energy_charts="NO1"),
    _eu("no2", "Norway NO2 (Kristiansand)", "Europe/Oslo", "10YNO-2--------T", currency="NOK",
        nordpool="NO2", eds="NO2", energy_charts="NO2"),
    _eu("no3", "Norway NO3 (Trondheim)", "Europe/Oslo", "10YNO-3--------J", currency="NOK",
        nordpool="NO3", energy_charts="NO3"),
    _eu("no4", "Norway NO4 (Tromsø)", "Europe/Oslo", "10YNO-4--------9", currency="NOK",
        nordpool="NO4", energy_charts="NO4"),
    _eu("no5", "Norway NO5 (Bergen)", "Europe/Oslo", "10Y1001A1001A48H", currency="NOK",
        nordpool="NO5", energy_charts="NO5"),
    _eu("fi", "Finland", "Europe/Helsinki", "10YFI-1--------U", nordpool="FI", energy_charts="FI"),
    _eu("ee", "Estonia", "Europe/Tallinn", "10Y1001A1001A39I", nordpool="EE", energy_charts="EE"),
    _eu("lv", "Latvia", "Europe/Riga", "10YLV-1001A00074", nordpool="LV", energy_charts="LV"),
    _eu("lt", "Lithuania", "Europe/Vilnius", "10YLT-1001A0008Q", nordpool="LT", energy_charts="LT"),
    _eu("it-north", "Italy North", "Europe/Rome", "10Y1001A1001A73I", energy_charts="IT-North"),
    _eu("it-centre-north", "Italy Centre-North", "Europe/Rome", "10Y1001A1001A70O",
        energy_charts="IT-Centre-North"),
    _eu("it-centre-south", "Italy Centre-South", "Europe/Rome", "10Y1001A1001A71M",
        energy_charts="IT-Centre-South"),
    _eu("it-south", "Italy South", "Europe/Rome", "10Y1001A1001A788", energy_charts="IT-South"),
    _eu("it-calabria", "Italy Calabria", "Europe/Rome", "10Y1001C--00096J", energy_charts="IT-Calabria"),
    _eu("it-sicily", "Italy Sicily", "Europe/Rome", "10Y1001A1001A75E", energy_charts="IT-Sicily"),
    _eu("it-sardinia", "Italy Sardinia", "Europe/Rome", "10Y1001A1001A74G", energy_charts="IT-Sardinia"),
    _nem("nsw1", "NEM New South Wales"),
    _nem("qld1", "NEM Queensland"),
    _nem("vic1", "NEM Victoria"),
    _nem("sa1", "NEM South Australia"),
    _nem("tas1", "NEM Tasmania"),
)  # fmt: skip

ZONES: dict[str, Zone] = {zone.id: zone for zone in _TABLE}


class UnknownZone(ValueError):
    """A zone id that is not in the table."""


def zone(zone_id: str) -> Zone:
    """The zone with this id; :class:`UnknownZone` names the known ids otherwise."""
    try:
        return ZONES[zone_id]
    except KeyError:
        raise UnknownZone(f"unknown zone {zone_id!r}; known zones: {', '.join(ZONES)}") from None
