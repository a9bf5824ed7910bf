"""Broker authentication against a real mosquitto: credentials and ACL from deploy/auth.py, broker from
deploy/stack.py (a separate broker in tmp_path; the session broker of the ``services`` fixture stays anonymous).

Mosquitto does not report ACL denials to the client: a denied PUBLISH is acknowledged and dropped, a denied
SUBSCRIBE is granted and then delivers nothing. So every "cannot" below is proved by what ARRIVES: the forbidden
messages are published first, each waiting for the broker's PUBACK (so the broker has handled it), then an
allowed sentinel; once the sentinel arrives, a forbidden message that had been let through would have arrived
before it.

One more mosquitto 2.0.11 quirk: with ``max_queued_messages 0`` (unlimited, as deploy/stack.py configures it)
the broker also CLOSES a client's connection right after PUBACKing a denied QoS 1 publish (its queue-quota check
misfires on the limit 0). That is why every publish here uses a connection of its own (:func:`publish_as`).

The broker binds client ids to users (``use_username_as_clientid``): one user is one connection, and a second
login of the same user replaces the first. So a user that is already connected in a test publishes on that
connection, never through :func:`publish_as`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deploy import auth, stack
from nodes.contract.messages import Telemetry
from nodes.contract.topics import TELEMETRY
from nodes.runtime.bus import Bus, Delivery, MqttSettings, PublishRefused
from tests.support.nodes import NodeProcess, start_node
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

DEVICES = ["dev-a", "dev-b"]


@dataclass
class AuthBroker:
    """A mosquitto that refuses anonymous clients, with the ACL for ``root`` and devices dev-a, dev-b."""

    broker: stack.Mosquitto
    credentials: auth.Credentials
    root: str

    def topic(self, path: str) -> str:
        return f"{self.root}/{path}"

    def client(self, user: str, password: str | None = None) -> stack.MiniMqtt:
        """A connected MQTT 3.1.1 client logged in as ``user`` (with its own password unless one is given)."""
        secret = self.credentials.password(user) if password is None else password
        return stack.MiniMqtt(self.broker.host, self.broker.port, username=user, password=secret, timeout=5.0)


@pytest.fixture
def auth_broker(tmp_path: Path, topic_root: str) -> Iterator[AuthBroker]:
    credentials = auth.ensure_credentials(tmp_path / "var", topic_root, DEVICES)
    broker = stack.start_mosquitto(
        tmp_path / "mosquitto",
        password_file=credentials.password_file,
        acl_file=credentials.acl_file,
        probe_login=credentials.login(auth.PROBE_USER),
        die_with_parent=True,
    )
    try:
        yield AuthBroker(broker, credentials, topic_root)
    finally:
        broker.stop()


def publish_as(b: AuthBroker, user: str, path: str, payload: bytes, *, denied: bool = False) -> None:
    """Publish at QoS 1 as ``user`` on a fresh connection; return once the broker has handled the message.

    For an allowed message that is its PUBACK. For a ``denied`` one the broker may close the connection right
    after (see the module docstring); either way it has processed the PUBLISH by then.
    """
    client = b.client(user)
    try:
        client.publish(b.topic(path), payload, qos=1)
    except (OSError, stack.MqttError):
        if not denied:
            raise
    finally:
        client.close()


def receive_until(client: stack.MiniMqtt, sentinel: str, timeout: float = 5.0) -> list[str]:
    """Topics of every message received up to and including the first one on ``sentinel``."""
    topics: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        message = client.receive(max(0.0, deadline - time.monotonic()))
        if message is None:
            raise AssertionError(f"the sentinel on {sentinel} never arrived; received {topics}")
        topics.append(message.topic)
        if message.topic == sentinel:
            return topics


def telemetry(source: str = "device") -> bytes:
    return json.dumps(
        {"ts": "2025-01-16T10:00:00Z", "soc_kwh": 700.0, "power_kw": -50.0, "target_charge_kw": 100.0,
         "target_discharge_kw": 50.0, "source": source}
    ).encode()


# -- credentials on disk ------------------------------------------------------------------------------------------


def test_credentials_are_private_hashed_for_mosquitto_and_reused(tmp_path: Path) -> None:
    var = tmp_path / "var"
    first = auth.ensure_credentials(var, "bess/v1", DEVICES)
    directory = var / "mqtt-auth"
    assert first.directory == directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in (first.credentials_file, first.password_file, first.acl_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(os.listdir(directory)) == ["acl", "credentials.json", "passwd"]  # no temporary file left

    users = [*auth.NODE_USERS, *DEVICES, auth.HASS_USER, *auth.READ_ONLY_USERS]
    assert set(first.passwords) == set(users)
    assert len(set(first.passwords.values())) == len(users), "every user has its own password"
    hashed = dict(line.split(":", 1) for line in first.password_file.read_text().splitlines())
    assert set(hashed) == set(users)
    for user, value in hashed.items():
        assert value.startswith("$7$"), f"{user}: not a mosquitto PBKDF2 hash"
        assert first.passwords[user] not in first.password_file.read_text()

    again = auth.ensure_credentials(var, "bess/v1", [*DEVICES, "dev-c"])
    assert {u: again.passwords[u] for u in users} == dict(first.passwords), "passwords are reused"
    fewer = auth.ensure_credentials(var, "bess/v1", ["dev-a"])
    passwd_users = {line.split(":", 1)[0] for line in fewer.password_file.read_text().splitlines()}
    assert "dev-b" not in passwd_users, "a battery no longer configured loses its broker access"
    assert "user dev-b" not in fewer.acl_file.read_text()
    assert auth.ensure_credentials(var, "bess/v1", DEVICES).password("dev-b") == first.password("dev-b")


# -- who may connect ----------------------------------------------------------------------------------------------


def test_anonymous_unknown_users_and_wrong_passwords_are_refused(auth_broker: AuthBroker) -> None:
    host, port = auth_broker.broker.host, auth_broker.broker.port
    assert stack.mqtt_connack(host, port) == 5  # anonymous: not authorised
    assert stack.mqtt_connack(host, port, username="recorder", password="wrong") in (4, 5)
    assert stack.mqtt_connack(host, port, username="nobody", password="x") in (4, 5)
    assert stack.mqtt_connack(host, port, username="dev-a", password=auth_broker.credentials.password("dev-b")) in (
        4,
        5,
    )
    with pytest.raises(stack.MqttRefused):
        auth_broker.client("gateway", "wrong")
    auth_broker.client("gateway").close()  # the right password is accepted

    base = ["mosquitto_sub", "-h", host, "-p", str(port), "-t", "$SYS/broker/version", "-C", "1", "-W", "5"]
    anonymous = subprocess.run(base, capture_output=True, text=True, timeout=10, check=False)
    assert anonymous.returncode != 0
    assert "not authori" in (anonymous.stdout + anonymous.stderr).lower()
    monitor = auth_broker.credentials.login(auth.MONITOR_USER)
    watched = subprocess.run(
        [*base, "-u", monitor[0], "-P", monitor[1]], capture_output=True, text=True, timeout=10, check=False
    )
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.startswith("mosquitto version"), "the readiness probe's $SYS read works with auth"


# -- devices: only their own battery ------------------------------------------------------------------------------


def test_device_publishes_only_its_own_telemetry_state_and_spec(auth_broker: AuthBroker) -> None:
    b = auth_broker
    with b.client("recorder") as recorder:
        recorder.subscribe([b.topic(p) for p in ("battery/+/telemetry", "battery/+/set", "battery/+/state",
                                                  "battery/+/schedule", "market/+/prices", "history/request")], qos=1)
        forbidden: Sequence[str] = (
            "battery/dev-b/telemetry",  # another device's battery
            "battery/dev-b/state",
            "battery/dev-a/set",  # commands, even to itself
            "battery/dev-b/set",
            "battery/dev-a/schedule",
            "market/de-lu/prices",
            "history/request",
        )
        for path in forbidden:
            publish_as(b, "dev-a", path, b"{}", denied=True)
        publish_as(b, "dev-a", "battery/dev-a/telemetry", telemetry())
        sentinel = b.topic("battery/dev-a/telemetry")
        assert receive_until(recorder, sentinel) == [sentinel]


def test_device_reads_only_its_own_commands(auth_broker: AuthBroker) -> None:
    b = auth_broker
    with b.client("dev-a") as dev_a:
        dev_a.subscribe([b.topic("battery/+/set"), b.topic("battery/dev-b/set"), b.topic("battery/+/telemetry")],
                        qos=1)
        publish_as(b, "dev-b", "battery/dev-b/telemetry", telemetry())  # allowed for dev-b, not readable by dev-a
        publish_as(b, "gateway", "battery/dev-b/set", b'{"for": "dev-b"}')
        # its own: it may read it back (on its own connection: a second dev-a login would replace this one)
        dev_a.publish(b.topic("battery/dev-a/telemetry"), telemetry(), qos=1)
        publish_as(b, "gateway", "battery/dev-a/set", b'{"for": "dev-a"}')
        own = b.topic("battery/dev-a/set")
        assert receive_until(dev_a, own) == [b.topic("battery/dev-a/telemetry"), own]


def test_home_assistant_reads_its_discovery_and_writes_only_its_controls(auth_broker: AuthBroker) -> None:
    """The hass user: discovery configs (published by the homeassistant node, under the prefix, outside the root)
    and the values they point at; it may send its controls' requests, never a command or a config."""
    b = auth_broker
    config = "homeassistant/sensor/dev-a/soc_kwh/config"

    def publish_raw(user: str, topic: str, payload: bytes) -> None:
        client = b.client(user)
        with contextlib.suppress(OSError, stack.MqttError):  # a denied publish may close the connection
            client.publish(topic, payload, qos=1, retain=True)
        client.close()

    publish_raw("homeassistant", config, b'{"name": "SOC"}')
    publish_raw(auth.HASS_USER, config, b'{"name": "forged"}')  # denied: configs are the node's
    publish_raw("homeassistant", b.topic("battery/dev-a/set"), b"{}")  # denied: the node never commands
    publish_as(b, auth.HASS_USER, "battery/dev-a/set", b"{}", denied=True)  # denied: so does Home Assistant
    with b.client(auth.HASS_USER) as hass, b.client("gateway") as gateway:
        hass.subscribe(["homeassistant/#", b.topic("battery/+/telemetry"), b.topic("battery/+/set")], qos=1)
        gateway.subscribe([b.topic("battery/+/request/power")], qos=1)
        gateway.publish(b.topic("battery/dev-a/set"), b'{"from": "gateway"}', qos=1)
        publish_as(b, "dev-a", "battery/dev-a/telemetry", telemetry())
        request = b.topic("battery/dev-a/request/power")
        hass.publish(request, b'{"power_kw": 5}', qos=1)
        hass.publish("homeassistant/status", b"online", qos=1)
        assert receive_until(gateway, request) == [request]
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 5
        while not seen or seen[-1][0] != "homeassistant/status":
            message = hass.receive(max(0.0, deadline - time.monotonic()))
            assert message is not None, f"homeassistant/status never came back; got {seen}"
            seen.append((message.topic, message.payload))
    assert seen == [(config, b'{"name": "SOC"}'), (b.topic("battery/dev-a/telemetry"), telemetry()),
                    ("homeassistant/status", b"online")], "no command reached it, no forged config was kept"


