"""Offline planner: ``plan`` one horizon from a price CSV, or ``backtest`` a whole file day by day.

``python -m nodes.planner plan|backtest ...`` lands here. Exit status: 0 done, 1 the optimiser could not plan
(:class:`PlanError`), 2 unusable input (arguments, price CSV, battery JSON), each with one line on stderr.
``plan`` writes the Schedule JSON to stdout (for tools) and a summary for people to stderr (``--quiet``: none);
``backtest`` writes its table to stdout and progress to stderr. The backtest plans local delivery days of
``--tz`` (Europe/Berlin, the day-ahead market's days) and says so, with the partial days at either end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from nodes.contract.energy import slot_hours
from nodes.contract.messages import CURRENCY_RE, DEFAULT_CURRENCY, BatterySpec, PriceSlot
from nodes.market.prices_csv import DEFAULT_TZ, PriceCsvError, read_prices, select, split_days
from nodes.planner import baseline, report
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
    progress = _Progress(len(days)) if sys.stderr.isatty() else None
    started = time.perf_counter()
    with _native_stdout_to_stderr():
        result = run_backtest(days, spec, soc0, options=options, source=Path(args.prices).name, progress=progress,
                              tz=args.tz, currency=args.currency)
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


def run_backtest(
    days: Sequence[tuple[date, list[PriceSlot]]],
    spec: BatterySpec,
    soc_initial_kwh: float,
    *,
    options: PlanOptions = PlanOptions(),  # noqa: B008 - frozen, never mutated
    source: str = "",
    progress: Callable[[int], None] | None = None,
    tz: str = DEFAULT_TZ,
    currency: str = DEFAULT_CURRENCY,
) -> report.Backtest:
    """Plan each local day (of ``tz``, as ``days`` were split) with that day's prices only, carrying each
    strategy's SOC to the next day.

    Every day the optimiser must end at or above the SOC it started the day with, and so must the baselines
    (:func:`baseline.top_n_daily`, :func:`baseline.threshold`, which pick their slots per day of the same zone).
    """
    options = msgspec.structs.replace(options, terminal_soc_kwh=None)
    strategies: dict[str, Callable[[list[PriceSlot], float], baseline.Dispatch]] = {
        "top-N daily": lambda day, soc: baseline.top_n_daily(day, spec, soc, tz=tz),
        "threshold": lambda day, soc: baseline.threshold(day, spec, soc, tz=tz),
    }
    names = ["optimiser", *strategies]
    socs = dict.fromkeys(names, soc_initial_kwh)
    powers: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    daily: dict[str, list[float]] = {name: [] for name in names}
    solve_ms: list[float] = []
    plan_ms: list[float] = []
    all_slots: list[PriceSlot] = []
    for n, (day, slots) in enumerate(days, start=1):
        started = time.perf_counter()
        schedule = plan(
            slots, spec, socs["optimiser"], created_at=slots[0].start, options=options, plan_id=f"backtest-{day}",
            currency=currency,
        )
        plan_ms.append((time.perf_counter() - started) * 1000.0)
        solve_ms.append(schedule.solve_ms)
        dispatches = {"optimiser": baseline.dispatch_of(schedule)}
        dispatches.update({name: run(slots, socs[name]) for name, run in strategies.items()})
        for name, dispatch in dispatches.items():
            scored = baseline.evaluate_dispatch(dispatch, spec)
            daily[name].append(scored.revenue)
            powers[name].extend(dispatch.powers)
            socs[name] = scored.soc_final_kwh
        all_slots.extend(slots)
        if progress is not None:
            progress(n)
    runs = []
    for name in names:
        dispatch = baseline.Dispatch(slots=all_slots, powers=powers[name], soc_initial_kwh=soc_initial_kwh)
        runs.append(
            report.StrategyRun(
                name=name,
                dispatch=dispatch,
                evaluation=baseline.evaluate_dispatch(dispatch, spec),
                daily_revenue=daily[name],
            )
        )
    return report.Backtest(
        source=source, spec=spec, days=[day for day, _ in days], runs=runs, solve_ms=solve_ms, plan_ms=plan_ms,
        tz=tz, day_hours=[sum(slot_hours(slot) for slot in slots) for _, slots in days], currency=currency,
    )


class _Progress:
    """A one-line progress bar on stderr, redrawn with carriage returns."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.perf_counter()

    def __call__(self, done: int) -> None:
        filled = round(30 * done / self.total)
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} days {elapsed:5.1f} s")
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
