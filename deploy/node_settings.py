"""Node settings: validated before anything starts (``deploy/check_config.py`` in the venv's python, each node's own
config Struct), recorded per node in ``<var>/run/<node>.env`` (0600) and compared on the next ``up``, which
restarts a node whose settings changed and names them (never the value of a secret). Standard library only.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.accounts import write_atomic
from deploy.errors import StackError
from deploy.settings import UpConfig

#: Settings whose values are never printed (they are kept only in the 0600 files of var/run and var/mqtt-auth).
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|_KEY$")
CHECK_CONFIG = Path(__file__).resolve().parent / "check_config.py"


def node_python(root: Path) -> str:
    """The python that runs the nodes: the checkout's virtualenv, else this one."""
    venv_python = root / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


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
            [node_python(cfg.root), str(CHECK_CONFIG), str(cfg.root)],
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
    write_atomic(path, "\n".join(lines) + "\n", mode=0o600)


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
