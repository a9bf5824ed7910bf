"""The planner: optimal charge/discharge schedules from price forecasts, and the autopilot that follows them.

Consumes: ``market/{zone}/prices`` (the zone of ``BESS_PLANNER_ZONE``), ``battery/+/spec``, ``battery/+/telemetry``.
Produces: ``battery/{battery}/schedule`` (retained) and, with the autopilot on, ``battery/{battery}/set``:
at each slot start the slot's Command with a lease ending at the slot's end or ``BESS_PLANNER_LEASE_S`` (300 s)
from now, whichever is sooner, renewed while the planner lives; a dead planner leaves the battery idle within
one lease instead of following a stale plan.
Re-plans (receding horizon) when a forecast arrives, a spec changes, the SOC drifts from the plan by more than
``BESS_PLANNER_DRIFT_KWH``, and at every slot boundary. Inputs too old (no prices beyond now, telemetry older
than ``BESS_PLANNER_MAX_TELEMETRY_AGE_S``) make the node ``degraded`` with the reason and no new plan is made.
The solver runs in a worker thread so the bus keeps acknowledging messages while it works.
Lifecycle: the common node lifecycle (nodes.runtime.node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from nodes.contract.messages import BatterySpec, Command, PriceForecast, PriceSlot, Schedule, Telemetry
from nodes.contract.topics import COMMAND, PRICES, SCHEDULE, SPEC, TELEMETRY, id_problems
from nodes.planner.model import PlanError, PlanOptions, plan
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from nodes.runtime.node import Service

log = logging.getLogger("bess.planner")


class PlannerConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """``BESS_PLANNER_*`` settings."""

    planner_zone: str = "de-lu"
    planner_autopilot: bool = False
    planner_autopilot_off: list[str] = msgspec.field(default_factory=list)
    planner_drift_kwh: float | None = None
    planner_max_telemetry_age_s: float = 300.0
    planner_switch_penalty_eur: float = 0.0
    planner_solver: str = "cbc"
    planner_min_replan_interval_s: float = 1.0
    planner_lease_s: float = 300.0

    def problems(self) -> list[str]:
        """Invalid settings, reported at start-up (exit 2)."""
        found = id_problems(self.planner_zone, "BESS_PLANNER_ZONE")
        if self.planner_lease_s < 2:
            found.append("BESS_PLANNER_LEASE_S must be at least 2 seconds")
        if self.planner_solver not in ("cbc", "highs"):
            found.append("BESS_PLANNER_SOLVER must be cbc or highs")
        return found


@dataclass
class BatteryInputs:
    """What the planner knows about one battery."""

    spec: BatterySpec | None = None
    telemetry: Telemetry | None = None
    schedule: Schedule | None = None
    last_command: Command | None = None


def horizon(forecast: PriceForecast, now: datetime) -> list[PriceSlot]:
    """The forecast's slots from ``now`` on; the current slot is trimmed to start at ``now``."""
    slots: list[PriceSlot] = []
    for slot in forecast.slots:
        if slot.end <= now:
            continue
        start = max(slot.start, now)
        slots.append(PriceSlot(start=start, end=slot.end, price_eur_per_mwh=slot.price_eur_per_mwh))
    # a slot shorter than a minute says nothing useful and only adds a variable
    return [s for s in slots if s.end - s.start >= timedelta(minutes=1)]


def planned_soc_at(schedule: Schedule, now: datetime) -> float | None:
    """The plan's SOC at ``now`` (linear within a slot), or None outside the plan."""
    previous = schedule.soc_initial_kwh
    for slot in schedule.slots:
        if slot.start <= now < slot.end:
            share = (now - slot.start) / (slot.end - slot.start)
            return previous + (slot.soc_kwh - previous) * share
        previous = slot.soc_kwh
    return None


