"""deploy/stack.py against the real binaries: start, protocol round trips, persistence, clean stop, up/down."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy import auth, seed, stack
from nodes.runtime.bus import Bus, MqttSettings, PublishRefused
from tests.support.nodes import NodeExited
from tests.support.services import Services
from tests.support.waiting import WaitTimeout, wait_for, wait_for_async

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Mosquitto]:
    with stack.start_mosquitto(tmp_path_factory.mktemp("mq"), die_with_parent=True) as started:
        yield started


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Influxd]:
    with stack.start_influxd(tmp_path_factory.mktemp("ifx"), die_with_parent=True) as started:
        yield started


def test_start_writes_configs_and_answers(broker: stack.Mosquitto, influxd: stack.Influxd) -> None:
    conf = broker.config_path.read_text()
    assert "max_queued_messages 0" in conf
    assert f"listener {broker.port} 127.0.0.1" in conf
    assert "websockets" not in conf, "no websockets listener unless asked for (and then only with a password file)"
    assert f"message_size_limit {stack.MESSAGE_SIZE_LIMIT_BYTES}\n" in conf
    assert broker.ports == (broker.port,)
    assert f'bind-address = "127.0.0.1:{influxd.rpc_port}"' in influxd.config_path.read_text()
    assert broker.running
    assert stack.mqtt_ready(broker.host, broker.port)
    assert influxd.running
    assert stack.influx_ping(influxd.url)
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


def test_qos1_round_trip_with_mosquitto_clients(broker: stack.Mosquitto) -> None:
    # A persistent QoS 1 session is created and left (-E: exit once subscribed); a QoS 1 message published
    # while it is offline must be queued by the broker and delivered when the same client id comes back.
    port = str(broker.port)
    session = ["mosquitto_sub", "-p", port, "-i", "rt-qos1-sub", "-c", "-q", "1", "-t", "rt/qos1"]
    subprocess.run([*session, "-E"], check=True, timeout=10)
    subprocess.run(
        ["mosquitto_pub", "-p", port, "-q", "1", "-t", "rt/qos1", "-m", "hello-qos1"], check=True, timeout=10
    )
    received = subprocess.run(
        [*session, "-C", "1", "-W", "10", "-v"], check=True, timeout=15, capture_output=True, text=True
    )
    assert received.stdout == "rt/qos1 hello-qos1\n"


def test_qos1_round_trip_with_mini_client(broker: stack.Mosquitto) -> None:
    with stack.MiniMqtt(broker.host, broker.port) as sub, stack.MiniMqtt(broker.host, broker.port) as pub:
        assert sub.subscribe("rt/mini/+", qos=1) == [1]
        pub.publish("rt/mini/a", b'{"n": 1}', qos=1)
        message = sub.receive(timeout=5)
    assert message == stack.MqttMessage("rt/mini/a", b'{"n": 1}', qos=1, retain=False)


def test_websockets_listener_needs_authentication_and_then_refuses_anonymous_clients(tmp_path: Path) -> None:
    # mosquitto 2.0.11 binds websockets on every interface whatever the listener line says: never anonymous
    with pytest.raises(stack.StackError, match="BESS_MQTT_AUTH=1"):
        stack.start_mosquitto(tmp_path / "anonymous", websockets=True)
    assert not (tmp_path / "anonymous" / "mosquitto.conf").exists()

    credentials = auth.ensure_credentials(tmp_path / "var", "tws/bess/v1", ["battery-1"])
    with stack.start_mosquitto(
        tmp_path / "mq", websockets=True, password_file=credentials.password_file, acl_file=credentials.acl_file,
        probe_login=credentials.login(auth.PROBE_USER), die_with_parent=True,
    ) as secured:
        assert secured.ws_port is not None
        assert ws_connack(["127.0.0.1", str(secured.ws_port)]) == "connack 5"  # anonymous: not authorised
        user, password = credentials.login(auth.MONITOR_USER)
        assert ws_connack(["127.0.0.1", str(secured.ws_port), user], password) == "connack 0"


def test_influx_write_and_query_round_trip(influxd: stack.Influxd) -> None:
    stack.create_database(influxd.url, "rt")
    stack.create_database(influxd.url, "rt")  # idempotent
    stack.influx_write(
        influxd.url,
        "rt",
        [
            "battery,battery_id=b1 soc_kwh=700,power_kw=-50 1736992800000",
            "battery,battery_id=b1 soc_kwh=710,power_kw=-50 1736992860000",
        ],
    )
    rows = stack.influx_rows(influxd.url, "rt", "SELECT soc_kwh, power_kw FROM battery WHERE battery_id = 'b1'")
    assert rows == [
        {"time": 1736992800000, "soc_kwh": 700, "power_kw": -50},
        {"time": 1736992860000, "soc_kwh": 710, "power_kw": -50},
    ]
    with pytest.raises(stack.InfluxError, match="database not found"):
        stack.influx_write(influxd.url, "nope", "m v=1 1")
    with pytest.raises(stack.InfluxError, match="database not found"):
        stack.influx_query(influxd.url, "SELECT * FROM m", "nope")
    stack.drop_database(influxd.url, "rt")
    assert "rt" not in json.dumps(stack.influx_query(influxd.url, "SHOW DATABASES"))


def test_restart_keeps_retained_messages_and_rows(broker: stack.Mosquitto, influxd: stack.Influxd) -> None:
    with stack.MiniMqtt(broker.host, broker.port) as client:
        client.publish("rt/retained/a", b"kept", qos=1, retain=True)
    stack.create_database(influxd.url, "keep")
    stack.influx_write(influxd.url, "keep", "m v=1 1736992800000")
    old_broker_pid, old_influx_pid = broker.pid, influxd.pid
    broker.restart()
    influxd.restart()
    assert broker.pid != old_broker_pid
    assert influxd.pid != old_influx_pid
    assert stack.read_retained(broker.host, broker.port, "rt/retained/#") == {"rt/retained/a": b"kept"}
    assert stack.influx_rows(influxd.url, "keep", "SELECT v FROM m") == [{"time": 1736992800000, "v": 1}]


def test_kill_then_start_on_the_same_port(broker: stack.Mosquitto) -> None:
    pid = broker.pid
    assert pid is not None
    assert broker.kill() == -9
    assert not stack.pid_alive(pid)
    assert not stack.port_open(broker.host, broker.port)
    broker.start()
    assert stack.mqtt_ready(broker.host, broker.port)


def test_busy_port_is_refused(broker: stack.Mosquitto, tmp_path: Path) -> None:
    with pytest.raises(stack.PortInUseError):
        stack.start_mosquitto(tmp_path / "second", port=broker.port)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    pid_path = tmp_path / "run" / "mosquitto.pid"
    broker = stack.start_mosquitto(tmp_path / "mq", pid_path=pid_path, die_with_parent=True)
    influxd = stack.start_influxd(tmp_path / "ifx", die_with_parent=True)
    pids = [broker.pid, influxd.pid]
    assert pid_path.read_text().strip() == str(broker.pid)
    assert broker.stop() == 0
    assert influxd.stop() in (0, -15)  # influxd 1.6 may report the SIGTERM it handled
    assert not pid_path.exists()
    for pid in pids:
        assert pid is not None
        assert not stack.pid_alive(pid)
    for port in (*broker.ports, *influxd.ports):
        assert not stack.port_open("127.0.0.1", port)
    assert broker.pid is None
    assert not broker.running


FAKE_NODE = """\
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from deploy import stack

