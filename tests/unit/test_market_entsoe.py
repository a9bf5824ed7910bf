"""ENTSO-E A44 parser: resolutions, 1-based positions, A03 fill-forward, competing TimeSeries, acknowledgements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from nodes.market.sources import entsoe
from nodes.market.sources.prices import NoData, ParsedPrices, ParseError
from nodes.market.sources.zones import zone

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "market"
Q = timedelta(minutes=15)


def parse(name: str, zone_id: str = "de-lu") -> ParsedPrices:
    return entsoe.parse((FIXTURES / name).read_bytes(), zone(zone_id))


def test_a03_fills_forward_and_the_lowest_classification_sequence_wins() -> None:
    parsed = parse("entsoe_de_lu_2025-10-15_a03_two_auctions.xml")
    assert parsed.currency == "EUR"
    assert parsed.published_at == datetime(2025, 10, 14, 10, 58, 31, tzinfo=UTC)
    assert len(parsed.slots) == 96
    start = datetime(2025, 10, 14, 22, tzinfo=UTC)
    assert [s.start for s in parsed.slots] == [start + i * Q for i in range(96)]
    assert all(s.end - s.start == Q for s in parsed.slots)
    # the runs as written in the document: (first position, last position, price); position 90 holds to 96
    runs = [(1, 1, 60.0), (2, 4, 55.5), (5, 5, 52.0), (6, 12, 52.5), (13, 28, 48.0), (29, 30, 0.0),
            (31, 32, -0.01), (33, 40, -12.5), (41, 44, -500.0), (45, 56, 10.0), (57, 68, 95.0),
            (69, 69, 4000.0), (70, 80, 180.25), (81, 89, 120.0), (90, 96, 75.0)]  # fmt: skip
    expected = [price for first, last, price in runs for _ in range(first, last + 1)]
    assert [s.price_per_mwh for s in parsed.slots] == expected
    assert 999.0 not in expected  # the sequence-2 auction (listed first in the document) lost everywhere


@pytest.mark.parametrize(
    ("name", "count", "start", "end"),
    [
        ("entsoe_de_lu_2026-03-29_dst_92.xml", 92, (2026, 3, 28, 23), (2026, 3, 29, 22)),
        ("entsoe_de_lu_2025-10-26_dst_100.xml", 100, (2025, 10, 25, 22), (2025, 10, 26, 23)),
    ],
)
def test_dst_days_have_92_and_100_quarter_hours(
    name: str, count: int, start: tuple[int, int, int, int], end: tuple[int, int, int, int]
) -> None:
    parsed = parse(name)
    assert len(parsed.slots) == count
    assert (parsed.begin, parsed.end) == (datetime(*start, tzinfo=UTC), datetime(*end, tzinfo=UTC))
    assert all(a.end == b.start for a, b in pairwise(parsed.slots))


def test_extremes_and_first_position_are_where_the_document_puts_them() -> None:
    spring = parse("entsoe_de_lu_2026-03-29_dst_92.xml").slots
    assert spring[0].price_per_mwh == 88.8  # position 1 is the first quarter-hour (1-based)
    assert spring[46].price_per_mwh == -500.0  # position 47
    assert spring[46].start == datetime(2026, 3, 28, 23, tzinfo=UTC) + 46 * Q
    assert spring[-1].price_per_mwh == 4000.0  # position 92
    autumn = parse("entsoe_de_lu_2025-10-26_dst_100.xml").slots
    assert (autumn[0].price_per_mwh, autumn[49].price_per_mwh, autumn[99].price_per_mwh) == (77.7, -123.45, 3999.99)


def test_hourly_two_periods_with_a03_gaps() -> None:
    parsed = parse("entsoe_be_2023-07-02_pt60m_two_days.xml", "be")
    assert len(parsed.slots) == 48
    assert all(s.end - s.start == timedelta(hours=1) for s in parsed.slots)
    day1, day2 = parsed.slots[:24], parsed.slots[24:]
    assert [s.price_per_mwh for s in day1] == [80.0 + p for p in range(1, 25)]
    assert [s.price_per_mwh for s in day2] == [40.0] * 11 + [-500.0, -120.0, -120.0] + [0.0] * 5 + [150.0] * 5
    assert day2[0].start == datetime(2023, 7, 2, 22, tzinfo=UTC)


def test_half_hourly_resolution() -> None:
    parsed = parse("entsoe_de_lu_pt30m.xml")
    assert len(parsed.slots) == 48
    assert parsed.slots[1].start - parsed.slots[0].start == timedelta(minutes=30)
    assert parsed.slots[0].price_per_mwh == 50.5
    assert parsed.end == datetime(2024, 1, 15, 23, tzinfo=UTC)


def test_acknowledgement_is_no_data_with_its_reason() -> None:
    with pytest.raises(NoData, match=r"reason 999: No matching data found for Data item ENERGY_PRICES"):
        parse("entsoe_ack_no_data.xml")


def test_position_zero_is_invalid() -> None:
    with pytest.raises(ParseError, match="1-based"):
        parse("entsoe_invalid_position0.xml", "nl")


def test_document_for_another_zone_is_refused() -> None:
    with pytest.raises(ParseError, match=r"not be \(10YBE"):
        parse("entsoe_de_lu_pt30m.xml", "be")


def _doc(series: str, root: str = "Publication_MarketDocument") -> bytes:
    ns = "urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3"
    return f'<?xml version="1.0"?><{root} xmlns="{ns}"><type>A44</type>{series}</{root}>'.encode()


def _series(resolution: str = "PT15M", points: str = "", currency: str = "EUR", curve: str = "A01") -> str:
    return (
        f"<TimeSeries><in_Domain.mRID>10Y1001A1001A82H</in_Domain.mRID><currency_Unit.name>{currency}"
        f"</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name><curveType>{curve}</curveType>"
        f"<Period><timeInterval><start>2025-10-14T22:00Z</start><end>2025-10-14T23:00Z</end></timeInterval>"
        f"<resolution>{resolution}</resolution>{points}</Period></TimeSeries>"
    )


def _pt(position: int, price: float) -> str:
    return f"<Point><position>{position}</position><price.amount>{price}</price.amount></Point>"


def test_a01_missing_position_is_a_gap_not_a_fill() -> None:
    parsed = entsoe.parse(_doc(_series(points=_pt(1, 10) + _pt(2, 20) + _pt(4, 40))), zone("de-lu"))
    assert [(s.start.minute, s.price_per_mwh) for s in parsed.slots] == [(0, 10.0), (15, 20.0), (45, 40.0)]


def test_currency_comes_from_the_document() -> None:
    parsed = entsoe.parse(_doc(_series(points=_pt(1, 10), currency="PLN", curve="A03")), zone("de-lu"))
    assert parsed.currency == "PLN"
    assert [s.end for s in parsed.slots][-1] == datetime(2025, 10, 14, 23, tzinfo=UTC)  # A03: to the period end


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<nope", "not XML"),
        (b"", "not XML"),
        (_doc("", root="GL_MarketDocument"), "root element is GL_MarketDocument"),
        (_doc(_series(resolution="P1D", points=_pt(1, 1))), "unsupported ENTSO-E resolution"),
        (_doc(_series(points=_pt(5, 1))), r"position 5 outside 1..4"),
        (_doc(_series(points=_pt(1, 1) + _pt(1, 2))), "appears twice"),
        (_doc(_series(points="<Point><position>1</position><price.amount>x</price.amount></Point>")), "not a number"),
        (_doc(""), "no day-ahead TimeSeries"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x/>', "entity"),
    ],
)
def test_invalid_documents_name_the_problem(document: bytes, message: str) -> None:
    with pytest.raises((ParseError, NoData), match=message):
        entsoe.parse(document, zone("de-lu"))


def test_request_uses_eic_utc_period_and_keeps_the_token_out_of_display() -> None:
    req = entsoe.request(zone("se3"), datetime(2025, 1, 15, 23, tzinfo=UTC), datetime(2025, 1, 17, 23, tzinfo=UTC),
                         "s3cr3t-token", "http://127.0.0.1:1/api")  # fmt: skip
    assert req.params["in_Domain"] == req.params["out_Domain"] == "10Y1001A1001A46L"
    assert (req.params["periodStart"], req.params["periodEnd"]) == ("202501152300", "202501172300")
    assert req.params["documentType"] == "A44"
    assert req.params["securityToken"] == "s3cr3t-token"
    assert "s3cr3t-token" not in req.display()
    assert "securityToken=***" in req.display()
