"""The day-ahead timeline: window, when to poll, merging answers, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from nodes.market.sources.prices import Slot
from nodes.market.sources.zones import zone
from nodes.market.timeline import coverage_problem, known_until, merge, next_poll, window

H = timedelta(hours=1)
AT = time(12, 45)
RETRY = timedelta(minutes=10)


def hours(start: datetime, count: int, price: float = 50.0) -> list[Slot]:
    return [Slot(start + i * H, start + (i + 1) * H, price) for i in range(count)]


def test_window_is_the_cet_delivery_day_and_the_next_also_for_other_clocks() -> None:
    assert window(datetime(2025, 1, 16, 10, tzinfo=UTC), zone("de-lu")) == (
        datetime(2025, 1, 15, 23, tzinfo=UTC), datetime(2025, 1, 17, 23, tzinfo=UTC))  # fmt: skip
    # Finland and Portugal trade in the coupled auction: their delivery day is the CET day too
    assert window(datetime(2025, 1, 16, 10, tzinfo=UTC), zone("fi")) == window(
        datetime(2025, 1, 16, 10, tzinfo=UTC), zone("pt")
    )
    # spring-forward day: 23 + 24 hours
    begin, end = window(datetime(2026, 3, 29, 12, tzinfo=UTC), zone("de-lu"))
    assert end - begin == timedelta(hours=47)
    # NEM: NEM days (UTC+10), no DST
    assert window(datetime(2025, 1, 15, 13, 59, tzinfo=UTC), zone("nsw1"))[0] == datetime(2025, 1, 14, 14, tzinfo=UTC)
    assert window(datetime(2025, 1, 15, 14, 0, tzinfo=UTC), zone("nsw1"))[0] == datetime(2025, 1, 15, 14, tzinfo=UTC)


def test_known_until_follows_an_unbroken_run() -> None:
    now = datetime(2025, 1, 16, 10, 30, tzinfo=UTC)
    slots = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 24)
    assert known_until(slots, now) == datetime(2025, 1, 16, 23, tzinfo=UTC)
    holed = [s for s in slots if s.start != datetime(2025, 1, 16, 15, tzinfo=UTC)]
    assert known_until(holed, now) == datetime(2025, 1, 16, 15, tzinfo=UTC)
    assert known_until(slots, datetime(2025, 1, 17, tzinfo=UTC)) is None


def test_before_publication_the_next_poll_is_the_publication_time() -> None:
    de = zone("de-lu")
    today = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 24)
    now = datetime(2025, 1, 16, 8, tzinfo=UTC)  # 09:00 CET
    due = next_poll(now, kind="day-ahead", zone=de, slots=today, dayahead_at=AT, retry=RETRY)
    assert due == datetime(2025, 1, 16, 11, 45, tzinfo=UTC)  # 12:45 CET
    # the summer: 12:45 CEST
    summer = hours(datetime(2025, 7, 15, 22, tzinfo=UTC), 24)
    due = next_poll(
        datetime(2025, 7, 16, 6, tzinfo=UTC), kind="day-ahead", zone=de, slots=summer, dayahead_at=AT, retry=RETRY
    )
    assert due == datetime(2025, 7, 16, 10, 45, tzinfo=UTC)


def test_after_publication_without_tomorrow_it_retries_and_with_tomorrow_waits_a_day() -> None:
    de = zone("de-lu")
    today = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 24)
    now = datetime(2025, 1, 16, 12, tzinfo=UTC)  # 13:00 CET, tomorrow not out yet
    assert next_poll(now, kind="day-ahead", zone=de, slots=today, dayahead_at=AT, retry=RETRY) == now + RETRY
    both = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 48)
    due = next_poll(now, kind="day-ahead", zone=de, slots=both, dayahead_at=AT, retry=RETRY)
    assert due == datetime(2025, 1, 17, 11, 45, tzinfo=UTC)


def test_missing_today_is_asked_again_soon_even_before_publication_time() -> None:
    now = datetime(2025, 1, 16, 2, tzinfo=UTC)
    assert next_poll(now, kind="day-ahead", zone=zone("de-lu"), slots=[], dayahead_at=AT, retry=RETRY) == now + RETRY


def test_a_failure_retries_sooner_and_retry_after_is_respected() -> None:
    de = zone("de-lu")
    both = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 48)
    now = datetime(2025, 1, 16, 12, tzinfo=UTC)
    failed = next_poll(now, kind="day-ahead", zone=de, slots=both, dayahead_at=AT, retry=RETRY, failed=True)
    assert failed == now + RETRY
    slow = next_poll(now, kind="day-ahead", zone=de, slots=both, dayahead_at=AT, retry=RETRY, failed=True,
                     retry_after=timedelta(hours=1))  # fmt: skip
    assert slow == now + timedelta(hours=1)


def test_real_time_polls_just_after_each_five_minute_interval() -> None:
    now = datetime(2025, 1, 15, 0, 7, 12, tzinfo=UTC)
    due = next_poll(now, kind="real-time", zone=zone("nsw1"), slots=[], dayahead_at=AT, retry=RETRY)
    assert due == datetime(2025, 1, 15, 0, 10, 30, tzinfo=UTC)


def test_merge_replaces_the_fresh_span_keeps_the_rest_and_drops_the_past() -> None:
    t0 = datetime(2025, 1, 15, 23, tzinfo=UTC)
    known = hours(t0, 24, 10.0)
    fresh = hours(t0 + 12 * H, 36, 20.0)
    merged = merge(known, fresh, keep_from=t0 + 2 * H)
    assert merged[0].start == t0 + 2 * H
    assert [s.price_per_mwh for s in merged] == [10.0] * 10 + [20.0] * 36
    assert merge(known, [], keep_from=t0) == tuple(known)


def test_coverage_problem() -> None:
    now = datetime(2025, 1, 16, 10, 30, tzinfo=UTC)
    slots = hours(datetime(2025, 1, 15, 23, tzinfo=UTC), 24)
    assert coverage_problem(slots, now, timedelta(hours=6)) is None
    late = coverage_problem(slots, datetime(2025, 1, 16, 20, tzinfo=UTC), timedelta(hours=6))
    assert late == "prices end at 2025-01-16T23:00Z, 3.0 h ahead; less than the 6 h required"
    holed = [s for s in slots if s.start != datetime(2025, 1, 16, 12, tzinfo=UTC)]
    assert coverage_problem(holed, now, timedelta(hours=6)) == (
        "no price for 2025-01-16T12:00Z..2025-01-16T13:00Z (within the next 6 h)")  # fmt: skip
    assert coverage_problem([], now, timedelta(hours=6)) == "no price slot covers the current time"
