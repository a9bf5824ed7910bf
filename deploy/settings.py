"""Where the stack lives and what it runs: :class:`UpConfig` from BESS_* variables and ``<var>/stack.json``.

``up`` remembers the location settings (:data:`LOCATION`: auth mode, ports, topic root, database) in
``<var>/stack.json``; a later command that leaves a variable out gets the remembered value, one that contradicts
it while the stack runs is refused. Standard library only.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from deploy import accounts, auth, influx_auth
from deploy.accounts import BROKER_ACCOUNTS, LOG_MODE, Account, first_blocked, private_dir, write_atomic
from deploy.errors import SettingsError
from deploy.influx_http import Login, influx_statement
from deploy.processes import HOST
from deploy.servers import Influxd, Mosquitto
from nodes.contract.names import DEFAULT_ROOT

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
    topic_root: str = DEFAULT_ROOT
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
            topic_root=env.get("BESS_TOPIC_ROOT") or DEFAULT_ROOT,
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
        write_atomic(self.stack_file, json.dumps(data, indent=2) + "\n")

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
        if not accounts.running_as_root():
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
            if accounts.running_as_root():  # the broker's group, or back to ours when it runs as root after all
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
