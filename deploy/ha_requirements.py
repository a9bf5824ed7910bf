"""The Python requirements of the Home Assistant integrations the real-Home-Assistant test loads, from Home
Assistant's own manifests: what it sets up at every start (``bootstrap.DEFAULT_INTEGRATIONS`` and the core ones),
what the test's ``configuration.yaml`` names (http, recorder, logger, automation) and the MQTT config entry, with
every ``dependencies`` entry followed. Without them installed, ``hass --skip-pip`` fails to set up ``frontend``,
a critical integration, and starts in recovery mode: no MQTT, no entities.

Run with the Python of Home Assistant's virtualenv (``deploy/ha-venv`` does)::

    python deploy/ha_requirements.py            # one requirement a line: "paho-mqtt==1.6.1"
    python deploy/ha_requirements.py --check    # exit 0 when every one is installed at its version, else 1

Standard library only (Home Assistant is imported from the running interpreter's packages).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Any

#: what the test's configuration names, and its MQTT config entry
CONFIGURED = ("http", "recorder", "logger", "automation", "mqtt")
_PINNED = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def requirements() -> list[str]:
    """Every requirement of the integrations Home Assistant sets up for the test, sorted."""
    # run as a script, this directory comes first on sys.path: its modules must not shadow Home Assistant's imports
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    homeassistant: Any = importlib.import_module("homeassistant")
    bootstrap: Any = importlib.import_module("homeassistant.bootstrap")
    components = Path(homeassistant.__file__).parent / "components"
    todo = {*bootstrap.DEFAULT_INTEGRATIONS, *bootstrap.CORE_INTEGRATIONS, *CONFIGURED}
    seen: set[str] = set()
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        manifest = json.loads((components / name / "manifest.json").read_text())
        todo |= set(manifest.get("dependencies", []))
        found |= set(manifest.get("requirements", []))
    return sorted(found)


def missing(wanted: list[str]) -> list[str]:
    """The pinned requirements not installed at their version (unpinned ones: not installed at all)."""
    out = []
    for requirement in wanted:
        match = _PINNED.match(requirement)
        name = match.group(1) if match else requirement
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(requirement)
            continue
        if match and version != match.group(2):
            out.append(requirement)
    return out


def main(argv: list[str]) -> int:
    """Print the requirements, or with ``--check`` say which are missing (exit 1) or none (exit 0)."""
    wanted = requirements()
    if argv == ["--check"]:
        absent = missing(wanted)
        print(" ".join(absent) if absent else "all installed")
        return 1 if absent else 0
    print("\n".join(wanted))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
