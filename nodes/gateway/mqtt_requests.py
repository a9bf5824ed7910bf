"""Operator requests over MQTT (Home Assistant's controls), applied by the same code as the HTTP routes.

``battery/{battery}/request/mode`` (ModeRequest) goes through :meth:`Gateway.apply_control`, the code of
``POST /control``; ``battery/{battery}/request/power`` (PowerRequest, signed kW) becomes the order ``DISCHARGE
<p> kW`` / ``CHARGE <p> kW`` / ``IDLE`` and goes through :meth:`Gateway.apply_command`, the code of
``POST /mqtt/publish``: spec limits, unknown battery, control precedence, command rate and lease are one
implementation, not two. The Command and ControlMode name ``homeassistant`` as their source.

A refused request is logged (one line), counted (``mqtt_requests_refused``) and dropped; its reason goes, like
an accepted request's command id, into the retained ``battery/{battery}/request/result`` so Home Assistant can
show why its last control did nothing. There is no ``force`` over MQTT: a battery the gateway has never seen is
refused (404), so a stale Home Assistant entity cannot command a battery that is gone. A request while the broker
is away is logged and counted (``mqtt_requests_failed``); its result cannot be published either.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from nodes.contract.messages import ModeRequest, PowerRequest, RequestResult
from nodes.contract.topics import MODE_REQUEST, POWER_REQUEST, REQUEST_RESULT
from nodes.gateway.app import Gateway
from nodes.gateway.commands import describe, from_signed_power
from nodes.gateway.errors import ApiError
from nodes.runtime.dispatch import Delivery
from nodes.runtime.errors import BusUnavailable

log = logging.getLogger("bess.gateway")

#: The source of every Command and ControlMode made from these topics (their only producer is Home Assistant).
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
        """A control mode from Home Assistant's select: what ``POST /control`` does."""
        battery = params["battery"]
        try:
            mode, _ = await self.gateway.apply_control(
                battery, request.mode, for_s=request.for_s, reason=request.reason or None, source=SOURCE, field="mode"
            )
        except ApiError as exc:
            await self._refused(battery, "mode", exc)
            return
        except BusUnavailable as exc:
            self._failed(battery, "mode", exc)
            return
        self.gateway.counters["mqtt_requests_accepted"] += 1
        log.info("%s: control mode %s requested by %s", battery, mode.mode, SOURCE)
        await self._result(battery, RequestResult(ts=self.gateway.clock(), request="mode", outcome="accepted",
                                                  source=SOURCE, mode=mode.mode))

    async def on_power(self, params: dict[str, str], request: PowerRequest, delivery: Delivery) -> None:
        """A signed setpoint from Home Assistant's number: what ``POST /mqtt/publish`` does with its text."""
        battery = params["battery"]
        parsed = from_signed_power(request.power_kw)
        text = describe(parsed)
        lease = request.valid_for_s if request.valid_for_s is not None else self.gateway.settings.command_lease_s
        try:
            command, manual = await self.gateway.apply_command(
                battery, parsed, text=text, lease_s=lease, source=SOURCE, field="power_kw"
            )
        except ApiError as exc:
            await self._refused(battery, "power", exc)
            return
        except BusUnavailable as exc:
            self._failed(battery, "power", exc)
            return
        self.gateway.counters["mqtt_requests_accepted"] += 1
        log.info("%s: %s requested by %s (command %s)", battery, text, SOURCE, command.command_id)
        await self._result(battery, RequestResult(
            ts=self.gateway.clock(), request="power", outcome="accepted", source=SOURCE,
            command_id=command.command_id, text=text, mode=manual.mode,
        ))

    async def _refused(self, battery: str, request: str, exc: ApiError) -> None:
        self.gateway.counters["mqtt_requests_refused"] += 1
        log.warning("%s: %s request from %s refused (%d): %s", battery, request, SOURCE, exc.status, exc.error)
        result = RequestResult(ts=self.gateway.clock(), request="mode" if request == "mode" else "power",
                               outcome="refused", source=SOURCE, status=exc.status, error=exc.error[:500],
                               field=exc.field)
        await self._result(battery, result)

    def _failed(self, battery: str, request: str, exc: BusUnavailable) -> None:
        self.gateway.counters["mqtt_requests_failed"] += 1
        log.warning("%s: %s request from %s not applied: the broker is unavailable (%s)", battery, request, SOURCE,
                    exc)

    async def _result(self, battery: str, result: RequestResult) -> None:
        try:
            await self.gateway.bus.publish(REQUEST_RESULT, result, battery=battery)
        except BusUnavailable as exc:
            log.warning("%s: request result not published: %s", battery, exc)


__all__ = ["SOURCE", "MqttRequests"]
