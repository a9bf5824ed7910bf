"""deploy/stack.py against the real binaries: start, protocol round trips, persistence, clean stop, up/down."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy import stack
from tests.support.nodes import NodeExited
from tests.support.services import Services
from tests.support.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Mosquitto]:
    with stack.start_mosquitto(tmp_path_factory.mktemp("mq"), websockets=True, die_with_parent=True) as started:
        yield started


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Influxd]:
    with stack.start_influxd(tmp_path_factory.mktemp("ifx"), die_with_parent=True) as started:
        yield started


def test_start_writes_configs_and_answers(broker: stack.Mosquitto, influxd: stack.Influxd) -> None:
    conf = broker.config_path.read_text()
    assert "max_queued_messages 0" in conf
    assert f"listener {broker.port} 127.0.0.1" in conf
    assert f"listener {broker.ws_port} 127.0.0.1\nprotocol websockets" in conf
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


def test_websockets_listener_upgrades(broker: stack.Mosquitto) -> None:
    assert broker.ws_port is not None
    request = (
        f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{broker.ws_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    with socket.create_connection((broker.host, broker.ws_port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 101"), answer


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
    broker = stack.start_mosquitto(tmp_path / "mq", websockets=True, pid_path=pid_path, die_with_parent=True)
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
        mqtt_ws_port=broker.ws_port or 0,
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
