"""The alarms node: every battery's alarm rules, judged as their inputs arrive and woken exactly when a rule is due.

Consumes: ``battery/+/telemetry`` (the latest reading by its own timestamp), ``battery/+/spec``, ``battery/+/set``
(the command a battery should follow), ``node/+/status`` (offline, degraded, and the planner's ``not planned:``
notes in its details), ``market/{BESS_ALARMS_ZONE}/prices`` (the end of the forecast), and its own retained
``battery/+/alarm/+`` (the alarms of the previous run).
Produces: ``battery/{battery}/alarm/{rule}`` (retained) for every transition: ``raised``, ``cleared``, and a raised
alarm whose cause changed (other BMS codes, other nodes down) again with its first ``since``.

How it judges (:mod:`nodes.alarms.state`, :mod:`nodes.alarms.rules`): on every input the battery's rules are
evaluated at once; the evaluation also says when it must run again without new input (a pending raise or clear
deadline, a reading turning stale, prices running out), and the run loop sleeps exactly until the earliest of
those: no polling. One lock orders evaluation and publication, so a raised message never overtakes its cleared one.

Restart: the retained alarms are the book. After connecting the node waits ``BESS_ALARMS_RESTORE_WAIT_S`` for
them before judging anything, so a raised alarm is neither raised again nor left standing once its cause is gone
(it is cleared with the usual hysteresis); a retained alarm arriving later is adopted the same way.
Counters: ``alarms_raised``, ``alarms_cleared``, ``alarms_updated``, ``alarms_active``, ``batteries``,
``evaluations`` (one battery's rules judged once).
Lifecycle: the common node lifecycle (:mod:`nodes.runtime.node`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from nodes.alarms.config import AlarmsConfig
from nodes.alarms.state import Transition, evaluate, restore
from nodes.alarms.watch import Watch, prices_end
from nodes.contract.messages import Alarm, BatterySpec, Command, NodeStatus, PriceForecast, Telemetry
from nodes.contract.topics import ALARM, COMMAND, PRICES, SPEC, STATUS, TELEMETRY
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.node import Service

log = logging.getLogger("bess.alarms")


def judged_part(status: NodeStatus) -> tuple[object, ...]:
    """What the rules read of a node's status (state, since, reason, details): not the counters."""
    return status.state, status.since, status.reason, status.details


