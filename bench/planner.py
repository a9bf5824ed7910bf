"""Planner benchmark: model build + solve time per horizon and solver, and a full-year backtest.

Run: ``.venv/bin/python bench/planner.py [--repeat 5] [--year PATH.csv]``. Prices come from the shared
de_lu 2023 file when present (the first N slots of a 15-min file for 96/672), otherwise from a seeded
synthetic daily shape. Battery: 1 MWh usable, 250 kW both ways, eta 0.9.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from nodes.contract.messages import BatterySpec, PriceSlot
from nodes.market.prices_csv import read_prices, split_days
from nodes.planner.backtest import run_backtest
from nodes.planner.model import PlanOptions, plan

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/prices"
HOURLY = SHARED / "de_lu_dayahead_2023_hourly.csv"
QUARTER = SHARED / "de_lu_dayahead_2025-10_2026-08_15min.csv"
SPEC = BatterySpec(
    capacity_kwh=1000, soc_min_kwh=0, soc_max_kwh=1000, max_charge_kw=250, max_discharge_kw=250,
    roundtrip_efficiency=0.9,
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def horizon(n: int, minutes: int) -> list[PriceSlot]:
    """``n`` slots of real prices if the shared files are there, else a noisy synthetic daily shape."""
    source = HOURLY if minutes == 60 else QUARTER
    if source.exists():
        slots = read_prices(source)
        middle = len(slots) // 2  # mid-file: summer, with negative prices
        return slots[middle : middle + n]
    rng = np.random.default_rng(n)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    step = timedelta(minutes=minutes)
    hours_of_day = np.arange(n) * minutes / 60 % 24
    prices = 90 - 60 * np.cos(2 * np.pi * (hours_of_day - 3) / 24) + rng.normal(0, 25, n)
    return [
        PriceSlot(start=start + i * step, end=start + (i + 1) * step, price_per_mwh=round(float(p), 2))
        for i, p in enumerate(prices)
    ]


@contextlib.contextmanager
def quiet_fd1() -> Iterator[None]:
    """HiGHS prints a banner on fd 1 once per process; keep the table clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def time_plans(repeat: int) -> None:
    header = ("slots", "step", "solver", "total ms", "solve ms", "build+publish ms", "EUR")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 6, 6, 9, 9, 17, 10), strict=True)))
    for n, minutes in ((24, 60), (96, 15), (672, 15)):
        prices = horizon(n, minutes)
        totals: dict[str, float] = {}
        for solver in ("cbc", "highs"):
            total, solve, revenue = [], [], 0.0
            for _ in range(repeat):
                started = time.perf_counter()
                with quiet_fd1():
                    schedule = plan(prices, SPEC, 0.0, created_at=NOW, options=PlanOptions(solver=solver))
                total.append((time.perf_counter() - started) * 1000)
                solve.append(schedule.solve_ms)
                revenue = schedule.expected_revenue
            t, s = statistics.median(total), statistics.median(solve)
            totals[solver] = t
            print(f"{n:>6} {minutes:>4}min {solver:>6} {t:>9.1f} {s:>9.1f} {t - s:>17.1f} {revenue:>10.2f}")
        print(f"{'':>6} {'':>6} {'ratio':>6} highs/cbc total = {totals['highs'] / totals['cbc']:.2f}")


def time_backtest(path: Path) -> None:
    if not path.exists():
        print(f"backtest: {path} not present, skipped")
        return
    days = split_days(read_prices(path))
    for solver in ("cbc", "highs"):
        started = time.perf_counter()
        with quiet_fd1():
            result = run_backtest(days, SPEC, 0.0, options=PlanOptions(solver=solver), source=path.name)
        elapsed = time.perf_counter() - started
        revenues = "  ".join(f"{run.name} {run.evaluation.revenue:,.2f} EUR" for run in result.runs)
        print(
            f"backtest {path.name} ({len(days)} days, {solver}): {elapsed:.2f} s wall, "
            f"solver {sum(result.solve_ms) / 1000:.2f} s, mean {statistics.mean(result.solve_ms):.1f} ms/day"
        )
        print(f"  {revenues}")
        ratios = "  ".join(
            f"optimiser/{run.name} {result.runs[0].evaluation.revenue / run.evaluation.revenue:.3f}"
            for run in result.runs[1:]
            if run.evaluation.revenue > 0
        )
        print(f"  {ratios}")


def main() -> None:
    """Print the benchmark tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    parser.add_argument("--year", type=Path, default=HOURLY, help="price file for the backtest")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # PuLP 3.3's notice about PuLP 4.0
    time_plans(args.repeat)
    time_backtest(args.year)


if __name__ == "__main__":
    main()
