"""The planner CLI (plan / backtest) on small files, and the price CSV reader behind it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nodes.contract.messages import Schedule
from nodes.market.prices_csv import PriceCsvError, parse_prices, read_prices, select, split_days
from nodes.planner import backtest, cli
from nodes.planner import report as report_module

pytestmark = pytest.mark.filterwarnings("ignore:PULP_CBC_CMD is deprecated:DeprecationWarning")

BATTERY = {
    "capacity_kwh": 1000.0,
    "soc_min_kwh": 0.0,
    "soc_max_kwh": 1000.0,
    "max_charge_kw": 250.0,
    "max_discharge_kw": 250.0,
    "roundtrip_efficiency": 0.9,
}


def price_csv(path: Path, start: datetime, prices: list[float], minutes: int = 60) -> Path:
    rows = ["timestamp,price"] + [
        f"{(start + timedelta(minutes=minutes * i)):%Y-%m-%dT%H:%M:%SZ},{p}" for i, p in enumerate(prices)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def daily_prices(days: int) -> list[float]:
    shape = [40, 35, 30, 30, 35, 50, 80, 110, 100, 70, 40, 10, -5, 0, 20, 50, 90, 140, 160, 130, 100, 80, 60, 50]
    return [p + 7 * (d % 3) for d in range(days) for p in shape]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    # local days start at 23:00Z in winter (Europe/Berlin)
    prices = price_csv(tmp_path / "prices.csv", datetime(2023, 1, 1, 23, tzinfo=UTC), daily_prices(3))
    battery = tmp_path / "battery.json"
    battery.write_text(json.dumps(BATTERY))
    return prices, battery


# -- plan -----------------------------------------------------------------------------------------------------


def test_plan_prints_a_schedule(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prices, battery = files
    code = cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "200"])

    out = capsys.readouterr().out
    assert code == 0
    schedule = msgspec.json.decode(out, type=Schedule)
    assert len(schedule.slots) == 72
    assert schedule.soc_initial_kwh == 200.0
    assert schedule.slots[-1].soc_kwh >= 200.0 - 1e-6
    assert schedule.expected_revenue > 0
    assert schedule.solver == "cbc"


def test_plan_with_window_and_options(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prices, battery = files
    code = cli.main([
        "plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "0",
        "--begin", "2023-01-02T23:00:00Z", "--end", "2023-01-03T23:00:00+00:00",
        "--terminal-soc-kwh", "500", "--switch-penalty", "1.5", "--solver", "highs",
    ])

    schedule = msgspec.json.decode(capsys.readouterr().out, type=Schedule)
    assert code == 0
    assert len(schedule.slots) == 24
    assert schedule.slots[0].start == datetime(2023, 1, 2, 23, tzinfo=UTC)
    assert schedule.slots[-1].soc_kwh == pytest.approx(500.0)
    assert schedule.solver == "highs"


def test_plan_stdout_is_pure_json_even_with_the_highs_banner(files: tuple[Path, Path]) -> None:
    # HiGHS prints its banner with C stdio once per process: only a fresh process shows whether it leaks
    prices, battery = files
    argv = ["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "0", "--solver", "highs"]
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; from nodes.planner.cli import main; sys.exit(main({argv!r}))"],
        capture_output=True, check=False, timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert msgspec.json.decode(done.stdout, type=Schedule).solver == "highs"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({**BATTERY, "capcity_kwh": 5}, "unknown field `capcity_kwh`"),
        ({k: v for k, v in BATTERY.items() if k != "max_charge_kw"}, "missing required field `max_charge_kw`"),
        ({**BATTERY, "soc_min_kwh": -1}, "Expected `float` >= 0.0"),
        ({**BATTERY, "max_charge_kw": "250"}, "Expected `float`, got `str`"),
        ({**BATTERY, "soc_min_kwh": 900, "soc_max_kwh": 100}, "soc_min_kwh is above soc_max_kwh"),
        ("{not json", "malformed"),
    ],
)
def test_bad_battery_json_exits_2_with_one_line(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], content: object, message: str
) -> None:
    prices, battery = files
    battery.write_text(content if isinstance(content, str) else json.dumps(content))

    code = cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "0"])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: {battery}: ")
    assert message in captured.err


def test_bad_price_row_exits_2_naming_the_line(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prices, battery = files
    lines = prices.read_text().splitlines()
    lines[4] = lines[4].split(",")[0] + ",cheap"
    prices.write_text("\n".join(lines))

    code = cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "0"])

    assert code == 2
    assert f"{prices}:5: bad price 'cheap'" in capsys.readouterr().err


def test_unplannable_input_exits_1(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prices, battery = files
    code = cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "2000"])

    assert code == 1
    assert "plan failed: initial SOC 2000.0 kWh is outside" in capsys.readouterr().err


def test_usage_errors_exit_2(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prices, battery = files
    assert cli.main(["plan", "--prices", str(prices), "--battery", str(battery)]) == 2
    assert cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "0",
                     "--begin", "2023-01-02T00:00"]) == 2
    assert "has no time zone" in capsys.readouterr().err


# -- backtest -------------------------------------------------------------------------------------------------


def test_backtest_prints_the_summary_and_writes_the_report(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    report = tmp_path / "report.html"

    code = cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--days", "2",
                     "--report", str(report), "--foresight", "day"])

    out = capsys.readouterr().out
    assert code == 0
    assert "2 delivery days 2023-01-02 .. 2023-01-03 in Europe/Berlin" in out
    assert "foresight per day: each local day planned alone with its own prices, the SOC carried over" in out
    for label in ("revenue EUR", "full cycles", "avg buy price", "avg sell price", "lost to efficiency",
                  "optimiser / this", "solve time: total"):
        assert label in out
    header = next(line for line in out.splitlines() if "optimiser" in line and "threshold" in line)
    assert header.split() == ["optimiser", "top-N", "daily", "threshold"]
    html = report.read_text()
    assert "plotly.js v" in html  # the library is inlined: no CDN, no internet needed
    assert '<script src="http' not in html
    # the numbers are in the report as a table, the same as on stdout
    revenue = next(line for line in out.splitlines() if line.startswith("revenue EUR")).split()[2]
    assert "<th>revenue EUR</th><td>" + revenue + "</td>" in html
    assert "2 delivery days 2023-01-02 .. 2023-01-03 in Europe/Berlin" in html


def test_plan_prints_a_summary_for_people_on_stderr(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prices, battery = files
    code = cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "200"])

    captured = capsys.readouterr()
    assert code == 0
    schedule = msgspec.json.decode(captured.out, type=Schedule)  # stdout stays pure JSON
    lines = captured.err.splitlines()
    assert lines[0].split() == ["start", "(UTC)", "end", "action", "power", "kW", "price", "EUR/MWh", "SOC", "at",
                                "end", "kWh"]
    rows = lines[1:lines.index("")]
    # consecutive slots doing the same thing are one row
    assert 1 < len(rows) < len(schedule.slots)
    assert rows[0].startswith("2023-01-01 23:00")
    assert all(re.search(r"  (charge|discharge|idle) ", row) for row in rows)
    assert any(" charge " in row for row in rows)
    assert any(" discharge " in row for row in rows)
    assert f"SOC 200.0 -> {schedule.slots[-1].soc_kwh:,.1f} kWh" in captured.err
    assert f"expected revenue EUR {schedule.expected_revenue:,.2f}" in captured.err
    charged = sum(s.charge_kw * (s.end - s.start).total_seconds() / 3600 for s in schedule.slots)
    assert f"energy bought {charged:,.1f} kWh" in captured.err

    assert cli.main(["plan", "--prices", str(prices), "--battery", str(battery), "--soc-initial-kwh", "200",
                     "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_backtest_says_which_days_it_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 60 UTC days: 61 Berlin delivery days, the first and the last partial
    prices = price_csv(tmp_path / "prices.csv", datetime(2023, 1, 1, tzinfo=UTC), daily_prices(60))
    battery = tmp_path / "battery.json"
    battery.write_text(json.dumps(BATTERY))

    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery)]) == 0
    berlin = capsys.readouterr().out
    assert "61 delivery days 2023-01-01 .. 2023-03-02 in Europe/Berlin" in berlin
    assert "2 partial: 2023-01-01 (23 of 24 h), 2023-03-02 (1 of 24 h)" in berlin

    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--tz", "UTC"]) == 0
    utc = capsys.readouterr().out
    assert "60 delivery days 2023-01-01 .. 2023-03-01 in UTC" in utc
    assert "partial" not in utc

    assert cli.main(["backtest", "--prices", str(prices), "--battery", str(battery), "--tz", "Mars/Olympus"]) == 2
    assert "is not a time zone" in capsys.readouterr().err


def test_long_backtests_draw_the_soc_per_day(tmp_path: Path) -> None:
    prices = price_csv(tmp_path / "prices.csv", datetime(2023, 1, 1, 23, tzinfo=UTC), daily_prices(30))
    battery = tmp_path / "battery.json"
    battery.write_text(json.dumps(BATTERY))
    spec = cli.load_battery(battery)
    long = backtest.run_backtest(split_days(read_prices(prices)), spec, 0.0)
    short = backtest.run_backtest(split_days(read_prices(prices))[:3], spec, 0.0)

    def soc_traces(result: report_module.Backtest) -> list[Any]:
        return [t for t in report_module.figure(result).data if "SOC" in t.name]

    # 30 days: per strategy a daily band (max, min) and the day-end SOC, 30 points each, not 720
    assert {len(t.x) for t in soc_traces(long)} == {30}
    assert len(soc_traces(long)) == 3 * len(long.runs)
    optimiser = report_module.daily_soc(long.runs[0], "Europe/Berlin")
    socs = long.runs[0].evaluation.soc_kwh
    assert optimiser[0].high_kwh == max(socs[:24])
    assert optimiser[0].low_kwh == min(socs[:24])
    assert optimiser[-1].end_kwh == socs[-1]
    # a few days: slot by slot
    assert {len(t.x) for t in soc_traces(short)} == {72}


def test_run_backtest_carries_soc_and_beats_the_baselines(files: tuple[Path, Path]) -> None:
    prices, battery = files
    spec = cli.load_battery(battery)
    days = split_days(read_prices(prices))

    result = backtest.run_backtest(days, spec, 0.0)

    assert [run.name for run in result.runs] == ["optimiser", "top-N daily", "threshold"]
    optimiser, *baselines = result.runs
    assert len(optimiser.daily_revenue) == len(days) == 3
    assert sum(optimiser.daily_revenue) == pytest.approx(optimiser.evaluation.revenue)
    for run in result.runs:
        assert run.evaluation.violations == []
        assert len(run.dispatch.powers) == 72
    for run in baselines:
        for ours, theirs in zip(optimiser.daily_revenue, run.daily_revenue, strict=True):
            assert ours >= theirs - 1e-6


# -- prices CSV -----------------------------------------------------------------------------------------------


def test_parse_prices_slot_ends_and_last_step() -> None:
    slots = parse_prices("timestamp,price\n2025-10-01T00:00:00Z,1.5\n2025-10-01T00:15:00Z,-2\n")

    assert [(s.start.minute, s.end.minute, s.price_per_mwh) for s in slots] == [(0, 15, 1.5), (15, 30, -2.0)]
    assert slots[0].start.tzinfo is UTC


def test_parse_prices_follows_a_change_of_resolution() -> None:
    stamps = ["2025-09-30T21:00:00Z", "2025-09-30T22:00:00Z", "2025-09-30T22:15:00Z", "2025-09-30T22:30:00Z"]
    text = "timestamp,price\n" + "".join(f"{stamp},1\n" for stamp in stamps)
    slots = parse_prices(text)

    assert [s.end - s.start for s in slots] == [timedelta(hours=1)] + [timedelta(minutes=15)] * 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "<prices>:1: expected the header 'timestamp,price'"),
        ("time,value\n", "<prices>:1: expected the header"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1\n2023-01-01T01:00:00Z,1,2\n", "<prices>:3: expected 2 fields"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1\nyesterday,1\n", "<prices>:3: bad timestamp 'yesterday'"),
        ("timestamp,price\n2023-01-01T00:00:00,1\n", "<prices>:2: timestamp '2023-01-01T00:00:00' has no time zone"),
        ("timestamp,price\n2023-01-01T00:00:00Z,nan\n", "<prices>:2: price 'nan' is outside"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1e6\n", "<prices>:2: price '1e6' is outside"),
        ("timestamp,price\n2023-01-01T01:00:00Z,1\n2023-01-01T00:00:00Z,1\n", "<prices>:3: .* is not after"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1\n2023-01-01T00:00:00Z,1\n", "without duplicates"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1\n2023-01-01T03:00:00Z,1\n", "<prices>:3: gap of 3:00:00"),
        ("timestamp,price\n2023-01-01T00:00:00Z,1\n", "need at least 2 rows"),
    ],
)
def test_parse_prices_rejects_bad_rows_with_the_line(text: str, message: str) -> None:
    with pytest.raises(PriceCsvError, match=message):
        parse_prices(text)


def test_read_prices_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PriceCsvError, match="cannot read"):
        read_prices(tmp_path / "missing.csv")


def test_split_days_follows_berlin_dst() -> None:
    # 2023-03-26 (spring forward) is 23 hours long, 2023-10-29 (fall back) 25
    start = datetime(2023, 3, 24, 23, tzinfo=UTC)
    spring = parse_prices("timestamp,price\n" + "\n".join(
        f"{start + timedelta(hours=i):%Y-%m-%dT%H:%M:%SZ},1" for i in range(24 * 3)))
    start = datetime(2023, 10, 27, 22, tzinfo=UTC)
    autumn = parse_prices("timestamp,price\n" + "\n".join(
        f"{start + timedelta(hours=i):%Y-%m-%dT%H:%M:%SZ},1" for i in range(24 * 3)))

    assert [(day, len(slots)) for day, slots in split_days(spring)] == [
        (date(2023, 3, 25), 24), (date(2023, 3, 26), 23), (date(2023, 3, 27), 24), (date(2023, 3, 28), 1)]
    assert [(day, len(slots)) for day, slots in split_days(autumn)][:3] == [
        (date(2023, 10, 28), 24), (date(2023, 10, 29), 25), (date(2023, 10, 30), 23)]


def test_select_keeps_slots_inside_the_window() -> None:
    slots = parse_prices("timestamp,price\n" + "\n".join(f"2023-01-01T{h:02d}:00:00Z,{h}" for h in range(6)))
    begin, end = datetime(2023, 1, 1, 1, tzinfo=UTC), datetime(2023, 1, 1, 4, tzinfo=UTC)

    assert [s.price_per_mwh for s in select(slots, begin, end)] == [1, 2, 3]
    assert len(select(slots, None, None)) == 6
