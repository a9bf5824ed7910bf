"""Operator requests over MQTT (Home Assistant's controls, the dashboard's panel), applied by the HTTP routes' code.

``battery/{battery}/request/mode`` (ModeRequest) goes through :meth:`Gateway.apply_control`, the code of
``POST /control``; ``battery/{battery}/request/power`` (PowerRequest, signed kW) becomes the order ``DISCHARGE
<p> kW`` / ``CHARGE <p> kW`` / ``IDLE`` and goes through :meth:`Gateway.apply_command`, the code of
``POST /mqtt/publish``: spec limits, unknown battery, control precedence, command rate and lease are one
implementation, not two. The Command and ControlMode name the request's ``source``: ``homeassistant`` (its
controls; the default, what every request meant before the field) or ``dashboard`` (the renderer's control panel).

A refused request is logged (one line), counted (``mqtt_requests_refused``) and dropped; its reason goes, like
an accepted request's command id, into the retained ``battery/{battery}/request/result`` with the request's
``request_id``, so Home Assistant can show why its last control did nothing and the dashboard can match its own
answer. There is no ``force`` over MQTT: a battery the gateway has never seen is refused (404), so a stale entity
or page cannot command a battery that is gone. A request while the broker is away is logged and counted
(``mqtt_requests_failed``); its result cannot be published either.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from nodes.contract.messages import ModeRequest, PowerRequest, RequestResult, RequestSource
from nodes.contract.topics import MODE_REQUEST, POWER_REQUEST, REQUEST_RESULT
from nodes.gateway.app import Gateway
from nodes.gateway.commands import describe, from_signed_power
from nodes.gateway.errors import ApiError
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable

log = logging.getLogger("bess.gateway")

#: The source of a request that names none (Home Assistant's controls, which were the first producer).
SOURCE: Final[Literal["homeassistant"]] = "homeassistant"


class MqttRequests:
    """The handlers of the request topics, bound to the gateway whose checks they share."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def subscribe(self) -> None:
        """Subscribe both request topics on the gateway's bus."""
        bus = self.gateway.bus
        bus.subscribe(MODE_REQUEST, self.on_mode)
        bus.subscribe(POWER_REQUEST, self.on_power)

    async def on_mode(self, params: dict[str, str], request: ModeRequest, delivery: Delivery) -> None:
        """A control mode (Home Assistant's select, the dashboard's pause/resume): what ``POST /control`` does."""
        battery, source = params["battery"], request.source
        try:
            mode, _ = await self.gateway.apply_control(
                battery, request.mode, for_s=request.for_s, reason=request.reason or None, source=source, field="mode"
            )
        except ApiError as exc:
            await self._refused(battery, "mode", request.source, request.request_id, exc)
            return
        except BusUnavailable as exc:
            self._failed(battery, "mode", source, exc)
            return
        self.gateway.counters["mqtt_requests_accepted"] += 1
        log.info("%s: control mode %s requested by %s", battery, mode.mode, source)
        await self._result(battery, RequestResult(ts=self.gateway.clock(), request="mode", outcome="accepted",
                                                  source=source, mode=mode.mode, request_id=request.request_id))

    async def on_power(self, params: dict[str, str], request: PowerRequest, delivery: Delivery) -> None:
        """A signed setpoint (Home Assistant's number, the dashboard's manual command): ``POST /mqtt/publish``."""
        battery, source = params["battery"], request.source
        parsed = from_signed_power(request.power_kw)
        text = describe(parsed)
        lease = request.valid_for_s if request.valid_for_s is not None else self.gateway.settings.command_lease_s
        try:
            command, manual = await self.gateway.apply_command(
                battery, parsed, text=text, lease_s=lease, source=source, field="power_kw"
            )
        except ApiError as exc:
            await self._refused(battery, "power", source, request.request_id, exc)
            return
        except BusUnavailable as exc:
            self._failed(battery, "power", source, exc)
            return
        self.gateway.counters["mqtt_requests_accepted"] += 1
        log.info("%s: %s requested by %s (command %s)", battery, text, source, command.command_id)
        await self._result(battery, RequestResult(
            ts=self.gateway.clock(), request="power", outcome="accepted", source=source,
            command_id=command.command_id, text=text, mode=manual.mode, request_id=request.request_id,
        ))

    async def _refused(self, battery: str, request: Literal["mode", "power"], source: RequestSource,
                       request_id: str | None, exc: ApiError) -> None:
        self.gateway.counters["mqtt_requests_refused"] += 1
        log.warning("%s: %s request from %s refused (%d): %s", battery, request, source, exc.status, exc.error)
        result = RequestResult(ts=self.gateway.clock(), request=request, outcome="refused", source=source,
                               status=exc.status, error=exc.error[:500], field=exc.field, request_id=request_id)
        await self._result(battery, result)

    def _failed(self, battery: str, request: str, source: RequestSource, exc: BusUnavailable) -> None:
        self.gateway.counters["mqtt_requests_failed"] += 1
        log.warning("%s: %s request from %s not applied: the broker is unavailable (%s)", battery, request, source,
                    exc)

    async def _result(self, battery: str, result: RequestResult) -> None:
        try:
            await self.gateway.bus.publish(REQUEST_RESULT, result, battery=battery)
        except BusUnavailable as exc:
            log.warning("%s: request result not published: %s", battery, exc)


__all__ = ["SOURCE", "MqttRequests"]
