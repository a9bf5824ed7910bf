"""Configuration from environment variables into strict msgspec Structs.

Each field ``foo_bar`` of a config Struct is read from ``BESS_FOO_BAR``. Values are strings in the environment;
msgspec converts them (``strict=False``) and validates the result, so ``BESS_MQTT_PORT=abc`` fails with the
variable's name instead of crashing later. Lists are comma-separated (``BESS_GATEWAY_PORTS=5000,5003``).
An invalid configuration is a one-line message and exit status 2 (see :func:`load_or_exit`).
:class:`MqttSettings` (``BESS_MQTT_*``, the topic root, the node id) is embedded in every node's config.

Renamed settings: a field declared with a msgspec name other than its attribute
(``read_timeout_s: float = msgspec.field(default=10.0, name="gateway_history_timeout_s")``) is read from
``BESS_<NAME>`` (``BESS_GATEWAY_HISTORY_TIMEOUT_S``); the old ``BESS_<ATTRIBUTE>`` (``BESS_READ_TIMEOUT_S``) still
works for one release, with a warning on the log (the new name wins when both are set). :func:`env_names` lists
both, so whoever records a node's settings (``deploy/up``) sees either spelling.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, get_args, get_origin

import msgspec

from nodes.contract.names import DEFAULT_ROOT

PREFIX = "BESS_"
C = TypeVar("C", bound=msgspec.Struct)
log = logging.getLogger("bess.config")


class MqttSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to reach the broker. Every node config embeds these fields (``BESS_MQTT_*``)."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = msgspec.field(default=1883)
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_tls_ca_file: str | None = None
    mqtt_tls_insecure: bool = False
    mqtt_keepalive_s: int = 30
    mqtt_session_expiry_s: int = 86_400
    mqtt_reconnect_delay_s: float = 1.0
    #: payloads above this are dropped undecoded (topics whose valid messages can be larger get their contract's
    #: largest size instead); the broker's message_size_limit must not be below the bulk bound
    mqtt_max_payload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    #: the bound for payloads the contract does not bound: Plotly figures and history answers
    mqtt_max_bulk_payload_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024 * 1024
    topic_root: str = DEFAULT_ROOT
    node_id: str | None = None
    status_interval_s: float = 30.0

    @property
    def receive_maximum(self) -> int:
        """MQTT 5 receive maximum: how many unacknowledged messages the broker may have in flight to this node.

        A node config overrides it when its handlers hold messages for long (the recorder: until a batch is written).
        """
        return 1000


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the environment variable."""


def env_name(field: str) -> str:
    """The environment variable behind a config field."""
    return PREFIX + field.upper()


def _fields(cls: type[msgspec.Struct]) -> list[tuple[str, str, str | None]]:
    """``(attribute, msgspec name, deprecated variable or None)`` for every field of ``cls``."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return [(f.name, f.encode_name, env_name(f.name) if f.encode_name != f.name else None) for f in info.fields]


def env_names(cls: type[msgspec.Struct]) -> list[str]:
    """Every ``BESS_*`` variable ``cls`` reads: the current names and the deprecated ones still honoured."""
    return sorted({name for _, key, old in _fields(cls) for name in (env_name(key), old) if name is not None})


def _read(environ: Mapping[str, str], variable: str, old: str | None) -> tuple[str | None, str]:
    """The value of a setting and the variable it came from (the deprecated name only when the new is unset)."""
    value = environ.get(variable)
    if old is None or old not in environ:
        return value, variable
    if value is None:
        log.warning("%s is deprecated and will be removed in the next release: set %s instead", old, variable)
        return environ[old], old
    log.warning("%s is ignored: %s, its new name, is set too", old, variable)
    return value, variable


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (list, tuple):
        return True
    # Optional[list[...]] and friends
    return any(_is_sequence(arg) for arg in get_args(annotation) if arg is not type(None))


def load(cls: type[C], environ: Mapping[str, str] | None = None) -> C:
    """Build ``cls`` from ``BESS_*`` variables; raise :class:`ConfigError` naming the variable on a bad value."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    given: dict[str, str] = {}  # msgspec name -> the variable its value came from
    annotations: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        annotations.update(getattr(klass, "__annotations__", {}))
    for name, key, old in _fields(cls):
        value, given[key] = _read(environ, env_name(key), old)
        if value is None:
            continue
        annotation = annotations.get(name)
        if isinstance(annotation, str):
            # postponed annotations: the sequence check only needs to know "is it a list"
            is_seq = annotation.startswith(("list[", "tuple[")) or "list[" in annotation
        else:
            is_seq = _is_sequence(annotation)
        raw[key] = [part.strip() for part in value.split(",") if part.strip()] if is_seq else value
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # msgspec says "... - at `$.mqtt_port`": translate the path into the variable name users set.
        if "at `$." in message:
            text, _, path = message.rpartition(" - at `$.")
            field = path.rstrip("`").split(".")[0].split("[")[0]
            raise ConfigError(f"{given.get(field, env_name(field))}: {text}") from exc
        raise ConfigError(message) from exc


def load_or_exit(cls: type[C], node: str, environ: Mapping[str, str] | None = None) -> C:
    """Like :func:`load`, but print one clear line and exit 2 on invalid configuration."""
    try:
        config = load(cls, environ)
        check = getattr(config, "problems", None)
        problems: list[str] = check() if callable(check) else []
        if problems:
            raise ConfigError("; ".join(problems))
        return config
    except ConfigError as exc:
        print(f"{node}: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