name = {name!r}
if name == "planner":
    print("planner: refusing to start", flush=True)
    sys.exit(3)
root = os.environ.get("BESS_TOPIC_ROOT", "bess/v1")
topic = f"{{root}}/node/{{name}}/status"
client = stack.MiniMqtt(os.environ["BESS_MQTT_HOST"], int(os.environ["BESS_MQTT_PORT"]))
client.publish(topic, '{{"node":"%s","state":"online","pid":%d}}' % (name, os.getpid()), qos=1, retain=True)
print("env", os.environ["BESS_INFLUX_URL"], os.environ["BESS_INFLUX_DB"], flush=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
while not stopping:
    time.sleep(0.05)
client.publish(topic, '{{"node":"%s","state":"offline"}}' % name, qos=1, retain=True)
client.close()
"""


def test_up_uses_a_running_broker_starts_the_rest_and_down_stops_only_that(
    broker: stack.Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    repo = str(Path(__file__).resolve().parents[2])
    (root / "nodes").mkdir(parents=True)
    (root / "nodes" / "__init__.py").write_text("")
    for name in ("recorder", "planner"):
        (root / "nodes" / name).mkdir()
        (root / "nodes" / name / "__init__.py").write_text("")
        (root / "nodes" / name / "__main__.py").write_text(textwrap.dedent(FAKE_NODE.format(repo=repo, name=name)))
    cfg = stack.UpConfig(
        root=root,
        var_dir=root / "var",
        mqtt_port=broker.port,  # already answering: up must use it and leave it alone
        influx_port=stack.free_port(),
        influx_db="updb",
        topic_root="tup/bess/v1",
        timeout=10,
    )
    try:
        assert stack.cmd_up(cfg) == 1  # the fake planner exits 3
        out, err = capsys.readouterr()
        assert "not started by deploy/up; left alone" in out
        assert "recorder   pid" in out
        assert ": online" in out, out
        assert "ERROR: planner: exited" in err
        assert "refusing to start" in err
        influx_pid = stack.read_live_pid(cfg.run_dir / "influxd.pid", "influxdb.conf")
        recorder_pid = stack.read_live_pid(cfg.run_dir / "recorder.pid", "nodes.recorder")
        assert influx_pid
        assert recorder_pid
        assert not (cfg.run_dir / "mosquitto.pid").exists()
        assert "updb" in json.dumps(stack.influx_query(cfg.influx_url, "SHOW DATABASES"))
        assert f"env {cfg.influx_url} updb" in (cfg.log_dir / "recorder.log").read_text()

        # a second up starts nothing new but restarts the crashed planner (which crashes again)
        assert stack.cmd_up(cfg) == 1
        assert f"already running (pid {recorder_pid})" in capsys.readouterr().out
    finally:
        assert stack.cmd_down(cfg) == 0
    assert not stack.pid_alive(influx_pid)
    assert not stack.pid_alive(recorder_pid)
    assert list(cfg.run_dir.glob("*.pid")) == []
    assert broker.running
    assert stack.mqtt_ready(broker.host, broker.port)
    status = stack.read_retained(broker.host, broker.port, "tup/bess/v1/node/+/status")
    assert json.loads(status["tup/bess/v1/node/recorder/status"])["state"] == "offline"


def test_cli_status_runs() -> None:
    result = subprocess.run(
        [sys.executable, "deploy/stack.py", "--help"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "up | down | status" in result.stdout


def test_session_services_fixtures_and_fault_injection(
    services: Services, influx_db: str, topic_root: str, battery_id: str, node_env: dict[str, str]
) -> None:
    assert node_env["BESS_INFLUX_DB"] == influx_db
    assert node_env["BESS_TOPIC_ROOT"] == topic_root
    assert node_env["BESS_MQTT_PORT"] == str(services.mqtt_port)
    services.influx_write(influx_db, f"battery,battery_id={battery_id} soc_kwh=1 1736992800000")
    assert services.influx_rows(influx_db, "SELECT soc_kwh FROM battery") == [{"time": 1736992800000, "soc_kwh": 1}]
    with services.mqtt_client() as client:
        client.publish(f"{topic_root}/x", b"1", qos=1, retain=True)
    if services.mode != "local":
        pytest.skip("fault injection needs local processes")
    services.kill_broker()
    assert not services.mqtt_ready
    services.start_broker()
    assert services.read_retained(f"{topic_root}/#") == {}  # killed before the next autosave: retained lost
    services.stop_influx()
    assert not services.influx_ready
    # left stopped on purpose: the fixtures start it again after the test


def test_services_are_running_again(services: Services, influx_db: str) -> None:
    assert services.mqtt_ready
    assert services.influx_ready


def test_run_node_reports_a_node_that_exits(run_node: Callable[..., Any]) -> None:
    proc = run_node("does_not_exist")
    assert proc.wait(timeout=20) == 1
    with pytest.raises(NodeExited, match=r"No module named nodes\.does_not_exist"):
        proc.assert_alive()


def test_wait_for_returns_the_value_or_fails_with_the_last_one() -> None:
    values = iter([0, 0, 7])
    assert wait_for(lambda: next(values), timeout=5, interval=0.001) == 7
    with pytest.raises(WaitTimeout, match="last value: 0"):
        wait_for(lambda: 0, timeout=0.05, interval=0.01, what="zero to become truthy")


# -- fake nodes: what `up` makes of the statuses they publish ------------------------------------------------

BEHAVING_NODE = """\
import json, os, signal, sys, time
sys.path.insert(0, {repo!r})
from deploy import stack

name, behaviour = {name!r}, {behaviour!r}
root = os.environ["BESS_TOPIC_ROOT"]
client = stack.MiniMqtt(os.environ["BESS_MQTT_HOST"], int(os.environ["BESS_MQTT_PORT"]))
status = {{"node": name, "state": "online", "pid": os.getpid()}}
if behaviour == "degraded":
    status = {{**status, "state": "degraded", "reason": "no spec from battery my-bat"}}
if behaviour.startswith("spoof:"):  # on its own topic, in the name (and with the pid) of another node
    victim = behaviour.split(":", 1)[1]
    pid_file = os.path.join(os.environ["FAKE_RUN_DIR"], victim + ".pid")
    status = {{"node": victim, "state": "online", "pid": int(open(pid_file).read())}}
if behaviour != "silent":
    client.publish(f"{{root}}/node/{{name}}/status", json.dumps(status), qos=1, retain=True)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
while not stopping:
    time.sleep(0.05)
client.close()
"""


def fake_repo(root: Path, behaviours: dict[str, str]) -> Path:
    """A repository whose nodes/<name>/__main__.py are fake nodes with the given behaviours."""
    repo = str(Path(__file__).resolve().parents[2])
    (root / "nodes").mkdir(parents=True)
    (root / "nodes" / "__init__.py").write_text("")
    for name, behaviour in behaviours.items():
        (root / "nodes" / name).mkdir()
        (root / "nodes" / name / "__init__.py").write_text("")
        script = BEHAVING_NODE.format(repo=repo, name=name, behaviour=behaviour)
        (root / "nodes" / name / "__main__.py").write_text(script)
    return root


def fake_up_config(root: Path, broker: stack.Mosquitto, timeout: float) -> stack.UpConfig:
    return stack.UpConfig(
        root=root,
        var_dir=root / "var",
        mqtt_port=broker.port,
        influx_port=stack.free_port(),
        topic_root=f"t{uuid.uuid4().hex[:8]}/bess/v1",
        timeout=timeout,
        environ={**os.environ, "FAKE_RUN_DIR": str(root / "var" / "run")},
    )


def test_up_counts_a_degraded_node_as_running_and_prints_its_reason(
    broker: stack.Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_repo(tmp_path / "repo", {"recorder": "online", "planner": "degraded"})
    cfg = fake_up_config(root, broker, timeout=20)
    try:
        assert stack.cmd_up(cfg) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        planner_pid = stack.read_live_pid(cfg.run_dir / "planner.pid", "nodes.planner")
        assert f"planner    pid {planner_pid}: degraded: no spec from battery my-bat" in out, out
        assert "recorder   pid" in out
        assert ": online" in out
    finally:
        stack.cmd_down(cfg)


def test_a_status_counts_only_on_its_own_topic_whatever_its_payload_says(
    broker: stack.Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the market publishes, on its own topic, "recorder online" with the recorder's pid; the recorder is silent
    root = fake_repo(tmp_path / "repo", {"recorder": "silent", "market": "spoof:recorder"})
    cfg = fake_up_config(root, broker, timeout=3)
    try:
        assert stack.cmd_up(cfg) == 1
        captured = capsys.readouterr()
        assert "ERROR: recorder: no online status within 3 s (last: -)" in captured.err, captured
        assert "ERROR: market: no online status" in captured.err, "a status naming another pid is not the market's"
    finally:
        stack.cmd_down(cfg)


# -- message size ---------------------------------------------------------------------------------------------


async def test_an_oversized_message_is_refused_and_other_traffic_continues(broker: stack.Mosquitto) -> None:
    limit = stack.MESSAGE_SIZE_LIMIT_BYTES
    root = f"t{uuid.uuid4().hex[:8]}"
    with stack.MiniMqtt(broker.host, broker.port, timeout=10) as sub:
        sub.subscribe(f"{root}/#", qos=1)
        # an MQTT 3.1.1 device: acknowledged (so it does not resend) or disconnected, never delivered
        with contextlib.suppress(OSError, stack.MqttError), stack.MiniMqtt(broker.host, broker.port) as device:
            device.publish(f"{root}/big-3", b"x" * (limit + 1), qos=1)
        # an MQTT 5 publisher (the nodes' bus) gets the broker's reason code 0x95, packet too large
        bus = Bus("oversize", MqttSettings(mqtt_port=broker.port, topic_root=f"{root}-bus/bess/v1",
                                           mqtt_reconnect_delay_s=0.2))
        await bus.start()
        try:
            with pytest.raises(PublishRefused, match="0x95"):
                await bus.publish_bytes(f"{root}/big-5", b"y" * (limit + 1), qos=1, wait_ack=True)
            # other traffic continues: a message of exactly the limit, and the refused publisher once reconnected
            with stack.MiniMqtt(broker.host, broker.port, timeout=10) as other:
                other.publish(f"{root}/at-limit", b"z" * limit, qos=1)
            await wait_for_async(bus.connected.is_set, 10.0, what="the bus reconnected")
            await bus.publish_bytes(f"{root}/after", b"1", qos=1, wait_ack=True)
        finally:
            await bus.stop()
        arrived: list[tuple[str, int]] = []
        while not arrived or arrived[-1][0] != f"{root}/after":
            message = sub.receive(10)
            assert message is not None, f"the traffic after the oversized messages never came; got {arrived}"
            arrived.append((message.topic, len(message.payload)))
    assert arrived == [(f"{root}/at-limit", limit), (f"{root}/after", 1)]


def test_the_container_broker_config_matches_the_local_one() -> None:
    root = Path(__file__).resolve().parents[2]
    conf = (root / "deploy" / "mosquitto.conf").read_text()
    directives = [line.split() for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert ["message_size_limit", str(stack.MESSAGE_SIZE_LIMIT_BYTES)] in directives
    assert ["max_queued_messages", "0"] in directives
    assert [d for d in directives if d[0] in ("listener", "protocol")] == [["listener", "1883"], ["protocol", "mqtt"]]
    compose = (root / "deploy" / "compose.yaml").read_text()
    assert "9001" not in compose
    published = re.findall(r'"(\d[\d.:]*):\d+"', compose)
    assert published, "compose publishes its ports"
    assert all(mapping.startswith("127.0.0.1:") for mapping in published), published


# -- what listens where: sockets of processes, and a second host in a network namespace ---------------------


@dataclass(frozen=True)
class Listener:
    """A TCP socket in LISTEN state (or an unconnected UDP socket) owned by one of the watched processes."""

    proto: str
    address: str
    port: int
    pid: int

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback


def _proc_net_address(raw: str) -> tuple[str, int]:
    """``0100007F:1F90`` (or its 32-digit IPv6 form) from /proc/net/tcp -> ("127.0.0.1", 8080)."""
    host, port = raw.split(":")
    data = bytes.fromhex(host)
    words = b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))  # each 32-bit word is host order
    return str(ipaddress.ip_address(words)), int(port, 16)


def process_tree(leaders: set[int]) -> set[int]:
    """``leaders`` and every process in their process groups (deploy/up starts each in its own session)."""
    members = set(leaders)
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[2]) in leaders:
                members.add(int(stat_file.parent.name))
    return members


def listening_sockets(pids: set[int]) -> list[Listener]:
    """Every server socket of ``pids`` (and their process groups), from /proc."""
    owners: dict[str, int] = {}
    for pid in process_tree(pids):
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owners[link[8:-1]] = pid
    found: list[Listener] = []
    for proto, table, server_state in (("tcp", "tcp", "0A"), ("tcp", "tcp6", "0A"), ("udp", "udp", "07"),
                                       ("udp", "udp6", "07")):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state != server_state or inode not in owners:
                    continue
                if proto == "udp" and _proc_net_address(remote)[1] != 0:
                    continue  # a connected UDP socket is a client (a DNS lookup), not a server
                address, port = _proc_net_address(local)
                found.append(Listener(proto, address, port, owners[inode]))
    return found


PROBE_CONNECT = """\
import json, socket, sys
host, result = sys.argv[1], {}
for port in sys.argv[2:]:
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        result[port] = "open"
    except ConnectionRefusedError:
        result[port] = "refused"
    except TimeoutError:
        result[port] = "timeout"
    except OSError as exc:
        result[port] = f"error: {exc}"
print(json.dumps(result))
"""

PROBE_WS_CONNACK = """\
import base64, os, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
user = sys.argv[3] if len(sys.argv) > 3 else None
password = os.environ.get("PROBE_PASSWORD")
sock = socket.create_connection((host, port), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET /mqtt HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nUpgrade: websocket\\r\\n"
              f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {key}\\r\\nSec-WebSocket-Version: 13\\r\\n"
              "Sec-WebSocket-Protocol: mqtt\\r\\n\\r\\n").encode())
