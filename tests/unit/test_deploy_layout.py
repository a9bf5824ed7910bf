"""deploy/ as a package of small modules with one job each, and one "terminate, wait, kill" for every process we
start (servers, nodes in tests, browsers, benchmarks): deploy/processes.py."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import processes, stack

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 600
#: What a module over MAX_LINES must say in its docstring, with the reason.
LONG_MODULE_NOTE = "Longer than 600 lines:"


@pytest.mark.parametrize("path", sorted((REPO / "deploy").glob("*.py")), ids=lambda p: p.name)
def test_deploy_modules_are_small_or_say_why(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LONG_MODULE_NOTE in doc, f"{path.name} has {lines} lines: split it, or say why in its docstring"


def test_terminate_wait_kill_is_written_once() -> None:
    """No `.terminate()` outside deploy/processes.py: everyone stops a child with stop_process(es)."""
    found: list[str] = []
    for folder in ("deploy", "bench", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "deploy" / "processes.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "terminate":
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == [], "use deploy.processes.stop_process / stop_processes"


def _child(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"  # its signal handler is installed
    return proc


def test_stop_process_terminates_and_kills_only_what_ignores_sigterm() -> None:
    polite = _child("import signal, sys, time\nprint('ready', flush=True)\ntime.sleep(60)")
    stubborn = _child(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
        "time.sleep(60)"
    )
    started = time.monotonic()
    assert processes.stop_processes([polite, stubborn], timeout=1.0) == [-signal.SIGTERM, -signal.SIGKILL]
    assert time.monotonic() - started < 10, "one deadline for all, not one per process"
    assert processes.stop_process(polite) == -signal.SIGTERM, "an exited child is only reaped"
    assert stack.stop_process is processes.stop_process, "the old import path still works"
