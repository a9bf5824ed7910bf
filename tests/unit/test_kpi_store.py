"""Final KPI days stored and read back (issue 14, part B): the round trip through the wire and the store's
rows is exact, and the book takes stored days instead of raw rows, except where it knows them outdated."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nodes.contract.messages import HistoryQuery, HistoryResult, KpiDay, Telemetry
from nodes.contract.topics import KPI_DAY
from nodes.recorder.points import MASK, kpi_lines, rfc3339_from_us
from nodes.recorder.table import SERIES
from nodes.renderer import kpi_store, ledger
from nodes.renderer.kpi_days import publish_new, read_stored
from nodes.renderer.kpis import KpiBook, compute_day
from nodes.renderer.ledger import DAY_S, DayChunk
from nodes.renderer.series import PriceSeries, TelemetrySeries, parse_times, to_datetime
from nodes.runtime.errors import BusUnavailable
from tests.unit.test_kpis import NOW_S, cycling, hourly_prices

_FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^,]+)')


def a_day(step_s: float = 7.0, prices: PriceSeries | None = None) -> DayChunk:
    """A final day with data in part of it only (empty buckets have no first/last sample) and jittered times."""
    day = ledger.day_of(NOW_S) - 3
    raw = cycling(day * DAY_S + 5 * 3600, day * DAY_S + 20 * 3600, step_s=step_s)
    # times on the microsecond grid, as every stored or live sample is (datetimes have microseconds)
    series = TelemetrySeries.from_arrays(np.round(raw.time_s * 1e6) / 1e6, raw.soc_kwh, raw.power_kw)
    book = KpiBook()
    prices = hourly_prices(day * DAY_S - DAY_S, day * DAY_S + 2 * DAY_S) if prices is None else prices
    return compute_day(day, series, prices, NOW_S, book)


def same(a: DayChunk, b: DayChunk) -> None:
    assert a.day == b.day
    assert a.currencies == b.currencies
    for name in ("edges", "sums", "first_t", "first_soc", "last_t", "last_soc"):
        x, y = getattr(a.buckets, name), getattr(b.buckets, name)
        assert x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=True), name  # bit for bit, not approximately


def stored_rows(battery: str, chunk: DayChunk, kind: str = "kpi") -> HistoryResult:
    """What the recorder answers for ``kind`` (``kpi``: the buckets, ``kpi_day``: the day's totals) after storing
    the day: the points' line protocol read back as InfluxDB returns them (floats as written, the absent mask
    applied), in the series' column order."""
    series = SERIES[kind]  # type: ignore[index]
    rows = []
    for text in kpi_lines(battery, kpi_store.day_message(chunk)):
        head, fields, stamp = text.rsplit(" ", 2)
        if head != f"{series.measurement},battery={battery}":
            continue
        values: dict[str, object] = {}
        for key, raw in _FIELD.findall(fields):
            values[key] = raw[1:-1] if raw.startswith('"') else float(raw)
        absent = set(str(values.pop(MASK)).split(",")) - {""}
        rows.append([rfc3339_from_us(int(stamp)), *(None if c in absent else values.get(c) for c in series.columns)])
    return HistoryResult(ok=True, columns=["time", *series.columns], rows=rows)


def test_a_day_survives_the_wire_exactly() -> None:
    chunk = a_day()
    assert np.isnan(chunk.buckets.first_t).any()
    assert np.isfinite(chunk.buckets.first_t).any()
    wire = KPI_DAY.decode(KPI_DAY.encode(kpi_store.day_message(chunk)))
    same(kpi_store.chunk_from_message(wire), chunk)


def test_a_day_survives_the_store_exactly() -> None:
    chunk = a_day()
    assert chunk.currencies == ("EUR",)
    back = kpi_store.chunks_from_result(stored_rows("b1", chunk))
    assert len(back) == 1
    same(back[0], chunk)
    # every stored number but the first/last sample is additive: an hourly rollup is their sum
    assert set(SERIES["kpi"].numeric) == {*kpi_store.SUM_FIELDS, *kpi_store.SAMPLE_COLUMNS}


def test_a_day_stored_in_part_is_not_used() -> None:
    result = stored_rows("b1", a_day())
    del result.rows[40]
    assert kpi_store.chunks_from_result(result) == []