def slot_command(schedule: Schedule, now: datetime, lease_s: float | None = None) -> Command | None:
    """The Command the autopilot sends for the slot containing ``now``.

    The lease ends at the slot's end, or ``lease_s`` from now if that is sooner: the autopilot renews it while
    it lives, so a dead planner leaves the battery idle within ``lease_s`` instead of following an hour-long
    slot of a plan nobody watches any more.
    """
    for slot in schedule.slots:
        if slot.start <= now < slot.end:
            if slot.discharge_kw > 1e-6:
                action, power = "discharge", slot.discharge_kw
            elif slot.charge_kw > 1e-6:
                action, power = "charge", slot.charge_kw
            else:
                action, power = "idle", 0.0
            return Command(
                command_id=f"a-{uuid.uuid4().hex[:12]}",
                action=action,  # type: ignore[arg-type]
                power_kw=round(power, 3),
                issued_at=now,
                valid_until=slot.end if lease_s is None else min(slot.end, now + timedelta(seconds=lease_s)),
                source="planner",
                plan_id=schedule.plan_id,
            )
    return None


class Planner(Service[PlannerConfig]):
    """Plans every battery that publishes a spec, on the configured zone's prices."""

    name = "planner"

    def __init__(self, config: PlannerConfig) -> None:
        super().__init__(config)
        self.forecast: PriceForecast | None = None
        self.batteries: dict[str, BatteryInputs] = {}
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()
        self.problems: dict[str, str] = {}
        self.bus: Bus | None = None

    async def setup(self, bus: Bus) -> None:
        self.bus = bus
        bus.subscribe(PRICES, self.on_prices, zone=self.config.planner_zone)
        bus.subscribe(SPEC, self.on_spec)
        bus.subscribe(TELEMETRY, self.on_telemetry)

    def _battery(self, name: str) -> BatteryInputs:
        return self.batteries.setdefault(name, BatteryInputs())

    def _mark(self, *names: str) -> None:
        self.dirty.update(names)
        self.wake.set()

    async def on_prices(self, params: dict[str, str], forecast: PriceForecast, delivery: Delivery) -> None:
        """A new forecast: re-plan every battery."""
        self.forecast = forecast
        self._mark(*self.batteries)

    async def on_spec(self, params: dict[str, str], spec: BatterySpec, delivery: Delivery) -> None:
        """A (new) battery spec: plan that battery."""
        problems = spec.problems()
        if problems:
            log.warning("ignoring inconsistent spec of %s: %s", params["battery"], "; ".join(problems))
            assert self.bus is not None
            self.bus.counters["bad_specs"] += 1
            return
        self._battery(params["battery"]).spec = spec
        self._mark(params["battery"])

    async def on_telemetry(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        """Track the SOC; re-plan when it drifts from the plan."""
        inputs = self._battery(params["battery"])
        inputs.telemetry = telemetry
        if inputs.schedule is None:
            self._mark(params["battery"])
            return
        planned = planned_soc_at(inputs.schedule, telemetry.ts)
        spec = inputs.spec
        tolerance = self.config.planner_drift_kwh
        if tolerance is None:
            tolerance = 0.05 * spec.capacity_kwh if spec else 10.0
        if planned is not None and abs(planned - telemetry.soc_kwh) > tolerance:
            log.info("%s: SOC %.1f kWh drifted from plan %.1f kWh; re-planning", params["battery"],
                     telemetry.soc_kwh, planned)
            self._mark(params["battery"])

    # -- planning ---------------------------------------------------------------------------------------------

    def _stale_reason(self, name: str, inputs: BatteryInputs, now: datetime) -> str | None:
        if self.forecast is None:
            return f"no price forecast for zone {self.config.planner_zone} yet"
        if not horizon(self.forecast, now):
            return f"price forecast for {self.config.planner_zone} ends at {self.forecast.slots[-1].end.isoformat()}"
        if inputs.spec is None:
            return f"no spec from battery {name}"
        if inputs.telemetry is None:
            return f"no telemetry from battery {name}"
        age = (now - inputs.telemetry.ts).total_seconds()
        if age > self.config.planner_max_telemetry_age_s:
            return f"telemetry of battery {name} is {age:.0f} s old"
        return None

    def _report(self, name: str, problem: str | None) -> None:
        """Degraded while any battery cannot be planned, with every reason; online when none."""
        if problem is None:
            self.problems.pop(name, None)
        else:
            self.problems[name] = problem
        assert self.bus is not None
        if self.problems:
            self.bus.set_state("degraded", "; ".join(self.problems[b] for b in sorted(self.problems)))
        else:
            self.bus.set_state("online")

    async def plan_battery(self, name: str, now: datetime) -> Schedule | None:
        """Plan one battery now; publishes the Schedule, or reports why it could not."""
        assert self.bus is not None
        inputs = self._battery(name)
        reason = self._stale_reason(name, inputs, now)
        if reason is not None:
            self._report(name, reason)
            return None
        assert self.forecast is not None
        assert inputs.spec is not None
        assert inputs.telemetry is not None
        spec, soc = inputs.spec, inputs.telemetry.soc_kwh
        soc = min(max(soc, spec.soc_min_kwh), spec.soc_max_kwh)
        options = PlanOptions(
            switch_penalty_eur=self.config.planner_switch_penalty_eur,
            solver=self.config.planner_solver,  # type: ignore[arg-type]
        )
        slots = horizon(self.forecast, now)
        plan_id = f"p-{now.strftime('%Y%m%dT%H%M%S')}-{name}"
        try:
            schedule = await asyncio.to_thread(
                plan, slots, spec, soc, options=options, created_at=now, plan_id=plan_id, zone=self.forecast.zone
            )
        except PlanError as exc:
            self.bus.counters["plan_errors"] += 1
            self._report(name, f"cannot plan {name}: {exc}")
            return None
        inputs.schedule = schedule
        await self.bus.publish(SCHEDULE, schedule, battery=name)
        self.bus.counters["plans"] += 1
        self._report(name, None)
        log.info("%s: plan %s over %d slots, expected %.2f EUR (baseline %s) in %.0f ms", name, plan_id,
                 len(schedule.slots), schedule.expected_revenue_eur, schedule.baseline_revenue_eur,
                 schedule.solve_ms)
        return schedule

    async def autopilot(self, name: str, now: datetime) -> None:
        """Send the current slot's command when it changed, or renew its lease when half of it has run out."""
        inputs = self._battery(name)
        if (
            not self.config.planner_autopilot
            or name in self.config.planner_autopilot_off
            or inputs.schedule is None
        ):
            return
        command = slot_command(inputs.schedule, now, self.config.planner_lease_s)
        if command is None:
            return
        last = inputs.last_command
        if (
            last is not None
            and (last.action, last.power_kw, last.plan_id) == (command.action, command.power_kw, command.plan_id)
            and (last.valid_until - now).total_seconds() > self.config.planner_lease_s / 2
            and last.valid_until <= command.valid_until
        ):
            return
        assert self.bus is not None
        await self.bus.publish(COMMAND, command, battery=name)
        inputs.last_command = command
        self.bus.counters["commands"] += 1

    def _next_renewal(self, now: datetime) -> datetime | None:
        renewals = [
            inputs.last_command.valid_until - timedelta(seconds=self.config.planner_lease_s / 2)
            for inputs in self.batteries.values()
            if inputs.last_command is not None and inputs.last_command.valid_until > now
        ]
        return min(renewals) if self.config.planner_autopilot and renewals else None

    def _next_boundary(self, now: datetime) -> datetime:
        boundaries = [
            slot.end
            for inputs in self.batteries.values()
            if inputs.schedule is not None
            for slot in inputs.schedule.slots
            if slot.end > now
        ]
        hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return min([*boundaries, hour])

    async def run(self) -> None:
        last_plan: dict[str, datetime] = {}
        boundary = self._next_boundary(datetime.now(UTC))
        while True:
            now = datetime.now(UTC)
            if now >= boundary:
                self.dirty.update(self.batteries)  # receding horizon: re-plan at every boundary
            for name in sorted(self.dirty):
                previous = last_plan.get(name)
                if previous and (now - previous).total_seconds() < self.config.planner_min_replan_interval_s:
                    continue  # debounce bursts (e.g. retained spec + telemetry + prices at start)
                self.dirty.discard(name)
                last_plan[name] = now
                await self.plan_battery(name, now)
            for name in list(self.batteries):
                await self.autopilot(name, datetime.now(UTC))
            boundary = self._next_boundary(datetime.now(UTC))
            renewal = self._next_renewal(datetime.now(UTC))
            wake_at = min(boundary, renewal) if renewal else boundary
            timeout = (wake_at - datetime.now(UTC)).total_seconds()
            if self.dirty:
                timeout = min(timeout, self.config.planner_min_replan_interval_s)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(timeout, 0.05))
