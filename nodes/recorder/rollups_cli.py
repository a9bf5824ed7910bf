"""``python -m nodes.recorder rollups check`` and ``... rollups backfill --begin ISO --end ISO [--battery ID]``.

``check``: exit 0 when every rollup CQ and RP exists as configured (the recorder's ``BESS_RECORDER_ROLLUP*`` and
database settings; with ``BESS_RECORDER_ROLLUPS=0``: when none of its CQs is left), else exit 1 with one line per
problem; it changes nothing (the recorder fixes them at start).
``backfill``: the CQs' own SELECT ... INTO over a past range, day by day, the 1-min rollup before the 1-h one,
one progress line per chunk; idempotent, safe to interrupt and run again. Exit 2: bad arguments or settings,
3: the database refused or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from nodes.recorder.config import RecorderConfig
from nodes.recorder.rollup_admin import RollupSettings, backfill, check, read_coverage, shown
from nodes.recorder.rollups import owner
from nodes.recorder.store import Influx1Store, StoreError, StoreUnavailable
from nodes.runtime.config import load_or_exit


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset (e.g. 2025-01-01T00:00:00Z)")
    return value.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nodes.recorder rollups", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 0 when every rollup CQ and RP is as configured, else 1")
    fill = commands.add_parser("backfill", help="compute the rollups of a past range")
    fill.add_argument("--begin", type=_time, required=True, help="ISO 8601 with offset, e.g. 2025-01-01T00:00:00Z")
    fill.add_argument("--end", type=_time, required=True)
    fill.add_argument("--battery", help="one battery only (default: all)")
    return parser


async def _run(args: argparse.Namespace, config: RecorderConfig) -> int:
    store = Influx1Store(config.influx_url, config.influx_db, username=config.influx_username,
                         password=config.influx_password, token=config.influx_token,
                         timeout_s=max(config.influx_timeout_s, 300.0))  # a day of 1 Hz points takes a while
    settings = RollupSettings.from_config(config)
    try:
        if not config.recorder_rollups:
            if args.command == "backfill":
                print("rollups backfill: rollups are off (BESS_RECORDER_ROLLUPS=0)", file=sys.stderr)
                return 2
            left = [name for name in (await shown(store))[0] if owner(name) is not None]
            for name in left:
                print(f"continuous query {name} exists though rollups are off (the recorder drops it at start)")
            if not left:
                print(f"rollups of {config.influx_db}: off (BESS_RECORDER_ROLLUPS=0), and no CQ of theirs is left")
            return 1 if left else 0
        if args.command == "check":
            problems = await check(store, settings)
            for change in problems:
                print(change.problem)
            if not problems:
                print(f"rollups of {config.influx_db}: every CQ and retention policy is as configured")
                for name, covered in sorted((await read_coverage(store)).items()):
                    print(f"{name}: complete from {covered.since.isoformat()} (older history: raw points)")
            return 1 if problems else 0
        started = time.monotonic()
        written = await backfill(store, settings, args.begin, args.end, battery=args.battery,
                                 progress=lambda line: print(line, flush=True))
        print(f"back-filled {written} rollup points in {time.monotonic() - started:.1f} s")
        return 0
    except (StoreError, StoreUnavailable) as exc:
        print(f"rollups {args.command}: {exc}", file=sys.stderr)
        return 3
    finally:
        await store.close()


def main(argv: Sequence[str]) -> int:
    """Run ``rollups check`` or ``rollups backfill``; the exit status."""
    args = _parser().parse_args(list(argv))
    if args.command == "backfill" and args.begin >= args.end:
        print("rollups backfill: --begin must be before --end", file=sys.stderr)
        return 2
    config = load_or_exit(RecorderConfig, "recorder")
    if config.store != "influx1":
        print("rollups: continuous queries need InfluxDB 1.x (BESS_STORE=influx1)", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, config))


__all__ = ["main"]
