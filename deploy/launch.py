"""The node processes ``up`` starts: which keep running and which restart (their settings changed), starting
``python -m nodes.<name>`` in its own session with its log and pid file, and waiting until each says it runs
(its retained ``node/<name>/status``). Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deploy.accounts import CHILD_UMASK, open_log, write_atomic
from deploy.mqtt_probe import MqttError, read_retained
from deploy.node_settings import read_node_settings, settings_changes, write_node_settings
from deploy.processes import HOST, pid_alive, read_live_pid
from deploy.settings import UpConfig
from nodes.contract.names import ALL_NODE_NAMES, NODE_NAMES, OPT_IN_NODES

#: Settings only the recorder gets, whatever the caller's environment holds: no other node talks to the database.
RECORDER_ONLY: tuple[str, ...] = ("BESS_INFLUX_USERNAME", "BESS_INFLUX_PASSWORD", "BESS_INFLUX_TOKEN")


#: The battery a device bridge stands for when BESS_BRIDGE_BATTERY is not set (nodes/bridge/config.py's default).
DEFAULT_BRIDGE_BATTERY = "battery-1"


def bridged_battery(env: Mapping[str, str]) -> str | None:
    """The battery id the device bridge runs as, or None when no bridge is asked for (BESS_BRIDGE_PROFILE unset)."""
    if not env.get(OPT_IN_NODES["bridge"]):
        return None
    return env.get("BESS_BRIDGE_BATTERY") or DEFAULT_BRIDGE_BATTERY


@dataclass(frozen=True)
class NodePlan:
    """Which nodes ``up`` runs, the settings it changes for some of them, and why others do not run."""

    #: the nodes to run, in start order (the opt-in ones after the others)
    run: tuple[str, ...]
    #: settings replaced for one node: ``{"simulator": {"BESS_BATTERIES": "battery-2"}}``
    overrides: Mapping[str, Mapping[str, str]]
    #: why a node that exists does not run: ``{"simulator": "battery-1 is the bridge's device"}``
    skipped: Mapping[str, str]


def plan_nodes(root: Path, env: Mapping[str, str], batteries: tuple[str, ...]) -> NodePlan:
    """The nodes that exist under ``root`` and are wanted with ``env``.

    An opt-in node (:data:`OPT_IN_NODES`) runs when its setting is set. The device bridge stands for one battery,
    which the simulator then does not simulate (two devices on one battery's topics would both obey and both
    report): it is dropped from the simulator's BESS_BATTERIES, and the simulator does not run when none is left.
    """
    run = [name for name in NODE_NAMES if (root / "nodes" / name / "__main__.py").exists()]
    skipped: dict[str, str] = {}
    overrides: dict[str, dict[str, str]] = {}
    for name, setting in OPT_IN_NODES.items():
        if env.get(setting) and (root / "nodes" / name / "__main__.py").exists():
            run.append(name)
    bridged = bridged_battery(env) if "bridge" in run else None
    if bridged is not None and "homeassistant" in run:  # its entities are live while the bridge is
        own = env.get("BESS_HA_DEVICE_NODE_OF", "").strip()  # the user's entries come later and win
        overrides["homeassistant"] = {"BESS_HA_DEVICE_NODE_OF": ",".join(filter(None, [f"{bridged}=bridge", own]))}
    if bridged is not None and "simulator" in run and bridged in batteries:
        left = [battery for battery in batteries if battery != bridged]
        if left:
            overrides["simulator"] = {"BESS_BATTERIES": ",".join(left)}
        else:
            run.remove("simulator")
            skipped["simulator"] = f"not started: {bridged}, its only battery, is the bridge's device"
    return NodePlan(tuple(run), overrides, skipped)


def running_pids(cfg: UpConfig) -> dict[str, int]:
    """What ``up`` started under ``cfg.var_dir`` and still runs: ``{"mosquitto": pid, "recorder": pid, ...}``."""
    found: dict[str, int] = {}
    for service in (cfg.mosquitto(), cfg.influxd()):
        assert service.pid_path is not None
        pid = read_live_pid(service.pid_path, str(service.config_path))
        if pid is not None:
            found[service.kind] = pid
    for name in ALL_NODE_NAMES:
        pid = read_live_pid(cfg.run_dir / f"{name}.pid", f"nodes.{name}")
        if pid is not None:
            found[name] = pid
    return found


def node_state(payload: bytes, pid: int, started_at: float | None) -> tuple[str, str] | None:
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


def wait_online(
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
            found = None if payload is None else node_state(payload, pid, started_at.get(name))
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


def nodes_to_restart(
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


def start_node(cfg: UpConfig, python: str, name: str, env: Mapping[str, str], settings: Mapping[str, str]) -> int:
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
    write_atomic(cfg.run_dir / f"{name}.pid", f"{proc.pid}\n")
    write_node_settings(cfg.run_dir / f"{name}.env", name, settings)
    return proc.pid
