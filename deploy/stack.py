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

Environment for ``up``: BESS_MQTT_PORT (1883), BESS_MQTT_WS_PORT (9001), BESS_INFLUX_PORT (8086),
BESS_INFLUX_DB (bess), BESS_VAR_DIR (var), BESS_GATEWAY_PORTS (5000,5003), BESS_DASHBOARD_PORT (8050),
BESS_TOPIC_ROOT (bess/v1), BESS_UP_TIMEOUT (30 seconds to wait for nodes), BESS_MQTT_AUTH (0; 1 = mosquitto
refuses anonymous clients and enforces the ACL of ``deploy/auth.py``: every node gets its own user and password),
BESS_BATTERIES (battery-1; with BESS_MQTT_AUTH=1, one device user per battery id).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
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
from typing import Any, ClassVar, Self

if __package__ in (None, ""):  # run as `python deploy/stack.py`: make the `deploy` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy import auth  # standard library only, like this file

HOST = "127.0.0.1"
#: Every node `deploy/up` knows, in start order; a node runs if nodes/<name>/__main__.py exists.
NODE_NAMES: tuple[str, ...] = ("recorder", "planner", "gateway", "renderer", "market", "simulator")
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


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
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


def influx_query(url: str, q: str, db: str | None = None, *, post: bool = False, epoch: str = "ms") -> Any:
    """Run InfluxQL ``q`` and return the decoded JSON; raise :class:`InfluxError` on any error.

    Use ``post=True`` for statements that change things (CREATE/DROP/...). Times come back as ``epoch``.
    """
    params = {"q": q, "epoch": epoch}
    if db is not None:
        params["db"] = db
    encoded = urllib.parse.urlencode(params)
    base = url.rstrip("/") + "/query"
    if post:
        status, body = _http("POST", base, data=encoded.encode())
    else:
        status, body = _http("GET", f"{base}?{encoded}")
    if status != 200:
        raise InfluxError(f"{q!r}: HTTP {status}: {body[:500]!r}")
    result = json.loads(body)
    for statement in result.get("results", []):
        if "error" in statement:
            raise InfluxError(f"{q!r}: {statement['error']}")
    return result


def influx_rows(url: str, db: str, q: str) -> list[dict[str, Any]]:
    """Run a SELECT and flatten every series into dict rows (tags of a GROUP BY merged in)."""
    rows: list[dict[str, Any]] = []
    for statement in influx_query(url, q, db).get("results", []):
        for series in statement.get("series", []):
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(series["columns"], values, strict=True))} for values in series["values"])
    return rows


def influx_write(url: str, db: str, lines: str | Iterable[str], precision: str = "ms") -> None:
    """Write line protocol; raise :class:`InfluxError` unless InfluxDB answers 204."""
    body = lines if isinstance(lines, str) else "\n".join(lines)
    query = urllib.parse.urlencode({"db": db, "precision": precision})
    status, answer = _http("POST", f"{url.rstrip('/')}/write?{query}", data=body.encode())
    if status != 204:
        raise InfluxError(f"write to {db}: HTTP {status}: {answer[:500]!r}")


def create_database(url: str, name: str) -> None:
    """``CREATE DATABASE name`` (idempotent)."""
    influx_query(url, f"CREATE DATABASE {_quote_ident(name)}", post=True)


