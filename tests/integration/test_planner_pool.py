"""The planner's solver pool as real processes: a planner killed hard (no shutdown) leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

# a stand-in planner: starts the pool the way Planner.run does, prints its workers' pids, then waits to be killed
PLANNER = textwrap.dedent("""
    import asyncio, sys
    from nodes.planner.solvers import Solvers

    async def main() -> None:
        solvers = Solvers(2)
        await solvers.start()
        print(" ".join(str(pid) for pid in solvers._pool._processes), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def alive(pid: int) -> bool:
    """Running: a zombie counts as gone (its parent, the killed planner, is not there to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_pool_workers_exit_when_the_planner_is_killed() -> None:
    planner = subprocess.Popen([sys.executable, "-c", PLANNER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert planner.stdout is not None
        workers = [int(pid) for pid in planner.stdout.readline().split()]
        assert len(workers) == 2
        assert all(alive(pid) for pid in workers)
        planner.send_signal(signal.SIGKILL)
        planner.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10, what="the pool's workers to exit")
    finally:
        planner.kill()
        planner.wait(timeout=10)
        for pid in workers:  # only if the test failed: leave no orphan of ours on the machine
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
