"""mosquitto and influxd as child processes: their generated configs, start (once they answer their real
protocol), stop, kill and restart (:class:`Service`, :class:`Mosquitto`, :class:`Influxd`)::

    broker = start_mosquitto(tmp / "mq")        # free loopback ports; returns once a CONNECT gets a CONNACK
    influx = start_influxd(tmp / "ifx")         # returns once GET /ping answers 204
    broker.kill(); broker.start(); broker.restart(); broker.stop()

Why local processes and not containers: see ``deploy/stack.py``. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from deploy import accounts
from deploy.accounts import CHILD_UMASK, Account, chown_tree, open_log, private_dir, write_atomic
from deploy.apt import require_binary
from deploy.errors import PortInUseError, StackError
from deploy.influx_http import influx_ping
from deploy.mqtt_probe import mqtt_connack, mqtt_ready
from deploy.processes import HOST, free_port, parent_death_preexec, port_open, stop_process, tail


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
        write_atomic(self.config_path, self.config_text(), mode=0o600)
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
            write_atomic(self.pid_path, f"{self._proc.pid}\n")
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
        code = stop_process(proc, timeout)
        self._forget_pid()
        return code

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
        return [require_binary("mosquitto"), "-c", str(self.config_path)]

    @property
    def drops_privileges(self) -> bool:
        """True if mosquitto switches to :attr:`account` (it is started as root and has one)."""
        return self.account is not None and accounts.running_as_root()

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
        write_atomic(self.config_path, self.config_text(), mode=0o640 if group else 0o600, group=group)
        return self.config_path

    def install_auth_files(self) -> None:
        """Copy the password and ACL files for mosquitto to read (call it before a SIGHUP that reloads them)."""
        group = self.account if self.drops_privileges else None
        mode = 0o640 if group else 0o600
        for source, name in ((self.password_file, self.PASSWORD_COPY), (self.acl_file, self.ACL_COPY)):
            if source is not None:
                write_atomic(self.base_dir / name, source.read_text(), mode=mode, group=group)
            else:
                (self.base_dir / name).unlink(missing_ok=True)  # left from a run with authentication

    def config_text(self) -> str:
        if self.ws_port is not None and self.password_file is None:
            raise StackError(websockets_refusal(self.ws_port))
        # `user`: as root mosquitto drops to this user before it opens its log, password and persistence files
        # (see shared notes §1), so write_config makes them that user's; not root, the line is ignored.
        lines = [
            "# generated by deploy/servers.py on every start; edit the template there",
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
        return [require_binary("influxd"), "-config", str(self.config_path)]

    def child_env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file; a stray one must not move our ports or dirs.
        return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}

    def config_text(self) -> str:
        return f"""\
# generated by deploy/servers.py on every start; edit the template there
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
# the recorder's telemetry rollups are continuous queries (nodes/recorder/rollups.py); the retention service
# enforces the rollups' retention policies (all infinite unless configured)
[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"
[subscriber]
  enabled = false
[retention]
  enabled = true
"""

    def is_ready(self, timeout: float = 0.5) -> bool:
        return influx_ping(self.url, timeout)


S = TypeVar("S", bound=Service)


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
    return _start_on_free_ports(
        lambda: Mosquitto(
            base_dir=base_dir,
            port=free_port() if port is None else port,
            ws_port=ws_port if ws_port is not None else (free_port() if websockets else None),
            log_path=log_path,
            pid_path=pid_path,
            die_with_parent=die_with_parent,
            password_file=password_file,
            acl_file=acl_file,
            probe_login=probe_login,
        ),
        timeout,
        retry=port is None and not (websockets and ws_port is not None),
    )


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
    return _start_on_free_ports(
        lambda: Influxd(
            base_dir=base_dir,
            port=free_port() if port is None else port,
            rpc_port=free_port() if rpc_port is None else rpc_port,
            log_path=log_path,
            pid_path=pid_path,
            die_with_parent=die_with_parent,
        ),
        timeout,
        retry=port is None or rpc_port is None,
    )


def _start_on_free_ports(build: Callable[[], S], timeout: float, *, retry: bool) -> S:
    """Start the server ``build`` makes; with ``retry`` (a port was picked free, and another process may take it
    before the server binds it) build it again on newly picked ports, up to three tries."""
    for attempt in range(3):
        try:
            return build().start(timeout)
        except StackError:
            if attempt == 2 or not retry:
                raise
    raise AssertionError("unreachable")
