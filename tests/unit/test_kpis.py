"""Exact KPIs over any window: the 15-minute rollups, the day cache and the open range (issue 9 item 4).

The property that matters: KPIs are integrals over the raw samples, so every window that covers the same data
gives the same energy and revenue, and rollups give exactly what integrating the raw samples gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nodes.contract.messages import BatterySpec, Telemetry
from nodes.renderer import ledger
from nodes.renderer.insights import compute_insights, insights_from_totals
from nodes.renderer.kpis import DayFiller, KpiBook, compute_day, runs
from nodes.renderer.ledger import DAY_S, Ledger
from nodes.renderer.series import PriceSeries, TelemetrySeries, to_datetime

SPEC = BatterySpec(
    capacity_kwh=1000.0, soc_min_kwh=100.0, soc_max_kwh=900.0, max_charge_kw=250.0, max_discharge_kw=250.0
)
NOW_S = 20_000 * DAY_S + 15 * 3600 + 7 * 60 + 13.0  # 15:07:13 UTC on some day
WINDOWS_S = {"6 h": 6 * 3600, "24 h": 86400, "7 d": 7 * 86400, "30 d": 30 * 86400}


def cycling(begin_s: float, end_s: float, step_s: float = 60.0, *, with_power: bool = True) -> TelemetrySeries:
    """A battery cycling between 200 and 800 kWh (charging and discharging at about 250 kW), sampled every
    ``step_s`` with a little jitter; SOC follows the power with a 0.9 round trip (losses)."""
    rng = np.random.default_rng(7)
    t = np.arange(begin_s, end_s, step_s) + rng.uniform(0, step_s * 0.3, size=math.ceil((end_s - begin_s) / step_s))
    t = t[t < end_s]
    phase = 2 * math.pi * (t - begin_s) / (8 * 3600.0)
    power = 250.0 * np.sin(phase)  # + discharge
    soc = np.empty_like(t)
    soc[0] = 500.0
    eta = math.sqrt(0.9)
    for i in range(1, t.size):
        p, dt_h = power[i - 1], (t[i] - t[i - 1]) / 3600.0
        soc[i] = soc[i - 1] - (p * dt_h / eta if p > 0 else p * dt_h * eta)
    return TelemetrySeries.from_arrays(t, soc, power if with_power else None)


def hourly_prices(begin_s: float, end_s: float) -> PriceSeries:
    start = np.arange(math.floor(begin_s / 3600) * 3600.0, end_s + 3600, 3600.0)
    return PriceSeries.from_arrays(start, start + 3600.0, 80.0 + 60.0 * np.sin(2 * math.pi * start / 86400.0))


def book_with(series: TelemetrySeries, prices: PriceSeries, now_s: float) -> KpiBook:
    """A book as the node fills it: final days from raw reads, the open range from a refresh."""
    book = KpiBook()
    for day in range(ledger.day_of(now_s - 45 * DAY_S), book.first_open_day(now_s)):
        compute_day(day, series, prices, now_s, book)  # days without data are read (empty) too
    begin = book.open_from_s(now_s)
    book.merge_open(series.between(begin, now_s + 1), begin, now_s + 1, now_s)
    return book


def kpis(book: KpiBook, prices: PriceSeries, window_s: float, now_s: float = NOW_S) -> ledger.Totals:
    result = book.window(now_s - window_s, now_s, now_s, prices)
    assert isinstance(result, ledger.Totals), f"days missing: {result}"
    return result


def test_every_window_over_the_same_data_gives_the_same_energy_and_revenue() -> None:
    # Data only in the last 5 hours: every preset window covers all of it, so every KPI must be equal.
    series = cycling(NOW_S - 5 * 3600, NOW_S - 30)
    prices = hourly_prices(NOW_S - 40 * 86400, NOW_S + 86400)
    book = book_with(series, prices, NOW_S)
    results = {name: insights_from_totals(kpis(book, prices, w), SPEC) for name, w in WINDOWS_S.items()}
    reference = results["6 h"]
    assert reference.energy_discharged_kwh > 100  # the test data really moves energy
    for name, ins in results.items():
        assert ins.energy_charged_kwh == pytest.approx(reference.energy_charged_kwh, rel=1e-12), name
        assert ins.energy_discharged_kwh == pytest.approx(reference.energy_discharged_kwh, rel=1e-12), name
        assert ins.realised_revenue == pytest.approx(reference.realised_revenue, rel=1e-12), name
        assert ins.efficiency_loss_kwh == pytest.approx(reference.efficiency_loss_kwh, rel=1e-9), name
        assert ins.full_cycles == pytest.approx(reference.full_cycles, rel=1e-12), name
        assert ins.samples == reference.samples == len(series)
    # and they are the raw integral: the same numbers as integrating the raw samples directly
    direct = compute_insights(series, prices, SPEC)
    assert reference.energy_discharged_kwh == pytest.approx(direct.energy_discharged_kwh, rel=1e-12)
    assert reference.realised_revenue == pytest.approx(direct.realised_revenue, rel=1e-12)
    assert reference.efficiency_loss_kwh is not None
    assert reference.efficiency_loss_kwh > 0


def test_windows_over_long_data_are_the_raw_integral_of_their_period() -> None:
    # 40 days of 5-minute data: 30 d spans cached final days and the open range; each window's numbers are
    # exactly the integral of the raw samples over its (15-minute aligned) period.
    series = cycling(NOW_S - 40 * 86400, NOW_S - 30, step_s=300.0)
    prices = hourly_prices(NOW_S - 41 * 86400, NOW_S + 86400)
    book = book_with(series, prices, NOW_S)
    assert len(book.ledger.days) >= 38
    for name, window_s in WINDOWS_S.items():
        got = kpis(book, prices, window_s)
        lo, _hi = ledger.bucket_range(NOW_S - window_s, NOW_S)
        edges = np.array([lo, math.ceil((NOW_S + 1) / 900) * 900.0])
        want = ledger.totals([ledger.integrate(series, prices, edges)])
        for column in (ledger.CHARGED, ledger.DISCHARGED, ledger.REVENUE, ledger.LOSS, ledger.SAMPLES):
            assert got[column] == pytest.approx(want[column], rel=1e-9, abs=1e-9), (name, column)
        assert got.begin_s == lo  # the period starts on the grid, never before the window
        assert got.begin_s >= NOW_S - window_s
        assert got.end_s == got.last_sample_s  # a live window ends at the newest reading
    # a longer window covers more: 30 d moved more energy than 7 d, which moved more than 24 h
    moved = [kpis(book, prices, WINDOWS_S[n])[ledger.DISCHARGED] for n in ("24 h", "7 d", "30 d")]
    assert moved == sorted(moved)


def test_rollups_are_additive_wherever_the_edges_fall() -> None:
    series = cycling(0.0, 3 * 86400.0, step_s=37.0)
    prices = hourly_prices(0.0, 3 * 86400.0)
    whole = ledger.totals([ledger.integrate(series, prices, np.array([0.0, 3 * 86400.0]))])
    fine = ledger.totals([ledger.integrate(series, prices, np.arange(0.0, 3 * 86400.0 + 1, 900.0))])
    odd = ledger.totals([ledger.integrate(series, prices, np.array([0.0, 1234.5, 99_999.0, 3 * 86400.0]))])
    for column in range(ledger.N_COLUMNS):
        assert fine[column] == pytest.approx(whole[column], rel=1e-9, abs=1e-9), column
        assert odd[column] == pytest.approx(whole[column], rel=1e-9, abs=1e-9), column


def test_a_day_computed_from_its_raw_range_equals_the_same_day_inside_a_longer_integration() -> None:
    series = cycling(0.0, 4 * 86400.0, step_s=120.0)
    prices = hourly_prices(0.0, 4 * 86400.0)
    day = 2
    lo, hi = ledger.fetch_range(day)
    alone = ledger.integrate(series.between(lo, hi), prices, ledger.day_edges(day))
    inside = ledger.integrate(series, prices, ledger.day_edges(day))
    np.testing.assert_allclose(alone.sums, inside.sums, rtol=1e-12, atol=1e-12)


def test_seed_only_battery_energy_is_derived_from_soc_in_every_window() -> None:
    series = cycling(NOW_S - 10 * 3600, NOW_S - 60, step_s=300.0, with_power=False)
    prices = hourly_prices(NOW_S - 2 * 86400, NOW_S + 86400)
    book = book_with(series, prices, NOW_S)
    # 10 h of data: the 24 h, 7 d and 30 d windows all cover it
    values = {n: insights_from_totals(kpis(book, prices, w)) for n, w in WINDOWS_S.items() if n != "6 h"}
    charged = {round(v.energy_charged_kwh, 9) for v in values.values()}
    assert len(charged) == 1
    assert charged.pop() > 100
    assert all(v.power_source == "derived from SOC" for v in values.values())


def test_missing_final_days_are_reported_then_filled_in_pages() -> None:
    series = cycling(NOW_S - 10 * 86400, NOW_S - 30, step_s=600.0)
    prices = hourly_prices(NOW_S - 11 * 86400, NOW_S + 86400)
    book = KpiBook()
    begin = book.open_from_s(NOW_S)
    book.merge_open(series.between(begin, NOW_S + 1), begin, NOW_S + 1, NOW_S)
    missing = book.window(NOW_S - 7 * 86400, NOW_S, NOW_S, prices)
    assert isinstance(missing, list)
    assert len(missing) >= 6
    # read them as the node does: one run, pages of 100 rows, each day handed over once its range is complete
    filler = DayFiller(runs(missing)[0])
    raw = series.between(filler.begin_s, filler.end_s)
    done: list[int] = []
    for start in range(0, len(raw), 100):
        page = TelemetrySeries(*(getattr(raw, c)[start : start + 100] for c in
                                 ("time_s", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw")))
        complete = float(page.time_s[-1]) if start + 100 < len(raw) else filler.end_s
        for day, rows in filler.feed(page, complete):
            compute_day(day, rows, prices, NOW_S, book)
            done.append(day)
    assert done == missing
    got = book.window(NOW_S - 7 * 86400, NOW_S, NOW_S, prices)
    assert isinstance(got, ledger.Totals)
    reference = book_with(series, prices, NOW_S).window(NOW_S - 7 * 86400, NOW_S, NOW_S, prices)
    assert isinstance(reference, ledger.Totals)
    np.testing.assert_allclose(got.sums, reference.sums, rtol=1e-12)


def test_a_back_dated_sample_invalidates_the_cached_day() -> None:
    cache = Ledger(settle_s=10.0)
    day = ledger.day_of(NOW_S) - 3
    cache.put(ledger.DayChunk(day, ledger.Buckets.empty(ledger.day_edges(day)), NOW_S - 100, final=True))
    assert cache.valid(day) is not None
    cache.invalidate(day * DAY_S + 3600.0, NOW_S)
    assert cache.valid(day) is None  # recomputed, after the recorder had time to store it
    assert day in cache.missing(day, day, NOW_S + 20)

    book = KpiBook()
    begin = book.open_from_s(NOW_S)
    book.merge_open(TelemetrySeries.empty(), begin, NOW_S, NOW_S)
    book.add_live(Telemetry(ts=to_datetime(NOW_S - 60), soc_kwh=1.0), NOW_S)
    assert not book.needs_full_refetch  # recent: the next refresh re-reads from before it
    book.add_live(Telemetry(ts=to_datetime(begin + 60), soc_kwh=1.0), NOW_S)
    assert book.needs_full_refetch  # older than a refresh re-reads: read the open range again
    assert book.fetch_begin_s(NOW_S) == begin


def test_runs() -> None:
    assert runs([7, 3, 4, 4]) == [[3, 4], [7]]
    assert runs([]) == []


def test_the_day_cache_keeps_what_is_looked_at_whatever_its_age() -> None:
    cache = Ledger(max_days=3)
    for day in (100, 5, 101, 102):  # day 5: a viewer's window years back, filled after the recent days
        cache.put(ledger.DayChunk(day, ledger.Buckets.empty(ledger.day_edges(day)), 0.0, final=True))
    assert 5 in cache.days  # the day just read stays, however old (else its window would re-read forever)
    assert 100 not in cache.days  # the least recently used went
    assert cache.valid(101) is not None
    cache.put(ledger.DayChunk(7, ledger.Buckets.empty(ledger.day_edges(7)), 0.0, final=True))
    assert set(cache.days) == {102, 101, 7}  # 5 was now the least recently used
