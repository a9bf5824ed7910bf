"""The dashboard's control desk: the panel's actions become the contract's request topics, answers are matched.

Nodes talk only over MQTT, so the dashboard commands nothing itself: a manual command becomes a PowerRequest on
``battery/{battery}/request/power``, an autopilot pause or resume a ModeRequest on ``.../request/mode``, a re-plan a
ReplanRequest on ``.../request/replan``: the topics Home Assistant's controls use, with ``source: dashboard`` and a
``request_id`` of the desk's. The gateway checks and applies them with the one implementation behind ``POST
/mqtt/publish`` and ``POST /control`` (spec limits, unknown battery, idle lock, command rate, leases) and publishes a
RequestResult with the same id on the retained, shared ``.../request/result``; the desk waits for *its* id (it
reads every result live, so another requester's later result cannot hide its own) and answers the browser with
the gateway's verdict: the Command it sent (and its lease) or the refusal with the gateway's status and text. A
re-plan has no result topic: its answer is the next schedule of the battery.

The renderer validates only the shape of the panel's JSON (types, bounds of the wire messages); whether a command
is allowed is the gateway's decision alone. The spec's power limits are passed to the page for input hints only.

No HTTP here (:mod:`nodes.renderer.control_web` serves it) and no bus: the node shell passes a ``send`` coroutine
(publish QoS 1, PUBACK awaited) and feeds results, commands, states, specs and schedules in.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from nodes.contract.messages import (
    BatterySpec,
    BatteryState,
    Command,
    ControlModeName,
    ModeRequest,
    PowerRequest,
    ReplanRequest,
    RequestResult,
    Schedule,
)
from nodes.contract.topics import MODE_REQUEST, POWER_REQUEST, REPLAN_REQUEST, Topic
from nodes.renderer.dashboard import DashboardState
from nodes.runtime.errors import BusUnavailable

Sender = Callable[[Topic[Any], msgspec.Struct, str], Awaitable[None]]
"""``send(topic, message, battery)``: publish at QoS 1 and return once the broker acknowledged it (PUBACK);
raise :class:`BusUnavailable` when it did not."""

RECENT = 200
"""Commands and states kept per battery from the live topics (the command history's tail before it is stored)."""
RESULTS = 20
"""Request results kept per battery (the panel's last answers)."""
EVENT_KINDS = frozenset({"command", "request"})
"""The live events the desk adds to a battery page's stream: ``command`` (each Command on the battery's set topic)
and ``request`` (each RequestResult)."""
_encoder = msgspec.json.Encoder()


# -- what the panel sends (strict: a typo is an error, not a default) ------------------------------------------


class CommandBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/control/{battery}/command``: a manual command and its lease (``lease_s``, 1 s to 24 h; none:
    the gateway's ``BESS_GATEWAY_COMMAND_LEASE_S``)."""

    action: Literal["charge", "discharge", "idle"]
    power_kw: Annotated[float, Meta(ge=0.0, le=1e7)] | None = None
    lease_s: Annotated[int, Meta(ge=1, le=86_400)] | None = None


class ModeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/control/{battery}/mode``: pause (``manual``), resume (``autopilot``) or hold ``idle``, optionally
    for ``for_s`` seconds (then the planner's default again)."""

    mode: ControlModeName
    for_s: Annotated[int, Meta(ge=1, le=7 * 86_400)] | None = None
    reason: Annotated[str, Meta(max_length=200)] = ""


class ReplanBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/control/{battery}/replan``: plan the battery again now."""

    reason: Annotated[str, Meta(max_length=200)] = ""


class BodyError(ValueError):
    """A panel body whose meaning is incomplete (e.g. a charge without a power): 422 with the field."""

    def __init__(self, error: str, field_name: str) -> None:
        super().__init__(error)
        self.error = error
        self.field = field_name


def signed_power(body: CommandBody) -> float:
    """The PowerRequest's signed power of a panel command (+ discharge, - charge, 0 idle)."""
    if body.action == "idle":
        if body.power_kw:
            raise BodyError("IDLE takes no power: leave power_kw out (or 0)", "power_kw")
        return 0.0
    if not body.power_kw:
        # the gateway's rule for 'CHARGE 0kW': a typo, not idle; say it before the request turns it into IDLE
        raise BodyError(f"{body.action.upper()} needs a power above 0 kW; send idle to stop the battery", "power_kw")
    return body.power_kw if body.action == "discharge" else -body.power_kw


# -- answers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the browser gets: the HTTP status and the JSON body."""

    status: int
    body: dict[str, Any]


@dataclass
class BatteryDesk:
    """What the desk knows of one battery."""

    spec: BatterySpec | None = None
    state: BatteryState | None = None
    command: Command | None = None
    commands: deque[Command] = field(default_factory=lambda: deque(maxlen=RECENT))
    states: deque[BatteryState] = field(default_factory=lambda: deque(maxlen=RECENT))
    results: deque[RequestResult] = field(default_factory=lambda: deque(maxlen=RESULTS))
    schedule: Schedule | None = None
    schedules_seen: int = 0


def new_request_id() -> str:
    """``d-<12 hex>``: unique per request, ``d`` for dashboard."""
    return "d-" + uuid.uuid4().hex[:12]


class ControlDesk:
    """The panel's actions as MQTT requests, and the answers matched to them."""

    def __init__(
        self,
        dashboard: DashboardState,
        send: Sender,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], str] = new_request_id,
    ) -> None:
        self.dashboard = dashboard
        self.send = send
        self.timeout_s = timeout_s
        self.clock = clock
        self.new_id = new_id
        self.batteries: dict[str, BatteryDesk] = {}
        self._results: dict[str, asyncio.Future[RequestResult]] = {}
        self._commands: dict[str, list[asyncio.Future[Command]]] = {}
        self._schedules: dict[str, list[asyncio.Future[Schedule]]] = {}
        self.counters: dict[str, int] = {"control_requests": 0, "control_accepted": 0, "control_refused": 0,
                                         "control_unanswered": 0, "control_unsent": 0}

    def desk(self, battery: str) -> BatteryDesk:
        """The battery's entry (made on first use)."""
        return self.batteries.setdefault(battery, BatteryDesk())

    # -- inputs (the node shell) ---------------------------------------------------------------------------

    def on_result(self, battery: str, result: RequestResult) -> None:
        """A RequestResult (any requester's): kept, pushed to the battery's pages, and the matching wait ended."""
        self.desk(battery).results.append(result)
        self.dashboard.publish_event("request", battery, _encoder.encode(result), key="request")
        waiter = self._results.pop(result.request_id, None) if result.request_id else None
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def on_command(self, battery: str, command: Command) -> None:
        """A Command on the battery's set topic (any source): the panel's running command and the history tail."""
        desk = self.desk(battery)
        desk.command = command
        desk.commands.append(command)
        self.dashboard.publish_event("command", battery, _encoder.encode(command), key="command")
        for waiter in self._commands.pop(command.command_id, []):
            if not waiter.done():
                waiter.set_result(command)

    def on_state(self, battery: str, state: BatteryState) -> None:
        """A battery state: what the battery did with its command (the history's outcome)."""
        desk = self.desk(battery)
        desk.state = state
        desk.states.append(state)

    def on_spec(self, battery: str, spec: BatterySpec) -> None:
        """The spec's power limits, for the panel's input hints (the gateway checks them)."""
        self.desk(battery).spec = spec

    def on_schedule(self, battery: str, schedule: Schedule) -> None:
        """A new plan: the answer to a re-plan request made before it arrived."""
        desk = self.desk(battery)
        desk.schedule = schedule
        desk.schedules_seen += 1
        for waiter in self._schedules.pop(battery, []):
            if not waiter.done():
                waiter.set_result(schedule)

    # -- actions -------------------------------------------------------------------------------------------

    async def command(self, battery: str, body: CommandBody) -> Answer:
        """A manual command: a PowerRequest; answered with the Command the gateway sent, or its refusal."""
        power = signed_power(body)
        request_id = self.new_id()
        request = PowerRequest(power_kw=power, valid_for_s=body.lease_s, source="dashboard", request_id=request_id)
        return await self._ask(battery, POWER_REQUEST, request, request_id)

    async def mode(self, battery: str, body: ModeBody) -> Answer:
        """Pause, resume or hold idle: a ModeRequest; answered with the gateway's verdict."""
        request_id = self.new_id()
        request = ModeRequest(mode=body.mode, for_s=body.for_s, reason=body.reason or f"dashboard: {body.mode}",
                              source="dashboard", request_id=request_id)
        return await self._ask(battery, MODE_REQUEST, request, request_id)

    async def replan(self, battery: str, body: ReplanBody) -> Answer:
        """Re-plan now: a ReplanRequest; answered with the next schedule if it comes within the timeout."""
        request_id = self.new_id()
        request = ReplanRequest(reason=body.reason or "dashboard: re-plan now", source="dashboard",
                                request_id=request_id)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Schedule] = loop.create_future()
        self._schedules.setdefault(battery, []).append(waiter)
        self.counters["control_requests"] += 1
        try:
            await self.send(REPLAN_REQUEST, request, battery)
        except BusUnavailable as exc:
            self._drop(self._schedules, battery, waiter)
            return self._unsent(request_id, exc)
        asked_at = self.clock()
        try:
            schedule = await asyncio.wait_for(asyncio.shield(waiter), self.timeout_s)
        except TimeoutError:
            self._drop(self._schedules, battery, waiter)
            return Answer(202, {"request_id": request_id, "outcome": "requested", "asked_at": asked_at,
                                "schedule": None, "note": f"asked the planner; no new plan within {self.timeout_s:g} s "
                                "(it re-plans at most every BESS_PLANNER_MIN_REPLAN_INTERVAL_S, or it is not running)"})
        return Answer(202, {"request_id": request_id, "outcome": "planned", "asked_at": asked_at,
                            "schedule": {"plan_id": schedule.plan_id, "created_at": schedule.created_at,
                                         "expected_revenue": schedule.expected_revenue,
                                         "currency": schedule.currency, "slots": len(schedule.slots)},
                            "note": f"new plan {schedule.plan_id}"})

    async def _ask(self, battery: str, topic: Topic[Any], request: msgspec.Struct, request_id: str) -> Answer:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RequestResult] = loop.create_future()
        self._results[request_id] = waiter  # before the publish: the answer may come before the PUBACK
        self.counters["control_requests"] += 1
        deadline = loop.time() + self.timeout_s
        try:
            await self.send(topic, request, battery)
        except BusUnavailable as exc:
            self._results.pop(request_id, None)
            return self._unsent(request_id, exc)
        try:
            result = await asyncio.wait_for(waiter, max(deadline - loop.time(), 0.0))
        except TimeoutError:
            self._results.pop(request_id, None)
            self.counters["control_unanswered"] += 1
            return Answer(504, {"error": f"the gateway did not answer within {self.timeout_s:g} s (is it running?); "
                                "the request may still be applied: its result will show on the panel",
                                "field": None, "request_id": request_id})
        if result.outcome == "refused":
            self.counters["control_refused"] += 1
            return Answer(result.status, {"error": result.error, "field": result.field, "request_id": request_id,
                                          "result": result})
        self.counters["control_accepted"] += 1
        command = await self._command(result.command_id, deadline) if result.command_id else None
        return Answer(202, {"request_id": request_id, "outcome": "accepted", "result": result, "command": command})

    async def _command(self, command_id: str, deadline: float) -> Command | None:
        """The Command with ``command_id`` (usually seen before its result: the gateway publishes it first)."""
        for desk in self.batteries.values():
            for command in reversed(desk.commands):
                if command.command_id == command_id:
                    return command
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Command] = loop.create_future()
        self._commands.setdefault(command_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, max(deadline - loop.time(), 0.1))
        except TimeoutError:
            self._drop(self._commands, command_id, waiter)
            return None

    def _unsent(self, request_id: str, exc: BusUnavailable) -> Answer:
        self.counters["control_unsent"] += 1
        return Answer(503, {"error": f"MQTT broker unavailable: the request was not sent ({exc}); sending it again "
                            "is safe", "field": None, "request_id": request_id})

    @staticmethod
    def _drop(waiters: dict[str, list[Any]], key: str, waiter: asyncio.Future[Any]) -> None:
        pending = waiters.get(key, [])
        if waiter in pending:
            pending.remove(waiter)
        if not pending:
            waiters.pop(key, None)

    # -- what the panel shows ------------------------------------------------------------------------------

    def snapshot(self, battery: str) -> dict[str, Any]:
        """The panel's data: the running command, the battery's state, the last results, the spec's limits."""
        desk = self.batteries.get(battery) or BatteryDesk()
        spec = desk.spec
        return {
            "battery": battery,
            "command": desk.command,
            "state": desk.state,
            "results": list(desk.results)[-5:],
            "limits": None if spec is None else {"max_charge_kw": spec.max_charge_kw,
                                                 "max_discharge_kw": spec.max_discharge_kw},
            "schedule": None if desk.schedule is None else {"plan_id": desk.schedule.plan_id,
                                                            "created_at": desk.schedule.created_at},
        }


__all__ = [
    "EVENT_KINDS",
    "Answer",
    "BodyError",
    "CommandBody",
    "ControlDesk",
    "ModeBody",
    "ReplanBody",
    "Sender",
    "new_request_id",
    "signed_power",
]