def drop_database(url: str, name: str) -> None:
    """``DROP DATABASE name`` (a missing database is not an error)."""
    influx_query(url, f"DROP DATABASE {_quote_ident(name)}", post=True)


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
        """Create the directories and (re)write the config file."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        return self.config_path

    def start(self, timeout: float = 15.0) -> Self:
        """Spawn the server and wait until it answers; raise :class:`StackError` with its log tail if not."""
        if self.running:
            raise StackError(f"{self.kind} is already running (pid {self.pid})")
        busy = [port for port in self.ports if port_open(self.host, port)]
        if busy:
            raise PortInUseError(f"{self.kind}: port(s) {busy} on {self.host} already in use")
        self.write_config()
        with self.log.open("ab") as console:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=self.child_env(),
                start_new_session=True,  # Ctrl-C in a terminal or a closed shell must not take it down
                preexec_fn=parent_death_preexec() if self.die_with_parent else None,  # noqa: PLW1509
            )
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(f"{self._proc.pid}\n")
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


@dataclass(kw_only=True, eq=False)
class Mosquitto(Service):
    """Mosquitto with persistence, an unlimited per-client queue and an optional websockets listener."""

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

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().write_config()

    def config_text(self) -> str:
        # `user` = whoever we are: as root mosquitto would otherwise switch to user "mosquitto" and then fail
        # to write its persistence file into our root-owned directory (see shared notes §1).
        lines = [
            "# generated by deploy/stack.py on every start; edit the template there",
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
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
            "# without it Nagle holds small packets (PUBACKs, stored receipts) for the peer's delayed ACK: a durable",
            "# POST /write did 1.0k req/s with p50 24 ms, with it 2.7k req/s with p50 10 ms (bench/gateway.py)",
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"listener {self.port} {self.host}",
            "protocol mqtt",
        ]
        if self.ws_port is not None:
            lines += [f"listener {self.ws_port} {self.host}", "protocol websockets"]
        return "\n".join(lines) + "\n"

    def _auth_lines(self) -> list[str]:
        if self.password_file is None:
            return ["allow_anonymous true"]
        lines = ["allow_anonymous false", f"password_file {self.password_file}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
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


@dataclass(frozen=True)
class UpConfig:
    """What ``deploy/up`` runs and where, from BESS_* environment variables."""

    root: Path
    var_dir: Path
    mqtt_port: int = 1883
    mqtt_ws_port: int = 9001
    influx_port: int = 8086
    influx_db: str = "bess"
    gateway_ports: tuple[int, ...] = (5000, 5003)
    dashboard_port: int = 8050
    topic_root: str = "bess/v1"
    timeout: float = 30.0
    mqtt_auth: bool = False
    batteries: tuple[str, ...] = auth.DEFAULT_BATTERIES

    @classmethod
    def from_env(cls, root: Path, environ: Mapping[str, str] | None = None) -> UpConfig:
        """Read the BESS_* variables; raise :class:`StackError` naming a bad one."""
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return float(default)
            try:
                return float(raw)
            except ValueError:
                raise StackError(f"{name}={raw!r} is not a number") from None

        def port(name: str, default: int) -> int:
            value = number(name, default)
            if not value.is_integer() or not 0 < value < 65536:
                raise StackError(f"{name}={env.get(name)!r} is not a TCP port")
            return int(value)

        raw_gateway = env.get("BESS_GATEWAY_PORTS") or "5000,5003"
        try:
            gateway_ports = tuple(int(part) for part in raw_gateway.split(",") if part.strip())
        except ValueError:
            raise StackError(f"BESS_GATEWAY_PORTS={raw_gateway!r} must be comma-separated ports") from None
        raw_auth = (env.get("BESS_MQTT_AUTH") or "0").strip().lower()
        if raw_auth not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
            raise StackError(f"BESS_MQTT_AUTH={env.get('BESS_MQTT_AUTH')!r} must be 1 or 0")
        # checked by deploy/auth.py when credentials are made (`up` with BESS_MQTT_AUTH=1), not here: `down`
        # must work whatever the simulator's battery list says
        batteries = tuple(part.strip() for part in (env.get("BESS_BATTERIES") or "").split(",") if part.strip())
        var_dir = Path(env.get("BESS_VAR_DIR") or "var")
        return cls(
            root=root,
            var_dir=(var_dir if var_dir.is_absolute() else root / var_dir).resolve(),
            mqtt_port=port("BESS_MQTT_PORT", 1883),
            mqtt_ws_port=port("BESS_MQTT_WS_PORT", 9001),
            influx_port=port("BESS_INFLUX_PORT", 8086),
            influx_db=env.get("BESS_INFLUX_DB") or "bess",
            gateway_ports=gateway_ports,
            dashboard_port=port("BESS_DASHBOARD_PORT", 8050),
            topic_root=env.get("BESS_TOPIC_ROOT") or "bess/v1",
            timeout=number("BESS_UP_TIMEOUT", 30.0),
            mqtt_auth=raw_auth in ("1", "true", "yes", "on"),
            batteries=batteries or auth.DEFAULT_BATTERIES,
        )

    @property
    def run_dir(self) -> Path:
        """Pid files."""
        return self.var_dir / "run"

    @property
    def log_dir(self) -> Path:
        """Logs of every process ``up`` starts."""
        return self.var_dir / "log"

    @property
    def influx_url(self) -> str:
        """``http://127.0.0.1:<influx port>``."""
        return f"http://{HOST}:{self.influx_port}"

    def node_env(self) -> dict[str, str]:
        """The variables every node gets (on top of the caller's environment)."""
        return {
            "BESS_MQTT_HOST": HOST,
            "BESS_MQTT_PORT": str(self.mqtt_port),
            "BESS_MQTT_WS_PORT": str(self.mqtt_ws_port),
            "BESS_INFLUX_URL": self.influx_url,
            "BESS_INFLUX_DB": self.influx_db,
            "BESS_GATEWAY_PORTS": ",".join(str(p) for p in self.gateway_ports),
            "BESS_DASHBOARD_PORT": str(self.dashboard_port),
            "BESS_TOPIC_ROOT": self.topic_root,
            "PYTHONUNBUFFERED": "1",
            # the local demo: the planner drives the simulated battery (the caller's environment overrides)
            "BESS_PLANNER_AUTOPILOT": os.environ.get("BESS_PLANNER_AUTOPILOT", "true"),
        }

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
            probe_login=None if credentials is None else credentials.login(auth.MONITOR_USER),
        )

    def monitor_login(self) -> tuple[str | None, str | None]:
        """``(user, password)`` for probes and status reads: the monitor user with BESS_MQTT_AUTH=1 (if ``up``
        made credentials already), else anonymous ``(None, None)``."""
        if not self.mqtt_auth:
            return None, None
        credentials = auth.load_credentials(self.var_dir)
        if credentials is None or auth.MONITOR_USER not in credentials.passwords:
            return None, None
        return credentials.login(auth.MONITOR_USER)

    def influxd(self) -> Influxd:
        """The database ``up`` would start (its RPC port is the HTTP port + 2, 8088 for the defaults)."""
        return Influxd(
            base_dir=self.var_dir / "influxdb",
            port=self.influx_port,
            rpc_port=self.influx_port + 2 if self.influx_port < 65534 else free_port(),
            log_path=self.log_dir / "influxd.log",
            pid_path=self.run_dir / "influxd.pid",
        )


