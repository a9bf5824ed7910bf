"""Autopilot command rate: commands per hour per battery over a simulated day, on a fake clock.

Run: ``.venv/bin/python -m bench.autopilot [--hours 24] [--slot-minutes 60] [--lease-s 300]``. The planner's own loop
(:meth:`nodes.planner.node.Planner.step`, the real solver) runs on the fake clock of
:mod:`tests.support.autopilot_sim`, which jumps to each instant the loop asks for plus up to 1 s of delay.
"""

from __future__ import annotations

import argparse
import asyncio
import warnings
from datetime import timedelta

from tests.support.autopilot_sim import T_DAY, daily_prices, simulate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--slot-minutes", type=int, default=60)
    parser.add_argument("--lease-s", type=float, default=300.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    end = T_DAY + timedelta(hours=args.hours)
    result = await simulate(daily_prices(T_DAY, 2 * args.hours, args.slot_minutes), T_DAY, end,
                            planner_lease_s=args.lease_s)
    changes = sum(1 for a, b in zip(result.commands, result.commands[1:], strict=False)
                  if (a.action, a.power_kw) != (b.action, b.power_kw))
    per_slot = result.per_slot()
    print(f"{args.slot_minutes}-minute slots, {args.hours} h, lease {args.lease_s:g} s: {len(result.commands)} "
          f"commands, {result.per_hour():.1f} per hour per battery ({changes} setpoint changes, the rest renewals); "
          f"at most {max(per_slot.values())} in one slot; {len(result.gaps())} moments without a valid lease; "
          f"{result.passes} loop passes")


if __name__ == "__main__":
    asyncio.run(main())
