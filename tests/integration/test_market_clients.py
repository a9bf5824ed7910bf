"""The price clients against a local recorded-answer server: answers, errors, rate limits, timeouts, "not yet".

No test here reaches the internet: every client is pointed at tests.support.market_server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from nodes.market.live import make_client
from nodes.market.sources.clients import PriceClient
from nodes.market.sources.http import Fetcher, RetryPolicy, SourceRefused, SourceUnavailable
from nodes.market.sources.prices import NoData, NotYetPublished, ParsedPrices
from nodes.market.sources.zones import zone
from tests.support.market_server import Answer, RecordedAnswers, Seen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "market"
TOKEN = "0d5e1c2a-token-never-in-logs"
BEGIN = datetime(2025, 10, 14, 22, tzinfo=UTC)
END = BEGIN + timedelta(days=2)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def server() -> Iterator[RecordedAnswers]:
    with RecordedAnswers() as running:
        yield running


class Naps:
    """A sleep that records what it was asked to wait, and does not wait."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.fixture
def naps() -> Naps:
    return Naps()


@pytest.fixture
async def fetcher(naps: Naps) -> AsyncIterator[Fetcher]:
    async with aiohttp.ClientSession() as session:
        yield Fetcher(session, RetryPolicy(attempts=3, base_delay_s=1.0, timeout_s=0.5), sleep=naps, rng=lambda: 0.5)


def entsoe(fetcher: Fetcher, server: RecordedAnswers) -> PriceClient:
    return make_client("entsoe", fetcher, zone("de-lu"), token=TOKEN, base_url=server.url("/api"))


async def test_entsoe_answer_and_the_request_it_made(fetcher: Fetcher, server: RecordedAnswers) -> None:
    server.answer("GET", "/api", Answer(200, fixture("entsoe_de_lu_2025-10-15_a03_two_auctions.xml")))
    result = await make_client("entsoe", fetcher, zone("de-lu"), token=TOKEN, base_url=server.url("/api")).fetch(
        BEGIN, END
    )
    assert isinstance(result, ParsedPrices)
    assert len(result.slots) == 96
    (seen,) = server.seen("/api")
    assert seen.query == {
        "documentType": "A44", "in_Domain": "10Y1001A1001A82H", "out_Domain": "10Y1001A1001A82H",
        "periodStart": "202510142200", "periodEnd": "202510162200", "securityToken": TOKEN,
    }  # fmt: skip


