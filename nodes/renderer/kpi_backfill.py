"""``python -m nodes.renderer kpis backfill --battery B --begin ISO --end ISO [--force]``: compute and store the
final KPI days of a past range from the raw rows (after an upgrade, an import, or prices stored late).

For each final UTC day in ``[begin, end)`` (a day is final once its end is more than 6 h past: no sample within
reach of it can still be missing), day by day in runs of a week:

1. the days already stored completely (``kpi_15m``, 96 buckets) are left alone (``--force``: computed again,
   e.g. after prices were added for days that had unpriced energy, or raw rows were corrected);
2. the raw telemetry of the others is read page by page (with the 6 h around each day the energy model needs)
   and the prices of the zone, each day integrated with the renderer's one energy model
   (:func:`nodes.renderer.kpis.compute_day`) and written as the 96 ``kpi_15m`` points of its KpiDay, exactly as
   the recorder stores what the renderer publishes (:func:`nodes.recorder.points.kpi_lines`).

A maintenance tool run next to the database, like ``python -m nodes.recorder migrate``: it reads and writes
through the recorder's own store adapter (``BESS_STORE``, ``BESS_INFLUX_*``), so it reads exactly what the
recorder would answer, and needs no broker. Idempotent (same raw rows: the same points, overwritten) and safe
to interrupt (run it again). One line per day; exit 0 when every day is stored, 1 on a store error.
A running renderer keeps the days it already holds in memory until restarted (after ``--force``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from nodes.contract.messages import HistoryQuery, HistoryResult
from nodes.recorder.config import RecorderConfig
from nodes.recorder.points import kpi_lines
from nodes.recorder.store import Store, StoreError, StoreUnavailable, make_store
from nodes.renderer import kpi_store, ledger
from nodes.renderer.kpi_days import read_stored
from nodes.renderer.kpis import DayFiller, KpiBook, compute_day, runs
from nodes.renderer.pages import Ask, pages
from nodes.renderer.series import PriceSeries, TelemetrySeries
from nodes.runtime.config import load_or_exit

RUN_DAYS = 7
PAGE_ROWS = 50_000


def _ask(store: Store) -> Ask:
    async def ask(query: HistoryQuery) -> HistoryResult:
        result = await store.query(query)
        if not result.ok:
            raise StoreError(result.error or "query failed")
        return result

    return ask


def _day_text(day: int) -> str:
    return datetime.fromtimestamp(day * ledger.DAY_S, UTC).date().isoformat()


async def backfill(
    store: Store, battery: str, zone: str, begin_s: float, end_s: float, *, force: bool = False,
    now_s: float | None = None, out: Callable[[str], None] | None = None,
) -> int:
    """Compute and store the final days of ``[begin_s, end_s)``; the number of days written."""
    write = out or (lambda text: print(text, flush=True))
    now_s = time.time() if now_s is None else now_s
    book = KpiBook()
    ask = _ask(store)
    first, last = ledger.day_of(begin_s), ledger.day_of(math.nextafter(end_s, -math.inf))
    days = [d for d in range(first, last + 1) if book.ledger.is_final(d, now_s)]
    if len(days) < last - first + 1:
        write(f"{last - first + 1 - len(days)} day(s) at the end are not final yet (the renderer stores them itself)")
    written = 0
    for run in [r[i : i + RUN_DAYS] for r in runs(days) for i in range(0, len(r), RUN_DAYS)]:
        todo = list(run)
        if not force:
            stored = {c.day for c in await read_stored(ask, battery, run, PAGE_ROWS)}  # whole days (totals)
            for day in run:
                if day in stored:
                    write(f"{_day_text(day)}  already stored")
            todo = [d for d in run if d not in stored]
        for sub in runs(todo):
            filler = DayFiller(list(sub))
            price_parts = [PriceSeries.from_history(r) async for r, _ in pages(
                ask, "prices", *_price_days(filler.begin_s, filler.end_s), PAGE_ROWS, zone=zone)]
            prices = PriceSeries.empty().merge(*price_parts)
            async for result, complete in pages(ask, "telemetry", filler.begin_s, filler.end_s, PAGE_ROWS,
                                                battery=battery):
                for day, rows in filler.feed(TelemetrySeries.from_history(result), complete):
                    chunk = compute_day(day, rows, prices, now_s, book)
                    outcome = await store.write(kpi_lines(battery, kpi_store.day_message(chunk)))
                    if outcome.rejected:
                        raise StoreError(f"{_day_text(day)}: the store refused {len(outcome.rejected)} point(s): "
                                         f"{outcome.rejected[0].reason}")
                    sums = chunk.buckets.sums.sum(axis=0)
                    money = f"{sums[ledger.REVENUE]:,.2f} {'/'.join(chunk.currencies) or '(unpriced)'}"
                    write(f"{_day_text(day)}  {int(sums[ledger.SAMPLES]):,} samples  charged "
                          f"{sums[ledger.CHARGED]:,.3f} kWh  discharged {sums[ledger.DISCHARGED]:,.3f} kWh  "
                          f"revenue {money}  unpriced {sums[ledger.UNPRICED]:,.3f} kWh  stored")
                    written += 1
    return written


def _price_days(begin_s: float, end_s: float) -> tuple[float, float]:
    return math.floor(begin_s / ledger.DAY_S) * ledger.DAY_S, math.ceil(end_s / ledger.DAY_S) * ledger.DAY_S


def _time(text: str, name: str) -> float:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"kpis backfill: --{name} {text!r} is not an ISO time (e.g. 2025-01-14T00:00:00Z)") from None
    if value.tzinfo is None:
        raise SystemExit(f"kpis backfill: --{name} {text!r} has no time zone: add Z for UTC")
    return value.timestamp()


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``python -m nodes.renderer kpis backfill ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m nodes.renderer kpis backfill",
        description="Compute and store the final KPI days (kpi_15m) of a past range from raw telemetry.",
    )
    parser.add_argument("--battery", required=True, help="battery id")
    parser.add_argument("--begin", required=True, help="ISO time, e.g. 2025-01-01T00:00:00Z (its UTC day)")
    parser.add_argument("--end", required=True, help="ISO time (exclusive)")
    parser.add_argument("--zone", default=None, help="price zone (default: BESS_RENDERER_ZONE, else de-lu)")
    parser.add_argument("--force", action="store_true", help="compute and write days that are stored already")
    args = parser.parse_args(argv)
    env = environ if environ is not None else os.environ
    zone = args.zone or env.get("BESS_RENDERER_ZONE") or "de-lu"
    begin_s, end_s = _time(args.begin, "begin"), _time(args.end, "end")
    if end_s <= begin_s:
        raise SystemExit("kpis backfill: --end must be after --begin")
    config = load_or_exit(RecorderConfig, "renderer kpis backfill", environ)

    async def run() -> int:
        store = make_store(config)
        await store.open()
        try:
            started = time.monotonic()
            n = await backfill(store, args.battery, zone, begin_s, end_s, force=args.force)
            print(f"{n} day(s) computed and stored in {time.monotonic() - started:.1f} s", flush=True)
            return 0
        except (StoreError, StoreUnavailable) as exc:
            print(f"kpis backfill: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    return asyncio.run(run())


__all__ = ["backfill", "main"]