def test_a_node_cannot_write_another_nodes_status(auth_broker: AuthBroker) -> None:
    b = auth_broker
    with b.client("renderer") as renderer:
        renderer.subscribe(b.topic("node/+/status"), qos=1)
        publish_as(b, "market", "node/recorder/status", b'{"node": "recorder", "state": "online"}', denied=True)
        publish_as(b, "planner", "node/gateway/status", b'{"node": "gateway", "state": "offline"}', denied=True)
        publish_as(b, "dev-a", "node/simulator/status", b'{"node": "simulator", "state": "online"}', denied=True)
        publish_as(b, "market", "node/market/status", b'{"node": "market", "state": "online"}')
        own = b.topic("node/market/status")
        assert receive_until(renderer, own) == [own]


# -- a real node process ------------------------------------------------------------------------------------------


def retained_as_renderer(b: AuthBroker, filters: Sequence[str]) -> dict[str, bytes]:
    """Retained messages under ``filters`` as the renderer sees them (its own status topic is the end marker:
    retained messages are sent on SUBSCRIBE, before the broker handles the later PUBLISH)."""
    marker = b.topic("node/renderer/status")
    with b.client("renderer") as renderer:
        renderer.subscribe([*filters, marker], qos=1)
        renderer.publish(marker, b'{"marker": true}', qos=1)  # not retained: gone once delivered
        found: dict[str, bytes] = {}
        deadline = time.monotonic() + 5.0
        while (message := renderer.receive(max(0.0, deadline - time.monotonic()))) is not None:
            if message.topic == marker and not message.retain:
                return found
            found[message.topic] = message.payload
    raise AssertionError("the renderer's end marker never came back")


