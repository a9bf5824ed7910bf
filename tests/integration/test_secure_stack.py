"""Secure mode (``BESS_MQTT_AUTH=1 deploy/up``) covers every service of the local stack, against the real servers:
InfluxDB refuses anonymous clients and every node but the recorder, mosquitto runs as an unprivileged user when
deploy runs as root, and nothing deploy writes under ``var/`` is readable by others (logs 0640, secrets 0600).

One stack serves the module: ``up`` in the default (open) mode first, a row written into its database, ``down``,
then ``up`` again in secure mode on the same ``var/``, which is how an operator switches an existing stack over,
with a device bridge for a Victron GX (battery ``victron-1``, its device's broker user ``gx``) as well.
Its ``var/`` sits in a directory of its own under /tmp (0755): pytest's own temporary directories are 0700 and
owned by root, so no unprivileged user could reach a ``var/`` inside them (deploy then keeps the broker running
as root and says so; ``test_stack.py`` checks that warning).
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import os
import pwd
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy import auth, stack
from tests.integration.test_stack import REPO, LocalStack, _start_stack, run_stack, stack_env, stack_pids
from tests.support.hass import HomeAssistant, find_hass
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

#: A point written while the database was still open: switching to secure mode must keep it.
OPEN_MODE_POINT = "telemetry,battery=before-secure soc_kwh=123.0 1736992800000000"
PORTAL = "c0619ab1b2c3"
#: The secure stack's device bridge: a Victron GX as battery victron-1, its broker link logging in as gx.
BRIDGE_SETTINGS = {
    "BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": PORTAL, "BESS_BRIDGE_BATTERY": "victron-1",
    "BESS_BRIDGE_DEVICE_USER": "gx", "BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5",
    "BESS_BRIDGE_MAX_DISCHARGE_KW": "5", "BESS_BRIDGE_TELEMETRY_INTERVAL_S": "1",
}


@dataclass(frozen=True)
class SecureStack:
    """The module's stack after the switch to secure mode, with what each ``up`` printed."""

    local: LocalStack
    open_up: str

    @property
    def var(self) -> Path:
        return self.local.var_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local.ports['influx']}"

    def influx_login(self, user: str) -> tuple[str, str]:
        """``(user, password)`` from deploy's InfluxDB credentials file."""
        path = self.var / "influx-auth" / "credentials.json"
        assert path.exists(), f"secure mode made no InfluxDB credentials ({path})"
        return user, json.loads(path.read_text())["users"][user]

    def secrets(self) -> dict[str, str]:
        """Every password deploy generated: ``{"mqtt:recorder": ..., "influx:admin": ...}``."""
        found: dict[str, str] = {}
        for kind, folder in (("mqtt", "mqtt-auth"), ("influx", "influx-auth")):
            path = self.var / folder / "credentials.json"
            if path.exists():
                found |= {f"{kind}:{user}": pw for user, pw in json.loads(path.read_text())["users"].items()}
        return found


