"""The broker ACL of deploy/auth.py: least privilege per node, devices scoped to their own battery.

Pure: the ACL text is parsed here and evaluated with MQTT topic matching (the way mosquitto checks a concrete
topic at publish and at delivery time), so these tests judge the file mosquitto would load, not the helper
structures behind it. tests/integration/test_broker_auth.py proves the same against a real broker.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pwd
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from deploy import accounts, auth, stack
from nodes.contract import discovery, names, topics
from nodes.contract.access import AccessError, load_access
from nodes.contract.names import Role
from nodes.contract.topics import ALL_TOPICS, Topic

ROOT = "bess/v1"
REPO = Path(__file__).resolve().parents[2]
DEVICES = ["dev-a", "dev-b"]


def parse_acl(text: str) -> dict[str, list[tuple[str, str]]]:
    """``{user: [(access, filter), ...]}`` from a mosquitto ACL file (only `user` and `topic` lines)."""
    acl: dict[str, list[tuple[str, str]]] = defaultdict(list)
    user: str | None = None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
        elif words[0] == "topic":
            assert user is not None, f"topic line before any user line: {line!r}"
            assert len(words) == 3, f"topic line without an explicit access: {line!r}"
            acl[user].append((words[1], words[2]))
        else:
            raise AssertionError(f"unexpected ACL line {line!r} (no `pattern` lines are used)")
    return dict(acl)


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a concrete topic against a filter; wildcards never match a leading ``$`` level."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels) or (level != "+" and level != t_levels[index]):
            return False
    return len(f_levels) == len(t_levels)


class Acl:
    """``allowed(user, "read"|"write", topic)`` over a parsed ACL file."""

    def __init__(self, text: str) -> None:
        self.users = parse_acl(text)

    def allowed(self, user: str, access: str, topic: str) -> bool:
        return any(
            matches(topic_filter, topic) and granted in (access, "readwrite")
            for granted, topic_filter in self.users.get(user, [])
        )


@pytest.fixture(scope="module")
def acl() -> Acl:
    return Acl(auth.acl_text(ROOT, DEVICES))


def t(path: str) -> str:
    return f"{ROOT}/{path}"


# -- the contract as deploy/auth.py reads it ---------------------------------------------------------------------


def test_contract_read_without_import_equals_all_topics() -> None:
    read = auth.contract_topics()
    everything = (*ALL_TOPICS, *discovery.ALL_EXTERNAL_TOPICS)
    assert [(d.path, d.producers, d.consumers) for d in read] == [
        (topic.path, topic.producers, topic.consumers) for topic in everything
    ]
    for decl in read:  # each name is the module attribute of the same topic
        module = topics if decl.prefix_setting is None else discovery
        assert getattr(module, decl.name).path == decl.path
    outside = {decl.name: (decl.prefix_setting, decl.default_prefix) for decl in read if decl.prefix_setting}
    assert outside == dict.fromkeys(("HA_CONFIG", "HA_STATUS"), ("BESS_HA_DISCOVERY_PREFIX", "homeassistant"))


def test_id_and_root_rules_equal_the_contract() -> None:
    # one definition (nodes/contract/names.py), not copies kept equal
    assert auth.id_problems is names.id_problems is topics.id_problems
    assert auth.root_problems is names.root_problems
    assert auth.check_devices(["b-1"]) == ["b-1"]
    with pytest.raises(auth.AuthError, match=re.escape(names.ID_RULE)):
        auth.check_devices(["B 1"])


def test_every_node_deploy_up_starts_has_a_user() -> None:
    assert auth.NODE_USERS == stack.NODE_NAMES == names.NODE_NAMES, "one node list, in start order"


def test_every_contract_role_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    for topic in ALL_TOPICS:
        auth.roles_of((*topic.producers, *topic.consumers))  # raises AuthError for a role nobody taught auth.py
    assert auth.roles_of((Role.DEVICE, Role.SIMULATOR)) == {"device", "simulator"}
    assert auth.roles_of((Role.ANYONE,)) == frozenset()
    assert set(Role) == auth.KNOWN_ROLES
    monkeypatch.setattr(auth, "KNOWN_ROLES", auth.KNOWN_ROLES - {Role.ANYONE})  # as if ANYONE were new
    with pytest.raises(auth.AuthError, match="anyone"):
        auth.acl_text(ROOT, DEVICES)


def test_roles_are_values_not_prose() -> None:
    """Rewording a producer in prose cannot change the ACL: a Topic refuses anything but a Role."""
    with pytest.raises(TypeError, match="Role"):
        dataclasses.replace(topics.TELEMETRY, producers=("device (simulator)",))  # type: ignore[arg-type]


def test_access_file_refuses_an_unknown_role(tmp_path: Path) -> None:
    entry = {"name": "X", "path": "x/{battery}", "producers": ["the accountant"], "consumers": []}
    path = tmp_path / "access.json"
    path.write_text(json.dumps({"topics": [entry]}))
    with pytest.raises(AccessError, match="the accountant"):
        load_access(path)
    path.write_text("{")
    with pytest.raises(AccessError, match=re.escape("python -m nodes.contract")):
        load_access(path)


def test_deploy_runs_without_the_virtualenvs_packages() -> None:
    """deploy/stack.py and deploy/auth.py (and the contract modules they read) need the standard library only:
    with site-packages off (-S) and the environment ignored (-I), the ACL is still built and msgspec stays out."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from deploy import auth, stack; "
        "text = auth.acl_text('bess/v1', ['battery-1']); "
        "assert 'msgspec' not in sys.modules, sorted(sys.modules); "
        "print(len(text), ' '.join(stack.NODE_NAMES))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(REPO)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1)[1].strip() == " ".join(names.NODE_NAMES)
    usage = subprocess.run(
        [sys.executable, "-I", "-S", str(REPO / "deploy" / "stack.py"), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (usage.returncode, usage.stdout.split()[0]) == (0, "usage:"), usage.stderr


# -- each node: exactly the grants its topics need ---------------------------------------------------------------

EXPECTED: dict[str, dict[str, str]] = {
    "recorder": {
        t("battery/+/telemetry"): "read",
        t("battery/+/set"): "read",
        t("battery/+/state"): "read",
        t("battery/+/schedule"): "read",
        t("battery/+/control"): "read",
        t("market/+/prices"): "read",
        t("battery/+/alarm/+"): "read",
        t("battery/+/kpi/day"): "read",
        t("history/request"): "read",
        t("history/response/+"): "write",
        t("stored/+"): "write",
        t("battery/+/stored"): "write",
        t("node/recorder/status"): "readwrite",
    },
    "gateway": {
        t("battery/+/telemetry"): "readwrite",
        t("battery/+/state"): "read",
        t("battery/+/set"): "write",
        t("market/+/prices"): "write",
        t("history/request"): "write",
        t("battery/+/spec"): "read",
        t("battery/+/control"): "readwrite",
        t("history/response/gateway"): "read",
        t("stored/gateway"): "read",
        t("battery/+/request/mode"): "read",
        t("battery/+/request/power"): "read",
        t("battery/+/request/result"): "write",
        t("node/gateway/status"): "readwrite",
    },
    "planner": {
        t("market/+/prices"): "read",
        t("battery/+/spec"): "read",
        t("battery/+/telemetry"): "read",
        t("battery/+/control"): "read",
        t("battery/+/request/replan"): "read",
        t("battery/+/schedule"): "write",
        t("battery/+/set"): "write",
        t("node/planner/status"): "readwrite",
    },
    "homeassistant": {
        t("battery/+/telemetry"): "read",
        t("battery/+/spec"): "read",
        t("battery/+/control"): "read",
        t("battery/+/schedule"): "read",
        t("market/+/prices"): "read",
        t("node/+/status"): "read",
        "homeassistant/status": "read",
        t("battery/+/outlook"): "write",
        "homeassistant/+/+/+/config": "write",
        t("node/homeassistant/status"): "readwrite",
    },
    "renderer": {
        t("battery/#"): "read",
        t("market/+/prices"): "read",
        t("node/+/status"): "read",
        t("history/response/renderer"): "read",
        t("battery/+/figure/+"): "write",
        t("battery/+/revenue"): "write",
        t("battery/+/kpi/day"): "write",
        # the dashboard's control panel: the same request topics as Home Assistant's controls
        t("battery/+/request/mode"): "write",
        t("battery/+/request/power"): "write",
        t("battery/+/request/replan"): "write",
        t("history/request"): "write",
        t("node/renderer/status"): "readwrite",
    },
    "market": {
        t("market/+/prices"): "write",
        t("node/market/status"): "readwrite",
    },
    "alarms": {
        t("battery/+/telemetry"): "read",
        t("battery/+/spec"): "read",
        t("battery/+/set"): "read",
        t("market/+/prices"): "read",
        t("node/+/status"): "read",
        t("battery/+/alarm/+"): "readwrite",
        t("node/alarms/status"): "readwrite",
    },
    "simulator": {
        t("battery/+/telemetry"): "readwrite",
        t("battery/+/state"): "write",
        t("battery/+/spec"): "write",
        t("battery/+/set"): "read",
        t("battery/+/stored"): "read",
        t("stored/simulator"): "read",
        t("node/simulator/status"): "readwrite",
    },
}


@pytest.mark.parametrize("node", auth.NODE_USERS)
def test_node_grants_are_exactly_what_its_topics_need(node: str) -> None:
    lines = parse_acl(auth.acl_text(ROOT, DEVICES))[node]
    assert len(lines) == len({f for _, f in lines}), f"{node}: a filter is listed twice: {lines}"
    assert {f: access for access, f in lines} == EXPECTED[node]


def _example(topic: Topic[Any], **override: str) -> str:
    return topic.name(root=ROOT, **{**topic.example_params, **override})


def _adjusted(node: str, access: str, topic: Topic[Any]) -> bool | None:
    """True/False where deploy/auth.py deliberately differs from the contract for ``node``, else None."""
    name = next(n for n in dir(topics) if getattr(topics, n) is topic)
    if any(a.role == node and a.access == access and a.target == name for a in auth.ADDED):
        return True
    if any(a.role == node and a.access == access and a.target == name for a in auth.WITHHELD):
        return False
    if node == "renderer" and access == "read" and topic.path.startswith("battery/"):
        return True  # ADDED: battery/#
    return None


@pytest.mark.parametrize("node", auth.NODE_USERS)
def test_node_may_write_what_it_produces_and_read_what_it_consumes_and_nothing_else(acl: Acl, node: str) -> None:
    for topic in ALL_TOPICS:
        if topic is topics.STATUS:
            continue  # below: own status only
        producers = auth.roles_of(topic.producers)
        consumers = auth.roles_of(topic.consumers)
        if topic in (topics.HISTORY_RESPONSE, topics.STORED_RESPONSE):
            request = topics.HISTORY_REQUEST if topic is topics.HISTORY_RESPONSE else topics.TELEMETRY
            asked = node in auth.roles_of(request.producers)
            own, other = _example(topic, client=node), _example(topic, client="someone-else")
            assert acl.allowed(node, "read", own) is asked, f"{node} read {own}"
            assert not acl.allowed(node, "read", other), f"{node} must not read another client's answers"
            assert acl.allowed(node, "write", other) is (node in producers)
            continue
        topic_name = _example(topic)
        for access, roles in (("write", producers), ("read", consumers)):
            adjusted = _adjusted(node, access, topic)
            expected = (node in roles) if adjusted is None else adjusted
            assert acl.allowed(node, access, topic_name) is expected, f"{node} {access} {topic_name}"


def test_no_node_may_write_another_nodes_status(acl: Acl) -> None:
    for writer, owner in itertools.product(auth.NODE_USERS, repeat=2):
        status = topics.STATUS.name(root=ROOT, node=owner)
        assert acl.allowed(writer, "write", status) is (writer == owner), f"{writer} writes {status}"
    for user in [*DEVICES, *auth.READ_ONLY_USERS]:
        for owner in auth.NODE_USERS:
            assert not acl.allowed(user, "write", topics.STATUS.name(root=ROOT, node=owner))


def test_only_the_status_readers_of_the_contract_read_every_status(acl: Acl) -> None:
    """The renderer (status strip), the alarms node (node_offline/node_degraded, plan_infeasible from the
    planner's details), the homeassistant node (connectivity sensors), Home Assistant (availability) and the
    read-only users."""
    status = topics.STATUS.name(root=ROOT, node="recorder")
    users = [*auth.NODE_USERS, *DEVICES, auth.HASS_USER, *auth.READ_ONLY_USERS]
    readers = {user for user in users if acl.allowed(user, "read", status)}
    assert readers == {
        "recorder", "renderer", "alarms", "homeassistant", auth.HASS_USER, auth.MONITOR_USER, auth.PROBE_USER
    }


def test_home_assistant_reads_what_its_entities_show_and_writes_only_its_controls(acl: Acl) -> None:
    hass = auth.HASS_USER
    for readable in (topics.TELEMETRY, topics.STATE, topics.SCHEDULE, topics.OUTLOOK, topics.REVENUE,
                     topics.REQUEST_RESULT, topics.STATUS, topics.ALARM):
        assert acl.allowed(hass, "read", _example(readable)), readable.path
    for request in (topics.MODE_REQUEST, topics.POWER_REQUEST, topics.REPLAN_REQUEST):
        assert acl.allowed(hass, "write", _example(request)), request.path
    assert acl.allowed(hass, "read", "homeassistant/sensor/battery-1/soc_kwh/config")
    assert acl.allowed(hass, "write", "homeassistant/status")
    assert not acl.allowed(hass, "write", "homeassistant/sensor/battery-1/soc_kwh/config"), "configs are ours"
    for forbidden in (topics.COMMAND, topics.CONTROL, topics.SPEC, topics.TELEMETRY, topics.PRICES, topics.SCHEDULE):
        assert not acl.allowed(hass, "write", _example(forbidden)), f"Home Assistant writes {forbidden.path}"
    assert not acl.allowed(hass, "read", _example(topics.COMMAND)), "it needs no commands"
    assert not acl.allowed(hass, "read", "$SYS/broker/version")


# -- devices: only their own battery ------------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "other"), [("dev-a", "dev-b"), ("dev-b", "dev-a")])
def test_device_is_scoped_to_its_own_battery(acl: Acl, device: str, other: str) -> None:
    def topic(template: Topic[Any], battery: str) -> str:
        return _example(template, battery=battery)

    for own in (topics.TELEMETRY, topics.STATE, topics.SPEC):
        assert acl.allowed(device, "write", topic(own, device))
        assert not acl.allowed(device, "write", topic(own, other))
    assert acl.allowed(device, "read", topic(topics.COMMAND, device))
    assert acl.allowed(device, "read", topic(topics.TELEMETRY, device))  # to resume after a restart
    assert acl.allowed(device, "read", topic(topics.STORED, device))  # its own stored confirmations
    assert not acl.allowed(device, "read", topic(topics.STORED, other))
    assert not acl.allowed(device, "write", topic(topics.STORED, device)), "only the recorder confirms"
    for battery in (device, other):
        assert not acl.allowed(device, "write", topic(topics.COMMAND, battery)), "a device never sends commands"
        assert not acl.allowed(device, "write", topic(topics.SCHEDULE, battery))
        assert not acl.allowed(device, "write", topic(topics.FIGURE, battery))
    for theirs in (topics.COMMAND, topics.TELEMETRY, topics.STATE, topics.SPEC, topics.SCHEDULE):
        assert not acl.allowed(device, "read", topic(theirs, other)), f"{device} reads {theirs.path} of {other}"
    for foreign in (topics.PRICES, topics.HISTORY_REQUEST, topics.HISTORY_RESPONSE, topics.STATUS):
        name = _example(foreign)
        assert not acl.allowed(device, "read", name)
        assert not acl.allowed(device, "write", name)


def test_devices_get_explicit_user_blocks_and_every_line_stays_under_the_root() -> None:
    text = auth.acl_text("site-7/bess/v2", DEVICES, prefixes={"BESS_HA_DISCOVERY_PREFIX": "ha-site-7"})
    assert "pattern" not in [line.split()[0] for line in text.splitlines() if line.strip()]
    users = parse_acl(text)
    assert list(users) == [*auth.NODE_USERS, *DEVICES, auth.HASS_USER, auth.MONITOR_USER, auth.PROBE_USER]
    assert users[auth.PROBE_USER] == users[auth.MONITOR_USER], "deploy's probes see what an operator sees"
    # Home Assistant's discovery topics: under the configured prefix, for exactly its two users
    outside = {(user, access, f) for user, lines in users.items() for access, f in lines if f.startswith("ha-site-7/")}
    assert outside == {
        ("homeassistant", "write", "ha-site-7/+/+/+/config"),
        ("homeassistant", "read", "ha-site-7/status"),
        (auth.HASS_USER, "read", "ha-site-7/#"),
        (auth.HASS_USER, "write", "ha-site-7/status"),
    }
    for user, lines in users.items():
        for access, topic_filter in lines:
            if user in auth.READ_ONLY_USERS and not topic_filter.startswith("site-7/"):
                assert (access, topic_filter) in {("read", "$SYS/#"), ("readwrite", "bess-probe/#")}
                continue
            if topic_filter.startswith("ha-site-7/"):
                continue
            assert topic_filter.startswith("site-7/bess/v2/"), f"{user}: {topic_filter}"
            if access != "read":
                assert "#" not in topic_filter, f"{user} may write a whole subtree: {topic_filter}"


def test_no_node_or_device_reads_sys_but_the_monitor_does(acl: Acl) -> None:
    for user in [*auth.NODE_USERS, *DEVICES]:
        assert not acl.allowed(user, "read", "$SYS/broker/version")
    assert acl.allowed(auth.MONITOR_USER, "read", "$SYS/broker/version")
    assert acl.allowed(auth.MONITOR_USER, "read", t("battery/dev-a/set"))
    assert not acl.allowed(auth.MONITOR_USER, "write", t("battery/dev-a/set"))


@pytest.mark.parametrize(
    "devices",
    [["Dev-A"], ["dev/a"], ["dev+"], ["#"], [""], ["recorder"], [auth.MONITOR_USER], [auth.PROBE_USER],
     [auth.HASS_USER], ["homeassistant"], ["dev-a", "dev-a"]],
)
def test_bad_device_ids_are_refused(devices: list[str]) -> None:
    with pytest.raises(auth.AuthError):
        auth.acl_text(ROOT, devices)


@pytest.mark.parametrize("root", ["", "bess/#", "bess/+/v1", "/bess", "bess/v1/", "$SYS"])
def test_bad_roots_are_refused(root: str) -> None:
    with pytest.raises(auth.AuthError):
        auth.acl_text(root, DEVICES)


def test_acl_text_is_deterministic() -> None:
    assert auth.acl_text(ROOT, DEVICES) == auth.acl_text(ROOT, list(DEVICES))


# -- deploy/stack.py: config and settings ------------------------------------------------------------------------


def test_mosquitto_config_with_and_without_auth() -> None:
    plain = stack.Mosquitto(base_dir=Path("/tmp/bess-x/mq"), port=1883).config_text()
    assert "allow_anonymous true" in plain.splitlines()
    assert "password_file" not in plain
    assert "acl_file" not in plain
    secured = stack.Mosquitto(
        base_dir=Path("/tmp/bess-x/mq"),
        port=1883,
        password_file=Path("/tmp/bess-x/mqtt-auth/passwd"),
        acl_file=Path("/tmp/bess-x/mqtt-auth/acl"),
    ).config_text()
    lines = secured.splitlines()
    assert "allow_anonymous false" in lines
    assert "allow_anonymous true" not in lines
    # the broker's own copies, which it can read after dropping privileges (var/mqtt-auth/ stays root's alone)
    assert "password_file /tmp/bess-x/mq/passwd" in lines
    assert "acl_file /tmp/bess-x/mq/acl" in lines


def test_mosquitto_drops_to_its_account_only_when_started_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    account = stack.Account("mosquitto", 103, 106)
    broker = stack.Mosquitto(base_dir=Path("/tmp/bess-x/mq"), port=1883, account=account)
    monkeypatch.setattr(accounts, "running_as_root", lambda: True)
    assert "user mosquitto" in broker.config_text().splitlines()
    assert broker.log_owner == account, "it opens its log after dropping privileges: the log must be its own"
    me = pwd.getpwuid(os.geteuid()).pw_name
    without = stack.Mosquitto(base_dir=Path("/tmp/bess-x/mq"), port=1883)
    assert f"user {me}" in without.config_text().splitlines()
    monkeypatch.setattr(accounts, "running_as_root", lambda: False)
    assert f"user {me}" in broker.config_text().splitlines(), "not root: it runs as whoever starts it"
    assert broker.log_owner is None


def test_influxd_authentication_follows_secure_mode() -> None:
    root = Path("/repo")
    for environ, expected in (({}, "false"), ({"BESS_MQTT_AUTH": "1"}, "true")):
        cfg = stack.UpConfig.from_env(root, environ)
        assert cfg.secure is (expected == "true")
        http = cfg.influxd().config_text().split("[http]", 1)[1].split("[", 1)[0]
        assert f"auth-enabled = {expected}" in [line.strip() for line in http.splitlines()]


def test_up_config_reads_auth_settings() -> None:
    root = Path("/repo")
    assert stack.UpConfig.from_env(root, {}).mqtt_auth is False
    assert stack.UpConfig.from_env(root, {}).batteries == ("battery-1",)
    cfg = stack.UpConfig.from_env(root, {"BESS_MQTT_AUTH": "1", "BESS_BATTERIES": "a, b ,c"})
    assert cfg.mqtt_auth is True
    assert cfg.batteries == ("a", "b", "c")
    assert stack.UpConfig.from_env(root, {"BESS_MQTT_AUTH": "0"}).mqtt_auth is False
    with pytest.raises(stack.StackError, match="BESS_MQTT_AUTH"):
        stack.UpConfig.from_env(root, {"BESS_MQTT_AUTH": "maybe"})
    assert stack.UpConfig.from_env(root, {"BESS_BATTERIES": " , "}).batteries == ("battery-1",)