def test_the_book_takes_stored_days_and_reads_raw_rows_only_for_the_others() -> None:
    series = cycling(NOW_S - 10 * DAY_S, NOW_S - 30, step_s=300.0)
    prices = hourly_prices(NOW_S - 11 * DAY_S, NOW_S + DAY_S)
    full = KpiBook()
    for day in range(ledger.day_of(NOW_S) - 9, full.first_open_day(NOW_S)):
        compute_day(day, series, prices, NOW_S, full)
    published = full.take_unpublished()
    assert [c.day for c in published] == sorted(full.ledger.days)  # every final day computed goes out once
    assert full.take_unpublished() == []

    book = KpiBook()
    begin = book.open_from_s(NOW_S)
    book.merge_open(series.between(begin, NOW_S + 1), begin, NOW_S + 1, NOW_S)
    missing = book.window(NOW_S - 7 * DAY_S, NOW_S, NOW_S, prices)
    assert isinstance(missing, list)
    assert len(missing) >= 6
    stored = [kpi_store.chunks_from_result(stored_rows("b1", c))[0] for c in published if c.day in missing[1:]]
    taken = book.accept_stored(stored, NOW_S)
    assert taken == set(missing[1:])
    assert book.window(NOW_S - 7 * DAY_S, NOW_S, NOW_S, prices) == [missing[0]]  # only the day not stored
    assert book.take_unpublished() == []  # stored days are not published again
    compute_day(missing[0], series, prices, NOW_S, book)
    got = book.window(NOW_S - 7 * DAY_S, NOW_S, NOW_S, prices)
    assert isinstance(got, ledger.Totals)
    begin = full.open_from_s(NOW_S)
    full.merge_open(series.between(begin, NOW_S + 1), begin, NOW_S + 1, NOW_S)
    reference = full.window(NOW_S - 7 * DAY_S, NOW_S, NOW_S, prices)
    assert isinstance(reference, ledger.Totals)
    assert np.array_equal(got.sums, reference.sums)
    assert [c.day for c in book.take_unpublished()] == [missing[0]]


def test_a_back_dated_sample_makes_the_stored_day_computed_again_and_republished() -> None:
    chunk = a_day()
    book = KpiBook()
    book.add_live(Telemetry(ts=to_datetime(chunk.day * DAY_S + 12 * 3600.5), soc_kwh=400.0), NOW_S)
    assert chunk.day in book.stale
    assert book.accept_stored([chunk], NOW_S) == set()
    assert book.stale_days(NOW_S) == []  # not at once: the recorder may not have stored the sample yet
    assert chunk.day in book.stale_days(NOW_S + 11)
    book.computed(DayChunk(chunk.day, chunk.buckets, NOW_S + 2, final=True))
    assert chunk.day in book.stale  # computed too soon after the sample: still to be done again
    book.computed(DayChunk(chunk.day, chunk.buckets, NOW_S + 30, final=True))
    assert chunk.day not in book.stale
    assert [c.day for c in book.take_unpublished()] == [chunk.day]
    # a sample of now changes no final day
    book.add_live(Telemetry(ts=to_datetime(NOW_S), soc_kwh=400.0), NOW_S)
    assert book.stale == set()


def test_prices_that_arrive_later_redo_a_stored_day_that_had_unpriced_energy() -> None:
    unpriced = a_day(prices=PriceSeries.empty())
    assert unpriced.buckets.sums[:, ledger.UNPRICED].sum() > 0
    assert unpriced.currencies == ()
    priced = a_day()
    book = KpiBook()
    book.prices_arrived(unpriced.day * DAY_S, unpriced.day * DAY_S + DAY_S, NOW_S)
    assert book.accept_stored([unpriced], NOW_S) == set()  # computed again, with the prices now known
    assert book.accept_stored([priced], NOW_S) == {priced.day}  # nothing unpriced: the stored copy is right
    # without new prices a stored unpriced day is kept as it is (its energy stays counted as unpriced)
    assert KpiBook().accept_stored([unpriced], NOW_S) == {unpriced.day}


def test_a_day_is_stored_with_its_totals_and_they_serve_whole_days_only() -> None:
    chunk = a_day()
    (totals,) = kpi_store.totals_from_result(stored_rows("b1", chunk, "kpi_day"))
    assert totals.coarse
    assert totals.currencies == ("EUR",)
    np.testing.assert_allclose(totals.buckets.sums[0], chunk.buckets.sums.sum(axis=0), rtol=1e-15, atol=1e-12)
    whole = ledger.totals([chunk.buckets])
    assert float(totals.buckets.first_t[0]) == whole.first_sample_s
    assert float(totals.buckets.last_soc[0]) == whole.soc_end_kwh
    book = KpiBook()
    assert book.accept_stored([totals], NOW_S) == {chunk.day}
    day_s = chunk.day * DAY_S
    got = book.window(day_s, day_s + DAY_S, NOW_S, hourly_prices(day_s - DAY_S, day_s + 2 * DAY_S))
    assert isinstance(got, ledger.Totals)  # the whole day is inside: its totals serve
    np.testing.assert_allclose(got.sums, chunk.buckets.sums.sum(axis=0), rtol=1e-15, atol=1e-12)
    prices = hourly_prices(day_s - DAY_S, day_s + 2 * DAY_S)
    assert book.window(day_s + 6 * 3600, day_s + DAY_S, NOW_S, prices) == [chunk.day]  # a cut needs the buckets
    # the buckets, once read, replace the totals and serve both; totals never replace buckets
    book.accept_stored(kpi_store.chunks_from_result(stored_rows("b1", chunk)), NOW_S)
    book.accept_stored([totals], NOW_S)
    cut = book.window(day_s + 6 * 3600, day_s + DAY_S, NOW_S, prices)
    assert isinstance(cut, ledger.Totals)
    np.testing.assert_allclose(cut.sums, chunk.buckets.sums[24:].sum(axis=0), rtol=1e-15, atol=1e-12)  # from 06:00
    assert cut[ledger.SAMPLES] < chunk.buckets.sums[:, ledger.SAMPLES].sum()


