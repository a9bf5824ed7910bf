"""The day-ahead (realistic) backtest against perfect foresight: known answers, invariants, the CLI's lines.

The realistic run may use only what was published at the time: day D at D-1 ``--published-at``. A hand-built
series where the best move needs knowledge beyond that horizon shows perfect > realistic by an amount computed
here by hand; a generated series checks realistic <= perfect, and that prices published later never change
what was executed before their publication.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from nodes.contract.messages import BatterySpec, PriceSlot
from nodes.market.prices_csv import read_prices, split_days
from nodes.planner import backtest, cli
from nodes.planner.model import PlanOptions

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

H = timedelta(hours=1)
SHARED_PRICES = Path(__file__).resolve().parents[3] / "shared" / "data" / "prices"

# r = sqrt(round trip) = 0.9 each way; it fills (1000 kWh) from empty within one hour
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=0, soc_max_kwh=1000, max_charge_kw=2000, max_discharge_kw=2000,
                   roundtrip_efficiency=0.81)


def hourly(start: datetime, prices: list[float]) -> list[PriceSlot]:
    return [PriceSlot(start=start + i * H, end=start + (i + 1) * H, price_per_mwh=p) for i, p in enumerate(prices)]


def beyond_the_horizon() -> list[PriceSlot]:
    """Three UTC days. Day 1: free at 01:00, 60 at 05:00, else 50; day 2: 50; day 3: 300 at 20:00, else 50."""
    day1 = [50.0] * 24
    day1[1], day1[5] = 0.0, 60.0
    day3 = [50.0] * 24
    day3[20] = 300.0
    return hourly(datetime(2025, 3, 3, tzinfo=UTC), day1 + [50.0] * 24 + day3)


def test_perfect_foresight_beats_the_day_ahead_run_by_the_computed_amount() -> None:
    slots = beyond_the_horizon()
    result = backtest.run_day_ahead_backtest(split_days(slots, "UTC"), SPEC, 0.0, tz="UTC",
                                             published_at=time(12, 0))
    realistic, perfect = result.runs[0], result.runs[1]
    assert (realistic.name, perfect.name) == ("day-ahead", "perfect foresight")
    r = math.sqrt(0.81)
    # Perfect: fill for free at day 1 01:00, hold, sell all at the spike: 1000 kWh * r at 300.
    assert perfect.evaluation.revenue == pytest.approx(300.0 * r, abs=1e-4)  # CBC gives 8 significant digits
    # Day-ahead: at the start it knows day 1 only: fill for free, sell at the day's best, 60 at 05:00 (60 r);
    # at day 1 12:00 it learns day 2 (flat: nothing to do); at day 2 12:00 it learns the spike, and must buy
    # again, at 50: 1000/r kWh at 50 (50/r), sold at 300 (300 r).
    assert realistic.evaluation.revenue == pytest.approx(60.0 * r + 300.0 * r - 50.0 / r, abs=1e-4)
    gap = perfect.evaluation.revenue - realistic.evaluation.revenue
    assert gap == pytest.approx(50.0 / r - 60.0 * r, abs=1e-4)  # 55.56 - 54.00 = 1.56 EUR
    assert result.foresight is not None
    assert result.foresight.plans == 3  # the start, day 1 12:00 (day 2 out), day 2 12:00 (day 3 out)
    assert [run.evaluation.violations for run in result.runs] == [[]] * len(result.runs)


def test_publications_are_the_day_before_in_the_delivery_time_zone() -> None:
    # Berlin: CET in winter (12:45 = 11:45Z), CEST after 26 March 2023 (12:45 = 10:45Z)
    assert backtest.publication(date(2023, 3, 26), time(12, 45), "Europe/Berlin") == datetime(2023, 3, 25, 11, 45,
                                                                                                 tzinfo=UTC)
    assert backtest.publication(date(2023, 3, 27), time(12, 45), "Europe/Berlin") == datetime(2023, 3, 26, 10, 45,
                                                                                                 tzinfo=UTC)
    slots = hourly(datetime(2023, 3, 24, 23, tzinfo=UTC), [1.0] * 71)  # 24..26 March, local
    assert backtest.decision_instants(slots, time(12, 45), "Europe/Berlin") == [
        datetime(2023, 3, 24, 23, tzinfo=UTC), datetime(2023, 3, 25, 11, 45, tzinfo=UTC),
        datetime(2023, 3, 26, 10, 45, tzinfo=UTC)]


def generated(days: int, seed: int, minutes: int = 60) -> list[PriceSlot]:
    """A day-shaped random series in Berlin days across the spring DST change, with negative prices."""
    rng = random.Random(seed)
    step = timedelta(minutes=minutes)
    start = datetime(2023, 3, 22, 23, tzinfo=UTC)
    count = days * 24 * 60 // minutes
    out = []
    for i in range(count):
        hour = (i * minutes / 60) % 24
        price = 80 + 60 * math.sin(2 * math.pi * hour / 24 - 1.8) + rng.gauss(0, 35)
        out.append(PriceSlot(start=start + i * step, end=start + (i + 1) * step,
                             price_per_mwh=round(price if rng.random() > 0.05 else -abs(price), 2)))
    return out


@pytest.mark.parametrize(("seed", "published_at", "minutes"), [(1, time(12, 45), 60), (2, time(0, 0), 60),
                                                               (3, time(23, 59), 60), (4, time(12, 45), 15)])
def test_the_day_ahead_run_never_beats_perfect_foresight(seed: int, published_at: time, minutes: int) -> None:
    slots = generated(8 if minutes == 60 else 4, seed, minutes)
    spec = msgspec.structs.replace(SPEC, max_charge_kw=250, max_discharge_kw=250, roundtrip_efficiency=0.88,
                                   cycle_cost_per_mwh=3.0)
    result = backtest.run_day_ahead_backtest(split_days(slots), spec, 0.0, published_at=published_at)
    realistic, perfect, per_day, *baselines = result.runs
    assert realistic.evaluation.violations == []
    assert realistic.evaluation.soc_final_kwh >= -1e-6  # ends at or above the initial SOC, like perfect
    bound = perfect.evaluation.revenue + 1e-6 * max(1.0, abs(perfect.evaluation.revenue))  # solver digits
    assert realistic.evaluation.revenue <= bound
    for other in (per_day, *baselines):
        assert other.evaluation.revenue <= bound, other.name
    assert sum(realistic.daily_revenue) == pytest.approx(realistic.evaluation.revenue)
    assert len(realistic.daily_revenue) == len(result.days)


def test_prices_published_later_never_change_what_was_executed_before() -> None:
    slots = generated(6, seed=7)
    days = split_days(slots)
    day5 = days[4][0]
    out = backtest.publication(day5, time(12, 45), "Europe/Berlin")
    changed = [PriceSlot(start=s.start, end=s.end, price_per_mwh=-s.price_per_mwh + 400.0)
               if s.start.astimezone(ZoneInfo("Europe/Berlin")).date() >= day5 else s for s in slots]
    options = PlanOptions(terminal_soc_kwh=0.0)
    spec = msgspec.structs.replace(SPEC, max_charge_kw=250, max_discharge_kw=250)
    first = backtest.day_ahead_dispatch(slots, spec, 0.0, options=options, tz="Europe/Berlin",
                                        published_at=time(12, 45))
    second = backtest.day_ahead_dispatch(changed, spec, 0.0, options=options, tz="Europe/Berlin",
                                         published_at=time(12, 45))
    before = sum(1 for s in slots if s.start < out)
    assert first.dispatch.powers[:before] == second.dispatch.powers[:before]
    assert first.dispatch.powers[before:] != second.dispatch.powers[before:]  # the change was seen, after it


# -- the command line ---------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    prices = tmp_path / "prices.csv"
    rows = [f"{s.start:%Y-%m-%dT%H:%M:%SZ},{s.price_per_mwh}" for s in beyond_the_horizon()]
    prices.write_text("timestamp,price\n" + "\n".join(rows) + "\n")
    battery = tmp_path / "battery.json"
    battery.write_text(json.dumps(msgspec.to_builtins(SPEC)))
    return prices, battery


def test_the_cli_prints_realistic_next_to_perfect_in_the_table_and_the_report(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    page = tmp_path / "report.html"
    code = cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--tz", "UTC",
                     "--published-at", "12:00", "--report", str(page)])
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if "perfect foresight" in line and "threshold" in line)
    assert header.split() == ["day-ahead", "perfect", "foresight", "per", "day", "top-N", "daily", "threshold"]
    r = math.sqrt(0.81)
    real, perfect = 60.0 * r + 300.0 * r - 50.0 / r, 300.0 * r
    share = f"{real / perfect:.3f}"
    assert f"day-ahead / perfect foresight: {share} (EUR {real:,.2f} of EUR {perfect:,.2f})" in out
    row = next(line for line in out.splitlines() if line.startswith("share of perfect foresight")).split()
    assert row[4:6] == [share, "1.000"]
    assert ("foresight day-ahead: re-planned at each publication (12:00 UTC the day before delivery) on the rest "
            "of today and all of tomorrow, 3 plans; perfect foresight: one plan over all 72 slots") in out
    html = page.read_text()
    assert f"day-ahead / perfect foresight: {share} (EUR {real:,.2f} of EUR {perfect:,.2f})" in html
    assert f"<th>share of perfect foresight</th><td>{share}</td><td>1.000</td>" in html

    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--foresight", "day"]) == 0
    assert "perfect" not in capsys.readouterr().out  # the per-day mode's table, as before


@pytest.mark.parametrize("bad", ["25:00", "12:60", "12", "noon", "12:45:00", ""])
def test_a_bad_published_at_exits_2_with_one_line(
    bad: str, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--published-at", bad]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --published-at {bad!r} is not a time of day HH:MM, 00:00 to 23:59 (e.g. 12:45, the day "
                   "before delivery)\n")


def test_options_of_the_day_ahead_mode_are_refused_with_the_per_day_mode(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    base = ["backtest", "--prices", str(prices), "--battery", str(battery)]
    assert cli.main([*base, "--foresight", "day", "--published-at", "12:45"]) == 2
    assert capsys.readouterr().err == "error: --published-at applies to --foresight day-ahead only\n"
    assert cli.main([*base, "--foresight", "day", "--perfect-window-days", "3"]) == 2
    assert capsys.readouterr().err == "error: --perfect-window-days applies to --foresight day-ahead only\n"
    for bad in ("0", "week"):
        assert cli.main([*base, "--perfect-window-days", bad]) == 2
        assert capsys.readouterr().err == f"error: --perfect-window-days {bad!r} is not a number of days >= 1 or " \
                                          "'all'\n"


def test_perfect_foresight_is_one_plan_up_to_a_year_of_hours_then_a_rolling_week() -> None:
    assert backtest.perfect_window(8_784) is None  # a leap year of hourly prices: one plan
    assert backtest.perfect_window(10_001) == 7  # a year of quarter-hours: a week at a time, and it says so
    assert backtest.perfect_window(35_000, "all") is None
    assert backtest.perfect_window(100, 2) == 2


def test_a_rolling_perfect_foresight_is_said_and_stays_above_the_day_ahead_run(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--tz", "UTC",
                     "--published-at", "12:00", "--perfect-window-days", "3"]) == 0
    out = capsys.readouterr().out
    assert "perfect foresight: a rolling plan re-made each day knowing the next 3 days" in out
    assert "perfect foresight 0." in out or "perfect foresight 1." in out  # its solve time, 3 plans
    assert "(3 plans); per-day optimiser" in out


@pytest.mark.skipif(not SHARED_PRICES.is_dir(), reason="../shared/data/prices is not here (a clone without the "
                    "shared price files): the check on real prices needs them")
def test_on_a_quarter_of_real_prices_the_day_ahead_run_stays_below_perfect_foresight() -> None:
    # July to September 2023 in DE-LU, with the -500 EUR/MWh hour of 2 July
    slots = [s for s in read_prices(SHARED_PRICES / "de_lu_dayahead_2023_hourly.csv")
             if datetime(2023, 6, 30, 22, tzinfo=UTC) <= s.start < datetime(2023, 9, 30, 22, tzinfo=UTC)]
    spec = cli.load_battery(Path(__file__).resolve().parents[2] / "examples" / "BATTERY.json")
    result = backtest.run_day_ahead_backtest(split_days(slots), spec, spec.soc_min_kwh)
    realistic, perfect = result.runs[0].evaluation, result.runs[1].evaluation
    assert len(result.days) == 92
    assert result.foresight is not None
    assert result.foresight.perfect_window_days is None  # one plan over the quarter
    assert realistic.violations == perfect.violations == []
    assert realistic.soc_final_kwh >= spec.soc_min_kwh - 1e-6
    assert 0 < realistic.revenue <= perfect.revenue * (1 + 1e-6)