def test_market_node_comes_online_with_its_credentials_but_not_with_a_wrong_password(
    auth_broker: AuthBroker, tmp_path: Path
) -> None:
    b = auth_broker
    env = {
        "BESS_MQTT_HOST": b.broker.host,
        "BESS_MQTT_PORT": str(b.broker.port),
        "BESS_TOPIC_ROOT": b.root,
        "BESS_MARKET_ZONE": "de-lu",
        "BESS_LOG_LEVEL": "INFO",
    }
    status, prices = b.topic("node/market/status"), b.topic("market/de-lu/prices")
    watched = [b.topic("node/+/status"), b.topic("market/+/prices")]
    procs: list[NodeProcess] = []
    try:
        wrong = start_node(
            "market", {**env, **b.credentials.node_env("market"), "BESS_MQTT_PASSWORD": "wrong"},
            log_dir=tmp_path / "wrong",
        )
        procs.append(wrong)
        # a refused login is permanent: the node says so in one line and exits 3 instead of retrying forever
        assert wrong.wait(20) == 3
        assert "refused the login of market" in wrong.log_text()
        assert "not authorized" in wrong.log_text().lower()
        seen = retained_as_renderer(b, watched)
        assert status not in seen
        assert prices not in seen

        right = start_node("market", {**env, **b.credentials.node_env("market")}, log_dir=tmp_path / "right")
        procs.append(right)

        def online() -> dict[str, bytes] | None:
            right.assert_alive()
            seen = retained_as_renderer(b, watched)
            state = json.loads(seen[status]).get("state") if status in seen else None
            return seen if state == "online" and prices in seen else None

        seen = wait_for(online, 15.0, 0.1, what="the market node online, read by the renderer user")
        assert json.loads(seen[status])["pid"] == right.pid
        assert json.loads(seen[prices])["zone"] == "de-lu"
        assert right.stop() == 0
        final = retained_as_renderer(b, watched)
        assert json.loads(final[status])["state"] == "offline", "its goodbye is allowed too"
    finally:
        for proc in procs:
            proc.stop()