buf = b""
while b"\\r\\n\\r\\n" not in buf:
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit(print("closed during the handshake"))
    buf += chunk
head, _, buf = buf.partition(b"\\r\\n\\r\\n")
if b" 101 " not in head.split(b"\\r\\n")[0]:
    sys.exit(print("no upgrade:", head.split(b"\\r\\n")[0].decode()))
def mqtt_str(raw):
    return len(raw).to_bytes(2, "big") + raw
flags, login = 0x02, b""
if user:
    flags, login = flags | 0x80, mqtt_str(user.encode())
    if password:
        flags, login = flags | 0x40, login + mqtt_str(password.encode())
body = mqtt_str(b"MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + mqtt_str(b"ws-probe") + login
packet = bytes([0x10, len(body)]) + body  # < 128 bytes: one length byte
mask = os.urandom(4)
sock.sendall(bytes([0x82, 0x80 | len(packet)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(packet)))
while len(buf) < 6:
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit(print("closed before CONNACK"))
    buf += chunk
frame = buf[2 : 2 + (buf[1] & 0x7F)]  # the server's frames are not masked
print(f"connack {frame[3]}" if frame[:1] == b"\\x20" else f"unexpected {frame!r}")
"""


def ws_connack(args: list[str], password: str | None = None, netns: str | None = None) -> str:
    """The CONNACK code a CONNECT over websockets gets (``host port [user]``), as ``connack N``."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    env = {**os.environ, "PROBE_PASSWORD": password or ""}
    result = subprocess.run([*prefix, sys.executable, "-c", PROBE_WS_CONNACK, *args], capture_output=True,
                            text=True, timeout=30, env=env, check=False)
    return (result.stdout + result.stderr).strip()


@dataclass(frozen=True)
class NetNs:
    """Another host on this machine: a network namespace joined to us by a veth pair on a private /24."""

    name: str
    host_address: str  # our end: a non-loopback address of this machine
    inside_address: str

    def connect(self, ports: Iterable[int]) -> dict[int, str]:
        """``{port: "open" | "refused" | "timeout" | "error: ..."}`` for TCP connections from inside to us."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", PROBE_CONNECT, self.host_address,
             *map(str, ports)],
            capture_output=True, text=True, timeout=120, check=True,
        )
        return {int(port): outcome for port, outcome in json.loads(result.stdout).items()}


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def netns() -> Iterator[NetNs]:
    """A network namespace with a veth pair (10.231.<n>.1/24 here, .2 inside), removed afterwards."""
    if sys.platform != "linux" or shutil.which("ip") is None:
        pytest.skip("needs Linux and iproute2 (`ip netns`)")
    tag = uuid.uuid4().hex[:6]
    name, host_if, inside_if = f"bess-t{tag}", f"bt{tag}h", f"bt{tag}n"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {made.stderr.strip()}")
    try:
        used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
        free = [n for n in random.sample(range(1, 255), 254) if f"10.231.{n}." not in used]
        subnet = f"10.231.{free[0]}"
        for args in (
            ("link", "add", host_if, "type", "veth", "peer", "name", inside_if),
            ("link", "set", inside_if, "netns", name),
            ("addr", "add", f"{subnet}.1/24", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("-n", name, "addr", "add", f"{subnet}.2/24", "dev", inside_if),
            ("-n", name, "link", "set", inside_if, "up"),
            ("-n", name, "link", "set", "lo", "up"),
        ):
            done = _ip(*args)
            if done.returncode != 0:
                pytest.skip(f"`ip {' '.join(args)}` is not permitted here: {done.stderr.strip()}")
        yield NetNs(name, f"{subnet}.1", f"{subnet}.2")
    finally:
        _ip("link", "del", host_if)  # removes its peer too
        _ip("netns", "del", name)


def assert_reachable_from_netns_only_when_listening_everywhere(netns: NetNs) -> None:
    """The probe itself works: a socket bound to every interface answers from the namespace (else "refused"
    below would prove nothing)."""
    with socket.create_server(("0.0.0.0", 0)) as server:
        port = server.getsockname()[1]
        assert netns.connect([port]) == {port: "open"}


# -- the whole stack, as a user runs it (deploy/stack.py on free ports, BESS_VAR_DIR in tmp) ------------------

REPO = Path(__file__).resolve().parents[2]


def free_influx_port() -> int:
    """A free port whose +2 (influxd's RPC port under deploy/up) is free too."""
    while True:
        port = stack.free_port()
        if port < 65534 and not stack.port_open("127.0.0.1", port + 2):
            with contextlib.suppress(OSError), socket.create_server(("127.0.0.1", port + 2)):
                return port


def stack_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a user running the stack under ``var_dir``: no BESS_* of ours leaks in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BESS_")}
    return {**env, "BESS_VAR_DIR": str(var_dir), "BESS_UP_TIMEOUT": "90", **settings}


def run_stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python deploy/stack.py <command>`` (what deploy/up, down and status run after the bootstrap)."""
    return subprocess.run([sys.executable, str(REPO / "deploy" / "stack.py"), command], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def stack_pids(var_dir: Path) -> dict[str, int]:
    """name -> pid of every process deploy/up started under ``var_dir`` that still runs."""
    return {path.stem: int(path.read_text()) for path in (var_dir / "run").glob("*.pid")
            if stack.pid_alive(int(path.read_text()))}


@dataclass(frozen=True)
class LocalStack:
    var_dir: Path
    env: dict[str, str]  # exactly what the first `up` was given
    ports: dict[str, int]
    output: str = ""  # what that `up` printed (stdout and stderr)


def _start_stack(var_dir: Path, ports: dict[str, int] | None = None, **settings: str) -> LocalStack:
    """``up`` under ``var_dir`` on free ports (or on ``ports``, as an earlier LocalStack used them)."""
    if ports is None:
        ports = {"mqtt": stack.free_port(), "influx": free_influx_port(), "gateway_a": stack.free_port(),
                 "gateway_b": stack.free_port(), "dashboard": stack.free_port()}
        ports["influx_rpc"] = ports["influx"] + 2
    env = stack_env(
        var_dir,
        BESS_MQTT_PORT=str(ports["mqtt"]),
        BESS_INFLUX_PORT=str(ports["influx"]),
        BESS_GATEWAY_PORTS=f"{ports['gateway_a']},{ports['gateway_b']}",
        BESS_DASHBOARD_PORT=str(ports["dashboard"]),
        **settings,
    )
    up = run_stack("up", env)
    if up.returncode != 0:
        run_stack("down", env)
        pytest.fail(f"deploy/stack.py up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}", pytrace=False)
    return LocalStack(var_dir, env, ports, up.stdout + up.stderr)


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The default stack (no authentication, no websockets) with every node, on free ports."""
    started = _start_stack(tmp_path_factory.mktemp("stack") / "var")
    try:
        yield started
    finally:
        run_stack("down", started.env)


def test_no_port_of_the_default_stack_answers_another_address(default_stack: LocalStack, netns: NetNs) -> None:
    assert_reachable_from_netns_only_when_listening_everywhere(netns)
    pids = stack_pids(default_stack.var_dir)
    assert set(pids) == {"mosquitto", "influxd", *stack.NODE_NAMES}
    listeners = listening_sockets(set(pids.values()))
    tcp_ports = {listener.port for listener in listeners if listener.proto == "tcp"}
    assert set(default_stack.ports.values()) <= tcp_ports, listeners  # every configured port, influxd's RPC too
    assert [listener for listener in listeners if not listener.loopback] == [], "bound beyond loopback"
    from_outside = netns.connect(sorted(tcp_ports))
    assert {port: outcome for port, outcome in from_outside.items() if outcome not in ("refused", "timeout")} == {}
    assert all(stack.port_open("127.0.0.1", port) for port in tcp_ports), "the same ports answer on loopback"


def test_up_prints_the_seed_lines_for_its_gateway_ports(default_stack: LocalStack) -> None:
    ports = (default_stack.ports["gateway_a"], default_stack.ports["gateway_b"])
    for line in seed.SEED_CURL_LINES:  # the one copy (deploy/seed.py), pointed at this stack's gateway
        assert "  " + seed.for_ports(line, ports).replace("\n", "\n  ") + "\n" in default_stack.output
        assert seed.for_ports(line, ports) != line


def _node_line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(f"{name} ") and " pid " in line)


def test_a_changed_setting_restarts_exactly_the_nodes_that_read_it(default_stack: LocalStack) -> None:
    var, env = default_stack.var_dir, default_stack.env
    before = stack_pids(var)

    changed = run_stack("up", {**env, "BESS_PLANNER_AUTOPILOT": "false"})
    assert changed.returncode == 0, changed.stdout + changed.stderr
    after = stack_pids(var)
    planner = _node_line(changed.stdout, "planner")
    assert f"pid {after['planner']}: " in planner
    assert f"restarted: BESS_PLANNER_AUTOPILOT true -> false (was pid {before['planner']})" in planner, planner
    assert after["planner"] != before["planner"]
    # the homeassistant node reads it too (the control mode in force when none is set, as the planner decides it)
    readers = {"planner", "homeassistant"}
    assert "restarted: BESS_PLANNER_AUTOPILOT true -> false" in _node_line(changed.stdout, "homeassistant")
    assert after["homeassistant"] != before["homeassistant"]
    assert {k: v for k, v in after.items() if k not in readers} == {
        k: v for k, v in before.items() if k not in readers}
    assert "already running" in _node_line(changed.stdout, "recorder")
    environ = Path(f"/proc/{after['planner']}/environ").read_bytes().split(b"\0")
    assert b"BESS_PLANNER_AUTOPILOT=false" in environ, "the new planner really runs with the new setting"
    recorded = var / "run" / "planner.env"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    assert "BESS_PLANNER_AUTOPILOT=false" in recorded.read_text().splitlines()

    again = run_stack("up", {**env, "BESS_PLANNER_AUTOPILOT": "false"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert stack_pids(var) == after, "the same settings restart nothing"

    # a secret: named, never shown
    secret = f"s3cret-{uuid.uuid4().hex}"
    token = run_stack("up", {**env, "BESS_PLANNER_AUTOPILOT": "false", "BESS_GATEWAY_TOKEN": secret})
    assert token.returncode == 0, token.stdout + token.stderr
    assert "BESS_GATEWAY_TOKEN changed (secret: value not shown)" in _node_line(token.stdout, "gateway")
    assert secret not in token.stdout + token.stderr
    assert stack_pids(var)["planner"] == after["planner"]
    assert f"BESS_GATEWAY_TOKEN={secret}" in (var / "run" / "gateway.env").read_text().splitlines()

    back = run_stack("up", env)  # the first `up`'s environment again: autopilot on (the default), no token
    assert back.returncode == 0, back.stdout + back.stderr
    assert "BESS_PLANNER_AUTOPILOT false -> true" in _node_line(back.stdout, "planner")
    assert "BESS_GATEWAY_TOKEN changed" in _node_line(back.stdout, "gateway")


def test_a_bridge_started_then_dropped_leaves_no_offline_node_behind(default_stack: LocalStack) -> None:
    """``up`` with a bridge profile runs the bridge (the simulator leaves its battery alone); ``up`` without it
    stops the bridge for good and clears its retained status, so no dashboard or alarm shows a node nobody runs."""
    var, env, port = default_stack.var_dir, default_stack.env, default_stack.ports["mqtt"]
    bridged = {**env, "BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": "c0619ab1b2c3",
               "BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5"}
    status = f"{env.get('BESS_TOPIC_ROOT', 'bess/v1')}/node/bridge/status"
    try:
        on = run_stack("up", bridged)
        assert on.returncode == 0, on.stdout + on.stderr
        assert "bridge" in stack_pids(var)
        assert "HA_DEVICE_NODE_OF=battery-1=bridge" in (var / "run" / "homeassistant.env").read_text()
        assert stack.read_retained("127.0.0.1", port, status).get(status), "the bridge published its status"
    finally:
        off = run_stack("up", env)
    assert off.returncode == 0, off.stdout + off.stderr
    line = next(line for line in off.stdout.splitlines() if line.strip().startswith("bridge "))
    assert "stopped: BESS_BRIDGE_PROFILE is not set" in line, line
    assert "its retained status cleared" in line, line
    assert "bridge" not in stack_pids(var)
    assert status not in stack.read_retained("127.0.0.1", port, status), "no offline bridge left standing"


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("BESS_SIM_SPEED", "fast", "BESS_SIM_SPEED"),
        ("BESS_BATTERIES", "Battery 1", "BESS_BATTERIES"),
        ("BESS_PLANNER_AUTOPILOT", "maybe", "BESS_PLANNER_AUTOPILOT"),
        ("BESS_GATEWAY_PORTS", "5000,x", "BESS_GATEWAY_PORTS"),
        # asked for, a listener on the network needs authentication
        ("BESS_GATEWAY_HOST", "0.0.0.0", "BESS_GATEWAY_TOKEN"),
        ("BESS_DASHBOARD_HOST", "10.231.0.1", "BESS_GATEWAY_TOKEN"),
    ],
)
def test_an_invalid_setting_stops_up_with_one_line_and_exit_2(
    default_stack: LocalStack, setting: str, value: str, named: str
) -> None:
    before = stack_pids(default_stack.var_dir)
    refused = run_stack("up", {**default_stack.env, setting: value})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("up: ")
    assert named in lines[0]
    assert refused.stdout == "", "nothing was started or printed before the refusal"
    assert stack_pids(default_stack.var_dir) == before


def test_a_websockets_listener_without_authentication_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "var", BESS_MQTT_PORT=str(stack.free_port()), BESS_MQTT_WS_PORT=str(stack.free_port()))
    refused = run_stack("up", env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "BESS_MQTT_WS_PORT" in refused.stderr
    assert "BESS_MQTT_AUTH=1" in refused.stderr
    assert not (tmp_path / "var" / "run").exists()


def test_an_authenticated_stack_is_remembered_by_later_commands(tmp_path: Path, netns: NetNs) -> None:
    ws_port = stack.free_port()
    started = _start_stack(tmp_path / "var", BESS_MQTT_AUTH="1", BESS_MQTT_WS_PORT=str(ws_port))
    var = started.var_dir
    plain = stack_env(var)  # no BESS_MQTT_AUTH, no ports: everything from var/stack.json
    try:
        if os.geteuid() == 0:
            # pytest's temporary directories are root's and 0700: no unprivileged broker account can reach var/
            # there, so the broker runs as root, and `up` says so and why (test_secure_stack.py: the normal case)
            assert "runs as root" in started.output
            account = next(a for a in map(stack.Account.named, stack.BROKER_ACCOUNTS) if a is not None)
            blocked = stack.first_blocked(var.parent, account)
            assert blocked is not None
            assert blocked.stat().st_mode & 0o001 == 0, "a directory others may not enter"
            warning = f"WARNING: mosquitto runs as root: user {account.name} cannot enter {blocked} "
            assert warning in started.output, started.output
        remembered = json.loads((var / "stack.json").read_text())
        assert remembered["mqtt_auth"] is True
        assert remembered["mqtt_port"] == started.ports["mqtt"]
        assert remembered["mqtt_ws_port"] == ws_port
        assert remembered["gateway_ports"] == [started.ports["gateway_a"], started.ports["gateway_b"]]

        status = run_stack("status", plain)
        assert status.returncode == 0, status.stderr
        for name in stack.NODE_NAMES:
            line = next(line for line in status.stdout.splitlines() if line.startswith(f"{name} "))
            assert "status: {" in line, f"{name}: no retained status read: {line}"
            assert json.loads(line.split("status: ", 1)[1])["state"] in ("online", "degraded"), line
        assert "authentication on, read as probe" in status.stdout

        conflict = run_stack("status", {**plain, "BESS_MQTT_AUTH": "0"})
        assert conflict.returncode == 2
        assert "BESS_MQTT_AUTH=0 (it runs with 1)" in conflict.stderr
        other_port = run_stack("up", {**plain, "BESS_MQTT_PORT": str(stack.free_port())})
        assert other_port.returncode == 2
        assert f"(it runs with {started.ports['mqtt']})" in other_port.stderr
        again = run_stack("up", plain)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == 2 + len(stack.NODE_NAMES), again.stdout

        # asked for, the websockets listener is reachable from the network, but only with a login
        assert_reachable_from_netns_only_when_listening_everywhere(netns)
        pids = stack_pids(var)
        listeners = listening_sockets(set(pids.values()))
        exposed = {listener.port for listener in listeners if not listener.loopback}
        assert exposed == {ws_port}, listeners
        outside = netns.connect(sorted({listener.port for listener in listeners if listener.proto == "tcp"}))
        assert {port for port, outcome in outside.items() if outcome == "open"} == {ws_port}
        assert ws_connack([netns.host_address, str(ws_port)], netns=netns.name) == "connack 5"
        credentials = auth.load_credentials(var)
        assert credentials is not None
        user, password = credentials.login(auth.MONITOR_USER)
        assert ws_connack([netns.host_address, str(ws_port), user], password, netns=netns.name) == "connack 0"
    finally:
        down = run_stack("down", plain)
    assert down.returncode == 0, down.stderr
    assert stack_pids(var) == {}
    assert list((var / "run").glob("*.env")) == [], "the settings files (secrets) go with the processes"


# -- node settings checked the way each node checks them ----------------------------------------------------


def test_every_node_has_a_config_struct_that_up_checks() -> None:
    env = {"BESS_SIM_SPEED": "fast"}
    checked = subprocess.run([sys.executable, str(REPO / "deploy" / "check_config.py"), str(REPO)],
                             input=json.dumps(dict.fromkeys(stack.NODE_NAMES, env)), capture_output=True, text=True,
                             timeout=120, check=True)
    result = json.loads(checked.stdout)
    assert set(result) == set(stack.NODE_NAMES)
    for name, item in result.items():
        assert item["variables"], f"no config Struct found for nodes.{name}: up could not validate it"
        assert "BESS_MQTT_PORT" in item["variables"]
        assert "BESS_LOG_LEVEL" in item["variables"]
    assert "BESS_SIM_SPEED" in result["simulator"]["variables"]
    assert "BESS_SIM_SPEED" not in result["recorder"]["variables"], "a node restarts only for its own settings"
    assert [name for name, item in result.items() if item["error"]] == ["simulator"]
    # the very line the node itself prints when started with that value
    node = subprocess.run([sys.executable, "-m", "nodes.simulator"], env={**os.environ, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert node.returncode == 2
    assert node.stderr.strip().splitlines()[-1] == result["simulator"]["error"]


def test_settings_files_round_trip_and_secrets_are_never_shown(tmp_path: Path) -> None:
    settings = {"BESS_BATTERIES": "a,b", "BESS_GATEWAY_TOKEN": "t0k'en \"x\"", "BESS_EMPTY": ""}
    path = tmp_path / "run" / "gateway.env"
    stack.write_node_settings(path, "gateway", settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stack.read_node_settings(path) == settings
    changes = stack.settings_changes(settings, {**settings, "BESS_GATEWAY_TOKEN": "other", "BESS_NEW": "1"})
    assert changes == ["BESS_GATEWAY_TOKEN changed (secret: value not shown)", "BESS_NEW unset -> 1"]
    for name in ("BESS_MQTT_PASSWORD", "BESS_GATEWAY_TOKEN", "BESS_INFLUX_TOKEN", "BESS_GATEWAY_TLS_KEY"):
        assert stack.is_secret(name), name
    assert not stack.is_secret("BESS_PLANNER_AUTOPILOT")


def test_up_restarts_a_server_of_ours_whose_generated_config_changed(default_stack: LocalStack) -> None:
    # e.g. a broker started by an older deploy/stack.py with a websockets listener: `up` must not keep it
    var = default_stack.var_dir
    before = stack_pids(var)
    conf = var / "mosquitto" / "mosquitto.conf"
    generated = conf.read_text()
    conf.write_text(generated + f"listener {stack.free_port()} 127.0.0.1\n")  # what an older up wrote
    up = run_stack("up", default_stack.env)
    assert up.returncode == 0, up.stdout + up.stderr
    after = stack_pids(var)
    assert after["mosquitto"] != before["mosquitto"]
    assert "restarted (pid" in up.stdout
    assert "its generated configuration changed" in up.stdout
    assert conf.read_text() == generated
    assert {k: v for k, v in after.items() if k != "mosquitto"} == {k: v for k, v in before.items() if k != "mosquitto"}