def influx_http(
    url: str, path: str, params: dict[str, str], *, login: tuple[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request to InfluxDB's HTTP API (POST when there is a body), optionally with HTTP basic auth."""
    request = urllib.request.Request(f"{url}{path}?{urllib.parse.urlencode(params)}", data=body,
                                     method="POST" if body is not None else "GET")
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def query(url: str, q: str, login: tuple[str, str] | None = None, *, post: bool = False) -> tuple[int, bytes]:
    params = {"db": "bess", "epoch": "u"}
    if post:  # statements that change things
        return influx_http(url, "/query", params, login=login, body=urllib.parse.urlencode({"q": q}).encode())
    return influx_http(url, "/query", {**params, "q": q}, login=login)


def write(url: str, line: str, login: tuple[str, str] | None = None, db: str = "bess") -> int:
    return influx_http(url, "/write", {"db": db, "precision": "u"}, login=login, body=line.encode())[0]


def rows(url: str, q: str, login: tuple[str, str]) -> list[list[object]]:
    status, body = query(url, q, login)
    assert status == 200, body
    result = json.loads(body)["results"][0]
    assert "error" not in result, result
    return [values for series in result.get("series") or [] for values in series["values"]]


def gateway_post(s: SecureStack, path: str, body: dict[str, object]) -> tuple[int, object]:
    """POST ``body`` as JSON to the stack's first gateway port: ``(status, decoded answer)``."""
    request = urllib.request.Request(f"http://127.0.0.1:{s.local.ports['gateway_a']}{path}", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")


def broker_account() -> pwd.struct_passwd:
    """The account deploy runs mosquitto as when it runs as root (Debian's ``mosquitto``, else ``nobody``)."""
    for name in ("mosquitto", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip("no mosquitto or nobody user on this machine")


@pytest.fixture(scope="module")
def secure_stack() -> Iterator[SecureStack]:
    base = Path(tempfile.mkdtemp(prefix="bess-secure-", dir="/tmp"))
    base.chmod(0o755)  # reachable by an unprivileged broker account (pytest's tmp dirs are 0700)
    var = base / "var"
    try:
        opened = _start_stack(var)
        try:
            url = f"http://127.0.0.1:{opened.ports['influx']}"
            assert write(url, OPEN_MODE_POINT) == 204, "the open database takes anonymous writes"
        finally:
            down = run_stack("down", stack_env(var))
        assert down.returncode == 0, down.stderr
        secured = _start_stack(var, opened.ports, BESS_MQTT_AUTH="1", **BRIDGE_SETTINGS)
        try:
            yield SecureStack(secured, opened.output)
        finally:
            run_stack("down", stack_env(var))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_database_refuses_anonymous_clients_and_the_recorder_still_stores(secure_stack: SecureStack) -> None:
    s = secure_stack
    status, body = query(s.url, "SHOW DATABASES")
    assert status == 401, f"an anonymous query was answered {status}: {body[:200]!r}"
    assert write(s.url, "telemetry,battery=intruder soc_kwh=1.0 1736992800000000") == 401
    assert query(s.url, "SHOW DATABASES", ("admin", "wrong"))[0] == 401

    # the recorder still stores: a device's telemetry over MQTT arrives in the database
    credentials = auth.load_credentials(s.var)
    assert credentials is not None
    soc = 100.0 + uuid.uuid4().int % 1000
    reading = {"ts": "2025-01-16T10:00:00Z", "soc_kwh": soc, "source": "secure-test"}
    device, password = credentials.login("battery-1")
    with stack.MiniMqtt("127.0.0.1", s.local.ports["mqtt"], username=device, password=password) as client:
        client.publish("bess/v1/battery/battery-1/telemetry", json.dumps(reading).encode(), qos=1)
    monitor = s.influx_login("monitor")
    stored = wait_for(
        lambda: rows(s.url, f"SELECT soc_kwh FROM telemetry WHERE battery = 'battery-1' AND soc_kwh = {soc}", monitor),
        timeout=30, interval=0.2, what="the device's telemetry stored by the recorder",
    )
    assert stored == [[int(datetime(2025, 1, 16, 10, tzinfo=UTC).timestamp()) * 1_000_000, soc]]

    # the point written while the database was open is still there
    before = rows(s.url, "SELECT soc_kwh FROM telemetry WHERE battery = 'before-secure'", monitor)
    assert before == [[1736992800000000, 123.0]], "switching to secure mode lost the open database's data"
    influx_line = next(line for line in s.local.output.splitlines() if line.strip().startswith("influxdb"))
    assert "authentication on" in influx_line, influx_line


def test_only_the_recorder_holds_database_credentials_and_only_for_its_database(secure_stack: SecureStack) -> None:
    s = secure_stack
    pids = stack_pids(s.var)
    assert set(stack.NODE_NAMES) <= set(pids)
    recorder = s.influx_login("recorder")
    for name in stack.NODE_NAMES:
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pids[name]}/environ").read_text().split("\0") if "=" in item
        )
        given = {key for key in environ if key.startswith(("BESS_INFLUX_USERNAME", "BESS_INFLUX_PASSWORD",
                                                           "BESS_INFLUX_TOKEN"))}
        recorded = (s.var / "run" / f"{name}.env").read_text()
        if name == "recorder":
            assert (environ["BESS_INFLUX_USERNAME"], environ["BESS_INFLUX_PASSWORD"]) == recorder
            assert "BESS_INFLUX_PASSWORD=" in recorded
        else:
            assert given == set(), f"{name} got database credentials: {sorted(given)}"
            assert "BESS_INFLUX_" not in recorded.replace("BESS_INFLUX_URL", "").replace("BESS_INFLUX_DB", "")

    started = (s.var / "log" / "recorder.log").read_text().rsplit("=== deploy/up starts", 1)[1]
    complaints = [line for line in started.splitlines() if " WARNING " in line or " ERROR " in line]
    assert complaints == [], "the recorder runs in secure mode without a complaint"

    # no other node's login opens the database (there are none; its broker password is not one either)
    credentials = auth.load_credentials(s.var)
    assert credentials is not None
    line = "telemetry,battery=intruder soc_kwh=1.0 1736992800000000"
    for name in auth.NODE_USERS:
        if name != "recorder":
            assert write(s.url, line, credentials.login(name)) == 401, name
    assert write(s.url, line, ("recorder", credentials.password("recorder"))) == 401, "the MQTT password is not it"

    # the recorder: its own database only, no user management, no other database
    assert write(s.url, "telemetry,battery=recorder-check soc_kwh=2.0 1736992800000000", recorder) == 204
    assert query(s.url, "SHOW USERS", recorder)[0] == 403
    assert query(s.url, 'CREATE DATABASE "other"', recorder, post=True)[0] == 403
    admin = s.influx_login("admin")
    assert query(s.url, 'CREATE DATABASE "other"', admin, post=True)[0] == 200
    assert write(s.url, line, recorder, db="other") == 403
    monitor = s.influx_login("monitor")
    assert write(s.url, line, monitor) == 403, "the monitor reads only"
    assert query(s.url, 'DROP SERIES FROM telemetry WHERE battery = \'recorder-check\'', monitor, post=True)[0] == 403


def test_mosquitto_runs_as_an_unprivileged_user_and_still_persists(secure_stack: SecureStack) -> None:
    if os.geteuid() != 0:
        pytest.skip("deploy runs the broker as whoever runs it unless that is root")
    account = broker_account()
    pid = stack_pids(secure_stack.var)["mosquitto"]
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split() == [str(account.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(account.pw_gid)] * 4, status["Gid"]
    assert status["Groups"].split() in ([], [str(account.pw_gid)]), "no supplementary group of root's kept"

    data = secure_stack.var / "mosquitto" / "data"
    assert wait_for((data / "mosquitto.db").exists, timeout=20, interval=0.2, what="an autosave")
    assert (data / "mosquitto.db").stat().st_uid == account.pw_uid
    log = (secure_stack.var / "log" / "mosquitto.log").read_text()
    assert "Error" not in log.split("mosquitto version")[-1], log[-2000:]


def test_nothing_deploy_writes_is_readable_by_others_and_secrets_are_its_own(secure_stack: SecureStack) -> None:
    var = secure_stack.var
    loose = [
        f"{path.relative_to(var)} {stat.filemode(path.lstat().st_mode)}"
        for path in [var, *var.rglob("*")]
        if not path.is_symlink() and path.lstat().st_mode & 0o007
    ]
    assert loose == [], "readable or writable by others"
    assert stat.S_IMODE(var.stat().st_mode) & 0o027 == 0, "var/ is 0750 or tighter"
    logs = sorted((var / "log").iterdir())
    assert {path.name for path in logs} >= {"mosquitto.log", "influxd.log", *(f"{n}.log" for n in stack.NODE_NAMES)}
    for path in logs:
        assert stat.S_IMODE(path.stat().st_mode) & 0o137 == 0, f"{path.name}: not 0640 or tighter"
    for path in (var / "mqtt-auth" / "credentials.json", var / "influx-auth" / "credentials.json",
                 *(var / "run").glob("*.env")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_uid == os.geteuid(), path
    for folder in (var / "mqtt-auth", var / "influx-auth"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def _mqtt_users(secure_stack: SecureStack) -> dict[str, str]:
    users: dict[str, str] = json.loads((secure_stack.var / "mqtt-auth" / "credentials.json").read_text())["users"]
    return users


def test_the_homeassistant_node_publishes_its_configs_under_the_acl_for_the_hass_user(
    secure_stack: SecureStack
) -> None:
    port = secure_stack.local.ports["mqtt"]
    password = _mqtt_users(secure_stack)[auth.HASS_USER]
    with stack.MiniMqtt("127.0.0.1", port, username=auth.HASS_USER, password=password) as client:
        client.subscribe("homeassistant/+/battery-1/+/config", qos=1)
        configs = {m.topic.split("/")[3]: json.loads(m.payload) for m in client.messages(timeout=3.0) if m.payload}
    assert {"soc_kwh", "power_setpoint", "control_mode", "replan"} <= set(configs)
    assert configs["soc_kwh"]["state_topic"] == "bess/v1/battery/battery-1/telemetry"


def test_the_dashboards_control_panel_commands_a_battery_under_the_acl_as_the_renderer(
    secure_stack: SecureStack
) -> None:
    """The renderer's broker user may publish the request topics: a command from the panel (loopback, no token:
    allowed there) reaches the gateway and becomes its Command with source dashboard."""
    base = f"http://127.0.0.1:{secure_stack.local.ports['dashboard']}"
    browser = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                          urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with browser.open(f"{base}/api/control/battery-1", timeout=10) as response:
        panel = json.loads(response.read())
    assert panel["enabled"] is True, panel
    passwords = _mqtt_users(secure_stack)
    with stack.MiniMqtt("127.0.0.1", secure_stack.local.ports["mqtt"], username=auth.MONITOR_USER,
                        password=passwords[auth.MONITOR_USER]) as watcher:
        watcher.subscribe("bess/v1/battery/battery-1/set", qos=1)
        request = urllib.request.Request(
            f"{base}/api/control/battery-1/command", method="POST",
            data=json.dumps({"action": "discharge", "power_kw": 7, "lease_s": 60}).encode(),
            headers={"Content-Type": "application/json", panel["csrf_header"]: panel["csrf_token"]})
        with browser.open(request, timeout=15) as response:
            answer = json.loads(response.read())
        assert response.status == 202, answer

        def from_the_dashboard() -> dict[str, object] | None:
            message = watcher.receive(timeout=1.0)
            command = json.loads(message.payload) if message is not None else None
            return command if command and command.get("source") == "dashboard" else None

        command = wait_for(from_the_dashboard, timeout=15, interval=0, what="the dashboard's Command")
    assert (command["command_id"], command["action"], command["power_kw"]) == (
        answer["command"]["command_id"], "discharge", 7.0)


HASS, NO_HASS = find_hass()


@pytest.mark.skipif(HASS is None, reason=NO_HASS)
def test_a_real_home_assistant_logged_in_as_hass_shows_battery_1_and_commands_it(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    """deploy/up in secure mode, then Home Assistant (2024.3.3) with the hass user: battery-1's SOC, and its own
    number.set_value (an automation at its start: no test client may publish to it) arrives as a Command."""
    assert HASS is not None
    hass = HASS
    port = secure_stack.local.ports["mqtt"]
    passwords = _mqtt_users(secure_stack)
    login = (auth.HASS_USER, passwords[auth.HASS_USER])
    monitor = (auth.MONITOR_USER, passwords[auth.MONITOR_USER])

    def publish(topic: str, payload: bytes) -> None:  # pragma: no cover - no test client may publish to it here
        raise AssertionError(f"the ACL lets no test client publish {topic} to Home Assistant")

    with stack.MiniMqtt("127.0.0.1", port, username=monitor[0], password=monitor[1], timeout=10.0) as watcher:
        watcher.subscribe("bess/v1/battery/battery-1/set", qos=1)
        ha = HomeAssistant.start(hass, tmp_path / "ha", mqtt_port=port, prefix="homeassistant", drive="unused",
                                 publish=publish, login=login,
                                 on_start=[("number.set_value", "number.battery_1_power_setpoint", {"value": 25})])
        try:
            soc, _ = ha.wait_for_state("sensor.battery_1_soc_kwh", lambda s: s not in ("unknown", "unavailable"),
                                       timeout=180)
            assert float(soc) > 0

            def from_home_assistant() -> dict[str, object] | None:
                ha.assert_alive()
                message = watcher.receive(timeout=1.0)
                command = json.loads(message.payload) if message is not None else None
                return command if command and command.get("source") == "homeassistant" else None

            command = wait_for(from_home_assistant, timeout=120, interval=0, what="Home Assistant's Command")
        finally:
            ha.stop()
    assert (command["action"], command["power_kw"]) == ("discharge", 25.0)


def test_no_secret_appears_in_any_output_or_log(secure_stack: SecureStack) -> None:
    secrets = secure_stack.secrets()
    assert {"influx:admin", "influx:recorder", "influx:monitor", "mqtt:recorder"} <= set(secrets)
    status = run_stack("status", stack_env(secure_stack.var))
    assert status.returncode == 0, status.stderr
    influx_line = next(line for line in status.stdout.splitlines() if line.startswith("influxd"))
    assert "authentication on" in influx_line, status.stdout
    texts = {"up (open)": secure_stack.open_up, "up (secure)": secure_stack.local.output,
             "status": status.stdout + status.stderr}
    texts |= {f"var/log/{path.name}": path.read_text(errors="replace") for path in (secure_stack.var / "log").iterdir()}
    leaked = [f"{name} in {where}" for where, text in texts.items() for name, secret in secrets.items()
              if secret in text]
    assert leaked == []


def test_a_secure_up_refuses_an_open_database_it_did_not_start(tmp_path: Path) -> None:
    var = tmp_path / "var"
    with stack.start_influxd(tmp_path / "foreign", die_with_parent=True) as foreign:
        env = stack_env(var, BESS_MQTT_AUTH="1", BESS_MQTT_PORT=str(stack.free_port()),
                        BESS_INFLUX_PORT=str(foreign.port), BESS_DASHBOARD_PORT=str(stack.free_port()),
                        BESS_GATEWAY_PORTS=f"{stack.free_port()},{stack.free_port()}")
        try:
            refused = run_stack("up", env)
        finally:
            run_stack("down", env)  # whatever a broken check started (never left on a port of someone else's)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"port {foreign.port}" in refused.stderr
        assert "accepts unauthenticated" in refused.stderr, refused.stderr
        assert "started" not in refused.stdout, "nothing was started"


def test_a_bridged_device_and_the_bridge_log_in_as_themselves_and_nobody_else_sees_the_device(
    secure_stack: SecureStack,
) -> None:
    """``up`` made the bridge's user and the GX's (``gx``, BESS_BRIDGE_DEVICE_USER) with the profile's topics: the
    GX's values become battery victron-1's telemetry, an operator's command becomes the GX's setpoint write, and
    the probe user, which reads everything of ours, sees none of the GX's topics."""
    s = secure_stack
    port = s.local.ports["mqtt"]
    credentials = auth.load_credentials(s.var)
    assert credentials is not None
    up = s.local.output
    assert "its device the victron device (or its broker link) logs in as gx: publishes N/c0619ab1b2c3/#" in up
    assert f"password: \"$(python3 {REPO / 'deploy' / 'auth.py'} password gx {s.var / 'mqtt-auth'})\"" in up
    acl = (s.var / "mqtt-auth" / "acl").read_text()
    assert "user gx\ntopic read W/c0619ab1b2c3/settings/0/Settings/CGwacs/AcPowerSetPoint\n" in acl
    assert "user victron-1" not in acl, "the bridge is victron-1's device: no contract device user of that name"

    setpoint = f"W/{PORTAL}/settings/0/Settings/CGwacs/AcPowerSetPoint"
    sentinel = f"bess-probe/{uuid.uuid4().hex}"
    with stack.MiniMqtt("127.0.0.1", port, username="gx", password=credentials.password("gx")) as gx, \
            stack.MiniMqtt("127.0.0.1", port, username=auth.PROBE_USER,
                           password=credentials.password(auth.PROBE_USER)) as probe:
        gx.subscribe([f"W/{PORTAL}/#", f"R/{PORTAL}/#"], qos=1)
        probe.subscribe(["N/#", "W/#", "R/#", sentinel], qos=1)
        for path, value in (("Soc", 50.0), ("Power", 1000.0)):
            gx.publish(f"N/{PORTAL}/system/0/Dc/Battery/{path}", json.dumps({"value": value}).encode(), qos=1)
        monitor = credentials.login(auth.MONITOR_USER)
        topic = "bess/v1/battery/victron-1/telemetry"

        def telemetry() -> dict[str, object] | None:
            found = stack.read_retained("127.0.0.1", port, topic, timeout=3.0, username=monitor[0],
                                        password=monitor[1]).get(topic)
            reading = json.loads(found) if found else None
            return reading if reading and reading.get("soc_kwh") == 5.0 else None

        assert wait_for(telemetry, timeout=30, interval=0.2, what="the GX's values as victron-1's telemetry")
        status, body = gateway_post(s, "/mqtt/publish", {"command": "DISCHARGE 3kW", "battery": "victron-1"})
        assert status == 202, body
        deadline = time.monotonic() + 15
        writes: list[object] = []
        while {"value": -3000} not in writes and time.monotonic() < deadline:
            message = gx.receive(max(0.0, deadline - time.monotonic()))
            if message is not None and message.topic == setpoint:
                writes.append(json.loads(message.payload))
        assert {"value": -3000} in writes, f"the GX got no -3 kW setpoint: {writes}"
        probe.publish(sentinel, b".", qos=1)
        seen = probe.receive(timeout=5)
        assert seen is not None
        assert seen.topic == sentinel, f"the probe user read a device topic: {seen.topic}"

