"""The recorder node: every telemetry, command, state, schedule and price message ends up in InfluxDB.

Consumes (QoS 1, persistent session, optionally as the MQTT 5 shared subscription ``$share/<group>/...``):
    ``battery/+/telemetry``, ``battery/+/set`` (commands), ``battery/+/state``, ``battery/+/schedule``,
    ``market/+/prices``: each becomes line protocol (:mod:`nodes.recorder.points`) written in batches;
    ``history/request``: a :class:`HistoryQuery`, answered from the store.
Produces:
    ``history/response/{client}`` (the request's MQTT 5 response topic, correlation data echoed): a
    :class:`HistoryResult`; errors are ``ok=false`` with the reason, never silence.
    ``node/recorder/status`` (retained): online / degraded ("store unavailable: ...") / offline, with the
    counters ``messages`` (data messages handled), ``stored``/``rejected`` (points; a rejected point is one
    InfluxDB refused, acknowledged so it holds up nothing), ``retries``, ``batches``, ``splits`` (batches split
    to isolate refused points), ``pending``, ``history_requests``, ``history_errors`` next to the bus's own
    (``received``, ``decode_errors``, ``oversized``, ...).

At least once, nothing lost: a data message is acknowledged (PUBACK) only when its points are written, see
:mod:`nodes.recorder.batcher`. Redeliveries are harmless because every point is keyed by the message's own
timestamp. ``receive_maximum`` (default 2 x batch size, >= 10000) bounds what is in flight, and so the memory
used while InfluxDB is down; the broker keeps the rest.

Shared subscriptions (``BESS_RECORDER_SHARE_GROUP=recorder``): several recorders, each with its own
``BESS_NODE_ID``, split the stream; history requests are shared too, so exactly one recorder answers each.
Retained messages are not sent to shared subscriptions (MQTT 5), which is fine here: the recorder stores the
live stream, and the retained value was stored when it was published.

Lifecycle::

    setup      open the store (creating the database if the server is up), subscribe, start the flusher
    serve      handlers add lines and wait for their batch; the flusher writes (retrying while the store is
               down, status degraded) and releases the batch, whose messages are then acknowledged
    SIGTERM    flush what is pending (BESS_SHUTDOWN_FLUSH_S, default 10 s); anything not written stays
               unacknowledged and is redelivered to the next instance; close the store; bus offline
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import msgspec

from nodes.contract.messages import (
    BatteryState,
    Command,
    HistoryQuery,
    HistoryResult,
    PriceForecast,
    Schedule,
    Telemetry,
)
from nodes.contract.topics import (
    COMMAND,
    HISTORY_REQUEST,
    HISTORY_RESPONSE,
    PRICES,
    SCHEDULE,
    STATE,
    TELEMETRY,
)
from nodes.recorder import points
from nodes.recorder.batcher import Batcher
from nodes.recorder.config import RecorderConfig
from nodes.recorder.influxql import QueryError
from nodes.recorder.store import Store, StoreError, StoreUnavailable, make_store
from nodes.runtime.bus import Bus, Delivery
from nodes.runtime.node import Service

log = logging.getLogger("bess.recorder")


class Recorder(Service[RecorderConfig]):
    """Stores every data message (acknowledging only what is written) and answers history requests."""

    name = "recorder"

    def __init__(self, config: RecorderConfig, *, store: Store | None = None) -> None:
        super().__init__(config)
        self.receive_maximum = config.receive_maximum
        self.store: Store = store or make_store(config)
        self.batcher: Batcher | None = None
        self.bus: Bus | None = None
        self.messages = 0
        self.history_requests = 0
        self.history_errors = 0

    async def setup(self, bus: Bus) -> None:
        """Open the store, subscribe to the data topics and history requests, start the flusher."""
        self.bus = bus
        await self.store.open()
        self.batcher = Batcher(
            self.store,
            max_points=self.config.batch_max_points,
            max_delay_s=self.config.batch_max_delay_ms / 1000,
            on_state=bus.set_state,
        )
        share = self.config.recorder_share_group
        bus.subscribe(TELEMETRY, self._on_telemetry, share_group=share)
        bus.subscribe(COMMAND, self._on_command, share_group=share)
        bus.subscribe(STATE, self._on_state, share_group=share)
        bus.subscribe(SCHEDULE, self._on_schedule, share_group=share)
        bus.subscribe(PRICES, self._on_prices, share_group=share)
        bus.subscribe(HISTORY_REQUEST, self._on_history, share_group=share)
        bus.set_counters_source(self.counters)
        self.batcher.start()
        _tune_gc()
        log.info(
            "recording to %s (%s), batches of %d points / %d ms, receive maximum %d%s",
            self.config.influx_url,
            self.config.store,
            self.config.batch_max_points,
            self.config.batch_max_delay_ms,
            self.receive_maximum,
            f", shared subscription group {share!r}" if share else "",
        )

    def counters(self) -> dict[str, int]:
        """Counters merged into the node status."""
        counters = {
            "messages": self.messages,
            "history_requests": self.history_requests,
            "history_errors": self.history_errors,
        }
        if self.batcher is not None:
            counters.update(self.batcher.counters())
        return counters

    async def shutdown(self) -> None:
        """Flush pending points (bounded); what cannot be written stays unacknowledged for redelivery."""
        if self.batcher is not None:
            await self.batcher.close(self.config.shutdown_flush_s)
        # Handlers parked during shutdown (or of batches not written in time) are cancelled at exit, unacked.
        _quiet_abandoned_acks(asyncio.get_running_loop())
        await self.store.close()

    # -- data messages: one line builder each, then wait for the batch -------------------------------------------

    async def _store(self, lines: list[str]) -> None:
        assert self.batcher is not None
        self.messages += 1
        await self.batcher.add(lines)

    async def _on_telemetry(self, params: dict[str, str], msg: Telemetry, delivery: Delivery) -> None:
        # The hot path, so no helper coroutine in between: one line, then wait for its batch.
        assert self.batcher is not None
        self.messages += 1
        await self.batcher.add([points.telemetry_line(params["battery"], msg)])

    async def _on_command(self, params: dict[str, str], msg: Command, delivery: Delivery) -> None:
        await self._store(points.command_lines(params["battery"], msg))

    async def _on_state(self, params: dict[str, str], msg: BatteryState, delivery: Delivery) -> None:
        await self._store(points.state_lines(params["battery"], msg))

    async def _on_schedule(self, params: dict[str, str], msg: Schedule, delivery: Delivery) -> None:
        await self._store(points.schedule_lines(params["battery"], msg))

    async def _on_prices(self, params: dict[str, str], msg: PriceForecast, delivery: Delivery) -> None:
        await self._store(points.prices_lines(params["zone"], msg))

    # -- history ----------------------------------------------------------------------------------------------

    async def history(self, query: HistoryQuery) -> HistoryResult:
        """Answer ``query`` (its limit capped by ``BESS_HISTORY_MAX_ROWS``); failures become ``ok=False``."""
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

    async def _on_history(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> None:
        # read-your-writes: what this recorder has received is stored before it is queried (bounded wait, so a
        # database outage makes the answer an error, not a hang)
        assert self.batcher is not None
        await self.batcher.sync(timeout=2.0)
        result = await self.history(query)
        assert self.bus is not None
        await self.bus.respond(delivery, HISTORY_RESPONSE, result)


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