def _bring_up(service: Service, answers: bool, timeout: float) -> str:
    """Start ``service`` unless something already answers at its address; describe what happened."""
    assert service.pid_path is not None
    ours = read_live_pid(service.pid_path, str(service.config_path))
    address = f"{service.host}:{service.ports[0]}"
    if answers:
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


def _node_state(payload: bytes, pid: int, started_at: float | None) -> tuple[str, int | None] | None:
    """``(state, pid in payload)`` if a status payload may describe process ``pid``; None if it is stale."""
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
    return status["state"], status_pid


def _wait_online(
    cfg: UpConfig,
    nodes: dict[str, int],
    started_at: dict[str, float],
    login: tuple[str | None, str | None] = (None, None),
) -> dict[str, str]:
    """Wait until every node in ``nodes`` (name -> pid) reports online; return name -> outcome.

    A status counts for a node if it sits on ``<root>/node/<name>/status`` or names the node's pid, and is not
    left over from an earlier run (other pid, or ``since`` before the start). ``login`` is the user that
    reads the statuses (the monitor user when the broker requires authentication).
    """
    outcome: dict[str, str] = {}
    last: dict[str, str] = {}
    deadline = time.monotonic() + cfg.timeout
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
                continue
            for topic, payload in retained.items():
                found = _node_state(payload, pid, started_at.get(name))
                if found is None:
                    continue
                state, status_pid = found
                if topic == f"{cfg.topic_root}/node/{name}/status" or status_pid == pid:
                    last[name] = state
                    if state == "online":
                        outcome[name] = "online"
        if len(outcome) == len(nodes):
            return outcome
        if time.monotonic() > deadline:
            for name in nodes:
                outcome.setdefault(name, f"no online status within {cfg.timeout:.0f} s (last: {last.get(name, '-')})")
            return outcome
        time.sleep(0.25)


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
    user, password = credentials.login(auth.MONITOR_USER)
    code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    if code not in (None, 0):
        return (
            f"the broker on port {cfg.mqtt_port} refuses the {user} user of {credentials.credentials_file} (CONNACK "
            f"code {code}): it uses other credentials. Stop it (deploy/down) and run deploy/up again"
        )
    return None


def _print_auth_help(cfg: UpConfig, credentials: auth.Credentials) -> None:
    script = cfg.root / "deploy" / "auth.py"
    password = f'"$(python3 {script} password {{user}} {credentials.directory})"'
    print("  mqtt auth  on: anonymous clients are refused; each node logs in as itself (BESS_MQTT_USERNAME/_PASSWORD)")
    print(f"             passwords {credentials.credentials_file} (0600), ACL {credentials.acl_file}")
    print(f"             users: {' '.join(auth.NODE_USERS)}, read-only {auth.MONITOR_USER}, "
          f"devices {' '.join(credentials.devices)} (each only its own battery/<id>/...)")
    print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -u {auth.MONITOR_USER} "
          f"-P {password.format(user=auth.MONITOR_USER)} -t '{cfg.topic_root}/#' -v")
    if credentials.devices:
        device = credentials.devices[0]
        print(f"  device     mosquitto_pub -p {cfg.mqtt_port} -u {device} -P {password.format(user=device)} -q 1 \\")
        print(f"               -t '{cfg.topic_root}/battery/{device}/telemetry' -m '<Telemetry JSON>'")


