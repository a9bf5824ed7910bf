"""The README's "Price sources" section says what the code does: every ``parse`` line runs as written, the zone
table is the code's, the example ``deploy/up`` settings are valid, and the upgrade's migrate lines are the ones
``tests/integration/test_recorder_migrate.py`` runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.market.config import MarketConfig
from nodes.market.sources.zones import ZONES
from nodes.runtime.config import load

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYTHON = ".venv/bin/python"


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.DOTALL | re.MULTILINE)
    assert match is not None, f"the README lost its section {title!r}"
    return match.group(1)


PRICES = section("Price sources")
PARSE_LINES = [line.strip() for line in PRICES.splitlines() if line.strip().startswith(f"{PYTHON} -m nodes.market")]


def test_every_source_has_a_parse_line() -> None:
    sources = {shlex.split(line, comments=True)[5] for line in PARSE_LINES}
    assert sources == {"entsoe", "energy-charts", "awattar", "nordpool", "energidataservice", "aemo"}


@pytest.mark.parametrize("line", PARSE_LINES, ids=[shlex.split(li, comments=True)[-1] for li in PARSE_LINES])
def test_parse_line_runs_as_written(line: str) -> None:
    argv = shlex.split(line, comments=True)
    assert argv[0] == PYTHON
    done = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if line.endswith("# exit 2"):
        assert (done.returncode, done.stdout) == (2, "")
        assert len(done.stderr.strip().splitlines()) == 1
        return
    assert done.returncode == 0, done.stderr
    forecast = json.loads(done.stdout)
    assert forecast["zone"] == argv[argv.index("--zone") + 1]
    assert forecast["slots"]
    if line == PARSE_LINES[0]:
        assert len(forecast["slots"]) == 100  # "the first prints the 100 quarter-hours of the fall-back day"


def test_the_zone_table_is_the_codes() -> None:
    zones = PRICES[PRICES.index("### Zones"):PRICES.index("### What each source was tested against")]
    rows = [line for line in zones.splitlines() if line.startswith("| `")]

    def cell(value: str | None) -> str:
        return f"`{value}`" if value else "–"

    expected = [
        f"| `{z.id}` | {z.name} | {cell(z.eic)} | {cell(z.nordpool)} | {cell(z.eds)} | {cell(z.energy_charts)} | "
        f"{cell(f'api.awattar.{z.awattar}' if z.awattar else None)} | {cell(z.aemo)} |"
        for z in ZONES.values()
    ]
    assert rows == expected


def test_the_deploy_example_is_a_valid_configuration(tmp_path: Path) -> None:
    (line,) = [li for li in PRICES.splitlines() if li.startswith("BESS_MARKET_SOURCE=") and "deploy/up" in li]
    words = shlex.split(line)
    assert words[-1] == "deploy/up"
    home = tmp_path / "home"
    home.mkdir()
    env: dict[str, str] = {}
    for word in words[:-1]:
        name, _, value = word.partition("=")
        env[name] = value.replace("~", str(home), 1) if value.startswith("~/") else value
    Path(env["BESS_ENTSOE_TOKEN_FILE"]).write_text("a-token\n")
    config = load(MarketConfig, env)
    assert config.problems() == []
    assert (config.source, config.market_zone, config.token()) == ("entsoe", "de-lu", "a-token")


def test_the_upgrade_notes_migrate_lines_are_the_tested_ones() -> None:
    notes = section("Upgrade notes")
    command = f"{PYTHON} -m nodes.recorder"
    lines = {li.split("#")[0].strip() for li in notes.splitlines() if li.strip().startswith(command)}
    assert lines == {f"{PYTHON} -m nodes.recorder migrate", f"{PYTHON} -m nodes.recorder migrate --dry-run"}
    assert "[When prices go stale](#when-prices-go-stale)" in PRICES
