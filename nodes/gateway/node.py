"""The gateway node: one aiohttp app on every port of ``BESS_GATEWAY_PORTS``, translating HTTP into MQTT.

Consumes:
    ``battery/+/spec`` (BatterySpec, retained): the latest spec per battery, to refuse commands beyond its
    limits. ``battery/+/telemetry`` and ``battery/+/state``: only to learn which batteries exist (a command to
    one never seen is a 404 unless forced); the gateway's own writes are not sent back (MQTT 5 no-local).
    ``battery/+/control`` (ControlMode, retained): who commands each battery, for ``GET /control`` and the
    precedence rules. ``history/response/gateway`` (HistoryResult): answers of the recorder to ``GET /read``.
    ``stored/gateway`` (StoredReceipt): the recorder's confirmations of durable ``POST /write`` records (subscribed
    by :class:`nodes.gateway.app.Gateway`, which publishes the records and awaits them).
    ``battery/+/request/mode`` (ModeRequest) and ``battery/+/request/power`` (PowerRequest): Home Assistant's
    controls, applied by the same code as ``POST /control`` and ``POST /mqtt/publish``
    (:mod:`nodes.gateway.mqtt_requests`).
Produces:
    ``battery/{battery}/telemetry`` (Telemetry, from ``POST /write``), ``battery/{battery}/set`` (Command, from
    ``POST /mqtt/publish`` and ``POST /control`` idle), ``battery/{battery}/control`` (ControlMode, retained,
    from ``POST /mqtt/publish`` and ``POST /control``; source homeassistant from the MQTT requests), the retained
    ``battery/{battery}/request/result`` (RequestResult) of each MQTT request, ``market/{zone}/prices``
    (PriceForecast, from ``POST /prices``), ``history/request`` (HistoryQuery, for ``GET /read``) and its own
    ``node/gateway/status``.
Lifecycle (see :mod:`nodes.runtime.node`)::

    setup     subscribe spec, telemetry, state, control, the request topics + response topic, bind every port
      |       (a port in use: exit 1 with one line); :mod:`nodes.runtime.http_serve` bounds connections
      |       (BESS_GATEWAY_MAX_CONNECTIONS, then 503 and status degraded) and closes idle or
      |       never-finished ones (BESS_GATEWAY_IDLE_TIMEOUT_S)
      |       requests arriving before the broker connects get 503
    bus.start connect, publish online
    run       serve until SIGTERM/SIGINT (the broker may come and go: publishes answer 503 meanwhile)
    shutdown  stop accepting, finish in-flight requests (up to 5 s), then the bus publishes offline
"""

from __future__ import annotations

import asyncio
import logging

from nodes.contract.messages import BatterySpec, BatteryState, ControlMode, Telemetry
from nodes.contract.topics import CONTROL, HISTORY, SPEC, STATE, TELEMETRY
from nodes.gateway.app import Gateway, create_app
from nodes.gateway.config import GatewayConfig, settings_from, ssl_context
from nodes.gateway.fleet import Fleet
from nodes.gateway.mqtt_requests import MqttRequests
from nodes.gateway.receipts import Receipts
from nodes.gateway.specs import SpecBook
from nodes.runtime.core import MessageBus
from nodes.runtime.dispatch import Delivery
from nodes.runtime.http_serve import HttpLimits, Listener, ListenError
from nodes.runtime.node import Service

log = logging.getLogger("bess.gateway")


class GatewayService(Service[GatewayConfig]):
    """HTTP in, MQTT out."""

    name = "gateway"

    def __init__(self, config: GatewayConfig, bus: MessageBus) -> None:
        super().__init__(config, bus)
        self.specs = SpecBook()
        self.fleet = Fleet()
        self.receipts = Receipts()
        self.listener: Listener | None = None

    async def setup(self) -> None:
        """Subscribe the battery topics and the response topic, then listen on every configured port."""
        bus = self.bus
        bus.subscribe(SPEC, self._on_spec)
        bus.subscribe(TELEMETRY, self._on_telemetry, no_local=True)
        bus.subscribe(STATE, self._on_state)
        bus.subscribe(CONTROL, self._on_control)
        bus.enable_requests(HISTORY)
        gateway = Gateway(bus, self.specs, settings_from(self.config, bus.node), fleet=self.fleet,
                          receipts=self.receipts)
        MqttRequests(gateway).subscribe()
        limits = HttpLimits(idle_timeout_s=self.config.gateway_idle_timeout_s,
                            max_connections=self.config.gateway_max_connections)
        self.listener = Listener(create_app(gateway), limits, name="gateway",
                                 setting="BESS_GATEWAY_MAX_CONNECTIONS", on_problem=self._on_listener_problem)
        bus.set_counters_source(
            lambda: {
                **gateway.counters,
                **self.receipts.counters,
                "awaiting_receipt": self.receipts.waiting,
                **self.listener_counters(),
            }
        )
        context = ssl_context(self.config)
        host = self.config.gateway_host
        try:
            await self.listener.start(host, self.config.gateway_ports, context)
        except ListenError as exc:
            log.error("cannot listen on %s:%d: %s", host, exc.port, exc.strerror or exc)
            raise SystemExit(1) from None
        scheme = "https" if context else "http"
        log.info("listening on %s (at most %d connections, idle timeout %g s)",
                 ", ".join(f"{scheme}://{host}:{p}" for p in self.config.gateway_ports),
                 self.listener.max_connections, limits.idle_timeout_s)

    def listener_counters(self) -> dict[str, int]:
        """The HTTP listener's counters for the status (open connections, refused, accept errors)."""
        return self.listener.counters() if self.listener is not None else {}

    def _on_listener_problem(self, problem: str | None) -> None:
        # the gateway cannot take new requests: its status must not say online
        self.bus.set_state("degraded", problem) if problem else self.bus.set_state("online")

    async def _on_spec(self, params: dict[str, str], spec: BatterySpec, delivery: Delivery) -> None:
        problems = spec.problems()
        if problems:
            log.warning("spec of %s is inconsistent (%s); using its power limits anyway",
                        params["battery"], "; ".join(problems))
        self.specs.update(params["battery"], spec)
        self.fleet.saw(params["battery"])
        log.info("spec of %s: charge <= %g kW, discharge <= %g kW", params["battery"], spec.max_charge_kw,
                 spec.max_discharge_kw)

    async def _on_telemetry(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        self.fleet.saw(params["battery"])

    async def _on_state(self, params: dict[str, str], state: BatteryState, delivery: Delivery) -> None:
        self.fleet.saw(params["battery"])

    async def _on_control(self, params: dict[str, str], mode: ControlMode, delivery: Delivery) -> None:
        self.fleet.set_control(params["battery"], mode)

    async def run(self) -> None:
        """Serve until stopped (the sites were started in :meth:`setup`)."""
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        """Stop accepting connections and let in-flight requests finish."""
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None


__all__ = ["GatewayConfig", "GatewayService", "settings_from", "ssl_context"]