async def test_entsoe_401_is_refused_without_printing_the_token(
    fetcher: Fetcher, server: RecordedAnswers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answer("GET", "/api", Answer(401, b"<html><body>Unauthorized</body></html>"))
    client = make_client("entsoe", fetcher, zone("de-lu"), token=TOKEN, base_url=server.url("/api"))
    with pytest.raises(SourceRefused, match="refused with HTTP 401") as info:
        await client.fetch(BEGIN, END)
    assert info.value.status == 401
    assert "securityToken=***" in str(info.value)
    assert TOKEN not in str(info.value)
    assert TOKEN not in caplog.text
    assert len(server.seen("/api")) == 1  # a refusal is not retried


async def test_entsoe_acknowledgements(fetcher: Fetcher, server: RecordedAnswers) -> None:
    client = make_client("entsoe", fetcher, zone("de-lu"), token=TOKEN, base_url=server.url("/api"))
    server.answer("GET", "/api", Answer(200, fixture("entsoe_ack_no_data.xml")))
    with pytest.raises(NoData, match="No matching data found"):
        await client.fetch(BEGIN, END)
    server.answer("GET", "/api", Answer(400, fixture("entsoe_ack_no_data.xml")))
    with pytest.raises(SourceRefused, match=r"ENTSO-E rejected the query: .*No matching data"):
        await client.fetch(BEGIN, END)


async def test_429_with_retry_after_is_waited_then_answered(
    fetcher: Fetcher, server: RecordedAnswers, naps: Naps
) -> None:
    server.answer("GET", "/api", Answer(429, b"Too Many Requests", {"retry-after": "7"}),
                  Answer(200, fixture("entsoe_de_lu_pt30m.xml")))  # fmt: skip
    result = await entsoe(fetcher, server).fetch(BEGIN, END)
    assert isinstance(result, ParsedPrices)
    assert naps.asked == [7.0]  # the server's wait, not the backoff
    assert len(server.seen("/api")) == 2


async def test_a_long_retry_after_goes_back_to_the_scheduler(
    fetcher: Fetcher, server: RecordedAnswers, naps: Naps
) -> None:
    server.answer("GET", "/api", Answer(429, b"", {"Retry-After": "3600"}))
    with pytest.raises(SourceUnavailable) as info:
        await entsoe(fetcher, server).fetch(BEGIN, END)
    assert info.value.retry_after_s == 3600
    assert naps.asked == []
    assert len(server.seen("/api")) == 1


async def test_503_is_retried_with_jittered_backoff_then_unavailable(
    fetcher: Fetcher, server: RecordedAnswers, naps: Naps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answer("GET", "/api", Answer(503, b"Service Unavailable"))
    with pytest.raises(SourceUnavailable, match=r"HTTP 503: Service Unavailable \(after 3 attempts\)") as info:
        await entsoe(fetcher, server).fetch(BEGIN, END)
    assert len(server.seen("/api")) == 3
    assert naps.asked == [0.5, 1.0]  # rng 0.5 x (1 s, 2 s): full jitter of the exponential backoff
    assert TOKEN not in str(info.value)
    assert TOKEN not in caplog.text
    assert "retry 1/2" in caplog.text


async def test_a_timeout_is_retried_and_reported(fetcher: Fetcher, server: RecordedAnswers) -> None:
    server.answer("GET", "/api", Answer(200, fixture("entsoe_de_lu_pt30m.xml"), delay_s=2.0))
    with pytest.raises(SourceUnavailable, match=r"no answer within 0.5 s \(after 3 attempts\)") as info:
        await entsoe(fetcher, server).fetch(BEGIN, END)
    assert TOKEN not in str(info.value)


async def test_no_server_at_all_is_unavailable_without_the_token(
    fetcher: Fetcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    from deploy.stack import free_port

    client = make_client("entsoe", fetcher, zone("de-lu"), token=TOKEN, base_url=f"http://127.0.0.1:{free_port()}/api")
    with pytest.raises(SourceUnavailable, match="ClientConnectorError") as info:
        await client.fetch(BEGIN, END)
    assert TOKEN not in str(info.value)
    assert TOKEN not in caplog.text


async def test_nordpool_204_is_not_yet_and_today_alone_is_kept(fetcher: Fetcher, server: RecordedAnswers) -> None:
    today = fixture("nordpool_dk1_2024-11-05_eur.json")

    def by_date(seen: Seen) -> Answer:
        date = seen.query["date"]
        return Answer(200, today, content_type="application/json") if date == "2024-11-05" else Answer(204)

    server.respond("GET", "/api/DayAheadPrices", by_date)
    client = make_client("nordpool", fetcher, zone("dk1"), currency="EUR", base_url=server.url("/api"))
    result = await client.fetch(datetime(2024, 11, 4, 23, tzinfo=UTC), datetime(2024, 11, 6, 23, tzinfo=UTC))
    assert isinstance(result, ParsedPrices)
    assert len(result.slots) == 24
    assert [s.query["date"] for s in server.seen("/api/DayAheadPrices")] == ["2024-11-05", "2024-11-06"]
    assert server.seen("/api/DayAheadPrices")[0].query["currency"] == "EUR"
    server.answer("GET", "/api/DayAheadPrices", Answer(204))
    waiting = await client.fetch(datetime(2024, 11, 4, 23, tzinfo=UTC), datetime(2024, 11, 6, 23, tzinfo=UTC))
    assert isinstance(waiting, NotYetPublished)


async def test_energy_charts_404_detail_is_no_data(fetcher: Fetcher, server: RecordedAnswers) -> None:
    server.answer(
        "GET", "/price", Answer(404, b'{"detail":"No data for given parameters"}', content_type="application/json")
    )
    client = make_client("energy-charts", fetcher, zone("de-lu"), base_url=server.url())
    with pytest.raises(NoData, match="No data for given parameters"):
        await client.fetch(BEGIN, END)
    server.answer("GET", "/price", Answer(200, fixture("energy_charts_de_lu_2025-10-26_dst_100.json")))
    result = await client.fetch(BEGIN, END)
    assert isinstance(result, ParsedPrices)
    assert server.seen("/price")[-1].query == {"bzn": "DE-LU", "start": "2025-10-15", "end": "2025-10-16"}


async def test_awattar_eds_and_aemo(fetcher: Fetcher, server: RecordedAnswers) -> None:
    server.answer("GET", "/v1/marketdata", Answer(200, fixture("awattar_de_lu_2023-07-02.json")))
    result = await make_client("awattar", fetcher, zone("de-lu"), base_url=server.url()).fetch(BEGIN, END)
    assert isinstance(result, ParsedPrices)
    assert server.seen("/v1/marketdata")[0].query == {"start": "1760479200000", "end": "1760652000000"}

    server.answer("GET", "/dataset/DayAheadPrices", Answer(200, fixture("eds_dayaheadprices_2025-10-01.json")))
    eds = make_client("energidataservice", fetcher, zone("dk1"), currency="EUR", base_url=server.url())
    assert isinstance(await eds.fetch(BEGIN, END), ParsedPrices)
    assert json.loads(server.seen("/dataset/DayAheadPrices")[0].query["filter"]) == {"PriceArea": ["DK1"]}

    server.answer("POST", "/aemo/apps/api/report/5MIN", Answer(200, fixture("aemo_report_5min_2025-01-15.json")))
    nem = await make_client("aemo", fetcher, zone("qld1"), base_url=server.url()).fetch(BEGIN, END)
    assert isinstance(nem, ParsedPrices)
    assert nem.currency == "AUD"
    assert json.loads(server.seen("/aemo/apps/api/report/5MIN")[0].body) == {"timeScale": ["30MIN"]}


async def test_an_unreadable_body_is_a_parse_error_not_a_crash(fetcher: Fetcher, server: RecordedAnswers) -> None:
    from nodes.market.sources.prices import ParseError

    server.answer("GET", "/v1/marketdata", Answer(200, b"<html>maintenance</html>"))
    with pytest.raises(ParseError, match="not JSON"):
        await make_client("awattar", fetcher, zone("at"), base_url=server.url()).fetch(BEGIN, END)


def test_retry_after_forms() -> None:
    from nodes.market.sources.http import retry_after_s

    now = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s("Wed, 15 Jan 2025 12:01:30 GMT", now) == 90.0
    assert retry_after_s("Wed, 15 Jan 2025 11:00:00 GMT", now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None
