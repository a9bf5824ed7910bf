"""Gateway configuration: ``BESS_*`` environment variables (see :mod:`nodes.runtime.config`).

=================================== ================== =====================================================
variable                            default            meaning
=================================== ================== =====================================================
BESS_GATEWAY_PORTS                  5000,5003          every port the same app listens on
BESS_GATEWAY_HOST                   127.0.0.1          listen address
BESS_GATEWAY_DEFAULT_BATTERY        battery-1          battery when a request names none
BESS_GATEWAY_COMMAND_LEASE_S        300                command lease (``valid_until`` = now + lease)
BESS_GATEWAY_TOKEN                  (none: open)       bearer token required for the writing routes when set
BESS_GATEWAY_READ_TOKEN             BESS_GATEWAY_TOKEN bearer token of GET /read and GET /control (the
                                                       write token reads too); needs BESS_GATEWAY_TOKEN
BESS_GATEWAY_MAX_BODY_BYTES         4000000            larger bodies get 413 (10,000 records of 400 bytes)
BESS_GATEWAY_HISTORY_TIMEOUT_S      10                 how long /read waits for the recorder (then 504)
BESS_GATEWAY_READ_MAX_ROWS          100000             most rows of one /read answer
BESS_GATEWAY_PUBLISH_TIMEOUT_S      5                  how long a publish waits for the PUBACK (then 503)
BESS_GATEWAY_WRITE_ACK              stored             what POST /write waits for unless ?ack= says: stored
                                                       (the recorder's confirmation) or broker (the PUBACK)
BESS_GATEWAY_WRITE_STORED_TIMEOUT_S 5                  how long a durable write waits for the recorder's
                                                       confirmation (then 202, not confirmed)
BESS_GATEWAY_TLS_CERT / _KEY        (none: plain HTTP) PEM files to serve HTTPS on every port
BESS_GATEWAY_IDLE_TIMEOUT_S         15                 close a connection without a complete request head
                                                       this long after it opened or after its last answer
BESS_GATEWAY_MAX_CONNECTIONS        1000               open connections (all ports); beyond: 503, degraded
BESS_GATEWAY_BODY_TIMEOUT_S         30                 how long a request body may take to arrive (408)
BESS_COMMAND_RATE_PER_MIN           6                  commands per battery and minute (then 429), refill
BESS_COMMAND_BURST                  10                 commands per battery in a burst (the bucket's size)
=================================== ================== =====================================================

Plus the ``BESS_MQTT_*`` settings every node has (:class:`nodes.runtime.config.MqttSettings`). Renamed in this
release (the old names work until the next one, with a warning): ``BESS_DEFAULT_BATTERY``, ``BESS_COMMAND_LEASE_S``,
``BESS_READ_TIMEOUT_S``, ``BESS_MAX_READ_ROWS``, ``BESS_PUBLISH_TIMEOUT_S``, ``BESS_WRITE_ACK``,
``BESS_WRITE_STORED_TIMEOUT_S``; their attributes keep the old names until then (``msgspec.field(name=...)``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from nodes.contract.messages import Identifier
from nodes.gateway.bodies import DEFAULT_MAX_BODY_BYTES
from nodes.runtime import command_rate
from nodes.runtime.command_rate import DEFAULT_BURST, DEFAULT_RATE_PER_MIN
from nodes.runtime.config import MqttSettings

Port = Annotated[int, Meta(ge=1, le=65_535)]
AckMode = Literal["stored", "broker"]
"""What ``POST /write`` waits for: the recorder's stored confirmation, or the broker's PUBACK."""


class GatewayConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """Settings of the gateway node."""

    gateway_ports: Annotated[list[Port], Meta(min_length=1, max_length=16)] = msgspec.field(
        default_factory=lambda: [5000, 5003]
    )
    gateway_host: str = "127.0.0.1"
    default_battery: Identifier = msgspec.field(default="battery-1", name="gateway_default_battery")
    command_lease_s: Annotated[int, Meta(ge=1, le=86_400)] = msgspec.field(default=300, name="gateway_command_lease_s")
    gateway_token: str | None = None
    gateway_read_token: str | None = None
    gateway_max_body_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_BODY_BYTES
    read_timeout_s: Annotated[float, Meta(gt=0, le=600)] = msgspec.field(default=10.0, name="gateway_history_timeout_s")
    max_read_rows: Annotated[int, Meta(ge=1, le=1_000_000)] = msgspec.field(
        default=100_000, name="gateway_read_max_rows"
    )
    publish_timeout_s: Annotated[float, Meta(gt=0, le=60)] = msgspec.field(
        default=5.0, name="gateway_publish_timeout_s"
    )
    write_ack: AckMode = msgspec.field(default="stored", name="gateway_write_ack")
    write_stored_timeout_s: Annotated[float, Meta(gt=0, le=600)] = msgspec.field(
        default=5.0, name="gateway_write_stored_timeout_s"
    )
    gateway_tls_cert: str | None = None
    gateway_tls_key: str | None = None
    #: a connection without a complete request head this long after opening or its last answer is closed
    gateway_idle_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    #: open connections over all ports; beyond: 503 and status degraded (at most half the open-file limit)
    gateway_max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    #: how long a request body may take to arrive (then 408)
    gateway_body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    command_rate_per_min: float = DEFAULT_RATE_PER_MIN
    command_burst: int = DEFAULT_BURST

    def problems(self) -> list[str]:
        """Cross-field checks (reported by the config loader as one line, exit status 2)."""
        found = command_rate.problems(self.command_rate_per_min, self.command_burst)
        if len(set(self.gateway_ports)) != len(self.gateway_ports):
            found.append("BESS_GATEWAY_PORTS lists a port twice")
        if bool(self.gateway_tls_cert) != bool(self.gateway_tls_key):
            found.append("BESS_GATEWAY_TLS_CERT and BESS_GATEWAY_TLS_KEY must be set together")
        if self.gateway_token is not None and not self.gateway_token.strip():
            found.append("BESS_GATEWAY_TOKEN is empty (unset it to leave the gateway open)")
        if self.gateway_read_token is not None:
            if not self.gateway_read_token.strip():
                found.append("BESS_GATEWAY_READ_TOKEN is empty (unset it to use BESS_GATEWAY_TOKEN for reads)")
            elif self.gateway_token is None:
                found.append("BESS_GATEWAY_READ_TOKEN is set without BESS_GATEWAY_TOKEN: reads would be protected "
                             "and writes open; set BESS_GATEWAY_TOKEN too")
        return found


@dataclass(frozen=True)
class GatewaySettings:
    """The knobs of the HTTP side (filled from :class:`nodes.gateway.config.GatewayConfig`)."""

    default_battery: str = "battery-1"
    command_lease_s: float = 300.0
    token: str | None = None
    #: token for the reading routes; None with ``token`` set means the same token
    read_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 30.0
    read_timeout_s: float = 10.0
    max_read_rows: int = 100_000
    publish_timeout_s: float = 5.0
    #: what POST /write waits for unless ?ack= says otherwise: the recorder's receipt, or the broker's PUBACK
    write_ack: AckMode = "stored"
    #: how long a durable write waits for the receipts before it answers 202 "not confirmed"
    stored_timeout_s: float = 5.0
    node: str = "gateway"
    command_rate_per_min: float = DEFAULT_RATE_PER_MIN
    command_burst: int = DEFAULT_BURST


def settings_from(config: GatewayConfig, node: str = "gateway") -> GatewaySettings:
    """The HTTP settings of a gateway configuration."""
    return GatewaySettings(
        default_battery=config.default_battery,
        command_lease_s=config.command_lease_s,
        token=config.gateway_token,
        read_token=config.gateway_read_token,
        max_body_bytes=config.gateway_max_body_bytes,
        body_timeout_s=config.gateway_body_timeout_s,
        read_timeout_s=config.read_timeout_s,
        max_read_rows=config.max_read_rows,
        publish_timeout_s=config.publish_timeout_s,
        write_ack=config.write_ack,
        stored_timeout_s=config.write_stored_timeout_s,
        node=node,
        command_rate_per_min=config.command_rate_per_min,
        command_burst=config.command_burst,
    )


def ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """A server TLS context when a certificate and key are configured."""
    if not config.gateway_tls_cert or not config.gateway_tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.gateway_tls_cert, config.gateway_tls_key)
    return context


__all__ = ["AckMode", "GatewayConfig", "GatewaySettings", "settings_from", "ssl_context"]