class Alarms(Service[AlarmsConfig]):
    """Raises and clears the alarms of every battery it watches."""

    name = "alarms"

    def __init__(self, config: AlarmsConfig, bus: MessageBus, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, bus)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rules = config.rules()
        self.watches: dict[str, Watch] = {battery: Watch() for battery in config.batteries}
        self.nodes: dict[str, NodeStatus] = {}
        self.prices_until: datetime | None = None
        self.judging = False
        """False until the retained alarms had their chance to arrive (:meth:`begin`)."""
        self.wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- inputs -----------------------------------------------------------------------------------------------

    async def setup(self) -> None:
        bus = self.bus
        bus.subscribe(ALARM, self.on_alarm)
        bus.subscribe(TELEMETRY, self.on_telemetry)
        bus.subscribe(SPEC, self.on_spec)
        bus.subscribe(COMMAND, self.on_command)
        bus.subscribe(STATUS, self.on_status, on_cleared=self.on_status_cleared)
        bus.subscribe(PRICES, self.on_prices, zone=self.config.alarms_zone)
        bus.set_counters_source(lambda: {"alarms_active": self.active_count(), "batteries": len(self.watches)})

    def _watch(self, battery: str) -> Watch:
        if battery not in self.watches:
            self.watches[battery] = Watch()
        return self.watches[battery]

    async def on_alarm(self, params: dict[str, str], alarm: Alarm, delivery: Delivery) -> None:
        """A retained alarm of the previous run: adopt it into the book (our own live ones are not retained)."""
        if not delivery.retain or params["rule"] != alarm.rule:
            return
        watch = self._watch(params["battery"])
        if alarm.rule in watch.book:
            return  # judged since the start: what this run decided stands
        watch.book.update(restore([alarm]))
        await self.judge(params["battery"])

    async def on_telemetry(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        """A reading: the newest one is what the rules judge."""
        if self._watch(params["battery"]).take(telemetry):
            await self.judge(params["battery"])

    async def on_spec(self, params: dict[str, str], spec: BatterySpec, delivery: Delivery) -> None:
        """The limits the SOC and command rules judge against."""
        self._watch(params["battery"]).spec = spec
        await self.judge(params["battery"])

    async def on_command(self, params: dict[str, str], command: Command, delivery: Delivery) -> None:
        """The latest command: what the battery should do (idle once its lease ends)."""
        watch = self._watch(params["battery"])
        if watch.command is None or command.issued_at >= watch.command.issued_at:
            watch.command = command
            await self.judge(params["battery"])

    async def on_status(self, params: dict[str, str], status: NodeStatus, delivery: Delivery) -> None:
        """A node's health (by the topic it came on; this node's own is not judged: it is the judge)."""
        if params["node"] == self.bus.node:
            return
        before = self.nodes.get(params["node"])
        self.nodes[params["node"]] = status
        if before is None or judged_part(before) != judged_part(status):
            # every node republishes its status (counters) every BESS_STATUS_INTERVAL_S: re-judging each of 1,000
            # batteries for a status that says nothing new cost most of this node's CPU in bench/soak.py
            await self.judge_all()

    async def on_status_cleared(self, params: dict[str, str]) -> None:
        """A node removed for good (``deploy/up`` clears the retained status of a node it no longer runs): it is
        no longer watched, so its node_offline alarm clears instead of standing forever."""
        if self.nodes.pop(params["node"], None) is not None:
            await self.judge_all()

    async def on_prices(self, params: dict[str, str], forecast: PriceForecast, delivery: Delivery) -> None:
        """The forecast the batteries are planned on: its end is the price horizon."""
        self.prices_until = prices_end(forecast)
        await self.judge_all()

    # -- judging ----------------------------------------------------------------------------------------------

    async def judge_all(self) -> None:
        """Judge every watched battery now."""
        for battery in sorted(self.watches):
            await self.judge(battery)

    async def judge(self, battery: str, now: datetime | None = None) -> list[Transition]:
        """Evaluate one battery's rules at ``now`` and publish what changed (nothing before :meth:`begin`)."""
        if not self.judging:
            return []
        async with self._lock:
            now = now or self.clock()
            watch = self.watches[battery]
            if watch.since is None:
                watch.since = now
            result = evaluate(watch.book, watch.inputs(battery, self.nodes, self.prices_until),
                              self.rules.for_battery(battery), now)
            watch.book = result.book
            self.bus.counters["evaluations"] += 1
            if result.next_due != watch.next_due:
                watch.next_due = result.next_due
                self.wake.set()
            for transition in result.transitions:
                await self.bus.publish(ALARM, transition.alarm(), battery=battery, rule=transition.rule)
                self.bus.counters[f"alarms_{transition.kind}"] += 1
                level = logging.WARNING if transition.kind != "cleared" else logging.INFO
                log.log(level, "%s: %s %s: %s", battery, transition.rule, transition.kind, transition.message)
            return result.transitions

    async def begin(self) -> None:
        """Start judging (the retained alarms are in the book by now) with every battery judged once."""
        self.judging = True
        await self.judge_all()

    async def judge_due(self, now: datetime | None = None) -> None:
        """Judge the batteries whose next wake-up has come."""
        now = now or self.clock()
        for battery, watch in sorted(self.watches.items()):
            if watch.next_due is not None and watch.next_due <= now:
                await self.judge(battery, now)

    def next_due(self) -> datetime | None:
        """The earliest instant any battery must be judged again without new input."""
        return min((w.next_due for w in self.watches.values() if w.next_due is not None), default=None)

    def active_count(self) -> int:
        """Alarms up now (raised, or raised and waiting to clear), over every battery."""
        return sum(state.active for watch in self.watches.values() for state in watch.book.values())

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.sleep(self.config.alarms_restore_wait_s)  # the retained alarms arrive right after SUBACK
        await self.begin()
        while True:
            self.wake.clear()  # before reading the due time: a judgement after this wakes the wait below
            due = self.next_due()
            timeout = None if due is None else max((due - self.clock()).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            await self.judge_due()


__all__ = ["Alarms", "AlarmsConfig", "judged_part"]
