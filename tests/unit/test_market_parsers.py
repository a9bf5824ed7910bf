"""Energy-Charts, aWATTar, Nord Pool, Energi Data Service and AEMO parsers on documents in their formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from nodes.market.sources import aemo, awattar, energidataservice, energy_charts, nordpool, parse_document
from nodes.market.sources.prices import NoData, NotYetPublished, ParsedPrices, ParseError
from nodes.market.sources.zones import zone

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "market"
Q = timedelta(minutes=15)
H = timedelta(hours=1)


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- Energy-Charts ------------------------------------------------------------------------------------------


def test_energy_charts_null_is_a_missing_slot_and_the_dst_day_has_100_quarters() -> None:
    parsed = energy_charts.parse(read("energy_charts_de_lu_2025-10-26_dst_100.json"), zone("de-lu"))
    first = datetime(2025, 10, 25, 22, tzinfo=UTC)
    assert parsed.currency == "EUR"
    assert len(parsed.slots) == 98  # 100 quarter-hours, two of them null
    starts = {s.start for s in parsed.slots}
    assert first + 10 * Q not in starts
    assert first + 11 * Q not in starts
    assert first + 12 * Q in starts
    assert all(s.end - s.start == Q for s in parsed.slots)
    by_start = {s.start: s.price_per_mwh for s in parsed.slots}
    assert by_start[first + 50 * Q] == -500.0
    assert by_start[first + 99 * Q] == 4000.0
    assert parsed.end == datetime(2025, 10, 26, 23, tzinfo=UTC)


def test_energy_charts_hourly_23_hour_day() -> None:
    parsed = energy_charts.parse(read("energy_charts_de_lu_2023-03-26_dst_23h.json"), zone("de-lu"))
    assert len(parsed.slots) == 23
    assert all(s.end - s.start == H for s in parsed.slots)
    assert parsed.slots[0].price_per_mwh == 100.0
    assert parsed.end == datetime(2023, 3, 26, 22, tzinfo=UTC)


def test_energy_charts_switch_from_hours_to_quarters_keeps_each_period_length() -> None:
    t0 = int(datetime(2025, 9, 30, 21, tzinfo=UTC).timestamp())
    doc = {"unix_seconds": [t0, t0 + 3600, t0 + 4500], "price": [1.0, 2.0, 3.0], "unit": "EUR / MWh"}
    parsed = energy_charts.parse(json.dumps(doc).encode(), zone("de-lu"))
    assert [s.end - s.start for s in parsed.slots] == [H, Q, Q]


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        ({"unix_seconds": [1, 2], "price": [1.0]}, ParseError, "2 entries but price has 1"),
        ({"unix_seconds": [0], "price": [1.0], "unit": "EUR / kWh"}, ParseError, "unexpected Energy-Charts unit"),
        ({"unix_seconds": [0, 900], "price": [None, None]}, NoData, "every price is null"),
        ({"detail": "No data for given parameters"}, NoData, "No data for given parameters"),
        ({"unix_seconds": [900, 0], "price": [1.0, 2.0]}, ParseError, "not after the previous entry"),
        ({"unix_seconds": [0], "price": ["x"]}, ParseError, "not a number"),
    ],
)
def test_energy_charts_bad_answers(doc: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        energy_charts.parse(json.dumps(doc).encode(), zone("de-lu"))


def test_energy_charts_request_names_the_bzn_and_cet_days() -> None:
    req = energy_charts.request(
        zone("it-north"), datetime(2025, 1, 15, 23, tzinfo=UTC), datetime(2025, 1, 17, 23, tzinfo=UTC)
    )
    assert req.url.endswith("/price")
    assert dict(req.params) == {"bzn": "IT-North", "start": "2025-01-16", "end": "2025-01-17"}


# -- aWATTar ------------------------------------------------------------------------------------------------


def test_awattar_epoch_milliseconds_and_negative_prices() -> None:
    parsed = awattar.parse(read("awattar_de_lu_2023-07-02.json"), zone("de-lu"))
    assert len(parsed.slots) == 24
    assert parsed.begin == datetime(2023, 7, 1, 22, tzinfo=UTC)
    assert parsed.slots[14].start == datetime(2023, 7, 2, 12, tzinfo=UTC)
    assert parsed.slots[14].price_per_mwh == -500.0
    assert parsed.currency == "EUR"


def test_awattar_wrong_unit_and_empty() -> None:
    entry = {"start_timestamp": 0, "end_timestamp": 3_600_000, "marketprice": 1.0, "unit": "Eur/kWh"}
    with pytest.raises(ParseError, match="expected Eur/MWh"):
        awattar.parse(json.dumps({"object": "list", "data": [entry]}).encode(), zone("at"))
    with pytest.raises(NoData):
        awattar.parse(b'{"object": "list", "data": []}', zone("at"))


def test_awattar_request_in_milliseconds_on_the_country_host() -> None:
    req = awattar.request(zone("at"), datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    assert req.url == "https://api.awattar.at/v1/marketdata"
    assert req.params == {"start": "1735689600000", "end": "1735776000000"}
    with pytest.raises(ValueError, match="only de-lu and at"):
        awattar.request(zone("fr"), datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))


# -- Nord Pool ----------------------------------------------------------------------------------------------


def test_nordpool_area_currency_and_100_quarters() -> None:
    parsed = nordpool.parse(read("nordpool_se3_2025-10-26_sek_dst_100.json"), zone("se3"))
    assert isinstance(parsed, ParsedPrices)
    assert parsed.currency == "SEK"
    assert len(parsed.slots) == 100
    assert all(a.end == b.start for a, b in pairwise(parsed.slots))
    assert parsed.slots[52].price_per_mwh == -5000.0
    assert parsed.published_at == datetime(2025, 10, 25, 11, 1, 27, 441771, tzinfo=UTC)
    se4 = nordpool.parse(read("nordpool_se3_2025-10-26_sek_dst_100.json"), zone("se4"))
    assert isinstance(se4, ParsedPrices)
    assert se4.slots[0].price_per_mwh == parsed.slots[0].price_per_mwh + 10.0


def test_nordpool_empty_answer_is_not_yet_published_not_an_error() -> None:
    assert isinstance(nordpool.parse(read("nordpool_not_yet_published.json"), zone("dk1")), NotYetPublished)
    assert isinstance(nordpool.parse(b'{"multiAreaEntries": []}', zone("dk1")), NotYetPublished)


def test_nordpool_answer_for_other_areas_is_refused() -> None:
    with pytest.raises(ParseError, match="not GER"):
        nordpool.parse(read("nordpool_dk1_2024-11-05_eur.json"), zone("de-lu"))


def test_nordpool_request() -> None:
    from datetime import date

    req = nordpool.request(zone("de-lu"), date(2025, 10, 2), "EUR")
    assert req.params == {"date": "2025-10-02", "market": "DayAhead", "deliveryArea": "GER", "currency": "EUR"}


# -- Energi Data Service ------------------------------------------------------------------------------------


def test_eds_newest_first_zone_less_utc_and_null_gap() -> None:
    parsed = energidataservice.parse(read("eds_dayaheadprices_2025-10-01.json"), zone("dk1"))
    first = datetime(2025, 9, 30, 22, tzinfo=UTC)  # TimeUTC 2025-09-30T22:00:00 = Danish midnight
    assert [s.start for s in parsed.slots] == [first + i * Q for i in (0, 1, 2, 3, 4, 6, 7)]  # 5 is null
    assert [s.price_per_mwh for s in parsed.slots][:2] == [-2.5, 8.5]
    assert all(s.end - s.start == Q for s in parsed.slots)


def test_eds_dkk_column_and_dk2() -> None:
    parsed = energidataservice.parse(read("eds_dayaheadprices_2025-10-01.json"), zone("dk2"), "DKK")
    assert parsed.currency == "DKK"
    assert len(parsed.slots) == 8
    assert parsed.slots[0].price_per_mwh == round(0.5 * 7.4638, 6)


def test_eds_hourly_elspotprices() -> None:
    parsed = energidataservice.parse(read("eds_elspotprices_2025-09-30.json"), zone("dk1"))
    assert [s.price_per_mwh for s in parsed.slots] == [110.2, 98.75, 92.54, 88.01]
    assert parsed.slots[0].start == datetime(2025, 9, 30, 18, tzinfo=UTC)
    assert parsed.end == datetime(2025, 9, 30, 22, tzinfo=UTC)


def test_eds_errors() -> None:
    with pytest.raises(ParseError, match=r"no SE3 records .*DK1, DK2"):
        energidataservice.parse(read("eds_dayaheadprices_2025-10-01.json"), zone("se3"))
    with pytest.raises(NoData):
        energidataservice.parse(b'{"dataset": "DayAheadPrices", "records": []}', zone("dk1"))
    with pytest.raises(ParseError, match="EUR and DKK, not SEK"):
        energidataservice.parse(b"{}", zone("dk1"), "SEK")
    rec = {"TimeUTC": "2025-10-01T00:00:00", "PriceArea": "DK1", "DayAheadPriceEUR": 1.0}
    doc = {"dataset": "DayAheadPrices", "records": [rec, {**rec, "DayAheadPriceEUR": 2.0}]}
    with pytest.raises(ParseError, match="two different DK1 prices"):
        energidataservice.parse(json.dumps(doc).encode(), zone("dk1"))


def test_eds_dataset_switch_date_and_request_in_danish_time() -> None:
    from datetime import date

    assert energidataservice.dataset_for(date(2025, 9, 30)) == "Elspotprices"
    assert energidataservice.dataset_for(date(2025, 10, 1)) == "DayAheadPrices"
    begin, end = datetime(2025, 10, 1, 22, tzinfo=UTC), datetime(2025, 10, 3, 22, tzinfo=UTC)
    req = energidataservice.request(zone("dk1"), begin, end)
    assert req.url.endswith("/dataset/DayAheadPrices")
    assert req.params["filter"] == '{"PriceArea":["DK1"]}'
    # the API reads start/end as Danish local time (CEST in October); end excluded
    assert (req.params["start"], req.params["end"]) == ("2025-10-02T00:00", "2025-10-04T00:00")
    assert int(req.params["limit"]) >= 192  # two quarter-hourly days, not the API's default 100
    hourly = energidataservice.request(
        zone("dk1"), datetime(2025, 9, 28, 22, tzinfo=UTC), datetime(2025, 9, 29, 22, tzinfo=UTC)
    )
    assert hourly.url.endswith("/dataset/Elspotprices")


def test_eds_cut_answer_is_refused() -> None:
    doc = json.loads(read("eds_dayaheadprices_2025-10-01.json"))
    doc["total"] = 192
    with pytest.raises(ParseError, match="cut: 16 of 192 records"):
        energidataservice.parse(json.dumps(doc).encode(), zone("dk1"))


# -- AEMO ---------------------------------------------------------------------------------------------------


def test_aemo_report_nem_time_interval_end_and_forecast_after_dispatch() -> None:
    parsed = aemo.parse(read("aemo_report_5min_2025-01-15.json"), zone("nsw1"))
    assert parsed.currency == "AUD"
    # SETTLEMENTDATE 2025-01-15T10:05:00 NEM time (UTC+10, no DST although Sydney is on UTC+11) ends 00:00-00:05Z
    first = parsed.slots[0]
    assert (first.start, first.end) == (
        datetime(2025, 1, 15, 0, 0, tzinfo=UTC),
        datetime(2025, 1, 15, 0, 5, tzinfo=UTC),
    )
    dispatch = parsed.slots[:16]
    assert all(s.end - s.start == timedelta(minutes=5) for s in dispatch)
    assert dispatch[3].price_per_mwh == -1000.0
    assert dispatch[9].price_per_mwh == 17500.0
    # the 30-minute forecast ending 11:30 NEM overlaps the dispatch intervals up to 11:20: cut to 11:20..11:30
    cut = parsed.slots[16]
    assert (cut.start, cut.end, cut.price_per_mwh) == (
        datetime(2025, 1, 15, 1, 20, tzinfo=UTC), datetime(2025, 1, 15, 1, 30, tzinfo=UTC), 140.0,
    )  # fmt: skip
    assert [(s.end - s.start, s.price_per_mwh) for s in parsed.slots[17:]] == [
        (timedelta(minutes=30), 155.5), (timedelta(minutes=30), -20.0), (timedelta(minutes=30), 99.99),
    ]  # fmt: skip
    assert all(a.end == b.start for a, b in pairwise(parsed.slots))


def test_aemo_mms_dispatch_skips_intervention_and_other_regions() -> None:
    parsed = aemo.parse(read("aemo_dispatchis_2025-01-15.csv"), zone("nsw1"))
    assert [s.price_per_mwh for s in parsed.slots] == [95.1, -45.5, 17500.0]
    assert parsed.slots[0].start == datetime(2025, 1, 15, 0, 0, tzinfo=UTC)
    assert parsed.published_at == datetime(2025, 1, 15, 0, 10, 14, tzinfo=UTC)
    vic = aemo.parse(read("aemo_dispatchis_2025-01-15.csv"), zone("vic1"))
    assert [s.price_per_mwh for s in vic.slots] == [70.2, -60.0, 300.0]


def test_aemo_mms_predispatch_periods_end_at_datetime() -> None:
    parsed = aemo.parse(read("aemo_predispatchis_2025-01-15.csv"), zone("nsw1"))
    assert next((s.start, s.price_per_mwh) for s in parsed.slots) == (datetime(2025, 1, 15, 0, 0, tzinfo=UTC), 101.0)
    assert all(s.end - s.start == timedelta(minutes=30) for s in parsed.slots)
    assert parsed.end == datetime(2025, 1, 15, 2, 0, tzinfo=UTC)


def test_aemo_errors() -> None:
    with pytest.raises(ParseError, match=r"no TAS1 rows"):
        aemo.parse(read("aemo_report_5min_2025-01-15.json"), zone("tas1"))
    with pytest.raises(ParseError, match="no I header rows"):
        aemo.parse(b"hello,world\n", zone("nsw1"))
    with pytest.raises(NoData):
        aemo.parse(read("aemo_dispatchis_2025-01-15.csv"), zone("tas1"))
    with pytest.raises(ParseError, match="empty"):
        aemo.parse(b"  ", zone("nsw1"))


# -- the common entry point ---------------------------------------------------------------------------------


def test_parse_document_checks_zone_and_currency() -> None:
    with pytest.raises(ParseError, match="nordpool has no prices for zone es"):
        parse_document("nordpool", b"", zone("es"))
    with pytest.raises(ParseError, match="publishes EUR, DKK"):
        parse_document("energidataservice", b"{}", zone("dk1"), "NOK")
    with pytest.raises(ValueError, match="unknown price source"):
        parse_document("octopus", b"", zone("dk1"))
