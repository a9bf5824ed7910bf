"""Run a real mosquitto and a real influxd as local processes; the engine behind ``deploy/up|down|status``.

Why local processes and not containers: the machines this project is built and tested on have the ``docker``
CLI but no Docker engine (no socket, no DOCKER_HOST), so ``docker compose`` and testcontainers cannot start
anything there. The Debian packages ``mosquitto`` and ``influxdb`` install in seconds and start in 10-20 ms,
so the same servers run as plain child processes instead. ``tests/conftest.py`` still uses testcontainers
(``eclipse-mosquitto:2``, ``influxdb:1.8``) when ``docker.from_env().ping()`` answers, and this module otherwise.

This file is stdlib only so that it runs before the virtualenv exists and imports cleanly from tests::

    broker = start_mosquitto(tmp / "mq")        # free loopback ports; returns once a CONNECT gets a CONNACK
    influx = start_influxd(tmp / "ifx")         # returns once GET /ping answers 204
    create_database(influx.url, "bess")
    broker.kill(); broker.start(); broker.restart(); broker.stop()

The small blocking MQTT 3.1.1 client here (:class:`MiniMqtt`) exists for readiness probes, reading retained
node status and test round trips; nodes use gmqtt through ``nodes.runtime``.

Command line (the bash scripts in deploy/ only bootstrap python, the venv and apt, then call this)::

    python deploy/stack.py up | down | status | ensure-packages [--test]

Environment for ``up``: BESS_MQTT_PORT (1883), BESS_INFLUX_PORT (8086), BESS_INFLUX_DB (bess), BESS_VAR_DIR
(var), BESS_GATEWAY_PORTS (5000,5003), BESS_DASHBOARD_PORT (8050), BESS_TOPIC_ROOT (bess/v1), BESS_UP_TIMEOUT
(30 seconds to wait for nodes), BESS_MQTT_AUTH (0; 1 = secure mode: mosquitto refuses anonymous clients and
enforces the ACL of ``deploy/auth.py``, every node gets its own user and password; influxd requires
authentication, with the users of ``deploy/influx_auth.py``, and only the recorder gets a login),
BESS_MQTT_WS_PORT (unset: no websockets listener; mosquitto 2.0.11 binds it on every interface, so ``up``
refuses it without BESS_MQTT_AUTH=1), BESS_BATTERIES (battery-1; with BESS_MQTT_AUTH=1, one device user per
battery id), and every node's own BESS_* settings (README "Configuration").

What ``up`` remembers, so that later ``up``, ``status`` and ``down`` need no repeated variables:

* ``<var>/stack.json``: where the stack lives (:data:`LOCATION`: auth mode, ports, topic root, database). A
  variable left out takes the remembered value; one that contradicts it while the stack runs is an error
  (exit 2) saying what runs: ``deploy/down`` first.
* ``<var>/run/<node>.env`` (0600: may hold secrets): the BESS_* settings each node was started with. A later
  ``up`` restarts a running node whose settings differ and names the settings (never the value of a secret).

Files and accounts, in either mode: nothing ``up`` writes under ``<var>`` is readable by other users (``var/``,
``log/``, ``run/`` 0750; logs 0640; credentials and node settings 0600; servers and nodes run with umask 027), and
when ``up`` runs as root mosquitto drops to an unprivileged account (:meth:`UpConfig.broker_account`), which owns
its data directory and its log and reads its config through its group.

Every node's settings are validated before anything starts, by the node's own config Struct
(``deploy/check_config.py`` with the venv's python): an invalid value stops ``up`` with one line and exit 2.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import grp
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ClassVar, Self

if __package__ in (None, ""):  # run as `python deploy/stack.py`: make the `deploy` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy import auth, influx_auth  # standard library only, like this file
from nodes.contract.names import NODE_NAMES  # standard library only too

HOST = "127.0.0.1"
#: Commands the stack needs, mapped to the Debian package that provides each.
REQUIRED_COMMANDS: Mapping[str, str] = {
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "influxd": "influxdb",
}
TEST_COMMANDS: Mapping[str, str] = {"wrk": "wrk"}
OPTIONAL_TEST_COMMANDS: Mapping[str, str] = {"chromium": "chromium"}
SEED_CURL_LINES: tuple[str, ...] = (
    'curl -X POST http://127.0.0.1:5000/write -H "Content-Type: application/json" \\\n'
    '  -d \'{"SOC": 700, "target_discharge": 50, "target_charge": 100, '
    '"timestamp": "2025-01-16T10:00:00Z"}\'',
    'curl "http://127.0.0.1:5003/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z"',
    'curl -X POST http://127.0.0.1:5000/mqtt/publish -H "Content-Type: application/json" \\\n'
    '  -d \'{"command": "DISCHARGE 50kW"}\'',
    'curl -X POST http://127.0.0.1:5003/write -H "Content-Type: application/json" \\\n'
    '  -d \'{"SOC": 500, "target_discharge": 0, "target_charge": 400, '
    '"timestamp": "2025-01-14T10:00:00Z"}\'',
)


class StackError(RuntimeError):
    """A server could not be installed, started or reached; the message says what to look at."""


class PortInUseError(StackError):
    """A port we were told (or chose) to listen on already accepts connections."""


class SettingsError(StackError):
    """A setting is invalid or contradicts what runs: ``up`` stops before starting anything (exit 2)."""


# --------------------------------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = HOST) -> int:
    """A TCP port that is free right now (the kernel's pick). Another process may take it before we bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str | None:
    """Path of ``name`` on PATH or in the sbin dirs (a normal user's PATH on Debian lacks /usr/sbin/mosquitto)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


_apt_updated = False


def _apt(args: Sequence[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(f"apt-get not found: install the packages for {' '.join(args[2:])} by hand")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise StackError(f"need root for `apt-get {' '.join(args)}`; run it as root, then retry")
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, apt, *args], check=True, env=env, stdin=subprocess.DEVNULL)


def ensure_packages(commands: Mapping[str, str] | None = None, optional: Mapping[str, str] | None = None) -> list[str]:
    """Apt-get install the Debian package behind every missing command; return the packages installed.

    ``commands`` maps a command to its package and defaults to :data:`REQUIRED_COMMANDS` (mosquitto,
    mosquitto-clients, influxdb). A failure to install an ``optional`` package is reported and ignored.
    ``apt-get update`` runs once per process, and only if something is missing.
    """
    global _apt_updated
    commands = REQUIRED_COMMANDS if commands is None else commands
    optional = {} if optional is None else optional
    missing = sorted({pkg for cmd, pkg in commands.items() if find_binary(cmd) is None})
    missing_optional = sorted({pkg for cmd, pkg in optional.items() if find_binary(cmd) is None})
    if not missing and not missing_optional:
        return []
    try:
        if not _apt_updated:
            _apt(["update", "-q"])
            _apt_updated = True
        if missing:
            _apt(["install", "-y", "-q", "--no-install-recommends", *missing])
    except (subprocess.CalledProcessError, StackError) as exc:
        if missing:
            raise StackError(f"could not install {' '.join(missing)}: {exc}") from exc
        print(f"warning: optional package(s) {' '.join(missing_optional)} not installed: {exc}", file=sys.stderr)
        return []
    installed = list(missing)
    for pkg in missing_optional:
        try:
            _apt(["install", "-y", "-q", pkg])
            installed.append(pkg)
        except (subprocess.CalledProcessError, StackError) as exc:
            print(f"warning: optional package {pkg} not installed: {exc}", file=sys.stderr)
    return installed


def _require_binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise StackError(
            f"{name} is not installed; run deploy/up once (it apt-installs it) or "
            f"apt-get install {REQUIRED_COMMANDS.get(name, name)}"
        )
    return path


# --------------------------------------------------------------------------------------------------------------
# a minimal blocking MQTT 3.1.1 client


class MqttError(RuntimeError):
    """The broker refused or sent something we did not expect."""


class MqttRefused(MqttError):
    """The broker answered CONNECT with a refusal (``code`` 4: bad user name or password, 5: not authorised)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection, return code {code}")
        self.code = code


@dataclass(frozen=True)
class MqttMessage:
    """One PUBLISH received by :class:`MiniMqtt`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def _mqtt_str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class MiniMqtt:
    """A tiny blocking MQTT 3.1.1 client: connect, subscribe, publish at QoS 0/1, receive with a timeout.

    Enough for readiness probes, reading retained messages and test round trips; it sends no PINGREQ, so keep
    a connection shorter than ``keepalive`` seconds of silence. Incoming QoS 1 messages are acknowledged when
    read from the socket.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        keepalive: int = 60,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client_id = client_id or f"bess-probe-{uuid.uuid4().hex[:12]}"
        self._timeout = timeout
        self._buf = bytearray()
        self._inbox: deque[MqttMessage] = deque()
        self._packet_id = 0
        self._sock = socket.create_connection((host, port), timeout=timeout)
        try:
            flags = 0x02 if clean_session else 0x00
            login = b""
            if username is not None:
                flags |= 0x80
                login += _mqtt_str(username)
                if password is not None:
                    flags |= 0x40
                    login += _mqtt_str(password)
            header = _mqtt_str(b"MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
            self._send(0x10, header + _mqtt_str(self.client_id) + login)
            kind, body = self._read_packet(time.monotonic() + timeout)
            if kind >> 4 != 2 or len(body) < 2:
                raise MqttError(f"expected CONNACK, got packet type {kind >> 4}")
            if body[1] != 0:
                raise MqttRefused(body[1])
            self.session_present = bool(body[0] & 1)
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Send DISCONNECT (so no last will fires) and close the socket."""
        with contextlib.suppress(OSError):
            self._send(0xE0, b"")
        self._sock.close()

    def subscribe(self, filters: str | Sequence[str], qos: int = 0) -> list[int]:
        """Subscribe to one or more filters; return the granted QoS per filter (raises if one is refused)."""
        if qos not in (0, 1):
            raise ValueError("MiniMqtt supports QoS 0 and 1")
        names = [filters] if isinstance(filters, str) else list(filters)
        pid = self._next_id()
        payload = b"".join(_mqtt_str(name) + bytes([qos]) for name in names)
        self._send(0x82, pid.to_bytes(2, "big") + payload)
        body = self._wait_for(0x9, pid)
        granted = list(body[2:])
        if 0x80 in granted:
            raise MqttError(f"subscription refused: {names} -> {granted}")
        return granted

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False) -> None:
        """Publish; at QoS 1 return only after the broker's PUBACK."""
        if qos not in (0, 1):
            raise ValueError("MiniMqtt supports QoS 0 and 1")
        data = payload.encode() if isinstance(payload, str) else payload
        flags = (qos << 1) | (1 if retain else 0)
        if qos == 0:
            self._send(0x30 | flags, _mqtt_str(topic) + data)
            return
        pid = self._next_id()
        self._send(0x30 | flags, _mqtt_str(topic) + pid.to_bytes(2, "big") + data)
        self._wait_for(0x4, pid)

    def receive(self, timeout: float | None = None) -> MqttMessage | None:
        """The next message, or None if none arrives within ``timeout`` seconds (default: the client timeout)."""
        if self._inbox:
            return self._inbox.popleft()
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while True:
            try:
                kind, body = self._read_packet(deadline)
            except TimeoutError:
                return None
            self._dispatch(kind, body)
            if self._inbox:
                return self._inbox.popleft()

    def messages(self, timeout: float | None = None) -> Iterator[MqttMessage]:
        """Yield messages until none arrives for ``timeout`` seconds."""
        while (message := self.receive(timeout)) is not None:
            yield message

    # internals

    def _next_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    def _send(self, first: int, body: bytes) -> None:
        self._sock.sendall(bytes([first]) + _remaining_length(len(body)) + body)

    def _wait_for(self, kind: int, pid: int) -> bytes:
        deadline = time.monotonic() + self._timeout
        while True:
            first, body = self._read_packet(deadline)
            if first >> 4 == kind and body[:2] == pid.to_bytes(2, "big"):
                return body
            self._dispatch(first, body)

    def _dispatch(self, first: int, body: bytes) -> None:
        if first >> 4 != 3:  # only PUBLISH matters here; PINGRESP and friends are dropped
            return
        qos = (first >> 1) & 3
        size = int.from_bytes(body[:2], "big")
        topic = body[2 : 2 + size].decode()
        rest = body[2 + size :]
        if qos:
            pid, rest = rest[:2], rest[2:]
            self._send(0x40, pid)  # PUBACK (we only ever subscribe at QoS <= 1)
        self._inbox.append(MqttMessage(topic, bytes(rest), qos, bool(first & 1)))

    def _read_packet(self, deadline: float) -> tuple[int, bytes]:
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no MQTT packet before the deadline")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)  # raises TimeoutError (an OSError) on timeout
            if not chunk:
                raise MqttError("the broker closed the connection")
            self._buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length, multiplier, index = 0, 1, 1
        while True:
            if index >= len(buf):
                return None
            byte = buf[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        if len(buf) < index + length:
            return None
        first, body = buf[0], bytes(buf[index : index + length])
        del buf[: index + length]
        return first, body


def mqtt_connack(
    host: str, port: int, timeout: float = 1.0, *, username: str | None = None, password: str | None = None
) -> int | None:
    """The CONNACK return code a CONNECT gets on ``host:port`` (0 = accepted, 5 = not authorised), or None if
    no MQTT broker answers there."""
    try:
        MiniMqtt(host, port, timeout=timeout, username=username, password=password).close()
    except MqttRefused as exc:
        return exc.code
    except (OSError, MqttError):
        return None
    return 0


def mqtt_ready(
    host: str, port: int, timeout: float = 1.0, *, username: str | None = None, password: str | None = None
) -> bool:
    """True if an MQTT broker answers a CONNECT (with these credentials, if given) with an accepting CONNACK."""
    return mqtt_connack(host, port, timeout, username=username, password=password) == 0


def read_retained(
    host: str,
    port: int,
    topic_filter: str,
    timeout: float = 5.0,
    *,
    username: str | None = None,
    password: str | None = None,
) -> dict[str, bytes]:
    """Every retained message under ``topic_filter`` right now, as ``{topic: payload}``.

    Completeness without guessing a quiet period: after subscribing, the client publishes a marker to a topic
    it also subscribed; the broker sends retained messages before it handles that later PUBLISH, so once the
    marker comes back every retained message has arrived. Live messages in that window count too (latest wins).
    On a broker with an ACL the user must be allowed to read ``topic_filter`` and to read and write
    ``bess-probe/#`` (the ``monitor`` user of deploy/auth.py is).
    """
    marker = f"{auth.PROBE_TOPIC_PREFIX}/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout
    with MiniMqtt(host, port, timeout=timeout, username=username, password=password) as client:
        client.subscribe([topic_filter, marker], qos=0)
        client.publish(marker, b".", qos=0)
        while True:
            message = client.receive(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise TimeoutError(f"retained read of {topic_filter!r} did not complete in {timeout} s")
            if message.topic == marker:
                return found
            found[message.topic] = message.payload


# --------------------------------------------------------------------------------------------------------------
# InfluxDB 1.x over its HTTP API


class InfluxError(RuntimeError):
    """InfluxDB answered with an error (HTTP status or a per-statement error)."""


# Loopback must never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


Login = tuple[str, str]


def _http(
    method: str, url: str, data: bytes | None = None, timeout: float = 10.0, *, login: Login | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    if login is not None:  # HTTP basic auth in a header: never in the URL, which error messages show
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def influx_ping(url: str, timeout: float = 1.0) -> bool:
    """True if ``GET url/ping`` answers 204 (InfluxDB 1.x is up)."""
    try:
        status, _ = _http("GET", url.rstrip("/") + "/ping", timeout=timeout)
    except (OSError, urllib.error.URLError):
        return False
    return status == 204


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influx_query(
    url: str, q: str, db: str | None = None, *, post: bool = False, epoch: str = "ms", login: Login | None = None
) -> Any:
    """Run InfluxQL ``q`` and return the decoded JSON; raise :class:`InfluxError` on any error.

    Use ``post=True`` for statements that change things (CREATE/DROP/...). Times come back as ``epoch``.
    ``login`` is ``(user, password)`` for a database with authentication. The error names ``q``: never pass a
    statement that carries a password (:func:`influx_statement` is for those).
    """
    params = {"q": q, "epoch": epoch}
    if db is not None:
        params["db"] = db
    encoded = urllib.parse.urlencode(params)
    base = url.rstrip("/") + "/query"
    if post:
        status, body = _http("POST", base, data=encoded.encode(), login=login)
    else:
        status, body = _http("GET", f"{base}?{encoded}", login=login)
    if status != 200:
        raise InfluxError(f"{q!r}: HTTP {status}: {body[:500]!r}")
    result = json.loads(body)
    for statement in result.get("results", []):
        if "error" in statement:
            raise InfluxError(f"{q!r}: {statement['error']}")
    return result


def influx_statement(url: str, statement: str, login: Login | None) -> tuple[int, dict[str, Any]]:
    """POST one statement; ``(HTTP status, decoded JSON answer)`` whatever the outcome, never raising on an
    answer (:data:`deploy.influx_auth.Run`; an answer that is not JSON becomes ``{"error": text}``)."""
    status, body = _http("POST", url.rstrip("/") + "/query", data=urllib.parse.urlencode({"q": statement}).encode(),
                         login=login)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {"error": body[:300].decode("utf-8", "replace")}
    return status, answer


def influx_rows(url: str, db: str, q: str, *, login: Login | None = None) -> list[dict[str, Any]]:
    """Run a SELECT and flatten every series into dict rows (tags of a GROUP BY merged in)."""
    rows: list[dict[str, Any]] = []
    for statement in influx_query(url, q, db, login=login).get("results", []):
        for series in statement.get("series", []):
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(series["columns"], values, strict=True))} for values in series["values"])
    return rows


def influx_write(
    url: str, db: str, lines: str | Iterable[str], precision: str = "ms", *, login: Login | None = None
) -> None:
    """Write line protocol; raise :class:`InfluxError` unless InfluxDB answers 204."""
    body = lines if isinstance(lines, str) else "\n".join(lines)
    query = urllib.parse.urlencode({"db": db, "precision": precision})
    status, answer = _http("POST", f"{url.rstrip('/')}/write?{query}", data=body.encode(), login=login)
    if status != 204:
        raise InfluxError(f"write to {db}: HTTP {status}: {answer[:500]!r}")


def create_database(url: str, name: str, *, login: Login | None = None) -> None:
    """``CREATE DATABASE name`` (idempotent)."""
    influx_query(url, f"CREATE DATABASE {_quote_ident(name)}", post=True, login=login)


def drop_database(url: str, name: str, *, login: Login | None = None) -> None:
    """``DROP DATABASE name`` (a missing database is not an error)."""
    influx_query(url, f"DROP DATABASE {_quote_ident(name)}", post=True, login=login)


# --------------------------------------------------------------------------------------------------------------
# processes


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (R, S, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    if Path("/proc").is_dir():
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces ("" if unknown)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_live_pid(pid_path: Path, expect: str) -> int | None:
    """The pid in ``pid_path`` if that process is alive and its command line contains ``expect``.

    The command line check guards against pid reuse: a stale pid file must never make us signal a stranger.
    """
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    cmdline = process_cmdline(pid)
    if cmdline and expect not in cmdline:
        return None
    return pid


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``, and its whole process group if it leads one (we start everything in its own session, so
    helpers a node spawned go too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def terminate_pids(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM every pid, wait up to ``timeout`` seconds in total, SIGKILL the rest; return the killed pids."""
    pids = list(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed: list[int] = []
    for pid in pids:
        if not wait_pid_gone(pid, max(0.0, deadline - time.monotonic())):
            _signal(pid, signal.SIGKILL)
            killed.append(pid)
            wait_pid_gone(pid, 5.0)
    return killed


def request_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when its parent dies (PR_SET_PDEATHSIG), so a killed pytest leaves no
    servers behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def parent_death_preexec() -> Callable[[], None] | None:
    """:func:`request_parent_death_signal` for ``Popen(preexec_fn=...)``, or None where it would misfire.

    Linux sends the signal when the *thread* that forked exits, so it is only safe from the main thread (a
    server started from ``asyncio.to_thread`` would die when the executor shuts down).
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    return request_parent_death_signal


# --------------------------------------------------------------------------------------------------------------
# who a server runs as, and files nobody else reads

#: The umask of every process deploy starts: what a server or a node creates is never readable by others.
CHILD_UMASK = 0o027
#: Logs: the owner writes, its group reads (the broker's group for the broker's own log), nobody else.
LOG_MODE = 0o640
#: Accounts mosquitto may drop to when deploy runs as root, in order of preference: Debian's own, then nobody.
BROKER_ACCOUNTS: tuple[str, ...] = ("mosquitto", "nobody")


@dataclass(frozen=True)
class Account:
    """A local user account a server runs as."""

    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Account | None:
        """The account called ``name``, or None if this machine has none."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def groups(self) -> frozenset[int]:
        """Its primary group and every group that lists it as a member."""
        return frozenset({self.gid, *(g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem)})

    def may_enter(self, path: Path) -> bool:
        """True if it may search (``x``) the directory ``path`` by its permission bits (it is not root)."""
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups():
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


def running_as_root() -> bool:
    """True if this process may change owners (and would otherwise run the servers as root)."""
    return os.geteuid() == 0


def first_blocked(path: Path, account: Account) -> Path | None:
    """The first existing directory on the way from ``/`` to ``path`` (inclusive) that ``account`` may not enter,
    or None if it reaches ``path`` (directories that do not exist yet are created 0755 by ``mkdir``)."""
    path = path.resolve()
    for folder in (*reversed(path.parents), path):
        if folder.is_dir() and not account.may_enter(folder):
            return folder
    return None


def process_user(pid: int) -> str | None:
    """The effective user of process ``pid`` by name (its uid if unnamed), or None if it is unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[2])
            with contextlib.suppress(KeyError):
                return pwd.getpwuid(uid).pw_name
            return str(uid)
    return None


def private_dir(path: Path, mode: int = 0o700, group: Account | None = None) -> Path:
    """Create ``path`` (and missing parents) and set its mode; with ``group`` (and root) its group too."""
    path.mkdir(parents=True, exist_ok=True)
    if group is not None and running_as_root():
        os.chown(path, -1, group.gid)
    path.chmod(mode)
    return path


def chown_tree(path: Path, account: Account) -> None:
    """Give ``path`` and everything below it to ``account`` (root only; symlinks are not followed)."""
    for folder, dirs, files in os.walk(path):
        for name in (folder, *(os.path.join(folder, entry) for entry in (*dirs, *files))):
            os.chown(name, account.uid, account.gid, follow_symlinks=False)


def open_log(path: Path, owner: Account | None = None) -> BinaryIO:
    """Open a log for appending, mode :data:`LOG_MODE` (a looser existing file is tightened), given to ``owner``
    if that is set (the account a server that opens the file itself runs as)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & ~LOG_MODE:
            os.fchmod(fd, mode & LOG_MODE)
        if owner is not None and running_as_root():
            os.fchown(fd, owner.uid, owner.gid)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def _write_atomic(path: Path, text: str, mode: int = 0o640, group: Account | None = None) -> None:
    """Write ``text`` to ``path`` via a temporary file created with ``mode`` (so never readable by others, not even
    briefly); with ``group`` (and root) the file belongs to that account's group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), mode)  # the process umask must not loosen or tighten it
            if group is not None and running_as_root():
                os.fchown(handle.fileno(), -1, group.gid)
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(kw_only=True, eq=False)
class Service:
    """A server process owned by this Python process: its config, ports, log and (while running) its Popen.

    ``start`` writes the config, spawns the server in its own session and returns once it answers its real
    protocol; ``stop`` sends SIGTERM and falls back to SIGKILL; ``kill`` is SIGKILL at once (for fault tests);
    ``restart`` keeps ports, config and data.
    """

    kind: ClassVar[str] = "service"
    base_dir: Path
    host: str = HOST
    log_path: Path | None = None
    pid_path: Path | None = None
    die_with_parent: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = self.base_dir.resolve()
        if self.log_path is None:
            self.log_path = self.base_dir / f"{self.kind}.log"

    # what subclasses provide
    @property
    def config_path(self) -> Path:
        """Where the generated config file is written."""
        return self.base_dir / f"{self.kind}.conf"

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the server listens on."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line that runs the server."""
        raise NotImplementedError

    def config_text(self) -> str:
        """The config file contents."""
        raise NotImplementedError

    def is_ready(self, timeout: float = 0.5) -> bool:
        """True if the server answers its protocol."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        """The environment for the server process."""
        return dict(os.environ)

    @property
    def log_owner(self) -> Account | None:
        """Who owns the log file (None: whoever runs this); a server that drops privileges must own it."""
        return None

    # lifecycle
    @property
    def log(self) -> Path:
        """The server's log file (its own log plus anything it printed)."""
        assert self.log_path is not None
        return self.log_path

    @property
    def pid(self) -> int | None:
        """The pid while running, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process we started has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def write_config(self) -> Path:
        """Create the directories (``base_dir`` 0700: data and config are the server's alone) and (re)write the
        config file (0600)."""
        private_dir(self.base_dir)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.config_path, self.config_text(), mode=0o600)
        return self.config_path

    def start(self, timeout: float = 15.0) -> Self:
        """Spawn the server and wait until it answers; raise :class:`StackError` with its log tail if not."""
        if self.running:
            raise StackError(f"{self.kind} is already running (pid {self.pid})")
        busy = [port for port in self.ports if port_open(self.host, port)]
        if busy:
            raise PortInUseError(f"{self.kind}: port(s) {busy} on {self.host} already in use")
        self.write_config()
        with open_log(self.log, self.log_owner) as console:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=self.child_env(),
                start_new_session=True,  # Ctrl-C in a terminal or a closed shell must not take it down
                umask=CHILD_UMASK,
                preexec_fn=parent_death_preexec() if self.die_with_parent else None,  # noqa: PLW1509
            )
        if self.pid_path is not None:
            _write_atomic(self.pid_path, f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._forget_pid()
                raise StackError(f"{self.kind} exited with {code} while starting; {self.log}:\n{tail(self.log)}")
            if self.is_ready(0.5):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise StackError(f"{self.kind} did not answer within {timeout} s; {self.log}:\n{tail(self.log)}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit code (None if it was not running)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget_pid()
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (no clean shutdown, no final persistence write); return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._forget_pid()
        return proc.returncode

    def restart(self, timeout: float = 15.0, *, kill: bool = False) -> Self:
        """Stop (or kill) and start again on the same ports with the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def _forget_pid(self) -> None:
        if self.pid_path is not None and self._proc is not None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                if int(self.pid_path.read_text().strip()) == self._proc.pid:
                    self.pid_path.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


#: The broker refuses a PUBLISH whose payload is larger (``message_size_limit``): a device with valid
#: credentials must not be able to push a 26 MB message at the recorder and the database. It sits above the
#: largest legitimate message with margin; measured on this code: a history answer at the recorder's default
#: cap of 100,000 rows is 6.8 MB, a Schedule or PriceForecast at the contract's 20,000 slots 2-3 MB, a figure
#: 0.13 MB (30 d at 2,000 points) to 1.3 MB (30 d plus 20,000 live points). The per-field bounds of
#: nodes/contract are the fine-grained check; this is the outer bound where messages enter.
MESSAGE_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


def websockets_refusal(ws_port: int) -> str:
    """Why a websockets listener without authentication is refused (one line)."""
    return (
        f"BESS_MQTT_WS_PORT={ws_port}: mosquitto 2.0.11 binds its websockets listener on every network interface "
        "(whatever the listener's address), so it needs BESS_MQTT_AUTH=1; leave BESS_MQTT_WS_PORT unset for none"
    )


@dataclass(kw_only=True, eq=False)
class Mosquitto(Service):
    """Mosquitto with persistence, an unlimited per-client queue and, with authentication only, websockets.

    Every listener is on loopback except websockets: mosquitto 2.0.11 binds a websockets listener on every
    interface whatever address its ``listener`` line names (``ss -ltn`` shows ``*:port``), so one is only
    configured together with a password file (:func:`websockets_refusal` otherwise).
    """

    kind: ClassVar[str] = "mosquitto"
    port: int
    ws_port: int | None = None
    #: seconds between saves of sessions and queued messages: what a broker crash (SIGKILL) can lose, measured
    #: in bench/broker_window.py (mosquitto saves once more than this many whole seconds passed: every 2 s)
    autosave_interval: int = 1
    #: With a password file anonymous clients are refused (deploy/auth.py writes it and the ACL file).
    password_file: Path | None = None
    acl_file: Path | None = None
    #: ``(user, password)`` the readiness probe logs in with. Without it a broker with a password file counts
    #: as ready once it answers at all: a "not authorised" CONNACK proves it is up just as well.
    probe_login: tuple[str, str] | None = None
    #: The unprivileged account mosquitto drops to when started as root (deploy/up passes one, see
    #: :meth:`UpConfig.broker_account`); None, or not root: it runs as whoever starts it.
    account: Account | None = None

    #: mosquitto's copies of the password and ACL files, in ``base_dir``: it reads them after dropping
    #: privileges (at start and on SIGHUP), and the originals in var/mqtt-auth/ are root's alone.
    PASSWORD_COPY: ClassVar[str] = "passwd"
    ACL_COPY: ClassVar[str] = "acl"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        """Where mosquitto.db (retained messages, sessions, queued QoS 1 messages) lives."""
        return self.base_dir / "data"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,) if self.ws_port is None else (self.port, self.ws_port)

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """``ws://host:port/mqtt`` for browsers (mosquitto accepts any path), or None without websockets."""
        return None if self.ws_port is None else f"ws://{self.host}:{self.ws_port}/mqtt"

    def argv(self) -> list[str]:
        return [_require_binary("mosquitto"), "-c", str(self.config_path)]

    @property
    def drops_privileges(self) -> bool:
        """True if mosquitto switches to :attr:`account` (it is started as root and has one)."""
        return self.account is not None and running_as_root()

    @property
    def runs_as(self) -> str:
        """The user mosquitto runs as once started."""
        if self.account is not None and self.drops_privileges:
            return self.account.name
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def log_owner(self) -> Account | None:
        # mosquitto opens its log_dest file itself, after dropping privileges (and again on SIGHUP)
        return self.account if self.drops_privileges else None

    def write_config(self) -> Path:
        """Write config and password/ACL copies where :attr:`runs_as` can read but not change them, and give it
        its data directory: ``base_dir`` 0750 and files 0640 of group ``account`` when dropping privileges
        (else 0700 and 0600), ``data/`` 0700 owned by the account mosquitto runs as."""
        group = self.account if self.drops_privileges else None
        private_dir(self.base_dir, 0o750 if group else 0o700, group)
        private_dir(self.data_dir)
        if self.account is not None and group is not None:
            chown_tree(self.data_dir, self.account)  # a data dir of an earlier run as root must become its own
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.install_auth_files()
        _write_atomic(self.config_path, self.config_text(), mode=0o640 if group else 0o600, group=group)
        return self.config_path

    def install_auth_files(self) -> None:
        """Copy the password and ACL files for mosquitto to read (call it before a SIGHUP that reloads them)."""
        group = self.account if self.drops_privileges else None
        mode = 0o640 if group else 0o600
        for source, name in ((self.password_file, self.PASSWORD_COPY), (self.acl_file, self.ACL_COPY)):
            if source is not None:
                _write_atomic(self.base_dir / name, source.read_text(), mode=mode, group=group)
            else:
                (self.base_dir / name).unlink(missing_ok=True)  # left from a run with authentication

    def config_text(self) -> str:
        if self.ws_port is not None and self.password_file is None:
            raise StackError(websockets_refusal(self.ws_port))
        # `user`: as root mosquitto drops to this user before it opens its log, password and persistence files
        # (see shared notes §1), so write_config makes them that user's; not root, the line is ignored.
        lines = [
            "# generated by deploy/stack.py on every start; edit the template there",
            f"user {self.runs_as}",
            "per_listener_settings false",
            *self._auth_lines(),
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "# a SIGKILL loses what was acknowledged since the last save: with 1, up to 2 s of traffic (README,",
            "# Guarantees); each save rewrites every queued message, so a large backlog makes saves slower",
            f"autosave_interval {self.autosave_interval}",
            "# the default (1000) silently drops QoS 1 messages for a subscriber that falls behind",
            "max_queued_messages 0",
            "# the default (20) caps every QoS 1 publisher at 19 unacknowledged messages: ~3-5k msg/s here",
            "max_inflight_messages 1000",
            "# bigger payloads are dropped: QoS 1 is still acknowledged (MQTT 5: reason code 0x95), so a publisher",
            "# does not resend it forever, and 2.0.11 then closes the connection. A device must not push a huge",
            "# message at the recorder and the database (see MESSAGE_SIZE_LIMIT_BYTES). Not max_packet_size, which",
            "# mosquitto suggests: it disconnects without acknowledging, and a persistent session resends forever.",
            f"message_size_limit {MESSAGE_SIZE_LIMIT_BYTES}",
            "# without it Nagle holds small packets (PUBACKs, stored receipts) for the peer's delayed ACK: a durable",
            "# POST /write did 1.0k req/s with p50 24 ms, with it 2.7k req/s with p50 10 ms (bench/gateway.py)",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"listener {self.port} {self.host}",
            "protocol mqtt",
            *self._listener_auth_lines(),
        ]
        if self.ws_port is not None:
            lines += [
                "# reachable from the network: mosquitto 2.0.11 binds websockets on every interface whatever the",
                "# address says; allowed only with the password file above (per_listener_settings false)",
                f"listener {self.ws_port} {self.host}",
                "protocol websockets",
                *self._listener_auth_lines(),
            ]
        return "\n".join(lines) + "\n"

    def _listener_auth_lines(self) -> list[str]:
        # A listener option: it must follow its `listener` line. Placed before the first one it would create
        # mosquitto's default listener (port 1883 on EVERY interface) and apply to that one only.
        if self.password_file is None:
            return []
        return [
            "# the client id is the user name, whatever the client sends: no user can take over another's client",
            "# id, and so its connection and persistent session (one connection per user at a time)",
            "use_username_as_clientid true",
        ]

    def _auth_lines(self) -> list[str]:
        if self.password_file is None:
            return ["allow_anonymous true"]
        lines = ["allow_anonymous false", f"password_file {self.base_dir / self.PASSWORD_COPY}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.base_dir / self.ACL_COPY}")
        return lines

    def is_ready(self, timeout: float = 0.5) -> bool:
        if self.probe_login is not None:
            user, password = self.probe_login
            return mqtt_ready(self.host, self.port, timeout, username=user, password=password)
        if self.password_file is not None:
            return mqtt_connack(self.host, self.port, timeout) is not None
        return mqtt_ready(self.host, self.port, timeout)


@dataclass(kw_only=True, eq=False)
class Influxd(Service):
    """InfluxDB 1.x with its data under ``base_dir``, HTTP on ``port`` and the RPC service on ``rpc_port``."""

    kind: ClassVar[str] = "influxd"
    port: int
    rpc_port: int
    #: ``[http] auth-enabled``: every query and write needs a user (secure mode; see deploy/influx_auth.py)
    auth_enabled: bool = False

    @property
    def config_path(self) -> Path:
        return self.base_dir / "influxdb.conf"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, self.rpc_port)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [_require_binary("influxd"), "-config", str(self.config_path)]

    def child_env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file; a stray one must not move our ports or dirs.
        return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}

    def config_text(self) -> str:
        return f"""\
# generated by deploy/stack.py on every start; edit the template there
reporting-enabled = false
# the RPC (backup) service defaults to 127.0.0.1:8088: pin it, or two instances clash
bind-address = "{self.host}:{self.rpc_port}"
[meta]
  dir = "{self.base_dir / "meta"}"
[data]
  dir = "{self.base_dir / "data"}"
  wal-dir = "{self.base_dir / "wal"}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {"true" if self.auth_enabled else "false"}
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[retention]
  enabled = false
"""

    def is_ready(self, timeout: float = 0.5) -> bool:
        return influx_ping(self.url, timeout)


def start_mosquitto(
    base_dir: Path,
    port: int | None = None,
    ws_port: int | None = None,
    *,
    websockets: bool = False,
    log_path: Path | None = None,
    pid_path: Path | None = None,
    die_with_parent: bool = False,
    timeout: float = 15.0,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    probe_login: tuple[str, str] | None = None,
) -> Mosquitto:
    """Write a config under ``base_dir`` and start mosquitto; returns once a CONNECT gets its CONNACK.

    Ports left as None are picked free on 127.0.0.1 (and re-picked if another process grabs one first). A
    websockets listener is added when ``ws_port`` is given or ``websockets`` is true. With ``password_file``
    (and ``acl_file``) anonymous clients are refused: see :func:`deploy.auth.ensure_credentials`.
    """
    for attempt in range(3):
        broker = Mosquitto(
            base_dir=base_dir,
            port=free_port() if port is None else port,
            ws_port=ws_port if ws_port is not None else (free_port() if websockets else None),
            log_path=log_path,
            pid_path=pid_path,
            die_with_parent=die_with_parent,
            password_file=password_file,
            acl_file=acl_file,
            probe_login=probe_login,
        )
        try:
            return broker.start(timeout)
        except StackError:
            if attempt == 2 or port is not None or (websockets and ws_port is not None):
                raise
    raise AssertionError("unreachable")


def start_influxd(
    base_dir: Path,
    port: int | None = None,
    *,
    rpc_port: int | None = None,
    log_path: Path | None = None,
    pid_path: Path | None = None,
    die_with_parent: bool = False,
    timeout: float = 15.0,
) -> Influxd:
    """Write a config under ``base_dir`` and start influxd; returns once ``GET /ping`` answers 204."""
    for attempt in range(3):
        server = Influxd(
            base_dir=base_dir,
            port=free_port() if port is None else port,
            rpc_port=free_port() if rpc_port is None else rpc_port,
            log_path=log_path,
            pid_path=pid_path,
            die_with_parent=die_with_parent,
        )
        try:
            return server.start(timeout)
        except StackError:
            if attempt == 2 or (port is not None and rpc_port is not None):
                raise
    raise AssertionError("unreachable")


def stop(service: Service, timeout: float = 10.0) -> int | None:
    """Stop a service cleanly (SIGTERM, SIGKILL after ``timeout``)."""
    return service.stop(timeout)


def kill(service: Service) -> int | None:
    """SIGKILL a service (for fault tests)."""
    return service.kill()


def restart(service: Service, timeout: float = 15.0, *, hard: bool = False) -> Service:
    """Restart a service on the same ports and data; ``hard`` kills instead of stopping cleanly."""
    return service.restart(timeout, kill=hard)


# --------------------------------------------------------------------------------------------------------------
# the command line: up / down / status


#: ``<var>/stack.json``: where the running stack lives, written by ``up``.
STACK_FILE = "stack.json"
#: Where the stack lives, remembered in ``<var>/stack.json`` by ``up``: environment variable -> UpConfig field.
#: A later command that leaves a variable out gets the remembered value; an explicit different value while
#: the stack runs is refused (the broker, the database and the nodes would disagree about where things are).
LOCATION: Mapping[str, str] = {
    "BESS_MQTT_AUTH": "mqtt_auth",
    "BESS_MQTT_PORT": "mqtt_port",
    "BESS_MQTT_WS_PORT": "mqtt_ws_port",
    "BESS_INFLUX_PORT": "influx_port",
    "BESS_INFLUX_DB": "influx_db",
    "BESS_GATEWAY_PORTS": "gateway_ports",
    "BESS_DASHBOARD_PORT": "dashboard_port",
    "BESS_TOPIC_ROOT": "topic_root",
}
#: Values of BESS_MQTT_WS_PORT that mean "no websockets listener" (so a remembered one can be switched off).
_NO_PORT = ("", "0", "off", "none", "no")


def env_text(value: Any) -> str:
    """A remembered value spelled as its environment variable would be (``True`` -> ``1``, ``[1, 2]`` -> ``1,2``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "0"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def read_stack_file(var_dir: Path) -> dict[str, Any]:
    """What ``up`` remembered in ``<var_dir>/stack.json`` ({} if it never ran there)."""
    path = var_dir / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path} is unreadable ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} does not hold a JSON object; fix or delete it")
    return data


@dataclass(frozen=True)
class UpConfig:
    """What ``deploy/up`` runs and where, from BESS_* environment variables and ``<var>/stack.json``."""

    root: Path
    var_dir: Path
    mqtt_port: int = 1883
    #: None: no websockets listener (the default; one needs ``mqtt_auth``, see :func:`websockets_refusal`)
    mqtt_ws_port: int | None = None
    influx_port: int = 8086
    influx_db: str = "bess"
    gateway_ports: tuple[int, ...] = (5000, 5003)
    dashboard_port: int = 8050
    topic_root: str = "bess/v1"
    timeout: float = 30.0
    mqtt_auth: bool = False
    batteries: tuple[str, ...] = auth.DEFAULT_BATTERIES
    #: the caller's environment: what the nodes inherit (under :meth:`node_env`)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), compare=False, repr=False)
    #: the :data:`LOCATION` variables the caller set explicitly
    explicit: frozenset[str] = frozenset()
    #: ``<var>/stack.json`` as it was when this config was read
    remembered: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, root: Path, environ: Mapping[str, str] | None = None) -> UpConfig:
        """Read the BESS_* variables, filling the ones left out from ``<var>/stack.json``; raise
        :class:`SettingsError` naming a bad one."""
        caller = os.environ if environ is None else environ
        var_dir = Path(caller.get("BESS_VAR_DIR") or "var")
        var_dir = (var_dir if var_dir.is_absolute() else root / var_dir).resolve()
        remembered = read_stack_file(var_dir)
        explicit = frozenset(var for var in LOCATION if caller.get(var, "") != "")
        env = dict(caller)
        for var, key in LOCATION.items():
            if var not in explicit and key in remembered:
                env[var] = env_text(remembered[key])

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return float(default)
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None

        def port(name: str, default: int) -> int:
            value = number(name, default)
            if not value.is_integer() or not 0 < value < 65536:
                raise SettingsError(f"{name}={env.get(name)!r} is not a TCP port")
            return int(value)

        raw_gateway = env.get("BESS_GATEWAY_PORTS") or "5000,5003"
        try:
            gateway_ports = tuple(int(part) for part in raw_gateway.split(",") if part.strip())
        except ValueError:
            raise SettingsError(f"BESS_GATEWAY_PORTS={raw_gateway!r} must be comma-separated ports") from None
        if not gateway_ports or not all(0 < p < 65536 for p in gateway_ports):
            raise SettingsError(f"BESS_GATEWAY_PORTS={raw_gateway!r} must be comma-separated ports")
        raw_auth = (env.get("BESS_MQTT_AUTH") or "0").strip().lower()
        if raw_auth not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
            raise SettingsError(f"BESS_MQTT_AUTH={env.get('BESS_MQTT_AUTH')!r} must be 1 or 0")
        raw_ws = (env.get("BESS_MQTT_WS_PORT") or "").strip().lower()
        # checked by the simulator's config and deploy/auth.py before `up` starts anything, not here: `down`
        # must work whatever the simulator's battery list says
        batteries = tuple(part.strip() for part in (env.get("BESS_BATTERIES") or "").split(",") if part.strip())
        return cls(
            root=root,
            var_dir=var_dir,
            mqtt_port=port("BESS_MQTT_PORT", 1883),
            mqtt_ws_port=None if raw_ws in _NO_PORT else port("BESS_MQTT_WS_PORT", 0),
            influx_port=port("BESS_INFLUX_PORT", 8086),
            influx_db=env.get("BESS_INFLUX_DB") or "bess",
            gateway_ports=gateway_ports,
            dashboard_port=port("BESS_DASHBOARD_PORT", 8050),
            topic_root=env.get("BESS_TOPIC_ROOT") or "bess/v1",
            timeout=number("BESS_UP_TIMEOUT", 30.0),
            mqtt_auth=raw_auth in ("1", "true", "yes", "on"),
            batteries=batteries or auth.DEFAULT_BATTERIES,
            environ=dict(caller),
            explicit=explicit,
            remembered=remembered,
        )

    @property
    def run_dir(self) -> Path:
        """Pid files and the settings each node was started with."""
        return self.var_dir / "run"

    @property
    def log_dir(self) -> Path:
        """Logs of every process ``up`` starts."""
        return self.var_dir / "log"

    @property
    def stack_file(self) -> Path:
        """``<var>/stack.json``."""
        return self.var_dir / STACK_FILE

    @property
    def influx_url(self) -> str:
        """``http://127.0.0.1:<influx port>``."""
        return f"http://{HOST}:{self.influx_port}"

    @property
    def influx_rpc_port(self) -> int:
        """influxd's RPC (backup) port: the HTTP port + 2 (8088 for the defaults)."""
        return self.influx_port + 2 if self.influx_port < 65534 else self.influx_port - 2

    def location(self) -> dict[str, Any]:
        """The :data:`LOCATION` settings as JSON values (what ``up`` writes to stack.json)."""
        return {
            "mqtt_auth": self.mqtt_auth,
            "mqtt_port": self.mqtt_port,
            "mqtt_ws_port": self.mqtt_ws_port,
            "influx_port": self.influx_port,
            "influx_db": self.influx_db,
            "gateway_ports": list(self.gateway_ports),
            "dashboard_port": self.dashboard_port,
            "topic_root": self.topic_root,
        }

    def conflicts(self) -> list[str]:
        """Explicit :data:`LOCATION` variables whose value differs from the remembered one, as ``VAR=new
        (remembered: old)``."""
        here = self.location()

        def shown(value: Any) -> str:
            return "unset" if value is None else env_text(value)

        return [
            f"{var}={shown(here[key])} (it runs with {shown(self.remembered[key])})"
            for var, key in LOCATION.items()
            if var in self.explicit and key in self.remembered and self.remembered[key] != here[key]
        ]

    def from_memory(self) -> list[str]:
        """``VAR=value`` for every :data:`LOCATION` setting taken from stack.json rather than the caller (and
        not the default anyway)."""
        here, default = self.location(), UpConfig(root=self.root, var_dir=self.var_dir).location()
        return [
            f"{var}={env_text(here[key])}"
            for var, key in LOCATION.items()
            if var not in self.explicit and key in self.remembered and here[key] != default[key]
        ]

    def write_stack_file(self) -> None:
        """Remember where this stack lives (:meth:`location`, plus informative extras) in stack.json."""
        data = {
            **self.location(),
            "influx_rpc_port": self.influx_rpc_port,
            "written_by": "deploy/up",
            "written_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        _write_atomic(self.stack_file, json.dumps(data, indent=2) + "\n")

    def node_env(self) -> dict[str, str]:
        """The variables every node gets (on top of the caller's environment)."""
        return {
            "BESS_MQTT_HOST": HOST,
            "BESS_MQTT_PORT": str(self.mqtt_port),
            "BESS_INFLUX_URL": self.influx_url,
            "BESS_INFLUX_DB": self.influx_db,
            "BESS_GATEWAY_PORTS": ",".join(str(p) for p in self.gateway_ports),
            "BESS_DASHBOARD_PORT": str(self.dashboard_port),
            "BESS_TOPIC_ROOT": self.topic_root,
            "PYTHONUNBUFFERED": "1",
            # the local demo: the planner drives the simulated battery (the caller's environment overrides)
            "BESS_PLANNER_AUTOPILOT": self.environ.get("BESS_PLANNER_AUTOPILOT", "true"),
        }

    @property
    def secure(self) -> bool:
        """Secure mode (``BESS_MQTT_AUTH=1``): the broker and the database both require credentials."""
        return self.mqtt_auth

    def broker_account(self) -> tuple[Account | None, str]:
        """``(account, why not)``: the unprivileged account mosquitto runs as when deploy runs as root, or None
        with the reason it cannot (no such account, or it could not reach ``var/``); ``(None, "")`` when deploy
        does not run as root (mosquitto then runs as whoever that is)."""
        if not running_as_root():
            return None, ""
        for name in BROKER_ACCOUNTS:
            account = Account.named(name)
            if account is None:
                continue
            blocked = first_blocked(self.var_dir.parent, account)
            if blocked is None:
                return account, ""
            mode = stat.filemode(blocked.stat().st_mode)
            return None, (f"user {name} cannot enter {blocked} ({mode}) on the way to {self.var_dir}; set "
                          "BESS_VAR_DIR to a directory it can reach")
        return None, f"this machine has none of the accounts {', '.join(BROKER_ACCOUNTS)}"

    def prepare_var(self, broker: Account | None) -> None:
        """``var/`` and its ``log/`` and ``run/`` 0750 (of the broker account's group when mosquitto drops to
        one, so that it can reach its own files and nothing else), logs tightened to 0640."""
        if self.var_dir.is_dir() and self.var_dir.stat().st_mode & stat.S_IWOTH:
            raise SettingsError(f"BESS_VAR_DIR={self.var_dir} is writable by everyone: use a directory of its own")
        for folder in (self.var_dir, self.log_dir):
            private_dir(folder, 0o750)
            if running_as_root():  # the broker's group, or back to ours when it runs as root after all
                os.chown(folder, -1, broker.gid if broker is not None else os.getegid())
        private_dir(self.run_dir, 0o750)
        for path in self.log_dir.iterdir():
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_file() and not path.is_symlink() and mode & ~LOG_MODE:
                path.chmod(mode & LOG_MODE)  # logs of an older deploy (0644)

    def mosquitto(self, credentials: auth.Credentials | None = None) -> Mosquitto:
        """The broker ``up`` would start (refusing anonymous clients when ``credentials`` are given)."""
        return Mosquitto(
            base_dir=self.var_dir / "mosquitto",
            port=self.mqtt_port,
            ws_port=self.mqtt_ws_port,
            log_path=self.log_dir / "mosquitto.log",
            pid_path=self.run_dir / "mosquitto.pid",
            password_file=None if credentials is None else credentials.password_file,
            acl_file=None if credentials is None else credentials.acl_file,
            probe_login=None if credentials is None else credentials.login(auth.PROBE_USER),
            account=self.broker_account()[0],
        )

    def probe_login(self) -> tuple[str | None, str | None]:
        """``(user, password)`` for probes and status reads: the probe user with authentication on (if ``up``
        made credentials already), else anonymous ``(None, None)``."""
        if not self.mqtt_auth:
            return None, None
        credentials = auth.load_credentials(self.var_dir)
        if credentials is None or auth.PROBE_USER not in credentials.passwords:
            return None, None
        return credentials.login(auth.PROBE_USER)

    def influxd(self) -> Influxd:
        """The database ``up`` would start."""
        return Influxd(
            base_dir=self.var_dir / "influxdb",
            port=self.influx_port,
            rpc_port=self.influx_rpc_port,
            log_path=self.log_dir / "influxd.log",
            pid_path=self.run_dir / "influxd.pid",
            auth_enabled=self.secure,
        )

    def influx_run(self) -> influx_auth.Run:
        """Runs one statement on this stack's InfluxDB (for :func:`deploy.influx_auth.secure_database`)."""
        url = self.influx_url

        def run(statement: str, login: Login | None) -> tuple[int, dict[str, Any]]:
            return influx_statement(url, statement, login)

        return run


def running_pids(cfg: UpConfig) -> dict[str, int]:
    """What ``up`` started under ``cfg.var_dir`` and still runs: ``{"mosquitto": pid, "recorder": pid, ...}``."""
    found: dict[str, int] = {}
    for service in (cfg.mosquitto(), cfg.influxd()):
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        if pid is not None:
            found[service.kind] = pid
    for name in NODE_NAMES:
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        if pid is not None:
            found[name] = pid
    return found


def check_location(cfg: UpConfig) -> None:
    """Refuse explicit settings that contradict the stack running under ``cfg.var_dir`` (:data:`LOCATION`)."""
    conflicts = cfg.conflicts()
    if not conflicts:
        return
    running = running_pids(cfg)
    if running:
        raise SettingsError(
            f"the stack in {cfg.var_dir} runs ({', '.join(running)}) with other settings: {'; '.join(conflicts)}. "
            "Leave the variables out (they are remembered in stack.json), or run deploy/down first to change them"
        )


def _config_changed(service: Service) -> bool:
    """True if the config file a running ``service`` was started with differs from what we would write now."""
    try:
        return service.config_path.read_text() != service.config_text()
    except OSError:
        return False


def _bring_up(service: Service, answers: bool, timeout: float) -> str:
    """Start ``service`` unless something already answers at its address; describe what happened.

    One of ours whose generated configuration changed (a newer deploy/stack.py: another message size limit,
    client ids bound to users) is restarted, since mosquitto re-reads only some settings on SIGHUP.
    """
    assert service.pid_path is not None
    ours = read_live_pid(service.pid_path, str(service.config_path))
    address = f"{service.host}:{service.ports[0]}"
    if answers:
        if ours and _config_changed(service):
            killed = terminate_pids([ours], timeout=15.0)
            service.pid_path.unlink(missing_ok=True)
            service.start(timeout)
            how = " (it needed SIGKILL)" if killed else ""
            return f"restarted (pid {service.pid}): its generated configuration changed{how}"
        if ours:
            return f"already running (pid {ours}, started by deploy/up)"
        service.pid_path.unlink(missing_ok=True)
        return f"already answering at {address} (not started by deploy/up; left alone)"
    if ours:
        raise StackError(f"{service.kind} (pid {ours}) runs but does not answer at {address}; see {service.log}")
    service.pid_path.unlink(missing_ok=True)
    try:
        service.start(timeout)
    except PortInUseError as exc:
        raise StackError(f"{exc}, but not by a {service.kind} we can use; free it or set another port") from None
    return f"started (pid {service.pid})"


def _node_python(root: Path) -> str:
    venv_python = root / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


# --------------------------------------------------------------------------------------------------------------
# node settings: validated before anything starts, recorded per node, compared on the next `up`

#: Settings whose values are never printed (they are kept only in the 0600 files of var/run and var/mqtt-auth).
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|_KEY$")
CHECK_CONFIG = Path(__file__).resolve().parent / "check_config.py"


def is_secret(name: str) -> bool:
    """True for a setting whose value must never be printed (``BESS_MQTT_PASSWORD``, ``BESS_GATEWAY_TOKEN``...)."""
    return bool(_SECRET_NAME.search(name.upper()))


@dataclass(frozen=True)
class NodeCheck:
    """What ``deploy/check_config.py`` says about one node's settings."""

    #: the node's own one-line complaint (``simulator: invalid configuration: BESS_SIM_SPEED: ...``), or None
    error: str | None
    #: the BESS_* variables its config reads; None if its config Struct could not be found
    variables: tuple[str, ...] | None
    #: why it could not be checked (its config does not import), if it could not
    unchecked: str | None = None


def check_node_settings(cfg: UpConfig, envs: Mapping[str, Mapping[str, str]]) -> dict[str, NodeCheck]:
    """Validate each node's environment with its own config Struct, in the venv's python (the nodes' imports
    are not standard library); ``{node: NodeCheck}``."""
    if not envs:
        return {}
    try:
        result = subprocess.run(
            [_node_python(cfg.root), str(CHECK_CONFIG), str(cfg.root)],
            input=json.dumps(envs),
            capture_output=True,
            text=True,
            cwd=cfg.root,
            timeout=180,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"{CHECK_CONFIG.name} did not finish within 180 s") from None
    try:
        answer = json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise StackError(f"could not check the node settings ({CHECK_CONFIG.name} exit {result.returncode}):\n"
                         f"{result.stderr.strip()[-2000:]}")
    checks: dict[str, NodeCheck] = {}
    for name in envs:
        item = answer.get(name) or {}
        variables = item.get("variables")
        checks[name] = NodeCheck(
            error=item.get("error"),
            variables=None if variables is None else tuple(str(v) for v in variables),
            unchecked=item.get("unchecked"),
        )
    return checks


def settings_problems(checks: Mapping[str, NodeCheck]) -> list[str]:
    """One line per distinct invalid setting, naming the nodes that refuse it."""
    by_problem: dict[str, list[str]] = {}
    for name, check in checks.items():
        if check.error:
            problem = check.error.split(": invalid configuration: ", 1)[-1]
            by_problem.setdefault(problem, []).append(name)
    return [f"invalid configuration: {problem} ({', '.join(nodes)})" for problem, nodes in by_problem.items()]


def node_settings(env: Mapping[str, str], check: NodeCheck | None) -> dict[str, str]:
    """The settings a node is started with: the BESS_* variables its config reads (every BESS_* variable if
    that is unknown), as set in ``env``."""
    names = check.variables if check is not None and check.variables is not None else None
    wanted = set(names) if names is not None else {key for key in env if key.startswith("BESS_")}
    return {key: env[key] for key in sorted(wanted) if key in env}


def write_node_settings(path: Path, node: str, settings: Mapping[str, str]) -> None:
    """``<var>/run/<node>.env``: the settings ``node`` was started with, mode 0600 (it may hold passwords)."""
    lines = [f"# the BESS_* settings deploy/up started nodes.{node} with; compared on the next up (may hold secrets)"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in settings.items()]
    _write_atomic(path, "\n".join(lines) + "\n", mode=0o600)


def read_node_settings(path: Path) -> dict[str, str] | None:
    """What :func:`write_node_settings` wrote, or None if there is no such file (or it is unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            return None
        settings[key] = parts[0] if parts else ""
    return settings


def settings_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """What differs, readable: ``BESS_PLANNER_AUTOPILOT true -> false``; a secret by name only."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if is_secret(key):
            changes.append(f"{key} changed (secret: value not shown)")
        else:
            changes.append(f"{key} {'unset' if before is None else before} -> {'unset' if after is None else after}")
    return changes


# --------------------------------------------------------------------------------------------------------------
# waiting for the nodes


def _node_state(payload: bytes, pid: int, started_at: float | None) -> tuple[str, str] | None:
    """``(state, reason)`` if a status payload may describe process ``pid``; None if it is stale."""
    try:
        status = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        return None
    status_pid = status.get("pid")
    if status_pid is not None and status_pid != pid:
        return None  # retained from an earlier run (or another process)
    if status_pid is None and started_at is not None and isinstance(status.get("since"), str):
        with contextlib.suppress(ValueError):
            if datetime.fromisoformat(status["since"]).timestamp() < started_at - 2:
                return None
    reason = status.get("reason")
    return status["state"], reason if isinstance(reason, str) else ""


#: How long ``up`` keeps watching a node that came up ``degraded``, in case that was only its first moments
#: (the planner before the first prices): it then counts as running, with its reason printed.
DEGRADED_GRACE_S = 5.0


def _wait_online(
    cfg: UpConfig,
    nodes: dict[str, int],
    started_at: dict[str, float],
    login: tuple[str | None, str | None] = (None, None),
) -> dict[str, str]:
    """Wait until every node in ``nodes`` (name -> pid) runs; return name -> outcome: ``online``,
    ``degraded: <reason>`` (running, with a problem it reports), ``exited`` or ``no online status ...``.

    A status counts for a node only on its own topic ``<root>/node/<name>/status``, never because of what the
    payload says (another user may publish anything on its own topic), and only if it is not left over from
    an earlier run (another pid, or ``since`` before the start). ``login`` is the user that reads the
    statuses (the probe user when the broker requires authentication).
    """
    outcome: dict[str, str] = {}
    degraded: dict[str, str] = {}
    last: dict[str, str] = {}
    deadline = time.monotonic() + cfg.timeout
    settled_at: float | None = None
    while True:
        try:
            user, password = login
            topic_filter = f"{cfg.topic_root}/node/+/status"
            retained = read_retained(HOST, cfg.mqtt_port, topic_filter, timeout=3.0, username=user, password=password)
        except (OSError, MqttError):
            retained = {}
        for name, pid in nodes.items():
            if name in outcome:
                continue
            if not pid_alive(pid):
                outcome[name] = "exited"
                degraded.pop(name, None)
                continue
            payload = retained.get(f"{cfg.topic_root}/node/{name}/status")
            found = None if payload is None else _node_state(payload, pid, started_at.get(name))
            if found is None:
                continue
            state, reason = found
            last[name] = state
            if state == "online":
                outcome[name] = "online"
                degraded.pop(name, None)
            elif state == "degraded":
                degraded[name] = f"degraded: {reason[:300] or 'no reason given'}"
        now = time.monotonic()
        if len(outcome) + len(degraded) == len(nodes):
            settled_at = now if settled_at is None else settled_at
            if not degraded or now - settled_at >= min(DEGRADED_GRACE_S, cfg.timeout) or now > deadline:
                return {name: outcome.get(name) or degraded[name] for name in nodes}
        else:
            settled_at = None
        if now > deadline:
            for name in nodes:
                if name not in outcome:
                    outcome[name] = degraded.get(name) or (
                        f"no online status within {cfg.timeout:.0f} s (last: {last.get(name, '-')})"
                    )
            return outcome
        time.sleep(0.25)


def is_running(outcome: str) -> bool:
    """True for a :func:`_wait_online` outcome of a node that runs (``online`` or ``degraded: ...``)."""
    return outcome == "online" or outcome.startswith("degraded")


def _seed_line(line: str, gateway_ports: Sequence[int]) -> str:
    """A seed curl line pointed at the configured gateway ports (the seed uses 5000 and 5003)."""
    for default, port in zip((5000, 5003), gateway_ports, strict=False):
        line = line.replace(f"127.0.0.1:{default}/", f"127.0.0.1:{port}/")
    return line


def _broker_auth_mismatch(cfg: UpConfig, credentials: auth.Credentials | None) -> str | None:
    """Why the broker answering on the MQTT port cannot serve this run (auth on or off), or None if it can."""
    anonymous = mqtt_connack(HOST, cfg.mqtt_port)
    if anonymous is None:
        return None
    if credentials is None:
        if anonymous != 0:
            return (
                f"the broker on port {cfg.mqtt_port} refuses anonymous clients (CONNACK code {anonymous}): it runs "
                "with authentication. Run with BESS_MQTT_AUTH=1, or stop it (deploy/down) and run deploy/up again"
            )
        return None
    if anonymous == 0:
        return (
            f"the broker on port {cfg.mqtt_port} accepts anonymous clients: it was started without "
            "BESS_MQTT_AUTH=1. Stop it (deploy/down), then run BESS_MQTT_AUTH=1 deploy/up again"
        )
    user, password = credentials.login(auth.PROBE_USER)
    code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    if code not in (None, 0):
        return (
            f"the broker on port {cfg.mqtt_port} refuses the {user} user of {credentials.credentials_file} (CONNACK "
            f"code {code}): it uses other credentials. Stop it (deploy/down) and run deploy/up again"
        )
    return None


def _print_auth_help(cfg: UpConfig, credentials: auth.Credentials, database: influx_auth.InfluxCredentials) -> None:
    script = cfg.root / "deploy" / "auth.py"
    password = f'"$(python3 {script} password {{user}} {credentials.directory})"'
    print("  secure     on (BESS_MQTT_AUTH=1): the broker and the database refuse anonymous clients")
    print("  mqtt auth  each node logs in as itself (BESS_MQTT_USERNAME/_PASSWORD); the client id is the user name")
    print("             (one connection per user: nobody takes over another's session)")
    print(f"             passwords {credentials.credentials_file} (0600), ACL {credentials.acl_file}")
    print(f"             users: {' '.join(auth.NODE_USERS)}, read-only {auth.MONITOR_USER} (you) and "
          f"{auth.PROBE_USER} (deploy's probes), devices {' '.join(credentials.devices)} (each only its own "
          "battery/<id>/...)")
    print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -u {auth.MONITOR_USER} "
          f"-P {password.format(user=auth.MONITOR_USER)} -t '{cfg.topic_root}/#' -v")
    if credentials.devices:
        device = credentials.devices[0]
        print(f"  device     mosquitto_pub -p {cfg.mqtt_port} -u {device} -P {password.format(user=device)} -q 1 \\")
        print(f"               -t '{cfg.topic_root}/battery/{device}/telemetry' -m '<Telemetry JSON>'")
    db_password = f'"$(python3 {script} password {influx_auth.MONITOR_USER} {database.directory})"'
    print(f"  db auth    users {influx_auth.ADMIN_USER} (deploy only), {influx_auth.RECORDER_USER} (the recorder only: "
          f"{cfg.influx_db}), {influx_auth.MONITOR_USER} (you: reads {cfg.influx_db}); passwords "
          f"{database.credentials_file} (0600)")
    print(f"  query      curl -G -u {influx_auth.MONITOR_USER}:{db_password} {cfg.influx_url}/query "
          f"--data-urlencode db={cfg.influx_db} --data-urlencode 'q=SHOW MEASUREMENTS'")


def _influx_mismatch(cfg: UpConfig) -> str | None:
    """Why an InfluxDB that answers on the port but was not started by ``up`` cannot serve this run, or None.

    Ours is restarted with the right configuration by :func:`_bring_up`; somebody else's is used as it is, so
    in secure mode it must refuse anonymous clients, and in the open mode it must not require credentials.
    """
    influx = cfg.influxd()
    assert influx.pid_path is not None
    if not influx_ping(cfg.influx_url) or read_live_pid(influx.pid_path, str(influx.config_path)):
        return None
    status, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", None)
    where = f"the InfluxDB on port {cfg.influx_port} (not started by deploy/up)"
    if cfg.secure and status == 200:
        return (f"{where} accepts unauthenticated queries: secure mode needs a database with authentication. "
                "Stop it or set BESS_INFLUX_PORT to another port")
    if not cfg.secure and status in (401, 403):
        return (f"{where} requires authentication: run with BESS_MQTT_AUTH=1 (secure mode) if it is the "
                "database of a secure stack, or set BESS_INFLUX_PORT to another port")
    return None


def _open_database(cfg: UpConfig, database: influx_auth.InfluxCredentials | None) -> list[str]:
    """Create the stack's database; in secure mode also its users and privileges. Returns what changed."""
    if database is not None:
        where = f"InfluxDB on port {cfg.influx_port}"
        return influx_auth.secure_database(cfg.influx_run(), cfg.influx_db, database, where=where)
    try:
        create_database(cfg.influx_url, cfg.influx_db)
    except InfluxError as exc:
        if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
            raise StackError(f"the InfluxDB on port {cfg.influx_port} requires authentication: run with "
                             "BESS_MQTT_AUTH=1 (secure mode), or deploy/down and up again") from None
        raise
    return []


#: Settings only the recorder gets, whatever the caller's environment holds: no other node talks to the database.
RECORDER_ONLY: tuple[str, ...] = ("BESS_INFLUX_USERNAME", "BESS_INFLUX_PASSWORD", "BESS_INFLUX_TOKEN")


#: Settings that would put an HTTP listener of a node on the network, and the node they belong to.
HTTP_HOSTS: Mapping[str, str] = {"BESS_GATEWAY_HOST": "gateway", "BESS_DASHBOARD_HOST": "dashboard"}


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything: treat it as the network


def _check_exposure(env: Mapping[str, str]) -> None:
    """Nothing of the local stack listens beyond loopback unless asked for, and then only with authentication:
    a gateway or dashboard host on the network needs BESS_GATEWAY_TOKEN."""
    for var, what in HTTP_HOSTS.items():
        host = env.get(var, "")
        if host and not _is_loopback(host) and not env.get("BESS_GATEWAY_TOKEN", "").strip():
            raise SettingsError(
                f"{var}={host} puts the {what} on the network: set BESS_GATEWAY_TOKEN too (bearer token), or leave "
                f"{var} unset (127.0.0.1)"
            )


def _check_devices(cfg: UpConfig) -> None:
    """With authentication every battery id becomes a broker user: refuse ids that cannot be one."""
    if cfg.mqtt_auth:
        try:
            auth.check_devices(cfg.batteries)
        except auth.AuthError as exc:
            raise SettingsError(f"BESS_BATTERIES: {exc}") from None


def cmd_up(cfg: UpConfig) -> int:
    """Check every setting, then start broker, database and every node that exists (restarting nodes whose
    settings changed); wait for them; print a summary."""
    # everything that can be refused is refused before anything starts (exit 2, one line each)
    check_location(cfg)
    if cfg.mqtt_ws_port is not None and not cfg.mqtt_auth:
        raise SettingsError(websockets_refusal(cfg.mqtt_ws_port))
    _check_devices(cfg)
    present = [name for name in NODE_NAMES if (cfg.root / "nodes" / name / "__main__.py").exists()]
    absent = [name for name in NODE_NAMES if name not in present]
    base_env = {**cfg.environ, **cfg.node_env()}
    _check_exposure(base_env)
    checks = check_node_settings(cfg, dict.fromkeys(present, base_env))
    problems = settings_problems(checks)
    if problems:
        raise SettingsError("\n".join(problems))

    ensure_packages()
    account, why_root = cfg.broker_account()
    cfg.prepare_var(account)
    credentials = (
        auth.ensure_credentials(cfg.var_dir, cfg.topic_root, list(cfg.batteries)) if cfg.mqtt_auth else None
    )
    database = influx_auth.ensure_credentials(cfg.var_dir) if cfg.secure else None
    mismatch = _broker_auth_mismatch(cfg, credentials) or _influx_mismatch(cfg)
    if mismatch:
        raise StackError(mismatch)
    cfg.write_stack_file()
    broker = cfg.mosquitto(credentials)
    broker_note = _bring_up(broker, mqtt_connack(HOST, cfg.mqtt_port) is not None, timeout=15.0)
    assert broker.pid_path is not None
    ours = read_live_pid(broker.pid_path, str(broker.config_path))
    if credentials is not None and ours is not None and broker.pid is None:
        # ours from an earlier `up`: SIGHUP makes mosquitto re-read the password and ACL files just rewritten
        # (new batteries, another topic root); it reads its own copies, so refresh those first
        broker.install_auth_files()
        os.kill(ours, signal.SIGHUP)
        broker_note += "; reloaded its password and ACL files"
    broker_user = process_user(ours) if ours is not None else None
    influx = cfg.influxd()
    influx_note = _bring_up(influx, influx_ping(cfg.influx_url), timeout=30.0)
    changed = _open_database(cfg, database)

    login: tuple[str | None, str | None] = (None, None)
    if credentials is not None:
        login = credentials.login(auth.PROBE_USER)
    wanted: dict[str, tuple[dict[str, str], dict[str, str]]] = {}  # name -> (process env, recorded settings)
    for name in present:
        env = base_env if name == "recorder" else {k: v for k, v in base_env.items() if k not in RECORDER_ONLY}
        if credentials is not None:
            env = {**env, **credentials.node_env(name)}
        if database is not None and name == "recorder":
            env = {**env, **database.recorder_env()}
        wanted[name] = (env, node_settings(env, checks.get(name)))
    running, notes, restart = _nodes_to_restart(cfg, wanted)
    if restart:
        killed = set(terminate_pids(restart.values(), timeout=15.0))
        for name, pid in restart.items():
            (cfg.run_dir / f"{name}.pid").unlink(missing_ok=True)
            if pid in killed:
                notes[name] += " (the old process needed SIGKILL)"
    started_at: dict[str, float] = {}
    python = _node_python(cfg.root)
    for name in present:
        if name in running:
            continue
        env, settings = wanted[name]
        running[name] = _start_node(cfg, python, name, env, settings)
        started_at[name] = time.time()
        notes.setdefault(name, "started")

    outcome = _wait_online(cfg, running, started_at, login) if running else {}
    failed = [name for name, result in outcome.items() if not is_running(result)]

    print()
    print("BESS local stack")
    websockets = f"  websockets {broker.ws_url} (authenticated; reachable from the network)" if broker.ws_url else ""
    runs_as = f"; runs as {broker_user}" if broker_user else ""
    print(f"  mqtt       {broker.url}{websockets}  -- {broker_note}{runs_as}")
    if why_root and broker_user == "root":
        print(f"  WARNING: mosquitto runs as root: {why_root}")
    database_auth = "authentication on" if database is not None else "no authentication (BESS_MQTT_AUTH=1: secure)"
    print(f"  influxdb   {cfg.influx_url}  db={cfg.influx_db}  -- {influx_note}; {database_auth}"
          + "".join(f"; {note}" for note in changed))
    for name in (name for name in NODE_NAMES if name in running):
        log_path = cfg.log_dir / f"{name}.log"
        print(f"  {name:<10} pid {running[name]}: {outcome.get(name)}  ({notes[name]}; log {log_path})")
    if not running:
        print("  nodes      none yet: no nodes/<name>/__main__.py exists")
    if absent:
        print(f"  not present: {' '.join(absent)}")
    for name in present:
        check = checks.get(name)
        if check is None or check.variables is None:
            why = check.unchecked if check is not None and check.unchecked else "no config Struct found"
            print(f"  WARNING: {name}: settings not validated before start ({why[:300]})")
    remembered = cfg.from_memory()
    if remembered:
        print(f"  remembered {' '.join(remembered)}  (from {cfg.stack_file})")
    print()
    print(f"  dashboard  http://127.0.0.1:{cfg.dashboard_port}/")
    print("  gateway    " + "  ".join(f"http://127.0.0.1:{p}" for p in cfg.gateway_ports))
    if credentials is None or database is None:
        print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -t '{cfg.topic_root}/#' -v")
    else:
        _print_auth_help(cfg, credentials, database)
    print(f"  data/logs  {cfg.var_dir}   (0750, logs 0640; stop with deploy/down; data is kept)")
    print()
    print("Try:")
    for line in SEED_CURL_LINES:
        print("  " + _seed_line(line, cfg.gateway_ports).replace("\n", "\n  "))
    if failed:
        print()
        for name in failed:
            print(f"ERROR: {name}: {outcome[name]}; last lines of {cfg.log_dir / (name + '.log')}:", file=sys.stderr)
            print(tail(cfg.log_dir / f"{name}.log", 15), file=sys.stderr)
        return 1
    return 0


def _nodes_to_restart(
    cfg: UpConfig, wanted: Mapping[str, tuple[dict[str, str], dict[str, str]]]
) -> tuple[dict[str, int], dict[str, str], dict[str, int]]:
    """Split the running nodes into those that keep running (same settings) and those to restart.

    Returns ``(running name -> pid, notes name -> text, restart name -> old pid)``.
    """
    running: dict[str, int] = {}
    notes: dict[str, str] = {}
    restart: dict[str, int] = {}
    for name, (_, settings) in wanted.items():
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        if pid is None:
            continue
        recorded = read_node_settings(cfg.run_dir / f"{name}.env")
        if recorded is None:
            restart[name] = pid
            notes[name] = f"restarted: its settings were not recorded (was pid {pid})"
            continue
        changes = settings_changes(recorded, settings)
        if changes:
            restart[name] = pid
            notes[name] = f"restarted: {'; '.join(changes)} (was pid {pid})"
        else:
            running[name] = pid
            notes[name] = f"already running (pid {pid}), settings unchanged"
    return running, notes, restart


def _start_node(cfg: UpConfig, python: str, name: str, env: Mapping[str, str], settings: Mapping[str, str]) -> int:
    """Start ``python -m nodes.<name>`` in its own session, logging to var/log; record pid and settings."""
    log_path = cfg.log_dir / f"{name}.log"
    with open_log(log_path) as log:
        log.write(f"\n=== deploy/up starts nodes.{name} at {datetime.now().astimezone().isoformat()}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [python, "-m", f"nodes.{name}"],
            cwd=cfg.root,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=CHILD_UMASK,
        )
    _write_atomic(cfg.run_dir / f"{name}.pid", f"{proc.pid}\n")
    write_node_settings(cfg.run_dir / f"{name}.env", name, settings)
    return proc.pid


def cmd_down(cfg: UpConfig) -> int:
    """Stop what ``up`` started, by pid file: nodes first (in parallel), then the servers. Data is kept."""
    check_location(cfg)
    services = {"mosquitto": cfg.mosquitto(), "influxd": cfg.influxd()}
    node_pids: dict[str, int] = {}
    for pid_path in sorted(cfg.run_dir.glob("*.pid")):
        name = pid_path.stem
        if name in services:
            continue
        pid = read_live_pid(pid_path, f"nodes.{name}")
        if pid is not None:
            node_pids[name] = pid
        else:
            pid_path.unlink(missing_ok=True)
    killed = terminate_pids(node_pids.values(), timeout=15.0)
    stopped = len(node_pids)
    for name, pid in node_pids.items():
        (cfg.run_dir / f"{name}.pid").unlink(missing_ok=True)
        print(f"stopped {name} (pid {pid}){' with SIGKILL' if pid in killed else ''}")
    for env_path in cfg.run_dir.glob("*.env"):  # settings of processes that no longer run (and may hold secrets)
        if read_live_pid(cfg.run_dir / f"{env_path.stem}.pid", f"nodes.{env_path.stem}") is None:
            env_path.unlink(missing_ok=True)
    for name, service in services.items():
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        if pid is None:
            service.pid_path.unlink(missing_ok=True)
            continue
        killed = terminate_pids([pid], timeout=15.0)
        service.pid_path.unlink(missing_ok=True)
        stopped += 1
        print(f"stopped {name} (pid {pid}){' with SIGKILL' if killed else ''}")
    if not stopped:
        print("nothing to stop: no process started by deploy/up is running")
    return 0


def _influx_auth_state(cfg: UpConfig) -> str:
    """What an anonymous query to the stack's InfluxDB gets, described for ``status``."""
    status, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", None)
    if status == 401:
        state = "authentication on: anonymous queries refused"
        database = influx_auth.load_credentials(cfg.var_dir)
        if database is not None:
            monitor, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", database.login(influx_auth.MONITOR_USER))
            state += f", {influx_auth.MONITOR_USER} {'logs in' if monitor == 200 else f'refused ({monitor})'}"
        return state
    if status == 200:
        return "no authentication" + ("; WARNING: secure mode expects it" if cfg.secure else "")
    return f"an anonymous query gets HTTP {status}"


def cmd_status(cfg: UpConfig) -> int:
    """Print what runs: servers (ours or not), nodes by pid file and their retained status."""
    check_location(cfg)
    broker, influx = cfg.mosquitto(), cfg.influxd()
    user, password = cfg.probe_login()
    if cfg.remembered:
        mode = "on" if cfg.mqtt_auth else "off"
        print(f"stack      {cfg.var_dir} (settings from {cfg.stack_file.name}: mqtt auth {mode}, "
              f"topic root {cfg.topic_root})")
    broker_code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    for service, answers in ((broker, broker_code is not None), (influx, influx_ping(cfg.influx_url))):
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        owner = f"ours, pid {pid}, runs as {process_user(pid) or '?'}" if pid else "not started by deploy/up"
        if service is broker and broker_code:
            owner += f"; refuses {'user ' + user if user else 'anonymous clients'} (code {broker_code})"
        elif service is broker and user and answers:
            owner += f"; authentication on, read as {user}"
        elif service is influx and answers:
            owner += "; " + _influx_auth_state(cfg)
        print(f"{service.kind:<10} {'answering' if answers else 'DOWN'} at port {service.ports[0]} ({owner})")
    statuses: dict[str, bytes] = {}
    with contextlib.suppress(OSError, MqttError):
        statuses = read_retained(
            HOST, cfg.mqtt_port, f"{cfg.topic_root}/node/+/status", timeout=3.0, username=user, password=password
        )
    for name in NODE_NAMES:
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        payload = statuses.get(f"{cfg.topic_root}/node/{name}/status", b"").decode("utf-8", "replace")
        if pid is None and not payload:
            continue
        print(f"{name:<10} {'pid ' + str(pid) if pid else 'not running'}  status: {payload or '-'}")
    return 0


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    """``python deploy/stack.py up|down|status|ensure-packages [--test]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: stack.py up | down | status | ensure-packages [--test]"
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "ensure-packages":
            test = "--test" in rest
            installed = ensure_packages(
                {**REQUIRED_COMMANDS, **(TEST_COMMANDS if test else {})},
                OPTIONAL_TEST_COMMANDS if test else None,
            )
            if installed:
                print(f"installed: {' '.join(installed)}")
            return 0
        cfg = UpConfig.from_env(_repo_root())
        if command == "up":
            return cmd_up(cfg)
        if command == "down":
            return cmd_down(cfg)
        if command == "status":
            return cmd_status(cfg)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"{command}: {line}", file=sys.stderr)
        return 2
    except (StackError, InfluxError, auth.AuthError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
