"""HTTP routes of the gateway: the seed's curl calls translated into typed MQTT messages.

=====================  =====================================================================================
``POST /write``        one record (or an array) -> Telemetry on ``battery/{battery}/telemetry`` -> 200 stored
                       (the recorder confirmed it), 202 accepted (broker only, or not confirmed in time)
``GET /read``          HistoryQuery to the recorder (MQTT 5 request/response) -> records as written, or CSV
``GET /alarms``        the stored alarm transitions of ``?battery=`` (raised, cleared) from the recorder, JSON
``POST /mqtt/publish`` ``{"command": "DISCHARGE 50kW"}`` -> ControlMode manual until the lease ends on
                       ``battery/{battery}/control``, then the Command on ``battery/{battery}/set`` -> 202
``POST /control``      ``{"mode": "autopilot"|"manual"|"idle"}`` -> retained ControlMode (+ IDLE for idle) -> 202
``GET /control``       the control mode in force for ``?battery=``
``POST /prices``       a PriceForecast -> ``market/{zone}/prices`` -> 202
``GET /health``        200 when the broker is connected, else 503
``GET /openapi.json``  the OpenAPI 3.1 document (generated from :mod:`nodes.gateway.bodies`)
=====================  =====================================================================================

``POST /write`` (:meth:`Gateway.write`): by default (``BESS_GATEWAY_WRITE_ACK=stored``) each record is published
with an MQTT 5 response topic (``stored/{node}``) and its own correlation data, and the answer waits for the
recorder's receipts (:mod:`nodes.gateway.receipts`): 200 when every record is confirmed in the database, 202
when the broker acknowledged them all (PUBACK) but some were not confirmed within
``BESS_GATEWAY_WRITE_STORED_TIMEOUT_S`` (the body lists them: they may be stored, or lost if the broker crashes
before delivering them), 422 when the database refused a record for good, 503 when the broker did not acknowledge
(nothing accepted for sure, re-sending is safe). ``?ack=broker`` (or ``BESS_GATEWAY_WRITE_ACK=broker``) answers 202
at the PUBACK, the fast path.
For the other writing routes a 202 means the broker acknowledged the message (PUBACK, QoS 1). Every error is
``{"error": "...", "field": ...}`` (:mod:`nodes.gateway.errors`). Order of checks on POST: bearer token (401)
-> content type (415) -> body size (413) -> JSON syntax (400) -> content (422) -> unknown battery (404, unless
``"force": true``) -> control mode idle (409) -> command rate (429 with Retry-After, :mod:`nodes.runtime.
command_rate`) -> broker (503).

Tokens: with ``BESS_GATEWAY_TOKEN`` set, every writing route needs it; the reading routes (``GET /read``,
``GET /control``) need ``BESS_GATEWAY_READ_TOKEN`` (by default the same token) or the write token.
``/health`` and ``/openapi.json`` stay open.

Content type decision: ``application/json`` (any parameters), ``application/*+json`` and a *missing*
Content-Type are accepted; anything else (for example curl's default for ``-d``,
``application/x-www-form-urlencoded``) is a 415 saying which header to send. The seed's curl lines send
``application/json``; a missing header is accepted because some IoT clients send none, and the body is JSON-
validated strictly anyway.

The app is given a :class:`nodes.runtime.core.MessageBus`, so unit tests run it on a ``MemoryBus``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from aiohttp import hdrs, web

from nodes import __version__
from nodes.contract.messages import (
    Command,
    ControlMode,
    ControlModeName,
    StoredReceipt,
    Telemetry,
)
from nodes.contract.topics import COMMAND, CONTROL, PRICES, STORED_RESPONSE, TELEMETRY
from nodes.gateway import control, history_routes
from nodes.gateway.bodies import (
    CommandBody,
    CommandControl,
    ControlBody,
    ControlState,
    Health,
    PricesBody,
    PublishedBatch,
    PublishedCommand,
    PublishedControl,
    PublishedPrices,
    PublishedTelemetry,
    WriteRequest,
)
from nodes.gateway.commands import CommandError, CommandSource, ParsedCommand, build_command, parse_command
from nodes.gateway.config import GatewaySettings
from nodes.gateway.convert import check_timestamp, to_price_forecast, to_telemetry
from nodes.gateway.errors import ApiError, ImplausibleTimestamp, check_battery, error_middleware, from_msgspec
from nodes.gateway.fleet import Fleet
from nodes.gateway.outcome import RESEND_IS_SAFE, ack_mode, write_outcome
from nodes.gateway.receipts import Expectation, Receipts
from nodes.gateway.specs import SpecBook
from nodes.runtime.command_rate import CommandRateLimit
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
B = TypeVar("B")

_JSON = "application/json"
_ENCODER = msgspec.json.Encoder()
_WRITE_DECODER = msgspec.json.Decoder(WriteRequest)
_COMMAND_DECODER = msgspec.json.Decoder(CommandBody)
_PRICES_DECODER = msgspec.json.Decoder(PricesBody)
_CONTROL_DECODER = msgspec.json.Decoder(ControlBody)


def _now() -> datetime:
    return datetime.now(UTC)


def _command_id() -> str:
    return "c-" + uuid.uuid4().hex[:12]


def _json(status: int, struct: Any) -> web.Response:
    return web.Response(status=status, body=_ENCODER.encode(struct), content_type=_JSON)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


class Gateway:
    """The route handlers, bound to a bus, the spec book, settings, a clock and an id source."""

    def __init__(
        self,
        bus: MessageBus,
        specs: SpecBook,
        settings: GatewaySettings,
        *,
        fleet: Fleet | None = None,
        receipts: Receipts | None = None,
        clock: Callable[[], datetime] = _now,
        new_command_id: Callable[[], str] = _command_id,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.specs = specs
        self.fleet = fleet or Fleet()
        #: the recorder's StoredReceipts on stored/{node}, for the durable POST /write (subscribed here: the app
        #: is what publishes the records and waits for their receipts)
        self.receipts = receipts or Receipts()
        bus.subscribe(STORED_RESPONSE, self._on_receipt, client=bus.node)
        self.settings = settings
        self.clock = clock
        self.new_command_id = new_command_id
        self.monotonic = monotonic
        #: the per-battery command rate bound shared by every producer (:mod:`nodes.runtime.command_rate`)
        self.command_rate = CommandRateLimit(settings.command_rate_per_min, settings.command_burst)
        self.started = time.monotonic()
        #: what went through, for the node's status message (``telemetry``, ``commands``, ``prices``, ``reads``)
        self.counters: Counter[str] = Counter()
        self._token = settings.token.encode() if settings.token else None
        read = settings.read_token or settings.token
        # the write token also reads: whoever may command a battery may see its history
        self._read_tokens = [t for t in {read.encode() if read else None, self._token} if t is not None]

    async def _on_receipt(self, params: dict[str, str], receipt: StoredReceipt, delivery: Delivery) -> None:
        self.receipts.on_receipt(receipt)

    # -- request plumbing ------------------------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        """The write token (when one is configured), else 401."""
        if self._token is not None:
            self._check_token(request, [self._token])

    def _authorize_read(self, request: web.Request) -> None:
        """The read token or the write token (when either is configured), else 401."""
        if self._read_tokens:
            self._check_token(request, self._read_tokens)

    @staticmethod
    def _check_token(request: web.Request, tokens: list[bytes]) -> None:
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, given = header.partition(" ")
        offered = given.strip().encode()
        # compare with every token (no early exit), so the timing does not tell which one nearly matched
        matches = [hmac.compare_digest(offered, token) for token in tokens]
        if scheme.lower() != "bearer" or not any(matches):
            raise ApiError(
                401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'", "Authorization",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="bess-gateway"'},
            )

    async def _body(self, request: web.Request) -> bytes:
        content_type = request.headers.get(hdrs.CONTENT_TYPE)
        if content_type is not None and not _is_json(content_type):
            raise ApiError(
                415, f"Content-Type {content_type!r} is not JSON: send 'Content-Type: application/json'",
                "Content-Type",
            )
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"body of {request.content_length} bytes is larger than the limit of {limit} bytes")
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"body is larger than the limit of {limit} bytes") from None
        except TimeoutError:
            # a body trickled in slowly holds a connection: end it (BESS_GATEWAY_BODY_TIMEOUT_S)
            raise ApiError(408, f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
                           headers={hdrs.CONNECTION: "close"}) from None

    def _query(self, request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
        params: dict[str, str] = {}
        if not request.query_string:  # the common case; parsing an empty query still costs
            return params
        for key, value in request.query.items():
            if key not in allowed:
                names = ", ".join(sorted(allowed)) or "none"
                raise ApiError(422, f"unknown query parameter {key!r} (allowed: {names})", key)
            if key in params:
                raise ApiError(422, f"query parameter {key!r} is given more than once", key)
            params[key] = value
        return params

    async def _decode(self, request: web.Request, decoder: msgspec.json.Decoder[B]) -> B:
        """The request body (415/413 checks first), strictly decoded; a msgspec error becomes 400/422."""
        raw = await self._body(request)
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise from_msgspec(exc) from None

    def _battery_param(self, request: web.Request) -> str | None:
        """``?battery=`` (the only query parameter of the writing routes), checked, or None."""
        query = self._query(request, _BATTERY_ONLY)
        return check_battery(query["battery"]) if "battery" in query else None

    def _battery(self, from_body: str | None, from_query: str | None, field: str = "battery") -> str:
        if from_body is not None and from_query is not None and from_body != from_query:
            raise ApiError(422, f"battery {from_body!r} in the body differs from ?battery={from_query}", field)
        return from_body or from_query or self.settings.default_battery

    def _known(self, battery: str) -> bool:
        return self.fleet.known(battery) or self.specs.get(battery) is not None

    def _require_known(self, battery: str, force: bool) -> None:
        """404 for a battery never seen (no spec, telemetry or state), unless the caller forces it."""
        if force or self._known(battery):
            return
        raise ApiError(
            404,
            f"unknown battery {battery!r}: the gateway has seen no spec, telemetry or state for it (a typo?). "
            'Send "force": true to command it anyway',
            "battery",
        )

    async def _publish_control(self, battery: str, mode: ControlMode) -> None:
        await self.bus.publish(CONTROL, mode, wait_ack=True, timeout=self.settings.publish_timeout_s,
                               battery=battery)
        self.fleet.set_control(battery, mode)
        self.counters["control"] += 1

    def _check_rate(self, battery: str, action: str, field: str = "command") -> None:
        """429 with Retry-After when ``battery`` had more commands than the bound allows."""
        verdict = self.command_rate.check(battery, action, self.monotonic())
        if not verdict.allowed:
            self.counters["commands_rate_limited"] += 1
            retry = max(1, math.ceil(verdict.retry_after_s))
            raise ApiError(429, verdict.why, field, headers={hdrs.RETRY_AFTER: str(retry)})

    async def _publish_command(self, battery: str, message: Command) -> None:
        # counted before the publish: a command whose PUBACK is lost may still reach the battery
        self.command_rate.take(battery, message.action, self.monotonic())
        await self.bus.publish(COMMAND, message, wait_ack=True, timeout=self.settings.publish_timeout_s,
                               battery=battery)
        self.counters["commands"] += 1

    # -- routes ----------------------------------------------------------------------------------------------

    async def write(self, request: web.Request) -> web.Response:
        """``POST /write``: one record or an array -> Telemetry (validated first, then published).

        200 stored (the recorder confirmed every record), 202 accepted by the broker (``?ack=broker``, or not
        all confirmed in time: the body says which), 422 refused by the database, 503 not accepted.
        """
        self._authorize(request)
        query = self._query(request, _WRITE_PARAMS)
        from_query = check_battery(query["battery"]) if "battery" in query else None
        ack = ack_mode(query.get("ack"), self.settings.write_ack)
        decoded = await self._decode(request, _WRITE_DECODER)
        now = self.clock()
        if isinstance(decoded, list):
            batch = [
                (self._battery(r.battery, from_query, f"[{i}].battery"), to_telemetry(r, now, f"[{i}]."))
                for i, r in enumerate(decoded)
            ]
        else:
            batch = [(self._battery(decoded.battery, from_query), to_telemetry(decoded, now))]
        expectation = self.receipts.expect(len(batch)) if ack == "stored" else None
        try:
            await self._publish_records(batch, expectation)
            for battery, _ in batch:
                self.fleet.saw(battery)
            self.counters["telemetry"] += len(batch)
            if expectation is not None:
                await expectation.wait(self.settings.stored_timeout_s)
        finally:
            if expectation is not None:
                self.receipts.forget(expectation)
        status, outcome = self._write_outcome(batch, expectation, single=not isinstance(decoded, list))
        if isinstance(decoded, list):
            topics = sorted({self.bus.name(TELEMETRY, battery=b) for b, _ in batch})
            return _json(status, PublishedBatch(count=len(batch), topics=topics, **outcome))
        battery, telemetry = batch[0]
        return _json(status, PublishedTelemetry(topic=self.bus.name(TELEMETRY, battery=battery), message=telemetry,
                                                **outcome))

    async def _publish_records(self, batch: list[tuple[str, Telemetry]], expectation: Expectation | None) -> None:
        """Publish every record (QoS 1, PUBACK awaited); 503 unless the broker acknowledged all of them.

        Not retained: HTTP writes are often backfills (the seed writes 2025 records), and the retained telemetry
        is the device's latest reading, which an old record must not replace. With an expectation each record
        names the response topic and its own correlation id, so the recorder confirms it once written.
        """
        timeout = self.settings.publish_timeout_s
        ids: list[str | None] = list(expectation.ids) if expectation is not None else [None] * len(batch)
        if len(batch) == 1:  # the common case, without gather's task
            (battery, telemetry), correlation = batch[0], ids[0]
            try:
                await self._publish_record(battery, telemetry, correlation, timeout)
            except BusUnavailable as exc:
                raise ApiError(503, f"MQTT broker unavailable: the record was not accepted ({exc}); "
                               + RESEND_IS_SAFE) from None
            return
        results = await asyncio.gather(
            *(
                self._publish_record(battery, telemetry, correlation, timeout)
                for (battery, telemetry), correlation in zip(batch, ids, strict=True)
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, BusUnavailable):
                raise failure
        if not failures:
            return
        acked = len(batch) - len(failures)
        raise ApiError(
            503, f"MQTT broker unavailable: {acked} of {len(batch)} records were acknowledged ({failures[0]}); "
            "re-sending the whole batch is safe (a record is identified by battery and timestamp)",
        )

    async def _publish_record(self, battery: str, telemetry: Telemetry, correlation: str | None,
                              timeout: float) -> None:
        """One record, PUBACK awaited; with a correlation id the recorder confirms it on ``stored/{this node}``."""
        await self.bus.publish(TELEMETRY, telemetry, retain=False, wait_ack=True, timeout=timeout,
                               reply_to=STORED_RESPONSE if correlation is not None else None,
                               correlation=correlation.encode() if correlation is not None else None, battery=battery)

    def _write_outcome(
        self, batch: list[tuple[str, Telemetry]], expectation: Expectation | None, *, single: bool
    ) -> tuple[int, dict[str, Any]]:
        """The status code and the outcome fields of the answer (or a 422 when the database refused records)."""
        if expectation is not None:
            self.counters["stored_confirmed"] += len(expectation.stored)
            self.counters["stored_unconfirmed"] += len(expectation.unconfirmed())
            if expectation.rejected:
                self.counters["stored_refused"] += len(expectation.rejected)
        return write_outcome(len(batch), expectation, single=single, stored_timeout_s=self.settings.stored_timeout_s)

    async def apply_command(
        self,
        battery: str,
        parsed: ParsedCommand,
        *,
        text: str,
        lease_s: float,
        force: bool = False,
        source: CommandSource = "gateway",
        field: str = "command",
    ) -> tuple[Command, ControlMode]:
        """An operator command: the one implementation behind ``POST /mqtt/publish`` and the MQTT power request.

        Checks spec limits (422), unknown battery (404 unless ``force``), control mode idle (409), command rate
        (429); publishes the ControlMode manual until the lease ends (unless a mode in force covers it), then the
        Command, and returns both. Raises :class:`ApiError` (``field``: the input at fault) or BusUnavailable.
        The mode goes first: if the Command then fails (503) the autopilot is paused and the previous lease runs
        out to idle, the safe side; the other way round the autopilot could override the command.
        """
        violation = self.specs.violation(battery, parsed)
        if violation is not None:
            raise ApiError(422, violation, field)
        self._require_known(battery, force)
        now = self.clock()
        message = build_command(parsed, text=text, command_id=self.new_command_id(), now=now, lease_s=lease_s,
                                source=source)
        current = self.fleet.control(battery)
        refusal = control.locked_out(current, message, now)
        if refusal is not None:
            raise ApiError(409, f"{battery}: {refusal}", field)
        self._check_rate(battery, message.action, field)
        manual = control.after_operator_command(current, message, now, source=source)
        if manual is not None:
            await self._publish_control(battery, manual)
        manual = manual or current
        assert manual is not None
        await self._publish_command(battery, message)
        return message, manual

    async def command(self, request: web.Request) -> web.Response:
        """``POST /mqtt/publish``: command text -> :meth:`apply_command` -> 202."""
        self._authorize(request)
        from_query = self._battery_param(request)
        body = await self._decode(request, _COMMAND_DECODER)
        try:
            parsed = parse_command(body.command)
        except CommandError as exc:
            raise ApiError(422, str(exc), "command") from None
        battery = self._battery(body.battery, from_query)
        lease = body.valid_for_s if body.valid_for_s is not None else self.settings.command_lease_s
        message, manual = await self.apply_command(battery, parsed, text=body.command, lease_s=lease,
                                                   force=body.force)
        now = self.clock()
        return _json(
            202,
            PublishedCommand(
                topic=self.bus.name(COMMAND, battery=battery),
                message=message,
                spec_known=self.specs.get(battery) is not None,
                control=CommandControl(
                    mode=manual.mode,
                    until=manual.until,
                    autopilot_paused_until=manual.until,
                    topic=self.bus.name(CONTROL, battery=battery),
                    note=f"{battery}: {control.describe(manual, now)}; POST /control "
                    '{"mode": "autopilot"} hands it back to the planner sooner',
                ),
            ),
        )

    async def apply_control(
        self,
        battery: str,
        mode: ControlModeName,
        *,
        for_s: float | None,
        reason: str | None,
        force: bool = False,
        source: CommandSource = "gateway",
        field: str = "command",
    ) -> tuple[ControlMode, Command | None]:
        """A control mode change: the one implementation behind ``POST /control`` and the MQTT mode request.
        Checks unknown battery (404 unless ``force``), for idle the command rate (429); publishes the retained
        ControlMode and, for idle, the IDLE Command. Raises :class:`ApiError` or :class:`BusUnavailable`."""
        self._require_known(battery, force)
        if mode == "idle":
            self._check_rate(battery, "idle", field)
        now = self.clock()
        until = now + timedelta(seconds=for_s) if for_s is not None else None
        label = "POST /control" if source == control.SOURCE else source
        message = ControlMode(mode=mode, set_at=now, until=until, source=source, reason=reason or f"{label} {mode}")
        await self._publish_control(battery, message)
        idle: Command | None = None
        if mode == "idle":
            # the device falls back to idle when this lease ends too, so no renewal is needed to stay idle
            idle = build_command(ParsedCommand(action="idle"), text="IDLE (control mode idle)",
                                 command_id=self.new_command_id(), now=now,
                                 lease_s=for_s or self.settings.command_lease_s, source=source)
            await self._publish_command(battery, idle)
        return message, idle

    async def set_control(self, request: web.Request) -> web.Response:
        """``POST /control``: the retained ControlMode (and IDLE for idle), :meth:`apply_control` -> 202."""
        self._authorize(request)
        from_query = self._battery_param(request)
        body = await self._decode(request, _CONTROL_DECODER)
        battery = self._battery(body.battery, from_query)
        mode, idle = await self.apply_control(battery, body.mode, for_s=body.for_s, reason=body.reason,
                                              force=body.force)
        return _json(202, PublishedControl(topic=self.bus.name(CONTROL, battery=battery), control=mode,
                                           command=idle, note=f"{battery}: {control.describe(mode, self.clock())}"))

    async def get_control(self, request: web.Request) -> web.Response:
        """``GET /control?battery=``: the control mode in force and the last ControlMode seen."""
        self._authorize_read(request)
        battery = self._battery(None, self._battery_param(request))
        current = self.fleet.control(battery)
        if current is None:
            self._require_known(battery, False)
        now = self.clock()
        mode = control.mode_now(current, now)
        return _json(200, ControlState(
            battery=battery, mode=mode, until=current.until if current and mode else None, control=current,
            note=f"{battery}: {control.describe(current, now)}",
        ))

    async def prices(self, request: web.Request) -> web.Response:
        """``POST /prices``: a price forecast -> ``market/{zone}/prices`` (retained) -> 202."""
        self._authorize(request)
        self._query(request, frozenset())
        body = await self._decode(request, _PRICES_DECODER)
        forecast = to_price_forecast(body)
        await self.bus.publish(PRICES, forecast, wait_ack=True, timeout=self.settings.publish_timeout_s,
                               zone=forecast.zone)
        self.counters["prices"] += 1
        return _json(202, PublishedPrices(topic=self.bus.name(PRICES, zone=forecast.zone), message=forecast))

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: 200 with ``mqtt: connected``, or 503 with ``mqtt: disconnected``."""
        connected = self.bus.connected.is_set()
        body = Health(
            mqtt="connected" if connected else "disconnected",
            node=self.settings.node,
            state=self.bus.state,
            version=__version__,
            uptime_s=round(time.monotonic() - self.started, 3),
            specs_known=self.specs.known(),
        )
        return _json(200 if connected else 503, body)