async def test_a_publish_the_acl_denies_is_an_error_not_an_acknowledgement(auth_broker: AuthBroker) -> None:
    """mosquitto answers a denied MQTT 5 publish with PUBACK 0x87; the bus must not report it as delivered
    (the gateway would otherwise answer 202 for a message nobody receives)."""
    b = auth_broker
    user, password = b.credentials.login("dev-a")
    settings = MqttSettings(
        mqtt_host=b.broker.host, mqtt_port=b.broker.port, mqtt_username=user, mqtt_password=password,
        topic_root=b.root, node_id="dev-a-probe",
    )
    bus = Bus("dev-a-probe", settings)
    await bus.start()
    try:
        reading = Telemetry(ts=datetime.now(UTC), soc_kwh=1.0)
        await bus.publish(TELEMETRY, reading, wait_ack=True, battery="dev-a")  # its own battery: allowed
        with pytest.raises(PublishRefused, match="0x87"):
            await bus.publish(TELEMETRY, reading, wait_ack=True, battery="dev-b")
    finally:
        await bus.stop()


# -- client ids are bound to users: no session take-over ------------------------------------------------------


def numbered_telemetry(n: int) -> bytes:
    """Telemetry record ``n`` (its own timestamp and SOC, so each one is a distinct record)."""
    ts = datetime(2025, 1, 16, 10, tzinfo=UTC) + timedelta(seconds=n)
    return json.dumps({"ts": ts.isoformat(), "soc_kwh": float(n)}).encode()


