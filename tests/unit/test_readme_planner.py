"""Every planner command line of the README (and of examples/README.md) runs as written on a fresh clone:
only files in the repository, nothing from ``../shared``. The price sample is what its README says it is."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from nodes.contract.messages import Schedule
from nodes.market.prices_csv import read_prices
from nodes.planner.cli import load_battery

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", ROOT / "examples" / "README.md")
SAMPLE = ROOT / "examples" / "de_lu_dayahead_2023-06-19_2023-07-16.csv"
PYTHON = ".venv/bin/python"


def planner_lines(doc: Path) -> list[str]:
    """The ``python -m nodes.planner`` command lines of a Markdown file, continuation lines joined."""
    text = doc.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(f"{PYTHON} -m nodes.planner")]


LINES = [(doc.relative_to(ROOT).as_posix(), line) for doc in DOCS for line in planner_lines(doc)]


def test_the_readme_shows_plan_and_backtest() -> None:
    commands = {shlex.split(line)[3] for doc, line in LINES if doc == "README.md"}
    assert commands == {"plan", "backtest"}
    assert all("../shared" not in line for _, line in LINES)


@pytest.mark.parametrize(("doc", "line"), LINES, ids=[f"{d}:{shlex.split(li)[3]}" for d, li in LINES])
def test_readme_planner_line_runs_as_written(doc: str, line: str, tmp_path: Path) -> None:
    # a fresh clone: the repository's files only, run from a directory that is the clone's root
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "examples").symlink_to(ROOT / "examples")
    argv = shlex.split(line)
    assert argv[0] == PYTHON
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=clone, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"{doc}: {line}\n{done.stderr}"
    if argv[3] == "plan":
        schedule = msgspec.json.decode(done.stdout, type=Schedule)
        assert schedule.slots
        assert "expected revenue EUR" in done.stderr
    else:
        assert "delivery days" in done.stdout
        # the README quotes the day-ahead / perfect foresight line of the sample: it must be what is printed
        [ratio] = [line for line in done.stdout.splitlines() if line.startswith("day-ahead / perfect foresight")]
        if doc == "README.md":
            assert f"`{ratio}`" in " ".join((ROOT / doc).read_text().split()), ratio
        report = argv[argv.index("--report") + 1]
        assert "<table>" in (clone / report).read_text()


def test_the_sample_is_what_its_readme_says() -> None:
    readme = (ROOT / "examples" / "README.md").read_text()
    digest = re.search(r"SHA-256: `([0-9a-f]{64})`", readme)
    assert digest is not None
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == digest.group(1)
    assert "CC BY 4.0" in readme
    assert "Bundesnetzagentur | SMARD.de" in readme
    slots = read_prices(SAMPLE)
    prices = sorted(s.price_per_mwh for s in slots)
    assert len(slots) == 28 * 24
    assert f"{slots[0].start:%Y-%m-%dT%H:%M:%SZ}" == "2023-06-18T22:00:00Z"
    assert f"{slots[-1].start:%Y-%m-%dT%H:%M:%SZ}" == "2023-07-16T21:00:00Z"
    assert f"Min {prices[0]:.2f}, median {(prices[335] + prices[336]) / 2:.2f}, " \
           f"mean {sum(prices) / len(prices):.2f}, max {prices[-1]:.2f} EUR/MWh" in readme.replace("\n  ", " ")
    assert f"{sum(p < 0 for p in prices)} hours are negative" in readme.replace("\n  ", " ")
    load_battery(ROOT / "examples" / "BATTERY.json")
