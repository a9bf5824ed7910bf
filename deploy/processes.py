"""Ports, pids and stopping processes: free ports, live pids (guarded against pid reuse), "terminate, wait, kill"
for a pid or a :class:`subprocess.Popen`, and children that die with their parent.

Standard library only. The one place that stops a process: the servers (``deploy/servers.py``), ``deploy/down``,
the test helpers (``tests/support``) and the benchmarks (``bench/``) all stop theirs with :func:`stop_process` or
:func:`terminate_pids`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: Everything of the local stack listens on loopback only (unless the user asks for more).
HOST = "127.0.0.1"


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


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


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


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM (a clean shutdown), wait up to ``timeout`` seconds, then SIGKILL; return the exit code.

    A process that has exited already is only reaped. The same steps as :func:`terminate_pids`, for a child
    this process started (its ``Popen``), so the return code is known and no zombie is left.
    """
    return stop_processes([proc], timeout)[0]


def stop_processes(procs: Iterable[subprocess.Popen[Any]], timeout: float = 10.0) -> list[int]:
    """:func:`stop_process` for several at once: SIGTERM to all, then ``timeout`` seconds in total for all of
    them to exit, SIGKILL the rest; their exit codes, in order."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return [proc.returncode for proc in procs]


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
