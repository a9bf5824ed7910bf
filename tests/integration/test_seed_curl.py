"""The seed's four curl lines, executed verbatim against a gateway (ports 5000 and 5003) and a recorder.

The lines are copied byte for byte from the seed document (/work/shared/seed/000_dc74c9b928759552.txt) into
``deploy/seed.py``, the one copy that deploy/up's banner prints and tests/unit/test_readme_seed.py finds in the
README; a test here checks the copy whenever the seed document is present. To see the HTTP status without
touching the lines, curl reads a ``.curlrc`` (``CURL_HOME``) that adds ``--write-out``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy import stack
from deploy.seed import COMMAND_LINE, READ, SEED_CURL_LINES, SEED_PORTS, WRITE_1, WRITE_2
from nodes.contract.messages import Command
from nodes.contract.topics import COMMAND
from tests.integration.test_gateway import http_json, start_gateway
from tests.support.nodes import NodeProcess
from tests.support.services import Services

pytestmark = pytest.mark.integration

SEED_FILE = Path("/work/shared/seed/000_dc74c9b928759552.txt")
PORTS = SEED_PORTS
LINES = SEED_CURL_LINES

RunNode = Callable[..., NodeProcess]
_STATUS = re.compile(r"\n__HTTP_STATUS__ (\d{3})\n?$")


def test_lines_are_the_seed_verbatim() -> None:
    if not SEED_FILE.exists():
        pytest.skip(f"{SEED_FILE} is not on this machine")
    text = SEED_FILE.read_text()
    position = 0
    for line in LINES:  # each line appears, in this order
        found = text.find(line, position)
        assert found >= 0, f"not verbatim in the seed: {line!r}"
        position = found + len(line)


def curl(line: str, curl_home: Path) -> tuple[int, Any]:
    """Run one seed line with bash; return the HTTP status (from the .curlrc write-out) and the JSON body."""
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CURL_HOME": str(curl_home)},
    )
    assert done.returncode == 0, f"{line}\nexit {done.returncode}: {done.stderr}"
    match = _STATUS.search(done.stdout)
    assert match is not None, done.stdout
    return int(match.group(1)), json.loads(done.stdout[: match.start()])


@pytest.fixture
def curl_home(tmp_path: Path) -> Path:
    (tmp_path / ".curlrc").write_text('silent\nshow-error\nwrite-out = "\\n__HTTP_STATUS__ %{http_code}\\n"\n')
    return tmp_path


def test_seed_curl_lines(
    run_node: RunNode, services: Services, node_env: dict[str, str], topic_root: str, curl_home: Path
) -> None:
    taken = [port for port in PORTS if stack.port_open("127.0.0.1", port)]
    if taken:
        pytest.skip(f"ports {taken} are taken on 127.0.0.1; the seed's curl lines need 5000 and 5003")
    env = {**node_env, "BESS_GATEWAY_PORTS": ",".join(map(str, PORTS))}
    recorder = run_node("recorder", env)
    recorder.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    start_gateway(run_node, services, env)

    with services.mqtt_client() as sub:
        sub.subscribe(COMMAND.filter(root=topic_root), qos=1)

        status, body = curl(WRITE_1, curl_home)
        assert (status, body["status"]) == (200, "stored"), body  # a 2xx from /write means stored

        # Read-your-writes: the recorder stores what it has received before it answers a history request, so
        # the read line, run right after the write, already returns the record (no retry).
        expected = {"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}
        status, records = curl(READ, curl_home)
        assert status == 200, records
        assert records == [expected]

        status, body = curl(COMMAND_LINE, curl_home)
        assert status == 202, body
        # the battery was written a moment ago, so it is known; the operator's command pauses the autopilot
        assert body["control"]["mode"] == "manual"
        assert body["control"]["autopilot_paused_until"] == body["message"]["valid_until"]
        message = sub.receive(timeout=10)

        status, body = curl(WRITE_2, curl_home)
        assert (status, body["status"]) == (200, "stored"), body

    # and the fourth line's record is stored too (a wider read than the seed's)
    wider = "http://127.0.0.1:5003/read?begin=2025-01-14T00:00:00Z&end=2025-01-17T00:00:00Z"
    older = {"SOC": 500, "target_discharge": 0, "target_charge": 400, "timestamp": "2025-01-14T10:00:00Z"}

    status, both = http_json("GET", wider)
    assert status == 200, both
    assert both == [older, expected]

    assert message is not None
    assert message.topic == f"{topic_root}/battery/battery-1/set"
    command = COMMAND.decode(message.payload)
    assert isinstance(command, Command)
    assert (command.action, command.power_kw, command.text) == ("discharge", 50.0, "DISCHARGE 50kW")


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_control_lines() -> list[str]:
    """The README's curl lines for /control (Control precedence), as written."""
    return [line for line in README.read_text().splitlines() if line.startswith("curl") and "/control" in line]


def test_readme_control_lines(
    run_node: RunNode, services: Services, node_env: dict[str, str], topic_root: str, curl_home: Path
) -> None:
    lines = readme_control_lines()
    assert len(lines) == 2
    taken = [port for port in PORTS if stack.port_open("127.0.0.1", port)]
    if taken:
        pytest.skip(f"ports {taken} are taken on 127.0.0.1; the README's curl lines need 5000 and 5003")
    # no recorder here: the write answers at the broker's PUBACK (202) instead of waiting for a confirmation
    start_gateway(run_node, services, {**node_env, "BESS_GATEWAY_PORTS": ",".join(map(str, PORTS)),
                                       "BESS_GATEWAY_WRITE_ACK": "broker"})
    assert curl(WRITE_1, curl_home)[0] == 202  # battery-1 exists now (as the seed's first line makes it)
    set_line, get_line = lines
    status, body = curl(set_line, curl_home)
    assert status == 202, body
    assert (body["topic"], body["control"]["mode"]) == (f"{topic_root}/battery/battery-1/control", "autopilot")
    status, body = curl(get_line, curl_home)
    assert (status, body["battery"], body["mode"]) == (200, "battery-1", "autopilot")
