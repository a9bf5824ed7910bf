"""The recorder node: every telemetry, command, state, schedule and price message ends up in InfluxDB.

Consumes (QoS 1, persistent session, optionally as the MQTT 5 shared subscription ``$share/<group>/...``):
    every topic of :data:`nodes.recorder.table.TABLE` (``battery/+/telemetry``, ``battery/+/set`` (commands),
    ``battery/+/state``, ``battery/+/schedule``, ``market/+/prices``): each message becomes line protocol by its
    row's point builder (:mod:`nodes.recorder.points`), written in batches;
    ``history/request``: a :class:`HistoryQuery`, answered from the store.
Produces:
    ``history/response/{client}`` (the request's MQTT 5 response topic, correlation data echoed): a
    :class:`HistoryResult`; errors are ``ok=false`` with the reason, never silence.
    ``stored/{client}`` (QoS 0): a :class:`StoredReceipt` for data messages published with that MQTT 5
    response topic and correlation data, once they are written (the gateway's durable ``POST /write``).
    ``battery/{battery}/stored`` (QoS 0): :class:`StoredUpTo`, how far the battery's own device readings are
    stored, at most once per ``BESS_RECORDER_CONFIRM_INTERVAL_MS`` (not with a shared subscription), see
    :mod:`nodes.recorder.confirm`.
    ``node/recorder/status`` (retained): online / degraded ("store unavailable: ...") / offline, with the
    counters ``messages`` (data messages handled), ``stored``/``rejected`` (points; a rejected point is one
    InfluxDB refused, acknowledged so it holds up nothing), ``retries``, ``batches``, ``splits`` (batches split
    to isolate refused points), ``pending``, ``history_requests``, ``history_errors``, ``receipts`` (published),
    ``receipts_unsent`` (broker down), ``unconfirmable`` (a response topic or correlation data no receipt can
    answer), ``marks`` (StoredUpTo published), ``unmigrated_points`` (only when some: prices and plans stored under
    the field names of before currencies, see :mod:`nodes.recorder.migrate`), ``history_segments_<level>``
    (parts of downsampled answers served from ``raw`` points or a rollup, see :mod:`nodes.recorder.routing`),
    next to the bus's own (``received``, ``decode_errors``, ...). Degraded also while the telemetry rollups
    cannot be maintained (:mod:`nodes.recorder.rollup_keeper`; history means then come from raw points).

At least once, nothing lost: a data message is acknowledged (PUBACK) only when its points are written, see
:mod:`nodes.recorder.batcher`. Redeliveries are harmless because every point is keyed by the message's own
timestamp. ``receive_maximum`` (default 2 x batch size, >= 10000) bounds what is in flight, and so the memory
used while InfluxDB is down; the broker keeps the rest.

Shared subscriptions (``BESS_RECORDER_SHARE_GROUP=recorder``): several recorders, each with its own
``BESS_NODE_ID``, split the stream; history requests are shared too, so exactly one recorder answers each.
Retained messages are not sent to shared subscriptions (MQTT 5), which is fine here: the recorder stores the
live stream, and the retained value was stored when it was published.

Lifecycle::

    setup      open the store (creating the database if the server is up), subscribe, start the flusher and
               the rollups' upkeep (CQs and RPs created or fixed now and every 10 minutes)
    serve      handlers add lines and wait for their batch; the flusher writes (retrying while the store is
               down, status degraded) and releases the batch, whose messages are then acknowledged and
               confirmed (receipts at once, device marks every confirm interval)
    SIGTERM    flush what is pending (BESS_RECORDER_SHUTDOWN_FLUSH_S, default 10 s); anything not written stays
               unacknowledged and is redelivered to the next instance; close the store; bus offline
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from nodes.contract.messages import HistoryQuery, HistoryResult
from nodes.contract.topics import HISTORY, STORED, STORED_RESPONSE
from nodes.recorder import migrate
from nodes.recorder.batcher import Batcher
from nodes.recorder.config import RecorderConfig
from nodes.recorder.confirm import Confirmations, correlation_text
from nodes.recorder.influxql import QueryError
from nodes.recorder.rollup_keeper import Conditions, start_rollups
from nodes.recorder.store import Influx1Store, Store, StoreError, StoreUnavailable, make_store
from nodes.recorder.table import TABLE, Stored
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable
from nodes.runtime.node import Service

log = logging.getLogger("bess.recorder")
M = TypeVar("M", bound=msgspec.Struct)


class Recorder(Service[RecorderConfig]):
    """Stores every data message (acknowledging only what is written) and answers history requests."""

    name = "recorder"

    def __init__(self, config: RecorderConfig, bus: MessageBus, *, store: Store | None = None) -> None:
        super().__init__(config, bus)
        self.store: Store = store or make_store(config)
        self.batcher: Batcher | None = None
        self.messages = 0
        self.history_requests = 0
        self.history_errors = 0
        self.confirmations = Confirmations("recorder")
        self.device_marks = False  # set in setup: on unless disabled or on a shared subscription
        self.receipts = 0
        self.receipts_unsent = 0
        self.unconfirmable = 0
        self.marks = 0
        self._receipts_due = False
        self._receipt_tasks: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)
        self.unmigrated = 0
        self._migration_check: asyncio.Task[None] | None = None
        self._conditions = Conditions(bus.set_state)
        self._rollups: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        """Open the store, subscribe to the data topics and history requests, start the flusher."""
        bus = self.bus
        await self.store.open()
        self.batcher = Batcher(
            self.store,
            max_points=self.config.batch_max_points,
            max_delay_s=self.config.batch_max_delay_ms / 1000,
            urgent_delay_s=self.config.batch_awaited_delay_ms / 1000,
            on_state=self._conditions.setter("store"),
        )
        share = self.config.recorder_share_group
        self.confirmations = Confirmations(bus.node)
        self.device_marks = self.config.recorder_confirm_devices and share is None
        if self.config.recorder_confirm_devices and share is not None:
            log.info("no device confirmations (battery/+/stored) on a shared subscription: the broker deals one "
                     "battery's readings to several replicas, so none of them sees a contiguous range")
        for row in TABLE:
            bus.subscribe(row.topic, self._handler(row), share_group=share)
        bus.serve(HISTORY, self._answer_history, share_group=share)
        bus.set_counters_source(self.counters)
        self.batcher.start()
        if isinstance(self.store, Influx1Store):
            self._migration_check = asyncio.create_task(self._check_migration(), name="migration-check")
        self._rollups = start_rollups(self.config, self.store, self._conditions.setter("rollups"))
        _tune_gc()
        log.info(
            "recording to %s (%s), batches of %d points / %d ms, receive maximum %d%s",
            self.config.influx_url,
            self.config.store,
            self.config.batch_max_points,
            self.config.batch_max_delay_ms,
            self.config.receive_maximum,
            f", shared subscription group {share!r}" if share else "",
        )

    def counters(self) -> dict[str, int]:
        """Counters merged into the node status."""
        counters = {
            "messages": self.messages,
            "history_requests": self.history_requests,
            "history_errors": self.history_errors,
            "receipts": self.receipts,
            "receipts_unsent": self.receipts_unsent,
            "unconfirmable": self.unconfirmable,
            "marks": self.marks,
        }
        if self.batcher is not None:
            counters.update(self.batcher.counters())
        if self.unmigrated:
            counters["unmigrated_points"] = self.unmigrated
        router = getattr(self.store, "router", None)
        if router is not None:  # which level served the parts of downsampled history answers
            counters.update({f"history_segments_{level}": n for level, n in router.served.items()})
        return counters

    async def _check_migration(self) -> None:
        """Name the points that wait for ``python -m nodes.recorder migrate`` (once, at start): without it the
        history from before the currency rename looks empty, and nothing else would say why."""
        assert isinstance(self.store, Influx1Store)
        try:
            waiting = await migrate.pending(self.store)
        except (StoreUnavailable, StoreError) as exc:
            log.debug("could not look for points under the old field names: %s", exc)
            return
        if waiting:
            self.unmigrated = sum(waiting.values())
            log.warning("%s", migrate.hint(waiting))
        else:
            log.debug("no points wait for python -m nodes.recorder migrate")

    async def shutdown(self) -> None:
        """Flush pending points (bounded); what cannot be written stays unacknowledged for redelivery."""
        for task in (self._migration_check, self._rollups):
            if task is not None:
                task.cancel()
        if self.batcher is not None:
            await self.batcher.close(self.config.shutdown_flush_s)
        # Handlers parked during shutdown (or of batches not written in time) are cancelled at exit, unacked.
        _quiet_abandoned_acks(asyncio.get_running_loop())
        await self.store.close()

    # -- data messages: one handler per row of the table, each waits for its batch ---------------------------

    def _handler(self, row: Stored[M]) -> Callable[[dict[str, str], M, Delivery], Awaitable[None]]:
        """The handler of one stored topic: its row's lines, then wait until the batch holding them is written."""
        lines, tag, device_reading = row.lines, row.series.tag, row.device_reading

        async def store(params: dict[str, str], msg: M, delivery: Delivery) -> None:
            assert self.batcher is not None
            self.messages += 1
            awaited = delivery.response_topic is not None
            refused = await self.batcher.add(lines(params[tag], msg), urgent=awaited)
            if awaited:
                self._confirm(delivery, refused)
            # a retained copy is a replay of the latest reading, not part of the ordered stream a mark vouches for
            if device_reading is not None and self.device_marks and not delivery.retain:
                ts = device_reading(msg)
                if ts is not None:
                    self.confirmations.device_reading(params[tag], ts)

        return store

    # -- stored confirmations -----------------------------------------------------------------------------------

    def _confirm(self, delivery: Delivery, refused: str | None) -> None:
        """Queue the receipt of a written message whose publisher gave a response topic."""
        assert delivery.response_topic is not None
        client = self.bus.reply_client(STORED_RESPONSE, delivery)
        correlation = correlation_text(delivery.correlation_data)
        if client is None or correlation is None:
            self.unconfirmable += 1
            if self.unconfirmable == 1 or self.unconfirmable % 10_000 == 0:
                log.warning("cannot confirm a message on %s: response topic %r is not %s or its correlation data "
                            "is not 1-64 printable ASCII characters (%d so far)", delivery.topic,
                            delivery.response_topic[:200], STORED_RESPONSE.template, self.unconfirmable)
            return
        if refused is None:
            self.confirmations.stored(client, correlation)
        else:
            self.confirmations.rejected(client, correlation, refused)
        if not self._receipts_due:
            # Every handler of the written batch resumes before this task runs, so one receipt covers them all.
            self._receipts_due = True
            task = asyncio.get_running_loop().create_task(self._publish_receipts())
            self._receipt_tasks.add(task)
            task.add_done_callback(self._receipt_tasks.discard)

    async def _publish_receipts(self) -> None:
        self._receipts_due = False
        for client, receipt in self.confirmations.take_receipts():
            if not self.bus.connected.is_set():
                self.receipts_unsent += 1  # the publisher times out and says "not confirmed": nothing is lost
                continue
            try:
                await self.bus.publish(STORED_RESPONSE, receipt, client=client)
                self.receipts += 1
            except BusUnavailable:
                self.receipts_unsent += 1

    async def run(self) -> None:
        """Publish device marks (battery/{battery}/stored) every confirm interval, for batteries that moved."""
        if not self.device_marks:
            await super().run()
            return
        while True:
            await asyncio.sleep(self.config.recorder_confirm_interval_ms / 1000)
            if not self.bus.connected.is_set():
                continue  # kept: the marks only move forward, the next round sends the newest
            for battery, mark in self.confirmations.take_marks():
                try:
                    await self.bus.publish(STORED, mark, battery=battery)
                    self.marks += 1
                except BusUnavailable:
                    self.confirmations.unsent_mark(battery)

    # -- history ----------------------------------------------------------------------------------------------

    async def history(self, query: HistoryQuery) -> HistoryResult:
        """Answer ``query`` (its limit capped by ``BESS_RECORDER_HISTORY_MAX_ROWS``); failures become ``ok=False``."""
        self.history_requests += 1
        capped = msgspec.structs.replace(query, limit=min(query.limit, self.config.history_max_rows))
        try:
            return await self.store.query(capped)
        except QueryError as exc:
            error = f"invalid query: {exc}"
        except StoreUnavailable as exc:
            error = f"store unavailable: {exc}"
        except StoreError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("history query failed: %r", query)
            error = f"internal error: {type(exc).__name__}"
        self.history_errors += 1
        return HistoryResult(ok=False, error=error[:1000])

    async def _answer_history(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> HistoryResult:
        # read-your-writes: what this recorder has received is stored before it is queried (bounded wait, so a
        # database outage makes the answer an error, not a hang)
        assert self.batcher is not None
        await self.batcher.sync(timeout=2.0)
        return await self.history(query)


def _tune_gc() -> None:
    """Make the cyclic GC cheap for a process that keeps up to ``receive_maximum`` handlers alive.

    Every waiting handler is a task, a coroutine and a frame; with the default gen-0 threshold (700 allocations)
    the collector runs every few messages and its older generations rescan all of them. Freezing what exists
    after start-up (modules, config) and collecting less often cut the recorder's CPU per message by about a
    quarter in bench/ingest.py; the garbage here is short-lived and mostly acyclic, so memory is unaffected.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _quiet_abandoned_acks(loop: asyncio.AbstractEventLoop) -> None:
    """Do not log one traceback per abandoned message when the process ends.

    Handlers of unwritten batches are still waiting when ``asyncio.run`` cancels every task at exit; gmqtt's
    PUBACK callback then finds a cancelled task (so, correctly, sends no PUBACK) and the loop would log that
    as "Exception in callback" for each of up to ``receive_maximum`` messages.
    """
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError):
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


__all__ = ["Recorder", "RecorderConfig"]
