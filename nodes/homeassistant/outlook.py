"""The derived ``battery/{battery}/outlook`` (pure: schedule, prices, control and the clock in, a BatteryOutlook out).

* **Control mode in force**: the retained ControlMode while it lasts, else the planner's configured default
  (``BESS_PLANNER_AUTOPILOT`` minus ``BESS_PLANNER_AUTOPILOT_OFF``): the planner's own rule
  (:mod:`nodes.planner.policy`), so Home Assistant shows the mode the planner obeys.
* **Plan now**: the run of equal slots containing now, exactly as the autopilot reads it
  (:func:`nodes.planner.autopilot.setpoint_at`), and the run after it (the next change). Power is signed like
  telemetry: + discharge, - charge.
* **Price now**: the slot containing now of the forecast for the plan's zone (else ``BESS_PLANNER_ZONE``), else
  of the plan itself (its slots carry their price), in that message's currency.

:func:`next_change` says when any of these can change without a message (a slot or mode boundary), so the node
recomputes exactly then.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from nodes.contract.messages import (
    MAX_OUTLOOK_SLOTS,
    Action,
    BatteryOutlook,
    ControlMode,
    ControlModeName,
    OutlookSlot,
    PriceForecast,
    Schedule,
)
from nodes.planner import policy
from nodes.planner.autopilot import Setpoint, setpoint_at


def _signed(setpoint: Setpoint) -> float:
    if setpoint.action == "discharge":
        return setpoint.power_kw
    if setpoint.action == "charge":
        return -setpoint.power_kw
    return 0.0


def _price_now(now: datetime, forecast: PriceForecast | None, schedule: Schedule | None
               ) -> tuple[float, datetime, str] | None:
    if forecast is not None:
        for slot in forecast.slots:
            if slot.start <= now < slot.end:
                return slot.price_per_mwh, slot.end, forecast.currency
    if schedule is not None:
        for plan_slot in schedule.slots:
            if plan_slot.start <= now < plan_slot.end:
                return plan_slot.price_per_mwh, plan_slot.end, schedule.currency
    return None


def upcoming(schedule: Schedule, now: datetime, count: int) -> list[OutlookSlot]:
    """The slot containing ``now`` and the ones after it, at most ``count`` (signed power, its price)."""
    out: list[OutlookSlot] = []
    for slot in schedule.slots:
        if slot.end <= now:
            continue
        if len(out) >= min(count, MAX_OUTLOOK_SLOTS):
            break
        net = slot.discharge_kw - slot.charge_kw
        action: Action = "discharge" if net > 1e-6 else "charge" if net < -1e-6 else "idle"
        out.append(OutlookSlot(start=slot.start, end=slot.end, action=action, power_kw=round(net, 3),
                               price_per_mwh=slot.price_per_mwh))
    return out


def outlook(
    now: datetime,
    *,
    control: ControlMode | None,
    default_mode: ControlModeName,
    schedule: Schedule | None,
    forecast: PriceForecast | None,
    slots: int = 6,
) -> BatteryOutlook:
    """What holds for the battery at ``now`` (see the module docstring)."""
    mode = policy.effective_mode(control, now, default_mode)
    until = control.until if control is not None and control.mode_at(now) is not None else None
    fields: dict[str, object] = {}
    if schedule is not None:
        fields["plan_id"] = schedule.plan_id
        fields["upcoming"] = upcoming(schedule, now, slots)
        run = setpoint_at(schedule, now)
        if run is not None:
            fields.update(action=run.action, power_kw=_signed(run), slot_end=run.end)
            following = setpoint_at(schedule, run.end)
            if following is not None:
                fields.update(next_change_at=run.end, next_action=following.action, next_power_kw=_signed(following))
        else:
            first = next((s for s in schedule.slots if s.start > now), None)
            if first is not None:
                later = setpoint_at(schedule, first.start)
                if later is not None:
                    fields.update(next_change_at=first.start, next_action=later.action,
                                  next_power_kw=_signed(later))
        if schedule.zone is not None:
            fields["zone"] = schedule.zone
    price = _price_now(now, forecast, schedule)
    if price is not None:
        fields.update(price_per_mwh=price[0], price_until=price[1], currency=price[2])
    if forecast is not None and "zone" not in fields:
        fields["zone"] = forecast.zone
    return msgspec.structs.replace(BatteryOutlook(ts=now, control_mode=mode, control_until=until), **fields)


def next_change(now: datetime, control: ControlMode | None, schedule: Schedule | None,
                forecast: PriceForecast | None) -> datetime | None:
    """The first instant after ``now`` at which :func:`outlook` can give another answer, or None."""
    candidates: list[datetime] = []
    expiry = policy.control_expiry(control, now)
    if expiry is not None:
        candidates.append(expiry)
    for slots in (schedule.slots if schedule else [], forecast.slots if forecast else []):
        for slot in slots:
            if slot.end > now:
                candidates.append(slot.end if slot.start <= now else slot.start)
                break
    return min(candidates) if candidates else None


def same(a: BatteryOutlook | None, b: BatteryOutlook) -> bool:
    """True when ``a`` and ``b`` say the same (their ``ts`` aside): nothing to publish."""
    return a is not None and _without_ts(a) == _without_ts(b)


def _without_ts(value: BatteryOutlook) -> tuple[object, ...]:
    return tuple(getattr(value, field) for field in value.__struct_fields__ if field != "ts")


__all__ = ["next_change", "outlook", "same", "upcoming"]