def test_a_day_stored_in_part_has_no_usable_totals() -> None:
    chunk = a_day()
    message = kpi_store.day_message(chunk)
    message.buckets.pop()
    lines = [line for line in kpi_lines("b1", message) if line.startswith("kpi_1d,")]
    assert "buckets=95.0" in lines[0]
    result = stored_rows("b1", chunk, "kpi_day")
    result.rows[0][result.columns.index("buckets")] = 95.0
    assert kpi_store.totals_from_result(result) == []


async def test_stored_days_are_read_as_totals_and_as_buckets_only_where_asked() -> None:
    chunks = {c.day: c for c in (a_day(),)}
    day = next(iter(chunks))
    b = chunks[day].buckets
    shifted = ledger.Buckets(b.edges + DAY_S, b.sums, b.first_t + DAY_S, b.first_soc, b.last_t + DAY_S, b.last_soc)
    neighbour = DayChunk(day + 1, shifted, NOW_S, final=True, currencies=("EUR",))
    asked: list[tuple[str, int]] = []

    async def ask(query: HistoryQuery) -> HistoryResult:
        asked.append((query.kind, query.limit))
        rows: list[list[object]] = []
        columns: list[str] = []
        for chunk in (chunks[day], neighbour):
            answer = stored_rows("b1", chunk, query.kind)
            columns = answer.columns
            begin_s, end_s = query.begin.timestamp(), query.end.timestamp()
            rows += [r for r in answer.rows if begin_s <= parse_times([r[0]])[0] < end_s]
        truncated = len(rows) > query.limit
        return HistoryResult(ok=True, columns=columns, rows=rows[: query.limit], truncated=truncated)

    found = await read_stored(ask, "b1", [day, day + 1], page_rows=100, fine=frozenset({day + 1}))
    kinds = [kind for kind, _ in asked]
    assert kinds[0] == "kpi_day"
    assert kinds[1:] == ["kpi"]  # the buckets of the one day asked for
    assert [(c.day, c.coarse) for c in found] == [(day, True), (day + 1, True), (day + 1, False)]


async def test_a_day_that_could_not_be_published_is_kept_for_the_next_time() -> None:
    book = KpiBook()
    book.computed(a_day())
    sent: list[KpiDay] = []

    async def fail(battery: str, message: KpiDay) -> None:
        raise BusUnavailable("broker away")

    async def send(battery: str, message: KpiDay) -> None:
        sent.append(message)

    with pytest.raises(BusUnavailable):
        await publish_new(fail, "b1", book)
    assert await publish_new(send, "b1", book) == 1
    assert len(sent[0].buckets) == 96
    assert await publish_new(send, "b1", book) == 0


def test_a_day_that_becomes_final_in_the_open_range_is_published_once() -> None:
    series = cycling(NOW_S - 2 * DAY_S, NOW_S - 30, step_s=300.0)
    prices = hourly_prices(NOW_S - 3 * DAY_S, NOW_S + DAY_S)
    book = KpiBook()
    earlier = NOW_S - DAY_S  # the day before yesterday is final then, yesterday is still open
    begin = book.open_from_s(earlier)
    book.merge_open(series.between(begin, NOW_S + 1), begin, NOW_S + 1, earlier)
    yesterday = ledger.day_of(NOW_S) - 1
    assert book.first_open_day(earlier) <= yesterday < book.first_open_day(NOW_S)
    assert isinstance(book.window(NOW_S - 6 * 3600, NOW_S, NOW_S, prices), ledger.Totals)
    assert yesterday in [c.day for c in book.take_unpublished()]  # final now: computed from the open range
    book.window(NOW_S - 6 * 3600, NOW_S, NOW_S, prices)
    assert book.take_unpublished() == []
