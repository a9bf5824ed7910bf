"""A real Home Assistant for tests: found through a setting, started headless on a pre-seeded config directory,
read through its recorder's SQLite database, driven through its own automations.

    hass = find_hass()                       # (path, "") or (None, why it is missing)
    ha = HomeAssistant.start(hass_bin, tmp / "ha", mqtt_port=1883, prefix="homeassistant", drive="bess-test/drive")
    ha.wait_for_state("sensor.battery_1_soc_kwh", lambda s: s not in ("unknown", "unavailable"))
    ha.drive("number.set_value", "number.battery_1_power_setpoint", value=40)   # Home Assistant itself acts
    ha.stop()

Headless means: no onboarding, no user, no frontend; the ``http`` component the MQTT integration depends on is
bound to a free loopback port (by default it would take 8123 on every interface). The MQTT integration comes from a
pre-seeded ``.storage/core.config_entries`` pointing at the test broker (discovery on, birth and last will on
``<prefix>/status``); the recorder writes to ``ha.db`` every second. Calling a service without a user needs no
token when Home Assistant calls it itself: three automations, triggered by MQTT messages on ``<drive>/<service>``,
call ``number.set_value``, ``select.select_option`` and ``button.press`` on the entity the payload names.

``BESS_HA_HASS`` names the ``hass`` executable (default :data:`DEFAULT_HASS`, where ``deploy/ha-venv`` installs
Home Assistant 2024.3.3, the last release for Python 3.11). When the integrations' requirements are already in its
virtualenv (``deploy/ha_requirements.py --check``) it runs with ``--skip-pip``; otherwise Home Assistant installs
them on the first start (about a minute).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.processes import stop_process
from tests.support.waiting import wait_for

#: where ``deploy/ha-venv`` installs Home Assistant
DEFAULT_HASS = Path.home() / ".cache" / "bess" / "ha-venv" / "bin" / "hass"
SETTING = "BESS_HA_HASS"
VERSION = "2024.3.3"
#: lists (and checks) the requirements of every integration the test makes Home Assistant set up
HA_REQUIREMENTS = Path(__file__).resolve().parents[2] / "deploy" / "ha_requirements.py"
DRIVEN = {"number.set_value": "value", "select.select_option": "option", "button.press": None}


def find_hass() -> tuple[Path | None, str]:
    """The ``hass`` executable and "" , or None and why it cannot be used."""
    given = os.environ.get(SETTING)
    path = Path(given) if given else DEFAULT_HASS
    if not path.is_file() or not os.access(path, os.X_OK):
        return None, (f"Home Assistant is not installed at {path}: run deploy/ha-venv (installs {VERSION} there) or "
                      f"set {SETTING}=/path/to/bin/hass")
    return path, ""


def requirements_installed(hass_bin: Path) -> bool:
    """True when every requirement of the integrations the test loads is installed in the virtualenv of
    ``hass_bin`` (then ``--skip-pip``: without them Home Assistant would start in recovery mode)."""
    python = hass_bin.with_name("python")
    done = subprocess.run([str(python), str(HA_REQUIREMENTS), "--check"], capture_output=True, timeout=120,
                          check=False, cwd="/")
    return done.returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _yaml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML string


def write_config(config_dir: Path, *, mqtt_port: int, prefix: str, drive: str,
                 login: tuple[str, str] | None = None, on_start: Sequence[tuple[str, str, Mapping[str, Any]]] = ()
                 ) -> None:
    """``configuration.yaml`` and ``.storage/core.config_entries`` for a headless start against the test broker
    (with ``login``, the MQTT integration's username and password). ``on_start``: ``(service, entity_id, data)``
    calls Home Assistant makes once the entity has a state after it started (for a broker whose ACL lets no test
    client publish to Home Assistant)."""
    (config_dir / ".storage").mkdir(parents=True, exist_ok=True)
    automations = []
    for index, (service, entity_id, data) in enumerate(on_start):
        ready = f"{{{{ states('{entity_id}') not in ['unknown', 'unavailable'] }}}}"
        automations.append(f"""  - alias: {_yaml_string(f"on start {index}")}
    trigger:
      - platform: homeassistant
        event: start
    action:
      - wait_template: {_yaml_string(ready)}
        timeout: "00:03:00"
        continue_on_timeout: false
      - service: {service}
        target:
          entity_id: {_yaml_string(entity_id)}
        data: {json.dumps(dict(data))}""")
    for service, field in DRIVEN.items():
        fields = f"\n        data:\n          {field}: \"{{{{ trigger.payload_json.{field} }}}}\"" if field else ""
        automations.append(f"""  - alias: {_yaml_string("drive " + service)}
    mode: queued
    trigger:
      - platform: mqtt
        topic: {_yaml_string(f"{drive}/{service}")}
    action:
      - service: {service}
        target:
          entity_id: "{{{{ trigger.payload_json.entity_id }}}}"{fields}""")
    (config_dir / "configuration.yaml").write_text(f"""homeassistant:
  name: BESS test
  latitude: 52.52
  longitude: 13.40
  elevation: 34
  unit_system: metric
  time_zone: UTC
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {_free_port()}
recorder:
  db_url: {_yaml_string(f"sqlite:///{config_dir / 'ha.db'}")}
  commit_interval: 1
logger:
  default: warning
automation:
{chr(10).join(automations)}
""")
    message = {"topic": f"{prefix}/status", "qos": 0, "retain": False}
    entry = {
        "entry_id": uuid.uuid4().hex[:26].upper(),
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": "127.0.0.1",
        "data": {
            "broker": "127.0.0.1",
            "port": mqtt_port,
            "discovery": True,
            "discovery_prefix": prefix,
            "birth_message": {**message, "payload": "online"},
            "will_message": {**message, "payload": "offline"},
            **({"username": login[0], "password": login[1]} if login else {}),
        },
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    entries = {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}
    (config_dir / ".storage" / "core.config_entries").write_text(json.dumps(entries, indent=2))


@dataclass
class HomeAssistant:
    """A running Home Assistant and its config directory."""

    config_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    drive_topic: str
    publish: Callable[[str, bytes], None]
    started_at: float

    @classmethod
    def start(cls, hass_bin: Path, config_dir: Path, *, mqtt_port: int, prefix: str, drive: str,
              publish: Callable[[str, bytes], None], login: tuple[str, str] | None = None,
              on_start: Sequence[tuple[str, str, Mapping[str, Any]]] = ()) -> HomeAssistant:
        """Write the config and start ``hass`` (``--skip-pip`` when its requirements are installed)."""
        write_config(config_dir, mqtt_port=mqtt_port, prefix=prefix, drive=drive, login=login, on_start=on_start)
        log_path = config_dir / "hass.stdout.log"
        args = [str(hass_bin), "--config", str(config_dir)]
        if requirements_installed(hass_bin):
            args.append("--skip-pip")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        return cls(config_dir, proc, log_path, drive, publish, time.monotonic())

    @property
    def db_path(self) -> Path:
        return self.config_dir / "ha.db"

    def log_text(self) -> str:
        """Home Assistant's own log (home-assistant.log) and its stdout."""
        parts = []
        for path in (self.config_dir / "home-assistant.log", self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def assert_alive(self) -> None:
        """Fail at once (with its log) when Home Assistant exited or fell back to recovery mode (no MQTT then)."""
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"Home Assistant exited with {code}:\n{self.log_text()[-4000:]}")
        log = self.log_text()
        if "Activating recovery mode" in log:
            setup = [line for line in log.splitlines() if "Setup failed" in line or "recovery mode" in line]
            raise AssertionError("Home Assistant started in recovery mode (run deploy/ha-venv again to install its "
                                 "integrations' requirements):\n" + "\n".join(setup[-20:]))

    def states(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The latest recorded state and attributes of every entity (empty before the database exists)."""
        if not self.db_path.exists():
            return {}
        query = """
            SELECT m.entity_id, s.state, a.shared_attrs FROM states s
            JOIN states_meta m ON s.metadata_id = m.metadata_id
            LEFT JOIN state_attributes a ON s.attributes_id = a.attributes_id
            WHERE s.state_id IN (SELECT MAX(state_id) FROM states GROUP BY metadata_id)
        """
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
                rows = db.execute(query).fetchall()
        except sqlite3.OperationalError:
            return {}  # the schema is still being created
        return {entity: (state, json.loads(attrs) if attrs else {}) for entity, state, attrs in rows}

    def wait_for_state(self, entity_id: str, test: Callable[[str], bool], timeout: float = 60.0,
                       what: str | None = None) -> tuple[str, dict[str, Any]]:
        """Wait until the recorded state of ``entity_id`` passes ``test``; its state and attributes."""

        def check() -> tuple[str, dict[str, Any]] | None:
            self.assert_alive()
            found = self.states().get(entity_id)
            return found if found is not None and test(found[0]) else None

        found = wait_for(check, timeout, 0.5, what=what or f"Home Assistant state of {entity_id}")
        assert found is not None  # wait_for returns only a truthy value
        return found

    def drive(self, service: str, entity_id: str, **data: Any) -> None:
        """Make Home Assistant call ``service`` on ``entity_id`` (its automation on ``<drive>/<service>``)."""
        self.publish(f"{self.drive_topic}/{service}", json.dumps({"entity_id": entity_id, **data}).encode())

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (Home Assistant's clean stop), then SIGKILL after ``timeout``."""
        return stop_process(self.proc, timeout)


__all__ = ["DEFAULT_HASS", "SETTING", "HomeAssistant", "find_hass", "requirements_installed", "write_config"]