async def test_a_device_cannot_take_over_the_recorders_client_id_or_session(auth_broker: AuthBroker) -> None:
    """The attack of issue 9 item 17: a device connects with its own valid login, the recorder's client id and a
    clean session. Without client ids bound to users, mosquitto hands the id to the device: the recorder is
    kicked off, and the clean session destroys the recorder's persistent one with whatever it held."""
    b = auth_broker
    user, password = b.credentials.login("recorder")
    settings = MqttSettings(
        mqtt_host=b.broker.host, mqtt_port=b.broker.port, mqtt_username=user, mqtt_password=password,
        topic_root=b.root, mqtt_reconnect_delay_s=0.2,
    )
    received: list[float] = []

    async def store(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        received.append(message.soc_kwh)

    recorder = Bus("recorder", settings)  # the client id the recorder node uses
    recorder.subscribe(TELEMETRY, store)
    await recorder.start()
    stopped = False
    try:
        assert recorder.client_id == f"{b.root.replace('/', '_')}-recorder"

        def attack() -> stack.MiniMqtt:
            secret = b.credentials.password("dev-a")
            return stack.MiniMqtt(b.broker.host, b.broker.port, client_id=recorder.client_id, clean_session=True,
                                  username="dev-a", password=secret, timeout=5.0)

        attacker = attack()
        try:
            # records published while the attack holds the recorder's client id still reach the recorder
            for n in range(20):
                attacker.publish(b.topic("battery/dev-a/telemetry"), numbered_telemetry(n), qos=1)
            await wait_for_async(lambda: len(received) >= 20, 10.0, 0.05, what="the 20 records at the recorder")
        finally:
            attacker.close()
        assert sorted(received) == [float(n) for n in range(20)]
        assert recorder.counters["reconnects"] == 0, "the recorder was disconnected by the device's login"
        assert recorder.connected.is_set()

        # its persistent session survives the attack too: records published while the recorder is away (and
        # the device logs in with its client id and a clean session again) wait in it
        await recorder.stop()
        stopped = True
        attacker = attack()
        try:
            for n in range(20, 30):
                attacker.publish(b.topic("battery/dev-a/telemetry"), numbered_telemetry(n), qos=1)
        finally:
            attacker.close()
        back = Bus("recorder", settings)
        back.subscribe(TELEMETRY, store)
        await back.start()
        try:
            await wait_for_async(lambda: len(received) >= 30, 10.0, 0.05, what="the 10 records kept in the session")
        finally:
            await back.stop()
        assert sorted(received) == [float(n) for n in range(30)]
    finally:
        if not stopped:
            await recorder.stop()


def test_stored_confirmations_pass_the_generated_acl(
    auth_broker: AuthBroker, services: Any, influx_db: str, tmp_path: Path
) -> None:
    """A durable POST /write answers 200 only if the recorder may write stored/<gateway> and the gateway may read
    it; a device gets its own marks on battery/<id>/stored. Under the ACL, as deploy/up runs it."""
    b = auth_broker
    env = {
        "BESS_MQTT_HOST": b.broker.host, "BESS_MQTT_PORT": str(b.broker.port), "BESS_TOPIC_ROOT": b.root,
        "BESS_INFLUX_URL": services.influx_url, "BESS_INFLUX_DB": influx_db,
        "BESS_GATEWAY_PORTS": str(stack.free_port()), "BESS_GATEWAY_WRITE_STORED_TIMEOUT_S": "5",
        "BESS_RECORDER_CONFIRM_INTERVAL_MS": "100",
    }
    procs = [start_node(name, {**env, **b.credentials.node_env(name)}, log_dir=tmp_path / name)
             for name in ("recorder", "gateway")]
    try:
        def online(name: str) -> bool:
            topic = b.topic(f"node/{name}/status")
            seen = retained_as_renderer(b, [topic])
            return topic in seen and json.loads(seen[topic]).get("state") == "online"

        for proc in procs:
            wait_for(lambda p=proc: p.assert_alive() or online(p.name), 20, 0.1, what=f"{proc.name} online")
        request = urllib.request.Request(
            f"http://127.0.0.1:{env['BESS_GATEWAY_PORTS']}/write?battery=dev-a", method="POST",
            data=b'{"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"}',
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=15) as response:
            body = json.loads(response.read())
            assert (response.status, body["status"]) == (200, "stored"), body

        with b.client("dev-a") as device:
            # one connection: client ids are bound to users, so a second login as dev-a would replace this one
            device.subscribe(b.topic("battery/dev-a/stored"), qos=1)
            device.publish(b.topic("battery/dev-a/telemetry"), telemetry(), qos=1)
            mark = device.receive(timeout=10)
        assert mark is not None
        assert mark.topic == b.topic("battery/dev-a/stored")
        assert json.loads(mark.payload)["ts"] == "2025-01-16T10:00:00Z"
    finally:
        for proc in procs:
            proc.stop()
