"""Run a node as its own process, the way deploy/up does: ``python -m nodes.<name>`` with BESS_* variables.

    proc = start_node("recorder", node_env, log_dir=tmp_path)
    proc.wait_online(services.mqtt_host, services.mqtt_port, node_env["BESS_TOPIC_ROOT"])
    ...
    assert proc.stop() == 0            # SIGTERM, then SIGKILL after the timeout
    print(proc.log_tail())

In tests prefer the ``run_node`` fixture: it uses ``node_env``, stops every node at teardown and attaches the
node logs to the report of a failing test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy import stack
from deploy.processes import stop_process
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class NodeExited(AssertionError):
    """The node process ended while a test waited for it; the message carries its log tail."""


class NodeProcess(subprocess.Popen[bytes]):
    """A ``subprocess.Popen`` of ``python -m nodes.<name>``, plus its name, log file and helpers."""

    name: str
    log_path: Path

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the node's clean shutdown), wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        return stop_process(self, timeout)

    def kill_now(self) -> int:
        """SIGKILL (no clean shutdown: the broker publishes the last will) and wait; return the exit code."""
        if self.poll() is None:
            self.kill()
        return self.wait()

    def log_text(self) -> str:
        """Everything the node printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_alive(self) -> None:
        """Raise :class:`NodeExited` (with the log tail) if the process has ended."""
        code = self.poll()
        if code is not None:
            raise NodeExited(f"node {self.name} exited with {code}; log {self.log_path}:\n{self.log_tail()}")

    def status(self, mqtt_host: str, mqtt_port: int, topic_root: str, node_id: str | None = None) -> Any:
        """The node's retained status (decoded JSON) from ``<topic_root>/node/<node_id>/status``, or None."""
        topic = f"{topic_root}/node/{node_id or self.name}/status"
        payload = stack.read_retained(mqtt_host, mqtt_port, topic).get(topic)
        return None if payload is None else json.loads(payload)

    def wait_online(
        self,
        mqtt_host: str,
        mqtt_port: int,
        topic_root: str,
        *,
        node_id: str | None = None,
        timeout: float = 20.0,
    ) -> Any:
        """Wait until the node's retained status says ``online`` and return it; fail fast if the node exits."""

        def online() -> Any:
            self.assert_alive()
            status = self.status(mqtt_host, mqtt_port, topic_root, node_id)
            return status if status and status.get("state") == "online" else None

        return wait_for(online, timeout, 0.1, what=f"node {self.name} to publish state online", ignore=(OSError,))


def start_node(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path | None = None,
    args: Sequence[str] = (),
    inherit_env: bool = True,
) -> NodeProcess:
    """Start ``sys.executable -m nodes.<name> *args`` with ``env`` on top of ``os.environ``.

    stdout and stderr go to ``<log_dir>/<name>.log`` (a fresh temp dir if ``log_dir`` is None). The node gets
    SIGTERM if the test process dies, so an aborted run leaves no node behind.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"node-{name}-")) if log_dir is None else log_dir
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    full_env = {**os.environ, **env} if inherit_env else dict(env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("ab") as log:
        proc = NodeProcess(
            [sys.executable, "-m", f"nodes.{name}", *args],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=stack.parent_death_preexec(),
        )
    proc.name = name
    proc.log_path = log_path
    return proc