_BATTERY_ONLY = frozenset({"battery"})
_WRITE_PARAMS = frozenset({"battery", "ack"})


def create_app(gateway: Gateway, *, openapi: bytes | None = None) -> web.Application:
    """The aiohttp application: routes, the JSON error middleware and the body size limit."""
    @web.middleware
    async def count_implausible(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ImplausibleTimestamp:
            gateway.counters["implausible"] += 1  # the status shows how many the clients sent
            raise

    app = web.Application(middlewares=[error_middleware, count_implausible],
                          client_max_size=gateway.settings.max_body_bytes)
    app.router.add_post("/write", gateway.write)
    app.router.add_get("/read", functools.partial(history_routes.read, gateway))
    app.router.add_get("/alarms", functools.partial(history_routes.alarms, gateway))
    app.router.add_post("/mqtt/publish", gateway.command)
    app.router.add_post("/control", gateway.set_control)
    app.router.add_get("/control", gateway.get_control)
    app.router.add_post("/prices", gateway.prices)
    app.router.add_get("/health", gateway.health)
    if openapi is None:
        from nodes.gateway.openapi import render

        openapi = render().encode()
    document = openapi

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type=_JSON)

    app.router.add_get("/openapi.json", openapi_json)
    return app


__all__ = [
    "Gateway",
    "GatewaySettings",
    "check_battery",
    "check_timestamp",
    "create_app",
    "to_price_forecast",
    "to_telemetry",
]
