"""The zone table: every required zone, the EIC codes, and each provider's name."""

from __future__ import annotations

import re

import pytest

from nodes.contract.topics import id_problems
from nodes.market.sources import SOURCES
from nodes.market.sources.zones import NEM_TIME, ZONES, UnknownZone, zone

REQUIRED = ["de-lu", "at", "be", "nl", "fr", "es", "dk1", "dk2", "se1", "se2", "se3", "se4",
            "no1", "no2", "no3", "no4", "no5", "fi", "pl", "it-north", "it-centre-north", "it-centre-south",
            "it-south", "it-sicily", "it-sardinia", "nsw1", "qld1", "vic1", "sa1", "tas1"]  # fmt: skip


@pytest.mark.parametrize("zone_id", REQUIRED)
def test_required_zone_is_in_the_table_with_a_valid_id(zone_id: str) -> None:
    assert zone_id in ZONES
    assert id_problems(zone_id) == []


@pytest.mark.parametrize(
    ("zone_id", "eic"),
    [
        ("de-lu", "10Y1001A1001A82H"),
        ("at", "10YAT-APG------L"),
        ("be", "10YBE----------2"),
        ("nl", "10YNL----------L"),
        ("fr", "10YFR-RTE------C"),
        ("es", "10YES-REE------0"),
        ("dk1", "10YDK-1--------W"),
        ("dk2", "10YDK-2--------M"),
        ("se3", "10Y1001A1001A46L"),
        ("no5", "10Y1001A1001A48H"),
        ("fi", "10YFI-1--------U"),
        ("pl", "10YPL-AREA-----S"),
        ("it-north", "10Y1001A1001A73I"),
    ],
)
def test_eic_codes(zone_id: str, eic: str) -> None:
    assert zone(zone_id).eic == eic


def test_every_european_eic_is_16_characters_and_unique() -> None:
    codes = [z.eic for z in ZONES.values() if z.eic]
    assert all(re.fullmatch(r"[0-9A-Z-]{16}", code) for code in codes)
    assert len(codes) == len(set(codes))


def test_provider_names() -> None:
    assert zone("de-lu").nordpool == "GER"
    assert zone("de-lu").eds == "DE"
    assert zone("de-lu").energy_charts == "DE-LU"
    assert zone("it-north").energy_charts == "IT-North"
    assert (zone("de-lu").awattar, zone("at").awattar) == ("de", "at")
    assert zone("dk1").eds == "DK1"
    assert zone("nsw1").aemo == "NSW1"
    assert zone("nsw1").tz is NEM_TIME
    assert zone("nsw1").currency == "AUD"
    assert zone("nsw1").eic is None


def test_each_source_serves_its_zones() -> None:
    served = {name: {z.id for z in ZONES.values() if spec.serves(z)} for name, spec in SOURCES.items()}
    assert served["aemo"] == {"nsw1", "qld1", "vic1", "sa1", "tas1"}
    assert served["awattar"] == {"de-lu", "at"}
    assert served["energidataservice"] == {"dk1", "dk2", "de-lu", "no2", "se3", "se4"}
    assert {"es", "it-north", "se1"} <= served["entsoe"]
    assert "es" not in served["nordpool"]


def test_unknown_zone_names_the_known_ones() -> None:
    with pytest.raises(UnknownZone, match="known zones: de-lu"):
        zone("xx")
