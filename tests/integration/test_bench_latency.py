"""bench/latency.py at CI size: a tiny rate for two seconds, one planner fleet of two batteries.

The bench starts its own mosquitto, influxd, recorder, renderer and planner (deploy/stack.py, free ports); this
test runs it as a user would and checks that every measured path printed real percentiles from real samples.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PERCENTILES = re.compile(r"p50 +([\d.]+) ms +p99 +([\d.]+) ms +max +([\d.]+) ms +\(n=(\d+)\)")


def _percentiles(line: str) -> tuple[float, float, float, int]:
    match = PERCENTILES.search(line)
    assert match is not None, f"no p50/p99 in {line!r}"
    p50, p99, worst, n = match.groups()
    return float(p50), float(p99), float(worst), int(n)


def test_latency_bench_prints_p50_p99_for_every_path() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.latency", "--rates", "200", "--seconds", "2", "--batteries", "4",
         "--viewers", "2", "--plan-fleets", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()

    def line_with(text: str) -> str:
        found = [line for line in lines if text in line]
        assert found, f"no line with {text!r} in:\n{run.stdout}"
        return found[0]

    assert "load average" in line_with("rate 200 msg/s")
    for path in ("publish -> queryable", "publish -> dashboard", "new forecast -> schedule published"):
        p50, p99, worst, n = _percentiles(line_with(path))
        assert n > 0, path
        assert 0 < p50 <= p99 <= worst < 10_000, (path, p50, p99, worst)
    # 200 msg/s over 4 batteries, 2 viewed, 1 s of 2 counted: about 100 readings per path
    assert _percentiles(line_with("publish -> queryable"))[3] >= 50
    assert "stored 400 of 400 (nothing lost)" in line_with("stored ")
    assert "first autopilot command" in run.stdout
    assert line_with("targets:").startswith("targets: not checked")
