"""Run a real mosquitto and a real influxd as local processes; the command line behind ``deploy/up|down|status``.

Why local processes and not containers: the machines this project is built and tested on have the ``docker``
CLI but no Docker engine (no socket, no DOCKER_HOST), so ``docker compose`` and testcontainers cannot start
anything there. The Debian packages ``mosquitto`` and ``influxdb`` install in seconds and start in 10-20 ms,
so the same servers run as plain child processes instead. ``tests/conftest.py`` still uses testcontainers
(``eclipse-mosquitto:2``, ``influxdb:1.8``) when ``docker.from_env().ping()`` answers, and this package otherwise.

``deploy/`` is standard library only (with ``nodes/contract/names.py`` and ``access.py``), so that it runs before
the virtualenv exists and imports cleanly from tests. One module per job:

=====================  ==========================================================================================
``apt.py``             the Debian packages behind the commands the stack needs (``ensure-packages``)
``processes.py``       ports, live pids, "terminate, wait, kill" (shared with tests/support and bench/)
``accounts.py``        who a server runs as; private directories, logs 0640, atomic writes
``mqtt_probe.py``      :class:`MiniMqtt`, a tiny blocking MQTT 3.1.1 client for probes and tests
``influx_http.py``     InfluxDB 1.x over HTTP: ping, queries, writes, databases
``servers.py``         :class:`Mosquitto` and :class:`Influxd`: configs, start, stop, kill, restart
``settings.py``        :class:`UpConfig`: BESS_* variables and ``<var>/stack.json``
``node_settings.py``   node settings: validated before start, recorded, compared on the next ``up``
``launch.py``          starting node processes and waiting until they run
``preflight.py``       what ``up`` refuses before it starts anything
``commands.py``        ``up``, ``down``, ``status``
``seed.py``            the user's four curl lines (banner, seed test, README check)
``auth.py``            broker users and the ACL from the contract; ``influx_auth.py``: the database's users
``bridge_access.py``   secure mode's device bridge: its profile's device topics (``python -m nodes.bridge acl``)
``foreign_topics.py``  those device topics checked before they go into the ACL (never under the topic root)
=====================  ==========================================================================================

This module is the command line and re-exports what tests and benchmarks use (``from deploy import stack``;
``stack.start_mosquitto(...)``, ``stack.MiniMqtt(...)``)::

    broker = start_mosquitto(tmp / "mq")        # free loopback ports; returns once a CONNECT gets a CONNACK
    influx = start_influxd(tmp / "ifx")         # returns once GET /ping answers 204
    create_database(influx.url, "bess")
    broker.kill(); broker.start(); broker.restart(); broker.stop()

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

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as `python deploy/stack.py`: make the `deploy` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy import auth
from deploy.accounts import BROKER_ACCOUNTS, Account, first_blocked, running_as_root
from deploy.apt import OPTIONAL_TEST_COMMANDS, REQUIRED_COMMANDS, TEST_COMMANDS, ensure_packages, find_binary
from deploy.commands import cmd_down, cmd_status, cmd_up
from deploy.errors import PortInUseError, SettingsError, StackError
from deploy.influx_http import (
    InfluxError,
    create_database,
    drop_database,
    influx_ping,
    influx_query,
    influx_rows,
    influx_write,
)
from deploy.mqtt_probe import MiniMqtt, MqttError, MqttMessage, MqttRefused, mqtt_connack, mqtt_ready, read_retained
from deploy.node_settings import is_secret, read_node_settings, settings_changes, write_node_settings
from deploy.processes import (
    HOST,
    free_port,
    parent_death_preexec,
    pid_alive,
    port_open,
    read_live_pid,
    request_parent_death_signal,
    stop_process,
    stop_processes,
    tail,
    terminate_pids,
)
from deploy.seed import SEED_CURL_LINES
from deploy.servers import MESSAGE_SIZE_LIMIT_BYTES, Influxd, Mosquitto, Service, start_influxd, start_mosquitto
from deploy.settings import LOCATION, STACK_FILE, UpConfig
from nodes.contract.names import NODE_NAMES

__all__ = [
    "BROKER_ACCOUNTS",
    "HOST",
    "LOCATION",
    "MESSAGE_SIZE_LIMIT_BYTES",
    "NODE_NAMES",
    "SEED_CURL_LINES",
    "STACK_FILE",
    "Account",
    "InfluxError",
    "Influxd",
    "MiniMqtt",
    "Mosquitto",
    "MqttError",
    "MqttMessage",
    "MqttRefused",
    "PortInUseError",
    "Service",
    "SettingsError",
    "StackError",
    "UpConfig",
    "cmd_down",
    "cmd_status",
    "cmd_up",
    "create_database",
    "drop_database",
    "ensure_packages",
    "find_binary",
    "first_blocked",
    "free_port",
    "influx_ping",
    "influx_query",
    "influx_rows",
    "influx_write",
    "is_secret",
    "main",
    "mqtt_connack",
    "mqtt_ready",
    "parent_death_preexec",
    "pid_alive",
    "port_open",
    "read_live_pid",
    "read_node_settings",
    "read_retained",
    "request_parent_death_signal",
    "running_as_root",
    "settings_changes",
    "start_influxd",
    "start_mosquitto",
    "stop_process",
    "stop_processes",
    "tail",
    "terminate_pids",
    "write_node_settings",
]


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    """``python deploy/stack.py up|down|status|ensure-packages [--test]``; exit 2 for a bad setting, 1 otherwise."""
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
