"""Offline planner: ``plan`` one horizon from a price CSV, or ``backtest`` a whole file day by day.

``python -m nodes.planner plan|backtest ...`` lands here. Exit status: 0 done, 1 the optimiser could not plan
(:class:`PlanError`), 2 unusable input (arguments, price CSV, battery JSON), each with one line on stderr.
``plan`` writes the Schedule JSON to stdout (for tools) and a summary for people to stderr (``--quiet``: none);
``backtest`` writes its table to stdout and progress to stderr. The backtest plans local delivery days of
``--tz`` (Europe/Berlin, the day-ahead market's days) and says so, with the partial days at either end; by
default only on what was published at the time (``--foresight day-ahead``, :mod:`nodes.planner.backtest`),
next to perfect foresight.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from nodes.contract.messages import CURRENCY_RE, DEFAULT_CURRENCY, BatterySpec
from nodes.market.prices_csv import DEFAULT_TZ, PriceCsvError, read_prices, select, split_days
from nodes.planner import report
from nodes.planner.backtest import DEFAULT_PUBLISHED_AT, perfect_window, run_backtest, run_day_ahead_backtest
from nodes.planner.model import PlanError, PlanOptions, plan


class InputError(ValueError):
    """An input file or argument that cannot be used (exit status 2)."""


class _StrictBatterySpec(BatterySpec, forbid_unknown_fields=True):
    """BatterySpec as a config file: a misspelt field is an error, not a silent default."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (InputError, PriceCsvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PlanError as exc:
        print(f"plan failed: {exc}", file=sys.stderr)
        return 1


