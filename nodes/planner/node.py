"""The planner: optimal charge/discharge schedules from price forecasts, and the autopilot that follows them.

Consumes: ``market/{zone}/prices`` (the zone of ``BESS_PLANNER_ZONE``), ``battery/+/spec``, ``battery/+/telemetry``,
``battery/+/control``, ``battery/+/request/replan`` (re-plan that battery now: Home Assistant's button).
Produces: ``battery/{battery}/schedule`` (retained) and, while a battery's control mode is ``autopilot``,
``battery/{battery}/set``: a Command only when something changes (:mod:`nodes.planner.autopilot`): a new
setpoint (a run of slots with one action and power) at its boundary, or a renewal that really extends the lease.
A lease lasts ``BESS_PLANNER_LEASE_S`` (300 s) or until the run's end plus ``BESS_PLANNER_HANDOVER_S`` (5 s),
whichever is sooner; a dead planner leaves the battery idle within one lease instead of following a stale plan.
Stale telemetry (older than ``BESS_PLANNER_MAX_TELEMETRY_AGE_S``) stops the autopilot for that battery: one IDLE,
then nothing until a fresh reading arrives. Every command also passes the shared per-battery rate bound
(:mod:`nodes.runtime.command_rate`).

Control precedence (:mod:`nodes.planner.policy`): the retained ControlMode of the battery rules while it is in
force; without one (or after its ``until``) the configured default applies (``BESS_PLANNER_AUTOPILOT`` minus
``BESS_PLANNER_AUTOPILOT_OFF``). An operator command through the gateway sets ``manual`` until its lease ends:
the planner keeps planning but sends nothing, and at ``until`` it wakes and sends the current slot's command
at once. Telemetry: the device's own feed when it is live, HTTP writes only for batteries without one.

Re-plans (receding horizon) when a forecast arrives, a spec changes, the SOC drifts from the plan by more than
``BESS_PLANNER_DRIFT_KWH``, and at every slot boundary. Node-wide problems (no prices, stale prices) make the node
``degraded`` with the reason. A battery's own problem (no spec, a rejected spec, no or old telemetry) does not:
it is a note in the status ``details`` under the battery's id, and that battery is not planned. Plans are
solved off the event loop (:mod:`nodes.planner.solvers`): a batch (a new forecast for the fleet) in
``BESS_PLANNER_WORKERS`` processes, batteries that already have a plan first, so the bus keeps acknowledging
messages while the fleet is planned and a burst of new ids does not hold back the batteries being driven.

When prices go stale (:mod:`nodes.planner.coverage`): prices are stale while the forecast does not cover every
moment of the next ``BESS_PLANNER_PRICES_STALE_AFTER_H`` hours (6); the node is ``degraded`` with a reason naming
the zone, the end of the known prices and the setting, and what it does about it:

1. *Short horizon*: it keeps planning, on the real slots only, up to the first gap (never across it, never on
   invented or replayed prices), so every plan ends where the known prices end.
2. *No price covers now*: the last plan's remaining slots are held (``holding plan p-... until HH:MMZ, then
   idle`` in the reason and the battery's details); when a plan runs out, the autopilot sends one IDLE (its
   ``text`` says why; the details say when) and nothing more until a new plan has a setpoint.
3. *Fresh prices*: a new forecast re-plans every battery at once, and the node is ``online`` again as soon as
   the prices cover the next N hours. The loop also wakes at the instant fresh prices turn stale and at the next
   known price after a gap.
Lifecycle: the common node lifecycle (nodes.runtime.node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from nodes.contract.messages import (
    BatterySpec,
    Command,
    ControlMode,
    ControlModeName,
    PriceForecast,
    ReplanRequest,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import COMMAND, CONTROL, PRICES, REPLAN_REQUEST, SCHEDULE, SPEC, TELEMETRY
from nodes.planner import autopilot as pilot
from nodes.planner import coverage, policy
from nodes.planner import inputs as known
from nodes.planner.config import PlannerConfig
from nodes.planner.inputs import BatteryInputs
from nodes.planner.model import PlanOptions
from nodes.planner.solvers import PlanJob, PlanOutcome, Solvers
from nodes.runtime.command_rate import CommandRateLimit
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.node import Service

log = logging.getLogger("bess.planner")


MAX_DETAILS = 50
"""Most per-battery notes in the status (a fleet of thousands must not make a huge status message)."""


def _now() -> datetime:
    return datetime.now(UTC)


class Planner(Service[PlannerConfig]):
    """Plans every battery that publishes a spec, on the configured zone's prices."""

    name = "planner"

    def __init__(
        self,
        config: PlannerConfig,
        bus: MessageBus,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(config, bus)
        self.clock = clock or _now
        #: seconds for the command rate bound; by default derived from ``clock`` so a fake clock drives both
        self.monotonic = monotonic or (lambda: self.clock().timestamp())
        self.rate = CommandRateLimit(config.command_rate_per_min, config.command_burst)
        self.forecast: PriceForecast | None = None
        self.batteries: dict[str, BatteryInputs] = {}
        self.controls: dict[str, ControlMode] = {}
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()
        #: per-battery notes (why a battery is not planned), published as the status ``details``
        self.notes: dict[str, str] = {}
        #: per-battery notes of the autopilot (stopped on stale telemetry), merged into the details
        self.autopilot_notes: dict[str, str] = {}
        #: per-battery notes while prices are stale: what happens to the battery's plan (coverage.battery_note)
        self.price_notes: dict[str, str] = {}
        self._boundary = datetime.min.replace(tzinfo=UTC)
        self._last_plan: dict[str, datetime] = {}
        self.node_problem: str | None = None
        self._device_window = timedelta(seconds=config.planner_device_feed_window_s)
        self._ignored_logged: set[str] = set()
        self.solvers = Solvers(config.workers)
        #: how long each recent plan took in its worker (ms: model build, solve, the publishable schedule)
        self.plan_ms: deque[float] = deque(maxlen=10_000)

    async def setup(self) -> None:
        bus = self.bus
        bus.subscribe(PRICES, self.on_prices, zone=self.config.planner_zone)
        bus.subscribe(SPEC, self.on_spec, on_invalid=self.on_invalid_spec)
        bus.subscribe(TELEMETRY, self.on_telemetry)
        bus.subscribe(CONTROL, self.on_control)
        bus.subscribe(REPLAN_REQUEST, self.on_replan)

    async def shutdown(self) -> None:
        self.solvers.close()

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
        """A (new) battery spec: plan that battery, or say why the spec is refused."""
        problems = spec.problems()
        if problems:
            self._reject_spec(params["battery"], "; ".join(problems))
            return
        inputs = self._battery(params["battery"])
        inputs.spec, inputs.spec_problem = spec, None
        self._mark(params["battery"])

    async def on_invalid_spec(self, params: dict[str, str], error: str) -> None:
        """A spec payload that failed to decode (the bus logged and counted it): refused, and said so."""
        self._reject_spec(params["battery"], error)

    def _reject_spec(self, name: str, why: str) -> None:
        # The battery's current declaration is inconsistent: plans made on its previous spec may no longer fit
        # it, so the battery is not planned (and not commanded) until a valid spec arrives.
        log.warning("spec for %s rejected: %s", name, why)
        self.bus.counters["bad_specs"] += 1
        inputs = self._battery(name)
        inputs.spec, inputs.schedule, inputs.last_command = None, None, None
        inputs.spec_problem = f"not planned: spec for {name} rejected: {why}"
        self._mark(name)

    async def on_control(self, params: dict[str, str], control: ControlMode, delivery: Delivery) -> None:
        """Who commands the battery now: the autopilot acts on it at once (and wakes when it ends)."""
        self.controls[params["battery"]] = control
        self.wake.set()

    async def on_replan(self, params: dict[str, str], request: ReplanRequest, delivery: Delivery) -> None:
        """Re-plan one battery now (Home Assistant's button, the dashboard's re-plan); an unknown battery is ignored."""
        name = params["battery"]
        if name not in self.batteries:
            self.bus.counters["replan_requests_ignored"] += 1
            log.info("re-plan of %s requested, but this planner knows no such battery; ignored", name)
            return
        self.bus.counters["replan_requests"] += 1
        why = f" ({request.reason})" if request.reason else ""
        log.info("%s: re-plan requested by %s%s", name, request.source, why)
        self._mark(name)

    def telemetry_of(self, inputs: BatteryInputs, now: datetime) -> Telemetry | None:
        """The reading the planner trusts for this battery now (see :func:`policy.trusted_telemetry`)."""
        return policy.trusted_telemetry(inputs.device_telemetry, inputs.other_telemetry, now, self._device_window)

    def mode_of(self, name: str, now: datetime) -> ControlModeName:
        """The control mode in force for ``name`` at ``now``."""
        default = policy.default_mode(self.config.planner_autopilot, self.config.planner_autopilot_off, name)
        return policy.effective_mode(self.controls.get(name), now, default)

    async def on_telemetry(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        """Track the SOC of the trusted feed; re-plan when it drifts from the plan."""
        name = params["battery"]
        inputs = self._battery(name)
        now = self.clock()
        if telemetry.source == policy.DEVICE_SOURCE:
            inputs.device_telemetry = policy.newer(inputs.device_telemetry, telemetry)
        elif policy.device_feed_live(inputs.device_telemetry, now, self._device_window):
            self.bus.counters["telemetry_ignored"] += 1
            if name not in self._ignored_logged:  # once per battery: a client may write every second
                self._ignored_logged.add(name)
                log.info("%s: ignoring %s telemetry (SOC %.1f kWh): the battery's own feed is live", name,
                         telemetry.source, telemetry.soc_kwh)
            return
        else:
            inputs.other_telemetry = policy.newer(inputs.other_telemetry, telemetry)
        if self.telemetry_of(inputs, now) is not telemetry:
            return  # an older record (a backfill) or a source the planner does not plan from
        if inputs.stale_stopped:
            self._mark(name)  # the autopilot stopped on stale telemetry: re-plan from this reading and resume
            return
        if inputs.schedule is None:
            self._mark(name)
            return
        planned = known.drifted(inputs.schedule, telemetry, inputs.spec, self.config.planner_drift_kwh)
        if planned is not None:
            log.info("%s: SOC %.1f kWh drifted from plan %.1f kWh; re-planning", name, telemetry.soc_kwh, planned)
            self._mark(name)

    # -- planning ---------------------------------------------------------------------------------------------

    def cover(self, now: datetime) -> coverage.Cover:
        """The prices the planner may plan on at ``now``, and whether they are stale (:mod:`coverage`)."""
        return coverage.cover(self.forecast, self.config.planner_zone, now, self.config.prices_stale_after)

    def _battery_problem(self, name: str, inputs: BatteryInputs, now: datetime) -> str | None:
        """Why this one battery cannot be planned (a note in the status details; the node stays online)."""
        if inputs.spec is None:
            return inputs.spec_problem or "monitored, not planned: no spec received"
        return known.telemetry_problem(self.telemetry_of(inputs, now), now, self.config.planner_max_telemetry_age_s)

    def _set_note(self, name: str, note: str | None) -> None:
        """A battery's planning note (None: planned). Degraded is only for a node-wide problem (no or stale
        prices); per-battery notes go into the details."""
        if note is None:
            self.notes.pop(name, None)
        else:
            self.notes[name] = note
        self.bus.counters["batteries_not_planned"] = len(self.notes)

    def _set_price_note(self, name: str, note: str | None) -> None:
        if note is None:
            self.price_notes.pop(name, None)
        else:
            self.price_notes[name] = note

    def _set_node_state(self, state: coverage.Cover, now: datetime) -> None:
        # the plans matter only while no price covers now (which are held); a fleet's dict is not built per plan
        held = state.problem is not None and not state.slots
        schedules = {name: inputs.schedule for name, inputs in self.batteries.items()} if held else {}
        self.node_problem = coverage.node_reason(state, schedules, now)
        if self.node_problem is not None:
            self.bus.set_state("degraded", self.node_problem)
        else:
            self.bus.set_state("online")

    def _refresh_prices(self, now: datetime) -> None:
        """Once a pass: the node's state and every battery's price note as they stand after planning and the
        autopilot (a plan held or ended since the last pass; fresh prices clear them all)."""
        state = self.cover(now)
        for name, inputs in self.batteries.items():
            self._set_price_note(name, coverage.battery_note(state, inputs.schedule, now))
        self._publish_details()
        self._set_node_state(state, now)

    def _publish_details(self) -> None:
        """The planning notes, then the price note and the autopilot's note, joined for a battery with several."""
        merged = dict(self.notes)
        for notes in (self.price_notes, self.autopilot_notes):
            for name, note in notes.items():
                merged[name] = f"{merged[name]}; {note}" if name in merged else note
        self.bus.set_details(policy.bounded_details(merged, MAX_DETAILS))

    async def plan_battery(self, name: str, now: datetime) -> Schedule | None:
        """Plan one battery now; publishes the Schedule, or reports why it could not."""
        return (await self.plan_batteries([name], now)).get(name)

    async def plan_batteries(self, names: Sequence[str], now: datetime, *, drive: bool = False
                             ) -> dict[str, Schedule]:
        """Plan these batteries now, in this order, up to ``BESS_PLANNER_WORKERS`` at a time; each Schedule is
        published as soon as it is solved. A battery that cannot be planned gets its note at once (no solver).
        ``drive`` (the loop's pass): the autopilot acts on each new plan as soon as it is published, not after the
        whole batch (a fleet's pass takes seconds; its own autopilot round afterwards then has nothing to send).

        The status (state and details) is computed once for the batch, not once per battery: a fleet of
        thousands of unplannable ids costs one status publish, not thousands of growing ones.
        """
        state = self.cover(now)
        jobs: list[PlanJob] = []
        for name in names:
            job = self._job(name, state, now)
            if job is not None:
                jobs.append(job)
        self._publish_details()
        self._set_node_state(state, now)
        planned: dict[str, Schedule] = {}
        specs = {job.name: job.spec for job in jobs}
        async for outcome in self.solvers.run(jobs):
            self.plan_ms.append(outcome.elapsed_ms)
            if self._battery(outcome.name).spec != specs[outcome.name]:
                # the spec changed or was rejected while the batch was solving (a fleet's batch takes seconds):
                # this plan was made for a battery that no longer exists as declared; the new spec re-plans it
                self.bus.counters["plans_discarded"] += 1
                continue
            schedule = await self._finish(outcome, state, now)
            if schedule is not None:
                planned[outcome.name] = schedule
                if drive:
                    await self.autopilot(outcome.name, self.clock())
        if jobs:
            self.bus.counters["batteries_not_planned"] = len(self.notes)
            self._publish_details()
            self._set_node_state(state, now)
        return planned

    def _job(self, name: str, state: coverage.Cover, now: datetime) -> PlanJob | None:
        """The battery's plan job, or None with its note set (no spec, old telemetry, no price covers now)."""
        inputs = self._battery(name)
        note = self._battery_problem(name, inputs, now)
        self._set_note(name, note)
        self._set_price_note(name, coverage.battery_note(state, inputs.schedule, now))
        if note is not None or not state.slots:
            # no price covers now: the last plan (if any) is held as it is, the autopilot follows it to its end
            return None
        assert self.forecast is not None
        assert inputs.spec is not None
        telemetry = self.telemetry_of(inputs, now)
        assert telemetry is not None
        spec = inputs.spec
        soc = min(max(telemetry.soc_kwh, spec.soc_min_kwh), spec.soc_max_kwh)
        options = PlanOptions(
            switch_penalty=self.config.planner_switch_penalty_eur,
            solver=self.config.planner_solver,  # type: ignore[arg-type]
        )
        # real slots only, up to the first gap: stale prices are planned on, never invented
        return PlanJob(name=name, slots=state.slots, spec=spec, soc_kwh=soc, options=options, created_at=now,
                       plan_id=f"p-{now.strftime('%Y%m%dT%H%M%S')}-{name}", zone=self.forecast.zone,
                       currency=self.forecast.currency)

    async def _finish(self, outcome: PlanOutcome, state: coverage.Cover, now: datetime) -> Schedule | None:
        name, schedule = outcome.name, outcome.schedule
        if schedule is None:
            self.bus.counters["plan_errors"] += 1
            self._set_note(name, f"not planned: {outcome.error}")
            return None
        inputs = self._battery(name)
        inputs.schedule = schedule
        self._set_price_note(name, coverage.battery_note(state, schedule, now))
        await self.bus.publish(SCHEDULE, schedule, battery=name)
        self.bus.counters["plans"] += 1
        log.info("%s: plan %s over %d slots, expected %.2f %s (baseline %s) in %.0f ms (solver %.0f ms)", name,
                 schedule.plan_id, len(schedule.slots), schedule.expected_revenue, schedule.currency,
                 schedule.baseline_revenue, outcome.elapsed_ms, schedule.solve_ms)
        return schedule

    async def autopilot(self, name: str, now: datetime, *, final: bool = True) -> None:
        """In autopilot mode, send the current setpoint's command when :func:`autopilot.decide` says so (a
        change, a new run of slots, or a renewal that really extends the lease). Stale telemetry stops it
        (:meth:`_stop_if_stale`); a plan that ran out stops it too (:meth:`_idle_at_plan_end`, only when
        ``final``: not in the pass before a re-plan, which may bring the next setpoint). In any other mode send
        nothing, and forget the last command so that the autopilot commands at once when it resumes."""
        inputs = self._battery(name)
        mode = self.mode_of(name, now)
        if mode != inputs.mode:
            self._log_mode(name, inputs.mode, mode)
            inputs.mode = mode
        if mode != "autopilot":
            inputs.last_command, inputs.wake_at, inputs.plan_end_note = None, None, None
            self._set_autopilot_note(name, None)
            return
        if await self._stop_if_stale(name, inputs, now):
            return
        setpoint = pilot.setpoint_at(inputs.schedule, now) if inputs.schedule is not None else None
        if setpoint is None:
            inputs.wake_at = None
            if final:
                await self._idle_at_plan_end(name, inputs, now)
            return
        inputs.plan_end_note = None
        lease_s = self.config.planner_lease_s
        handover_s = min(self.config.planner_handover_s, lease_s / 4)
        decision = pilot.decide(inputs.last_command, setpoint, now, lease_s, handover_s)
        if not decision.send:
            inputs.wake_at = decision.wake_at
            return
        verdict = self.rate.check(name, setpoint.action, self.monotonic())
        if not verdict.allowed:
            # never expected (the autopilot stays far below the bound); if it happens, wait, do not spin
            self.bus.counters["commands_rate_limited"] += 1
            log.warning("%s: autopilot command held back: %s", name, verdict.why)
            inputs.wake_at = now + timedelta(seconds=verdict.retry_after_s)
            return
        command = pilot.command_for(setpoint, decision, now, f"a-{uuid.uuid4().hex[:12]}")
        await self.bus.publish(COMMAND, command, battery=name)
        self.rate.take(name, command.action, self.monotonic())
        inputs.last_command = command
        self.bus.counters["commands"] += 1
        log.debug("%s: %s %g kW until %s (%s)", name, command.action, command.power_kw,
                  command.valid_until.isoformat(), decision.why)
        follow_up = pilot.decide(command, setpoint, now, lease_s, handover_s)
        inputs.wake_at = follow_up.wake_at if not follow_up.send else now + timedelta(seconds=lease_s)

    async def _stop_if_stale(self, name: str, inputs: BatteryInputs, now: datetime) -> bool:
        """Stale or missing telemetry stops the autopilot for this battery (the safe mode).

        The plan was made for a state of charge nobody has confirmed for ``BESS_PLANNER_MAX_TELEMETRY_AGE_S``:
        the autopilot sends one IDLE command (so the battery stops now instead of when its lease ends) and then
        nothing, until fresh telemetry arrives; the battery's note in the status details says why.
        """
        telemetry = self.telemetry_of(inputs, now)
        limit = self.config.planner_max_telemetry_age_s
        if inputs.schedule is None and inputs.last_command is None and not inputs.stale_stopped:
            self._set_autopilot_note(name, None)
            return False  # nothing to drive (no plan yet, e.g. a battery known only from HTTP backfills)
        if telemetry is not None and (now - telemetry.ts).total_seconds() <= limit:
            if inputs.stale_stopped:
                inputs.stale_stopped = False
                inputs.stale_idle_sent = False
                log.info("%s: fresh telemetry (%s); autopilot resumes", name, telemetry.ts.isoformat())
            self._set_autopilot_note(name, None)
            inputs.stale_after = telemetry.ts + timedelta(seconds=limit, microseconds=1)  # first stale instant
            return False
        inputs.stale_after, inputs.wake_at = None, None
        if telemetry is None:
            why = "no telemetry received"
        else:
            why = f"latest {telemetry.source} telemetry is {(now - telemetry.ts).total_seconds():.0f} s old"
        first = not inputs.stale_stopped
        if first:
            inputs.stale_stopped = True
            held, inputs.last_command = inputs.last_command, None
            # IDLE only when a lease of ours still moves the battery; otherwise it is idle already
            inputs.stale_idle_sent = held is not None and held.valid_until > now and held.action != "idle"
            send = inputs.stale_idle_sent
        else:
            send = False
        done = "sent IDLE" if inputs.stale_idle_sent else "no lease of the autopilot was running"
        note = (f"autopilot stopped: {why} (limit BESS_PLANNER_MAX_TELEMETRY_AGE_S={limit:g}); {done}, waiting "
                "for fresh telemetry")
        self._set_autopilot_note(name, note)
        if not send:
            if first:
                log.warning("%s: %s", name, note)
            return True
        idle = Command(command_id=f"a-{uuid.uuid4().hex[:12]}", action="idle", power_kw=0.0, issued_at=now,
                       valid_until=now + timedelta(seconds=self.config.planner_lease_s), source="planner",
                       text=f"autopilot stopped: {why}"[:500])
        await self.bus.publish(COMMAND, idle, battery=name)
        self.rate.take(name, "idle", self.monotonic())
        self.bus.counters["commands"] += 1
        self.bus.counters["autopilot_stale_stops"] += 1
        log.warning("%s: %s", name, note)
        return True

    async def _idle_at_plan_end(self, name: str, inputs: BatteryInputs, now: datetime) -> None:
        """The plan ran out (its last slot ended: the known prices end there): one IDLE, then nothing until a new
        plan has a setpoint.

        Why an explicit IDLE rather than letting the lease run out: the lease outlasts its run by
        ``BESS_PLANNER_HANDOVER_S``, so without it the battery would keep charging or discharging for that long
        on a moment without a price, and a lease that simply ends is invisible. The IDLE is recorded like every
        command, carries the reason in its ``text``, and the battery's note in the status details says when it
        was sent; it is the same stop as the one on stale telemetry (:meth:`_stop_if_stale`).
        """
        end = coverage.plan_end(inputs.schedule)
        if inputs.schedule is None or end is None or end > now:
            return  # no plan, or one that starts later (e.g. the current slot under 1 s): the lease covers it
        if inputs.plan_end_note is None:
            held, inputs.last_command = inputs.last_command, None
            running = held is not None and held.valid_until > now and held.action != "idle"
            done = f"sent IDLE at {coverage.hhmm(now)}" if running else "no lease of the autopilot was moving it"
            inputs.plan_end_note = (f"autopilot: plan {inputs.schedule.plan_id} ended at {coverage.hhmm(end)}: "
                                    f"{done}; idle until a new plan")
            if running:
                why = f"plan {inputs.schedule.plan_id} ended at {coverage.hhmm(end)}: no prices after it"
                idle = Command(command_id=f"a-{uuid.uuid4().hex[:12]}", action="idle", power_kw=0.0, issued_at=now,
                               valid_until=now + timedelta(seconds=self.config.planner_lease_s), source="planner",
                               plan_id=inputs.schedule.plan_id, text=why[:500])
                await self.bus.publish(COMMAND, idle, battery=name)
                self.rate.take(name, "idle", self.monotonic())
                self.bus.counters["commands"] += 1
                self.bus.counters["autopilot_plan_end_stops"] += 1
            log.warning("%s: %s", name, inputs.plan_end_note)
        self._set_autopilot_note(name, inputs.plan_end_note)

    def _set_autopilot_note(self, name: str, note: str | None) -> None:
        if self.autopilot_notes.get(name) == note:
            return
        if note is None:
            self.autopilot_notes.pop(name, None)
        else:
            self.autopilot_notes[name] = note
        self._publish_details()

    def _log_mode(self, name: str, before: ControlModeName | None, after: ControlModeName) -> None:
        control = self.controls.get(name)
        in_force = control is not None and control.mode_at(self.clock()) is not None
        why = f" ({control.source}: {control.reason or 'no reason given'})" if control and in_force else " (default)"
        until = f" until {control.until.isoformat()}" if control and in_force and control.until else ""
        if after == "autopilot":
            log.info("%s: autopilot on%s%s", name, until, why)
        elif before is None or before == "autopilot":
            log.info("%s: autopilot paused, mode %s%s%s", name, after, until, why)

    def next_wake(self, now: datetime) -> datetime:
        """When the loop must run next: a slot boundary, what the autopilot asked for (a renewal, a handover),
        telemetry turning stale, or a control mode ending (the autopilot resumes at that instant)."""
        candidates = [self._next_boundary(now)]
        for inputs in self.batteries.values():
            candidates += [t for t in (inputs.wake_at, inputs.stale_after) if t is not None and t > now]
        candidates += [t for c in self.controls.values() if (t := policy.control_expiry(c, now)) is not None]
        # prices turning stale (to say so at once), and the next known price after a gap (to plan from it)
        state = self.cover(now)
        candidates += [t for t in (state.stale_at, state.next_start) if t is not None and t > now]
        return min(candidates)

    def _next_boundary(self, now: datetime) -> datetime:
        return known.next_boundary((inputs.schedule for inputs in self.batteries.values()), now)

    async def step(self) -> datetime:
        """One pass of the loop: re-plan what needs it, let the autopilot act, say when to run next.

        At a slot boundary the autopilot acts first, on the plan it has (the new slot's command goes out at the
        boundary, before the solver runs), then again after the re-plan (a changed setpoint is sent at once).
        """
        now = self.clock()
        at_boundary = now >= self._boundary
        if at_boundary:
            self.dirty.update(self.batteries)  # receding horizon: re-plan at every boundary
            for name in list(self.batteries):
                await self.autopilot(name, now, final=False)
        due: list[str] = []
        for name in sorted(self.dirty):
            previous = self._last_plan.get(name)
            if previous and (now - previous).total_seconds() < self.config.planner_min_replan_interval_s:
                continue  # debounce bursts (e.g. retained spec + telemetry + prices at start)
            self.dirty.discard(name)
            self._last_plan[name] = now
            due.append(name)
        # batteries with a plan first: a burst of new ids (a fleet joining, a hostile client) queues behind the
        # batteries already being driven instead of in front of them
        due.sort(key=lambda name: self.batteries[name].schedule is None)
        await self.plan_batteries(due, now, drive=True)
        now = self.clock()
        for name in list(self.batteries):
            await self.autopilot(name, now)
        self._refresh_prices(now)
        self._boundary = self._next_boundary(now)
        wake_at = self.next_wake(now)
        if self.dirty:
            wake_at = min(wake_at, now + timedelta(seconds=self.config.planner_min_replan_interval_s))
        return wake_at

    async def run(self) -> None:
        await self.solvers.start()  # the pool's processes start now, not in the first re-plan of the fleet
        self._boundary = self._next_boundary(self.clock())
        while True:
            self.wake.clear()  # before the pass: a message arriving during it wakes the next one at once
            wake_at = await self.step()
            # a hair past the instant: waking a millisecond early would only mean another pass
            timeout = (wake_at - self.clock()).total_seconds() + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(timeout, 0.001))


__all__ = ["BatteryInputs", "Planner", "PlannerConfig"]
