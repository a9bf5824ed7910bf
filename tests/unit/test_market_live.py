"""The live feed's wiring (no I/O): what it publishes when, and the status it reports."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from nodes.contract.messages import NodeState, PriceForecast
from nodes.market.live import FeedTimeline, LiveFeed
from nodes.market.sources.http import SourceRefused, SourceUnavailable
from nodes.market.sources.prices import NotYetPublished, ParsedPrices, ParseError, Slot, finish
from nodes.market.sources.zones import zone

H = timedelta(hours=1)
DAY0 = datetime(2025, 1, 15, 23, tzinfo=UTC)  # start of the CET delivery day 2025-01-16
TIMELINE = FeedTimeline("day-ahead", time(12, 45), timedelta(minutes=10), timedelta(hours=6))


def day(start: datetime, price: float, currency: str = "EUR") -> ParsedPrices:
    return finish("de-lu", currency, [Slot(start + i * H, start + (i + 1) * H, price + i) for i in range(24)], "entsoe")


class Provider:
    """Answers whatever the test queued (a result or an exception), recording each window asked for."""

    name = "fake"

    def __init__(self) -> None:
        self.answers: list[ParsedPrices | NotYetPublished | Exception] = []
        self.asked: list[tuple[datetime, datetime]] = []

    async def fetch(self, begin: datetime, end: datetime) -> ParsedPrices | NotYetPublished:
        self.asked.append((begin, end))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Status:
    def __init__(self) -> None:
        self.state: NodeState = "online"
        self.reason = ""

    def set_state(self, state: NodeState, reason: str = "") -> None:
        self.state, self.reason = state, reason


class Rig:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.provider = Provider()
        self.status = Status()
        self.published: list[PriceForecast] = []

        async def publish(forecast: PriceForecast) -> None:
            self.published.append(forecast)

        label = "ENTSO-E A44 day-ahead"
        self.feed = LiveFeed(
            self.provider, zone("de-lu"), TIMELINE, publish, self.status, label=label, clock=self.clock
        )

    def clock(self) -> datetime:
        return self.now


async def test_today_then_tomorrow_once_published_and_never_a_made_up_tomorrow() -> None:
    rig = Rig(datetime(2025, 1, 16, 7, tzinfo=UTC))  # 08:00 CET
    rig.provider.answers = [day(DAY0, 10.0)]
    due = await rig.feed.poll()
    assert rig.provider.asked == [(DAY0, DAY0 + 48 * H)]
    (first,) = rig.published
    assert first.slots[-1].end == DAY0 + 24 * H  # today only: nothing was invented for tomorrow
    assert first.currency == "EUR"
    assert first.issued_at == rig.now
    assert first.source == "ENTSO-E A44 day-ahead"
    assert due == datetime(2025, 1, 16, 11, 45, tzinfo=UTC)  # 12:45 CET
    assert rig.status.state == "online"

    rig.now = due  # the result is late: the same answer again changes nothing
    rig.provider.answers = [day(DAY0, 10.0)]
    due = await rig.feed.poll()
    assert len(rig.published) == 1
    assert due == rig.now + timedelta(minutes=10)

    rig.now = due
    both = finish("de-lu", "EUR", [*day(DAY0, 10.0).slots, *day(DAY0 + 24 * H, 50.0).slots], "entsoe")
    rig.provider.answers = [both]
    due = await rig.feed.poll()
    assert len(rig.published) == 2
    second = rig.published[1]
    assert len(second.slots) == 48
    assert [s.price_per_mwh for s in second.slots[24:26]] == [50.0, 51.0]
    assert due == datetime(2025, 1, 17, 11, 45, tzinfo=UTC)  # next: the day after tomorrow's publication


async def test_not_yet_published_keeps_what_is_known() -> None:
    rig = Rig(datetime(2025, 1, 16, 12, tzinfo=UTC))
    rig.provider.answers = [day(DAY0, 10.0), NotYetPublished("de-lu", "nordpool", "not yet")]
    await rig.feed.poll()
    await rig.feed.poll()
    assert len(rig.published) == 1
    assert len(rig.feed.slots) == 24


async def test_stale_prices_report_degraded_with_the_reason_and_recover() -> None:
    rig = Rig(datetime(2025, 1, 16, 19, tzinfo=UTC))  # 20:00 CET, tomorrow still missing: 3 h left
    rig.provider.answers = [day(DAY0, 10.0), SourceUnavailable("GET http://x: HTTP 503 (after 4 attempts)")]
    await rig.feed.poll()
    assert rig.status.state == "degraded"
    assert rig.status.reason.startswith("prices are stale: prices end at 2025-01-16T23:00Z, 4.0 h ahead")
    await rig.feed.poll()
    assert "last request: GET http://x: HTTP 503" in rig.status.reason
    rig.provider.answers = [day(DAY0 + 24 * H, 30.0)]
    await rig.feed.poll()
    assert (rig.status.state, rig.status.reason) == ("online", "")
    assert rig.published[-1].slots[0].start == DAY0  # today kept, tomorrow added
    assert len(rig.published[-1].slots) == 48


async def test_a_refusal_is_degraded_even_while_prices_last() -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    rig.provider.answers = [
        day(DAY0, 10.0),
        SourceRefused("GET http://x?securityToken=***: refused with HTTP 401", 401),
    ]
    await rig.feed.poll()
    due = await rig.feed.poll()
    assert rig.status.state == "degraded"
    assert "refuses the request" in rig.status.reason
    assert "HTTP 401" in rig.status.reason
    assert due == rig.now + timedelta(minutes=10)


async def test_rate_limit_waits_at_least_retry_after() -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    rig.provider.answers = [SourceUnavailable("HTTP 429", retry_after_s=3600)]
    due = await rig.feed.poll()
    assert due == rig.now + H


async def test_other_currencies_are_published_in_their_own_currency() -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    rig.provider.answers = [day(DAY0, 10.0, currency="AUD")]
    await rig.feed.poll()
    assert [f.currency for f in rig.published] == ["AUD"]
    assert [s.price_per_mwh for s in rig.published[0].slots[:2]] == [10.0, 11.0]


async def test_unreadable_answer_is_counted_and_retried() -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    rig.provider.answers = [ParseError("not XML: syntax error")]
    due = await rig.feed.poll()
    assert (rig.feed.failures, rig.feed.polls) == (1, 1)
    assert due == rig.now + timedelta(minutes=10)
    assert "not XML" in rig.status.reason


async def test_run_polls_when_due_and_rechecks_staleness_in_between() -> None:
    rig = Rig(datetime(2025, 1, 16, 16, 55, tzinfo=UTC))  # 17:55 CET; 6 h horizon ends after midnight
    rig.provider.answers = [day(DAY0, 10.0)]
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        rig.now += timedelta(seconds=seconds)
        if len(naps) == 8:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        await rig.feed.run(sleep=sleep)
    assert rig.feed.polls == 1  # the next poll is 10 minutes away; in between only the state is checked
    assert naps == [60.0] * 8
    assert rig.status.state == "degraded"  # after 18:00 CET less than 6 h of prices remain


async def test_a_failed_publish_is_retried_at_the_next_poll() -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    calls: list[int] = []

    async def flaky(forecast: PriceForecast) -> None:
        calls.append(len(forecast.slots))
        if len(calls) == 1:
            raise ConnectionError("not connected to the MQTT broker")
        rig.published.append(forecast)

    rig.feed._publish = flaky
    rig.provider.answers = [day(DAY0, 10.0), day(DAY0, 10.0)]
    due = await rig.feed.poll()
    assert rig.feed.slots == ()  # not known as published
    assert due == rig.now + timedelta(minutes=10)  # retried soon, not at 12:45
    assert "could not publish" in rig.feed.last_problem
    await rig.feed.poll()
    assert calls == [24, 24]
    assert len(rig.published) == 1


async def test_an_unexpected_error_is_logged_and_the_feed_keeps_polling(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(datetime(2025, 1, 16, 8, tzinfo=UTC))
    rig.provider.answers = [KeyError("bug"), day(DAY0, 10.0)]
    due = await rig.feed.poll()
    assert due == rig.now + timedelta(minutes=10)
    assert "unexpected error" in caplog.text
    assert "KeyError" in caplog.text
    await rig.feed.poll()
    assert len(rig.published) == 1