def cmd_up(cfg: UpConfig) -> int:
    """Start broker, database and every node that exists; wait for them; print a summary."""
    ensure_packages()
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)

    credentials = (
        auth.ensure_credentials(cfg.var_dir, cfg.topic_root, list(cfg.batteries)) if cfg.mqtt_auth else None
    )
    mismatch = _broker_auth_mismatch(cfg, credentials)
    if mismatch:
        raise StackError(mismatch)
    broker = cfg.mosquitto(credentials)
    broker_note = _bring_up(broker, mqtt_connack(HOST, cfg.mqtt_port) is not None, timeout=15.0)
    assert broker.pid_path is not None
    ours = read_live_pid(broker.pid_path, str(broker.config_path))
    if credentials is not None and ours is not None and broker.pid is None:
        # ours from an earlier `up`: SIGHUP makes mosquitto re-read the password and ACL files just rewritten
        # (new batteries, another topic root)
        os.kill(ours, signal.SIGHUP)
        broker_note += "; reloaded its password and ACL files"
    if not port_open(HOST, cfg.mqtt_ws_port):
        broker_note += f"; WARNING: nothing listens on websockets port {cfg.mqtt_ws_port}"
    influx = cfg.influxd()
    influx_note = _bring_up(influx, influx_ping(cfg.influx_url), timeout=30.0)
    create_database(cfg.influx_url, cfg.influx_db)

    env = {**os.environ, **cfg.node_env()}
    login: tuple[str | None, str | None] = (None, None)
    if credentials is not None:
        login = credentials.login(auth.MONITOR_USER)
    python = _node_python(cfg.root)
    running: dict[str, int] = {}
    started_at: dict[str, float] = {}
    notes: dict[str, str] = {}
    absent: list[str] = []
    for name in NODE_NAMES:
        if not (cfg.root / "nodes" / name / "__main__.py").exists():
            absent.append(name)
            continue
        pid_path = cfg.run_dir / f"{name}.pid"
        pid = read_live_pid(pid_path, f"nodes.{name}")
        if pid is not None:
            running[name] = pid
            notes[name] = f"already running (pid {pid})"
            continue
        log_path = cfg.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"\n=== deploy/up starts nodes.{name} at {datetime.now().astimezone().isoformat()}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [python, "-m", f"nodes.{name}"],
                cwd=cfg.root,
                env=env if credentials is None else {**env, **credentials.node_env(name)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_path.write_text(f"{proc.pid}\n")
        running[name] = proc.pid
        started_at[name] = time.time()
        notes[name] = f"started (pid {proc.pid})"

    outcome = _wait_online(cfg, running, started_at, login) if running else {}
    failed = [name for name, result in outcome.items() if result != "online"]

    print()
    print("BESS local stack")
    print(f"  mqtt       {broker.url}  websockets {broker.ws_url}  -- {broker_note}")
    print(f"  influxdb   {cfg.influx_url}  db={cfg.influx_db}  -- {influx_note}")
    for name, pid in running.items():
        print(f"  {name:<10} pid {pid}: {outcome.get(name)}  ({notes[name]}; log {cfg.log_dir / (name + '.log')})")
    if not running:
        print("  nodes      none yet: no nodes/<name>/__main__.py exists")
    if absent:
        print(f"  not present: {' '.join(absent)}")
    print()
    print(f"  dashboard  http://127.0.0.1:{cfg.dashboard_port}/")
    print("  gateway    " + "  ".join(f"http://127.0.0.1:{p}" for p in cfg.gateway_ports))
    if credentials is None:
        print(f"  watch      mosquitto_sub -p {cfg.mqtt_port} -t '{cfg.topic_root}/#' -v")
    else:
        _print_auth_help(cfg, credentials)
    print(f"  data/logs  {cfg.var_dir}   (stop with deploy/down; data is kept)")
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


def cmd_down(cfg: UpConfig) -> int:
    """Stop what ``up`` started, by pid file: nodes first (in parallel), then the servers. Data is kept."""
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


def cmd_status(cfg: UpConfig) -> int:
    """Print what runs: servers (ours or not), nodes by pid file and their retained status."""
    broker, influx = cfg.mosquitto(), cfg.influxd()
    user, password = cfg.monitor_login()
    broker_code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    for service, answers in ((broker, broker_code is not None), (influx, influx_ping(cfg.influx_url))):
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        owner = f"ours, pid {pid}" if pid else "not started by deploy/up"
        if service is broker and broker_code:
            owner += f"; refuses {'user ' + user if user else 'anonymous clients'} (code {broker_code})"
        elif service is broker and user and answers:
            owner += f"; authentication on, read as {user}"
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
    except (StackError, InfluxError, auth.AuthError) as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