def load_battery(path: str | Path) -> BatterySpec:
    """Read a BatterySpec JSON file strictly (unknown fields, wrong types, bad bounds are errors)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        strict = msgspec.json.decode(raw, type=_StrictBatterySpec)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    spec = BatterySpec(**msgspec.structs.asdict(strict))
    if problems := spec.problems():
        raise InputError(f"{path}: " + "; ".join(problems))
    return spec


# -- plan ---------------------------------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> int:
    spec = load_battery(args.battery)
    slots = select(read_prices(args.prices), args.begin, args.end)
    if not slots:
        raise InputError(f"{args.prices}: no price slots between {args.begin} and {args.end}")
    options = PlanOptions(
        terminal_soc_kwh=args.terminal_soc_kwh,
        switch_penalty=args.switch_penalty,
        min_dwell_slots=args.min_dwell_slots,
        full_charge_every_slots=args.full_charge_every_slots,
        solver=args.solver,
        time_limit_s=args.time_limit_s,
    )
    with _native_stdout_to_stderr():
        schedule = plan(slots, spec, args.soc_initial_kwh, created_at=datetime.now(UTC), options=options,
                        currency=args.currency)
    sys.stdout.write(msgspec.json.encode(schedule).decode() + "\n")
    sys.stdout.flush()
    if not args.quiet:
        print(report.plan_summary(schedule), file=sys.stderr)
    return 0


# -- backtest -----------------------------------------------------------------------------------------------


def _backtest(args: argparse.Namespace) -> int:
    spec = load_battery(args.battery)
    try:
        ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"--tz {args.tz!r} is not a time zone (e.g. Europe/Berlin, UTC)") from None
    slots = select(read_prices(args.prices), args.begin, args.end)
    days = split_days(slots, args.tz)
    if args.days is not None:
        days = days[: args.days]
    if not days:
        raise InputError(f"{args.prices}: no days to backtest")
    soc0 = spec.soc_min_kwh if args.soc_initial_kwh is None else args.soc_initial_kwh
    options = PlanOptions(switch_penalty=args.switch_penalty, solver=args.solver)
    day_ahead = args.foresight == "day-ahead"
    published_at = _published_at(args.published_at, day_ahead=day_ahead)
    window = _perfect_window(args.perfect_window_days, day_ahead=day_ahead,
                             slot_count=sum(len(day_slots) for _, day_slots in days))
    # per-day plans, then about one day-ahead plan per day
    progress = _Progress(2 * len(days) if day_ahead else len(days)) if sys.stderr.isatty() else None
    started = time.perf_counter()
    with _native_stdout_to_stderr():
        if day_ahead:
            result = run_day_ahead_backtest(
                days, spec, soc0, options=options, source=Path(args.prices).name, progress=progress, tz=args.tz,
                currency=args.currency, published_at=published_at, perfect_window_days=window)
        else:
            result = run_backtest(days, spec, soc0, options=options, source=Path(args.prices).name,
                                  progress=progress, tz=args.tz, currency=args.currency)
    elapsed = time.perf_counter() - started
    if progress is not None:
        progress.done()
    print(report.summary_table(result))
    print(f"backtest wall time: {elapsed:.2f} s")
    if args.report is not None:
        try:
            Path(args.report).write_text(report.html_page(result), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.report}: cannot write the report: {exc.strerror or exc}") from exc
        print(f"report written to {args.report}")
    return 0


def _published_at(text: str | None, *, day_ahead: bool) -> clock_time:
    """``--published-at HH:MM`` (00:00 to 23:59), only with the day-ahead foresight."""
    if text is None:
        return DEFAULT_PUBLISHED_AT
    if not day_ahead:
        raise InputError("--published-at applies to --foresight day-ahead only")
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    try:
        if match is None:
            raise ValueError(text)
        return clock_time(int(match[1]), int(match[2]))
    except ValueError:
        raise InputError(f"--published-at {text!r} is not a time of day HH:MM, 00:00 to 23:59 "
                         "(e.g. 12:45, the day before delivery)") from None


def _perfect_window(text: str | None, *, day_ahead: bool, slot_count: int) -> int | None:
    """``--perfect-window-days N|all`` (default: the whole file up to 10,000 slots, else 7 days)."""
    if text is None:
        return perfect_window(slot_count)
    if not day_ahead:
        raise InputError("--perfect-window-days applies to --foresight day-ahead only")
    if text == "all":
        return None
    try:
        return perfect_window(slot_count, int(text))
    except ValueError:
        raise InputError(f"--perfect-window-days {text!r} is not a number of days >= 1 or 'all'") from None


class _Progress:
    """A one-line progress bar on stderr, redrawn with carriage returns."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()

    def __call__(self, done: int) -> None:
        done = min(done, self.total)
        filled = round(30 * done / self.total)
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} plans {elapsed:5.1f} s")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr: HiGHS prints its banner there with C stdio, which no Python
    redirect catches and which would corrupt the JSON on stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real descriptors (embedded interpreter): nothing to protect
        yield
        return
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# -- arguments ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nodes.planner", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True, metavar="{plan,backtest}")

    p = sub.add_parser("plan", help="optimal schedule for one horizon: Schedule JSON on stdout, a summary on stderr")
    _common(p)
    p.add_argument("--quiet", action="store_true", help="no summary on stderr (the JSON only)")
    p.add_argument("--soc-initial-kwh", type=float, required=True, help="SOC at the start of the horizon")
    p.add_argument("--terminal-soc-kwh", type=float, help="SOC to end at or above (default: the initial SOC)")
    p.add_argument("--min-dwell-slots", type=int, default=1, help="slots to keep a direction after a switch")
    p.add_argument("--full-charge-every-slots", type=int, help="reach soc_max in every window of this many slots")
    p.add_argument("--time-limit-s", type=float, help="fail when optimality is not proven within this time")
    p.set_defaults(command=_plan)

    b = sub.add_parser("backtest", help="plan every local day of the file and compare with baselines")
    _common(b)
    b.add_argument("--soc-initial-kwh", type=float, help="SOC on the first day (default: soc_min_kwh)")
    b.add_argument("--days", type=int, help="only the first N days")
    b.add_argument("--report", type=Path, help="write an HTML report: table and Plotly figure (self-contained, no CDN)")
    b.add_argument("--tz", default=DEFAULT_TZ, help="time zone of the delivery days (default: %(default)s)")
    b.add_argument("--foresight", choices=("day-ahead", "day"), default="day-ahead",
                   help="day-ahead: plan only on what was published at the time, next to perfect foresight; "
                        "day: each day alone with its own prices (default: %(default)s)")
    b.add_argument("--published-at", metavar="HH:MM",
                   help="when each day's prices are published, the day before, in --tz (default: 12:45)")
    b.add_argument("--perfect-window-days", metavar="N|all",
                   help="perfect foresight as a rolling plan knowing N days, or 'all': one plan over the whole "
                        "file (default: all up to 10,000 slots, else 7)")
    b.set_defaults(command=_backtest)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prices", required=True, type=Path,
                   help="CSV with header timestamp,price (UTC, per MWh in --currency)")
    p.add_argument("--currency", type=_currency, default=DEFAULT_CURRENCY,
                   help="ISO 4217 code of the CSV's prices; amounts are printed in it (default: %(default)s)")
    p.add_argument("--battery", required=True, type=Path, help="JSON with the BatterySpec fields")
    p.add_argument("--solver", choices=("cbc", "highs"), default="cbc", help="MILP solver (default: %(default)s)")
    p.add_argument("--switch-penalty", type=float, default=0.0, help="money per change of direction, in --currency")
    p.add_argument("--begin", type=_utc, help="first slot start to use (ISO-8601 with zone)")
    p.add_argument("--end", type=_utc, help="last slot end to use (ISO-8601 with zone)")


def _currency(text: str) -> str:
    if not CURRENCY_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an ISO 4217 currency code: {text!r} (3 capital letters, e.g. AUD)")
    return text


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +01:00)")
    return value.astimezone(UTC)
