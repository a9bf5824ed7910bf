"""The gateway as a process against the real broker: HTTP in, MQTT out (and back), faults included."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nodes.contract.messages import BatterySpec, Command, Telemetry
from nodes.contract.topics import COMMAND, SPEC, TELEMETRY
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SEED = {"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}
RunNode = Callable[..., NodeProcess]


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 15.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange; errors are answers too (status, headers, body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http_json(method: str, url: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    status, _, raw = http(method, url, body, **kwargs)
    return status, json.loads(raw)


def urls(env: dict[str, str]) -> list[str]:
    return [f"http://127.0.0.1:{port}" for port in env["BESS_GATEWAY_PORTS"].split(",")]


def start_gateway(run_node: RunNode, services: Services, env: dict[str, str]) -> tuple[NodeProcess, list[str]]:
    """Start the gateway node, wait for it to be online and healthy on every port; return it and its URLs."""
    proc = run_node("gateway", env)
    proc.wait_online(services.mqtt_host, services.mqtt_port, env["BESS_TOPIC_ROOT"], node_id=env.get("BESS_NODE_ID"))
    bases = urls(env)

    def healthy() -> bool:
        proc.assert_alive()
        return all(http("GET", base + "/health", timeout=2)[0] == 200 for base in bases)

    wait_for(healthy, 20, 0.1, what="gateway /health 200 on every port", ignore=(OSError,))
    return proc, bases


#: these tests look at what reaches the broker, without a recorder: writes answer at the PUBACK (the durable
#: default, with the recorder's confirmation, is tested in test_read_round_trip_through_the_recorder)
BROKER_ACK = {"BESS_GATEWAY_WRITE_ACK": "broker"}


@pytest.fixture
def gateway(run_node: RunNode, services: Services, node_env: dict[str, str]) -> list[str]:
    return start_gateway(run_node, services, {**node_env, "BESS_GATEWAY_HISTORY_TIMEOUT_S": "1", **BROKER_ACK})[1]


def test_command_arrives_on_the_set_topic(
    gateway: list[str], services: Services, topic_root: str, battery_id: str
) -> None:
    request = {"command": "  discharge 50 kw ", "battery": battery_id}
    # a battery the gateway has never seen: 404, nothing published
    status, body = http_json("POST", gateway[0] + "/mqtt/publish", request)
    assert (status, body["field"]) == (404, "battery"), body
    # the device reports (retained telemetry, as the simulator does): now the gateway knows it
    with services.mqtt_client() as pub:
        pub.publish(TELEMETRY.name(root=topic_root, battery=battery_id),
                    TELEMETRY.encode(Telemetry(ts=datetime.now(UTC), soc_kwh=500)), qos=1, retain=True)
    wait_for(lambda: http_json("POST", gateway[0] + "/mqtt/publish", {**request, "command": "IDLE"})[0] == 202,
             10, 0.1, what="the gateway to learn the battery from its telemetry")
    with services.mqtt_client() as sub:
        sub.subscribe(COMMAND.filter(root=topic_root), qos=1)
        status, body = http_json("POST", gateway[0] + "/mqtt/publish", request)
        assert status == 202, body
        message = sub.receive(timeout=10)
    assert message is not None
    assert message.topic == f"{topic_root}/battery/{battery_id}/set"
    command = COMMAND.decode(message.payload)
    assert isinstance(command, Command)
    assert (command.action, command.power_kw, command.source) == ("discharge", 50.0, "gateway")
    assert command.command_id == body["message"]["command_id"]
    assert body["spec_known"] is False


def test_writes_on_both_ports_arrive_on_the_telemetry_topic(
    gateway: list[str], services: Services, topic_root: str, battery_id: str
) -> None:
    with services.mqtt_client() as sub:
        sub.subscribe(TELEMETRY.filter(root=topic_root, battery=battery_id), qos=1)
        status, body = http_json("POST", f"{gateway[0]}/write?battery={battery_id}", SEED)
        assert status == 202, body
        batch = [{**SEED, "timestamp": f"2025-01-16T10:0{i}:00Z", "SOC": 700 - i} for i in range(1, 4)]
        status, body = http_json("POST", f"{gateway[1]}/write?battery={battery_id}", batch)
        assert (status, body["count"]) == (202, 3)
        received = [sub.receive(timeout=10) for _ in range(4)]
    decoded = [TELEMETRY.decode(m.payload) for m in received if m is not None]
    assert all(isinstance(t, Telemetry) and t.source == "gateway" for t in decoded)
    assert sorted(t.soc_kwh for t in decoded) == [697.0, 698.0, 699.0, 700.0]


def test_spec_limits_from_a_retained_spec(
    run_node: RunNode, services: Services, node_env: dict[str, str], topic_root: str, battery_id: str
) -> None:
    spec = BatterySpec(capacity_kwh=500, soc_min_kwh=50, soc_max_kwh=450, max_charge_kw=100, max_discharge_kw=120)
    with services.mqtt_client() as pub:  # retained before the gateway starts: it gets it on subscribe
        pub.publish(SPEC.name(root=topic_root, battery=battery_id), SPEC.encode(spec), qos=1, retain=True)
    base = start_gateway(run_node, services, node_env)[1][0]
    wait_for(lambda: battery_id in http_json("GET", base + "/health")[1]["specs_known"], 10,
             what="the gateway to know the spec")
    status, body = http_json("POST", base + "/mqtt/publish", {"command": "DISCHARGE 121kW", "battery": battery_id})
    assert (status, body["field"]) == (422, "command")
    assert "max_discharge_kw of 120 kW" in body["error"]
    status, body = http_json("POST", base + "/mqtt/publish", {"command": "CHARGE 0.1 MW", "battery": battery_id})
    assert (status, body["spec_known"]) == (202, True)
    # a new retained spec replaces the old one while the gateway runs
    with services.mqtt_client() as pub:
        pub.publish(SPEC.name(root=topic_root, battery=battery_id),
                    SPEC.encode(BatterySpec(capacity_kwh=500, soc_min_kwh=0, soc_max_kwh=500, max_charge_kw=50,
                                            max_discharge_kw=200)), qos=1, retain=True)

    def refused() -> bool:
        return http_json("POST", base + "/mqtt/publish", {"command": "CHARGE 0.1 MW", "battery": battery_id})[0] == 422

    wait_for(refused, 10, 0.1, what="the new spec to apply")


def test_more_concurrent_publishes_than_the_brokers_receive_maximum(
    gateway: list[str], services: Services, topic_root: str, battery_id: str
) -> None:
    # The broker's CONNACK receive maximum caps unacknowledged QoS 1 messages per client (mosquitto: 20 by
    # default, max_inflight_messages in deploy/: 1000). A batch of 2,500 records is published concurrently,
    # plus 100 concurrent single writes: publishes must queue for packet ids, not fail.
    batch = [{**SEED, "timestamp": f"2025-01-16T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"}
             for i in range(2500)]

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as session:
            async def one(i: int, body: Any) -> int:
                async with session.post(f"{gateway[i % 2]}/write?battery={battery_id}", json=body) as response:
                    return response.status
            singles = [one(i, {**SEED, "SOC": i}) for i in range(100)]
            return await asyncio.gather(one(0, batch), *singles)

    with services.mqtt_client() as sub:
        sub.subscribe(TELEMETRY.filter(root=topic_root, battery=battery_id), qos=1)
        statuses = asyncio.run(burst())
        assert statuses == [202] * 101
        received = [m for _, m in zip(range(2600), sub.messages(timeout=5), strict=False)]
    assert len(received) == 2600


def test_broker_down_is_503_then_recovers(gateway: list[str], services: Services) -> None:
    base = gateway[0]
    services.stop_broker()
    wait_for(lambda: http("GET", base + "/health")[0] == 503, 15, 0.1, what="/health 503 while the broker is down")
    for path, body in (("/write", SEED), ("/mqtt/publish", {"command": "IDLE", "force": True})):
        status, answer = http_json("POST", base + path, body)
        assert status == 503, answer
        assert "broker unavailable" in answer["error"]
    status, answer = http_json("GET", base + "/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z")
    assert status == 503, answer
    services.start_broker()
    wait_for(lambda: http("GET", base + "/health")[0] == 200, 30, 0.1, what="/health 200 after the broker is back")
    assert http_json("POST", base + "/write", SEED)[0] == 202


def test_read_without_a_recorder_is_504(gateway: list[str]) -> None:
    status, body = http_json("GET", gateway[1] + "/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z")
    assert status == 504
    assert "recorder did not answer within 1 s" in body["error"]


def test_read_round_trip_through_the_recorder(
    run_node: RunNode, services: Services, node_env: dict[str, str], battery_id: str
) -> None:
    recorder = run_node("recorder")
    recorder.wait_online(services.mqtt_host, services.mqtt_port, node_env["BESS_TOPIC_ROOT"])
    base = start_gateway(run_node, services, node_env)[1][0]
    records = [{**SEED, "timestamp": f"2025-01-16T10:{m:02d}:30Z", "SOC": 700 - m, "battery": battery_id}
               for m in range(10)]
    status, answer = http_json("POST", base + "/write", records)
    assert (status, answer["status"], answer["stored"], answer["unconfirmed"]) == (200, "stored", 10, [])
    # 200 means the recorder confirmed every record in InfluxDB: they are there now, no waiting
    read = f"{base}/read?battery={battery_id}&begin=2025-01-16T10:00:00Z&end=2025-01-16T11:00:00Z"
    status, body = http_json("GET", read)
    assert status == 200
    assert body == [{k: v for k, v in r.items() if k != "battery"} for r in records]
    rows = services.influx_rows(node_env["BESS_INFLUX_DB"], f"SELECT soc_kwh FROM telemetry WHERE battery = "
                                f"'{battery_id}'")
    assert [row["soc_kwh"] for row in rows] == [700 - m for m in range(10)]
    status, headers, csv = http("GET", read + "&format=csv&every=5m")
    assert (status, headers["Content-Type"]) == (200, "text/csv; charset=utf-8")
    assert csv.decode().splitlines() == [
        "timestamp,SOC,target_charge,target_discharge,power_kw",
        "2025-01-16T10:00:00Z,698.0,100.0,50.0,",  # mean of 700..696
        "2025-01-16T10:05:00Z,693.0,100.0,50.0,",
    ]
    status, body = http_json("GET", read + "&limit=3")
    assert (status, [r["SOC"] for r in body]) == (200, [700, 699, 698])


def test_durable_write_without_a_recorder_is_202_not_confirmed(
    run_node: RunNode, services: Services, node_env: dict[str, str], battery_id: str
) -> None:
    base = start_gateway(run_node, services, {**node_env, "BESS_GATEWAY_WRITE_STORED_TIMEOUT_S": "0.5"})[1][0]
    status, body = http_json("POST", f"{base}/write?battery={battery_id}", [SEED, {**SEED, "SOC": 1}])
    assert (status, body["status"], body["ack"], body["stored"], body["unconfirmed"]) == (
        202, "accepted", "stored", 0, [0, 1])
    assert "not confirmed stored within 0.5 s" in body["note"]
    status, body = http_json("POST", f"{base}/write?battery={battery_id}&ack=broker", SEED)
    assert (status, body["ack"], body["unconfirmed"]) == (202, "broker", None)


def test_token_protects_writes_and_reads(run_node: RunNode, services: Services, node_env: dict[str, str]) -> None:
    env = {**node_env, "BESS_GATEWAY_TOKEN": "t0ken", "BESS_GATEWAY_HISTORY_TIMEOUT_S": "1", **BROKER_ACK}
    base = start_gateway(run_node, services, env)[1][0]
    assert http_json("POST", base + "/write", SEED)[0] == 401
    assert http_json("POST", base + "/write", SEED, headers={"Authorization": "Bearer t0ken"})[0] == 202
    read = base + "/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z"
    assert http_json("GET", read)[0] == 401
    assert http_json("GET", base + "/control")[0] == 401
    # with the token the read goes through to the recorder (none runs here: 504, not 401)
    assert http_json("GET", read, headers={"Authorization": "Bearer t0ken"})[0] == 504
    assert http_json("GET", base + "/control", headers={"Authorization": "Bearer t0ken"})[0] == 200
    assert http("GET", base + "/health")[0] == 200
    assert http("GET", base + "/openapi.json")[0] == 200


def test_a_separate_read_token(run_node: RunNode, services: Services, node_env: dict[str, str]) -> None:
    env = {**node_env, "BESS_GATEWAY_TOKEN": "w", "BESS_GATEWAY_READ_TOKEN": "r", "BESS_GATEWAY_HISTORY_TIMEOUT_S": "1"}
    base = start_gateway(run_node, services, env)[1][0]
    read = base + "/read?begin=2025-01-16T09:00:00Z&end=2025-01-16T11:00:00Z"
    assert http_json("GET", read, headers={"Authorization": "Bearer r"})[0] == 504
    assert http_json("POST", base + "/write", SEED, headers={"Authorization": "Bearer r"})[0] == 401


def test_port_in_use_exits_1_and_clean_stop_says_offline(
    run_node: RunNode, services: Services, node_env: dict[str, str], topic_root: str
) -> None:
    first, _ = start_gateway(run_node, services, node_env)
    # a second gateway on the same ports cannot listen: exit status 1 with one clear line
    second = run_node("gateway", {**node_env, "BESS_NODE_ID": "gateway-2"})
    assert second.wait(20) == 1
    assert "cannot listen on 127.0.0.1:" in second.log_text()
    assert first.stop() == 0
    topic = f"{topic_root}/node/gateway/status"
    assert json.loads(services.read_retained(topic)[topic])["state"] == "offline"


def test_tls_listener(run_node: RunNode, services: Services, node_env: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=True,
    )
    env = {**node_env, "BESS_GATEWAY_TLS_CERT": str(cert), "BESS_GATEWAY_TLS_KEY": str(key), **BROKER_ACK}
    proc = run_node("gateway", env)
    proc.wait_online(services.mqtt_host, services.mqtt_port, env["BESS_TOPIC_ROOT"])
    port = env["BESS_GATEWAY_PORTS"].split(",")[0]
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    request = urllib.request.Request(f"https://127.0.0.1:{port}/write", data=json.dumps(SEED).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        assert response.status == 202
    assert "https://127.0.0.1:" in proc.log_text()
