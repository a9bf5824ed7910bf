"""The price feed's window, synthetic series and CSV replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from nodes.contract.messages import PriceSlot
from nodes.market.feed import ReplaySource, SyntheticSource, build_forecast, forecast_window, next_hour
from nodes.market.synthetic import synthetic_slots


def test_window_is_today_and_tomorrow_in_market_time() -> None:
    begin, end = forecast_window(datetime(2025, 1, 16, 10, 30, tzinfo=UTC))
    assert begin == datetime(2025, 1, 15, 23, 0, tzinfo=UTC)  # local midnight, CET = UTC+1
    assert end == datetime(2025, 1, 17, 23, 0, tzinfo=UTC)


def test_window_on_dst_change_day_is_47_hours() -> None:
    begin, end = forecast_window(datetime(2025, 3, 30, 12, 0, tzinfo=UTC))
    assert end - begin == timedelta(hours=47)


def test_synthetic_series_is_contiguous_deterministic_and_day_shaped() -> None:
    begin = datetime(2025, 1, 15, 23, 0, tzinfo=UTC)
    slots = synthetic_slots(begin, begin + timedelta(days=2))
    assert len(slots) == 48
    assert all(a.end == b.start for a, b in pairwise(slots))
    assert slots == synthetic_slots(begin, begin + timedelta(days=2))
    day = [s.price_per_mwh for s in slots[:24]]
    assert max(day[16:21]) > max(day[0:5])  # evening peak above the night


def test_synthetic_quarter_hours() -> None:
    begin = datetime(2025, 1, 15, 23, 0, tzinfo=UTC)
    slots = synthetic_slots(begin, begin + timedelta(hours=2), timedelta(minutes=15))
    assert [s.end - s.start for s in slots] == [timedelta(minutes=15)] * 8


def test_forecast_covers_the_window() -> None:
    now = datetime(2025, 1, 16, 10, 30, tzinfo=UTC)
    forecast = build_forecast("de-lu", SyntheticSource(), now)
    assert forecast.slots[0].start == datetime(2025, 1, 15, 23, 0, tzinfo=UTC)
    assert forecast.slots[-1].end == datetime(2025, 1, 17, 23, 0, tzinfo=UTC)
    assert forecast.issued_at == now


def test_replay_shifts_by_whole_weeks_and_keeps_prices() -> None:
    first = datetime(2023, 1, 2, 0, 0, tzinfo=UTC)  # a Monday
    hours = 24 * 7 * 3
    slots = [
        PriceSlot(start=first + timedelta(hours=h), end=first + timedelta(hours=h + 1), price_per_mwh=float(h))
        for h in range(hours)
    ]
    source = ReplaySource(slots, "test")
    begin = datetime(2025, 1, 13, 0, 0, tzinfo=UTC)  # also a Monday
    out = source.slots(begin, begin + timedelta(days=2))
    assert len(out) == 48
    assert out[0].start == begin
    shift = begin - slots[int(out[0].price_per_mwh)].start
    assert shift % timedelta(days=7) == timedelta(0)
    assert [s.price_per_mwh for s in out] == [out[0].price_per_mwh + i for i in range(48)]


def test_replay_needs_a_week() -> None:
    t = datetime(2023, 1, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="week"):
        ReplaySource([PriceSlot(start=t, end=t + timedelta(hours=1), price_per_mwh=1.0)] * 2, "x")


def test_next_hour() -> None:
    assert next_hour(datetime(2025, 1, 1, 10, 59, 59, tzinfo=UTC)) == datetime(2025, 1, 1, 11, tzinfo=UTC)
