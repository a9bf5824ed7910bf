"""When prices go stale: which prices the planner may plan on, and what it says and does (pure, clock passed in).

* :func:`cover` is the planner's view of its forecast at ``now``: the unbroken run of real slots from now on
  (:func:`nodes.planner.inputs.horizon`: a gap ends it, nothing bridges a hole with invented prices), where it ends,
  when the next known price after it starts, and whether the run is **stale**: it does not cover every moment of
  the next ``BESS_PLANNER_PRICES_STALE_AFTER_H`` hours (6 h by default, the market feed's
  ``BESS_MARKET_STALE_AFTER_H``). Stale prices make the node ``degraded``; the reason names the zone, the end of the
  known prices and the setting.
* The planner's behaviour follows from it, phase by phase:

  1. **Short horizon** (a run that covers now but ends within N hours): degraded, and it keeps planning on the
     run, so every plan ends where the known prices end.
  2. **No price covers now**: nothing to plan on. The last plan's remaining slots (made on prices that were
     real when they were published) are held; when they end the autopilot sends one IDLE
     (:meth:`nodes.planner.node.Planner.autopilot`) and waits.
  3. **Fresh prices** (a new forecast that covers now): re-planned at once, and online again when the run
     covers the next N hours.

  :func:`node_reason` and :func:`battery_note` put that into words for the status (``reason`` and the
  per-battery ``details``), e.g. ``holding plan p-20250116T151500-b1 until 16:00Z, then idle``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import PriceForecast, PriceSlot, Schedule
from nodes.planner.inputs import horizon

SETTING = "BESS_PLANNER_PRICES_STALE_AFTER_H"


@dataclass(frozen=True)
class Cover:
    """What the forecast holds for the planner at one instant."""

    #: the unbroken run of slots from now on, the current one trimmed to start now; empty: none covers now
    slots: list[PriceSlot]
    #: the degraded reason (no forecast, or stale prices); None: fresh, the run covers the next N hours
    problem: str | None
    #: end of the run (None: no slot covers now)
    known_until: datetime | None = None
    #: start of the next known slot after the run or after now (after a gap); None: nothing known beyond
    next_start: datetime | None = None
    #: when fresh prices turn stale (``known_until - N``), so the loop wakes to say so; None when stale
    stale_at: datetime | None = None
    #: no forecast has arrived at all (the planner has never planned: there is nothing to say it does)
    no_forecast: bool = False


def cover(forecast: PriceForecast | None, zone: str, now: datetime, stale_after: timedelta) -> Cover:
    """The planner's view of ``forecast`` at ``now`` with the staleness limit ``stale_after``."""
    if forecast is None:
        return Cover(slots=[], problem=f"no price forecast for zone {zone} yet", no_forecast=True)
    run = horizon(forecast, now)
    known_until = run[-1].end if run else None
    after = known_until or now
    next_start = min((s.start for s in forecast.slots if s.start > after), default=None)
    limit = f"{SETTING}={stale_after.total_seconds() / 3600:g}"
    later = f", the next known price starts at {hhmm(next_start)}" if next_start else ""
    if known_until is None:
        ended = max((s.end for s in forecast.slots if s.end <= now), default=None)
        since = f"after {hhmm(ended)}" if ended else "covering now"
        return Cover(slots=[], problem=f"no prices for zone {zone} {since}{later} ({limit})", next_start=next_start)
    if known_until - now > stale_after:  # strictly: at ``stale_at`` itself it is stale, so a wake then sees it
        return Cover(slots=run, problem=None, known_until=known_until, next_start=next_start,
                     stale_at=known_until - stale_after)
    ahead = (known_until - now).total_seconds() / 3600
    problem = f"prices for zone {zone} known only until {hhmm(known_until)}, {ahead:.1f} h ahead{later} ({limit})"
    return Cover(slots=run, problem=problem, known_until=known_until, next_start=next_start)


def plan_end(schedule: Schedule | None) -> datetime | None:
    """When a plan's last slot ends (None: no plan, or an empty one)."""
    return schedule.slots[-1].end if schedule is not None and schedule.slots else None


def node_reason(state: Cover, schedules: Mapping[str, Schedule | None], now: datetime) -> str | None:
    """The node's degraded reason: the price problem and what the planner does about it (None: fresh prices)."""
    if state.problem is None or state.no_forecast:
        return state.problem
    if state.slots:
        assert state.known_until is not None
        return (f"{state.problem}: planning on the known prices only, batteries idle from "
                f"{hhmm(state.known_until)} unless new prices arrive")
    held = {name: s for name, s in schedules.items() if s is not None and (end := plan_end(s)) and end > now}
    if not held:
        return f"{state.problem}: nothing to plan on, batteries idle until new prices arrive"
    if len(held) == 1:
        [(_, schedule)] = held.items()
        return f"{state.problem}: {holding(schedule, state.next_start)}"
    last = max(end for s in held.values() if (end := plan_end(s)) is not None)
    return f"{state.problem}: holding the last plans of {len(held)} batteries until {hhmm(last)} at the latest, " \
           "then idle (see details)"


def battery_note(state: Cover, schedule: Schedule | None, now: datetime) -> str | None:
    """What stale prices mean for one battery's plan (None: prices are fresh, or the battery has no plan)."""
    end = plan_end(schedule)
    if state.problem is None or schedule is None or end is None:
        return None
    if end <= now:
        return f"plan {schedule.plan_id} ended at {hhmm(end)} with the known prices; no plan until new prices arrive"
    if state.slots:
        return f"plan {schedule.plan_id} covers the known prices until {hhmm(end)}, then idle"
    return holding(schedule, state.next_start)


def holding(schedule: Schedule, next_start: datetime | None = None) -> str:
    """``holding plan <id> until HH:MMZ, then idle`` (or ``then planning on`` the next known prices)."""
    end = plan_end(schedule)
    if end is None:
        return f"holding plan {schedule.plan_id}"
    if next_start is not None and next_start <= end:
        return f"holding plan {schedule.plan_id} until {hhmm(next_start)}, then planning on the next known prices"
    text = f"holding plan {schedule.plan_id} until {hhmm(end)}, then idle"
    return text + (f" until {hhmm(next_start)}" if next_start is not None else "")


def hhmm(moment: datetime) -> str:
    """A moment as the status says it: ``2025-01-16T16:00Z`` (UTC, to the minute; seconds only when not 0)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ" if utc.second else "%Y-%m-%dT%H:%MZ")


__all__ = ["SETTING", "Cover", "battery_note", "cover", "hhmm", "holding", "node_reason", "plan_end"]
