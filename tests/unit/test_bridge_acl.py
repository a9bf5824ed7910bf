"""The device bridge in secure mode: the ACL lines deploy/auth.py writes for each shipped profile (the bridge's user:
its battery's contract topics and exactly the profile's device topics; the device's user: its own dialect only;
nobody else sees the device), the checks that keep a profile's topics out of this project's tree and in one ACL
line, and ``python -m nodes.bridge acl``, deploy's way of asking for them.

Pure like tests/unit/test_auth_acl.py: the ACL text is parsed and evaluated with MQTT matching, the way mosquitto
checks a concrete topic; tests/integration/test_bridge_secure.py proves it against a real broker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import auth, bridge_access
from deploy.errors import SettingsError
from deploy.foreign_topics import foreign_filter_problems, intersects
from deploy.settings import UpConfig
from nodes.bridge.acl import BrokerTopics, broker_topics, covers
from nodes.bridge.config import BridgeConfig
from nodes.runtime.config import load
from tests.unit.test_auth_acl import Acl, parse_acl
from tests.unit.test_bridge_profile import GOOD, exit_line, write

ROOT = "bess/v1"
REPO = Path(__file__).resolve().parents[2]
SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5"}
PORTAL = "c0619ab1b2c3"
#: the settings of each shipped profile in these tests (the bridge stands for battery "home")
PROFILE_ENV: dict[str, dict[str, str]] = {
    "victron": {"BESS_BRIDGE_PORTAL_ID": PORTAL},
    "solarassistant": {"BESS_BRIDGE_VARS": "inverter=inverter_2"},
    "generic-json": {"BESS_BRIDGE_VARS": "prefix=home/battery"},
}


def bridge_env(profile: str, **extra: str) -> dict[str, str]:
    return {"BESS_BRIDGE_PROFILE": profile, "BESS_BRIDGE_BATTERY": "home", **SPEC_ENV, **PROFILE_ENV[profile],
            **extra}


def topics_of(profile: str, **extra: str) -> BrokerTopics:
    return broker_topics(load(BridgeConfig, bridge_env(profile, **extra)).device().bound)


def access(profile: str, device_user: str = "home", **extra: str) -> auth.BridgeAccess:
    """What deploy/up builds from ``python -m nodes.bridge acl`` (here from the same function, in-process)."""
    found = topics_of(profile, **extra)
    return auth.BridgeAccess(profile, "home", device_user, found.bridge_read, found.bridge_write,
                             found.device_publish, found.device_read)


def lines(profile: str, devices: tuple[str, ...] = ("battery-1", "home")) -> dict[str, list[tuple[str, str]]]:
    return parse_acl(auth.acl_text(ROOT, list(devices), access(profile)))


def bridge_lines(reads: list[str], writes: list[str], battery: str = "home") -> list[tuple[str, str]]:
    """The bridge's lines: from the contract, its battery's set (read) and telemetry, spec, state (write), its own
    status, its own stored confirmations (it produces telemetry); then exactly the profile's device topics."""
    return [
        ("readwrite", f"{ROOT}/node/bridge/status"),
        ("read", f"{ROOT}/battery/{battery}/set"),
        ("read", f"{ROOT}/stored/bridge"),
        *(("read", topic) for topic in reads),
        ("write", f"{ROOT}/battery/{battery}/telemetry"),
        ("write", f"{ROOT}/battery/{battery}/spec"),
        ("write", f"{ROOT}/battery/{battery}/state"),
        *(("write", topic) for topic in writes),
    ]


# -- the ACL lines of each shipped profile ------------------------------------------------------------------------

VICTRON_SETPOINT = f"W/{PORTAL}/settings/0/Settings/CGwacs/AcPowerSetPoint"
VICTRON_READS = [f"N/{PORTAL}/system/0/Dc/Battery/Soc", f"N/{PORTAL}/system/0/Dc/Battery/Power"]
SA_WRITES = [f"solar_assistant/inverter_2/{s}/set" for s in
             ("work_mode_priority", "battery_first_grid_charge", "battery_first_charge_rate",
              "grid_first_discharge_rate")]
SA_READS = ["solar_assistant/total/battery_state_of_charge/state", "solar_assistant/total/battery_power/state"]


def test_victron_bridge_reads_its_two_values_and_writes_the_setpoint_and_keepalive_of_its_portal_only() -> None:
    acl = lines("victron")
    assert acl["bridge"] == bridge_lines(VICTRON_READS, [VICTRON_SETPOINT, f"R/{PORTAL}/keepalive"])
    # the GX (its mosquitto link): its whole N/ tree of this portal, and exactly what the bridge sends it
    assert acl["home"] == [("read", VICTRON_SETPOINT), ("read", f"R/{PORTAL}/keepalive"), ("write", f"N/{PORTAL}/#")]


def test_solarassistant_bridge_reads_its_device_and_writes_its_inverters_settings_only() -> None:
    acl = lines("solarassistant")
    assert acl["bridge"] == bridge_lines(SA_READS, SA_WRITES)
    # the unit publishes every device's values and its answers: solar_assistant/<device>/<metric>/state
    assert acl["home"] == [*(("read", t) for t in SA_WRITES), ("write", "solar_assistant/+/+/state")]


def test_generic_json_device_gets_the_mirror_image_of_the_bridge() -> None:
    acl = lines("generic-json")
    assert acl["bridge"] == bridge_lines(["home/battery/state"], ["home/battery/set"])
    assert acl["home"] == [("read", "home/battery/set"), ("write", "home/battery/state")]


@pytest.mark.parametrize("profile", sorted(PROFILE_ENV))
def test_only_the_bridge_its_device_and_the_monitor_touch_the_device_topics(profile: str) -> None:
    found = topics_of(profile)
    text = auth.acl_text(ROOT, ["battery-1", "home"], access(profile))
    acl, users = Acl(text), parse_acl(text)
    readings, writes = found.bridge_read, found.bridge_write
    for topic in readings:  # the device publishes them, the bridge reads them
        assert [acl.allowed(u, a, topic) for u in ("bridge", "home") for a in ("read", "write")] == [
            True, False, False, True], topic
    for topic in writes:  # the bridge writes them, the device reads them
        assert [acl.allowed(u, a, topic) for u in ("bridge", "home") for a in ("read", "write")] == [
            False, True, True, False], topic
    others = [user for user in users if user not in ("bridge", "home", auth.MONITOR_USER)]
    assert set(others) == {*auth.NODE_USERS, "battery-1", auth.HASS_USER, auth.PROBE_USER}
    for user in others:
        for topic in (*readings, *writes):
            assert not acl.allowed(user, "read", topic), f"{user} reads {topic}"
            assert not acl.allowed(user, "write", topic), f"{user} writes {topic}"
    for topic in (*readings, *writes):  # the operator may watch the device (README), never act as it
        assert acl.allowed(auth.MONITOR_USER, "read", topic)
        assert not acl.allowed(auth.MONITOR_USER, "write", topic)
    for user in ("bridge", "home"):
        for _, topic_filter in users[user]:
            assert topic_filter.split("/")[0] not in ("#", "+"), topic_filter
            assert not topic_filter.startswith("$"), topic_filter


@pytest.mark.parametrize("profile", sorted(PROFILE_ENV))
def test_the_bridge_and_its_device_reach_nothing_of_another_battery_or_installation(profile: str) -> None:
    acl = Acl(auth.acl_text(ROOT, ["battery-1", "home"], access(profile)))
    for topic in ("telemetry", "spec", "state"):
        assert acl.allowed("bridge", "write", f"{ROOT}/battery/home/{topic}")
        assert not acl.allowed("bridge", "write", f"{ROOT}/battery/battery-1/{topic}")
        assert not acl.allowed("home", "write", f"{ROOT}/battery/home/{topic}"), "the device speaks its own dialect"
    assert acl.allowed("bridge", "read", f"{ROOT}/battery/home/set")
    assert not acl.allowed("bridge", "read", f"{ROOT}/battery/battery-1/set")
    for access_ in ("read", "write"):
        assert not acl.allowed("bridge", access_, f"{ROOT}/node/recorder/status")
        assert not acl.allowed("home", access_, f"{ROOT}/battery/home/set")
        assert not acl.allowed("home", access_, "$SYS/broker/version")
    assert not acl.allowed("bridge", "write", f"{ROOT}/battery/home/set"), "the bridge obeys commands, never sends"


def test_victron_grants_are_narrowed_to_the_configured_portal() -> None:
    acl = Acl(auth.acl_text(ROOT, [], access("victron")))
    other = "ffffffffffff"
    assert acl.allowed("home", "write", f"N/{PORTAL}/grid/30/Ac/Power")  # the GX's full publish
    assert not acl.allowed("home", "write", f"N/{other}/system/0/Dc/Battery/Soc")
    assert not acl.allowed("bridge", "read", f"N/{other}/system/0/Dc/Battery/Soc")
    assert not acl.allowed("bridge", "read", f"N/{PORTAL}/grid/30/Ac/Power"), "the bridge sees only what it maps"
    assert not acl.allowed("bridge", "write", f"W/{PORTAL}/vebus/276/Mode"), "nor writes any other setting"
    assert not acl.allowed("bridge", "write", f"W/{other}/settings/0/Settings/CGwacs/AcPowerSetPoint")
    assert not acl.allowed("home", "read", f"W/{other}/settings/0/Settings/CGwacs/AcPowerSetPoint")


def test_the_bridged_battery_has_no_contract_device_user_and_the_device_user_can_be_named() -> None:
    users = parse_acl(auth.acl_text(ROOT, ["battery-1", "home"], access("victron", device_user="gx")))
    assert list(users) == [
        *auth.NODE_USERS, "bridge", "battery-1", "gx", auth.HASS_USER, auth.MONITOR_USER, auth.PROBE_USER
    ]
    assert "home" not in users, "the bridge is the device of battery home: nobody else writes its telemetry"
    assert users["gx"] == [("read", VICTRON_SETPOINT), ("read", f"R/{PORTAL}/keepalive"), ("write", f"N/{PORTAL}/#")]
    assert users[auth.PROBE_USER] == parse_acl(auth.acl_text(ROOT, ["battery-1"]))[auth.PROBE_USER]
    text = auth.acl_text(ROOT, ["battery-1"], access("victron", device_user="gx"))
    assert "# device gx: the victron device behind the bridge (battery home)" in text
    assert "# node bridge: battery home only, and exactly the device topics of profile victron" in text


def test_without_a_bridge_nothing_changes() -> None:
    users = parse_acl(auth.acl_text(ROOT, ["battery-1"]))
    assert "bridge" not in users
    assert users[auth.MONITOR_USER] == users[auth.PROBE_USER]


# -- what deploy refuses to put into the ACL ---------------------------------------------------------------------


def _with(**change: object) -> auth.BridgeAccess:
    base = access("victron")
    return auth.BridgeAccess(**{**base.__dict__, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bridge", "message"),
    [
        (_with(device_publish=("#",)), "must start with a plain level"),
        (_with(device_publish=("+/x/#",)), "must start with a plain level"),
        (_with(device_read=("$SYS/#",)), "must start with a plain level"),
        (_with(device_publish=(f"{ROOT}/battery/battery-1/telemetry",)), f"overlaps {ROOT}/#"),
        (_with(device_publish=("bess/#",)), f"overlaps {ROOT}/#"),
        (_with(device_read=("bess/+/battery/x/set",)), f"overlaps {ROOT}/#"),
        (_with(bridge_write=("bess-probe/x",)), "overlaps bess-probe/#"),
        (_with(bridge_read=(f"N/{PORTAL}/#",)), "the bridge's topics are concrete"),
        (_with(bridge_write=("W/p/x\ntopic readwrite #",)), "no spaces or control characters"),
        (_with(device_publish=("N/p q/#",)), "no spaces or control characters"),
        (_with(device_publish=("N//x",)), "an empty level"),
        (_with(device_publish=("N/p#",)), "'+' is a whole level"),
        (_with(device_publish=("N/#/x",)), "'+' is a whole level"),
        (_with(bridge_write=("W/" + "x" * 600,)), "must be 1-512 characters"),
        (_with(device_user="recorder"), "device user 'recorder' clashes"),
        (_with(device_user="bridge"), "device user 'bridge' clashes"),
        (_with(device_user=auth.MONITOR_USER), "clashes"),
        (_with(device_user="battery-1"), "device user 'battery-1' clashes"),
        (_with(device_user="GX 1"), "device user 'GX 1' is not a valid id"),
        (_with(battery="Home"), "bridged battery id 'Home' is not a valid id"),
    ],
    ids=["hash", "plus-first", "sys", "under-root", "root-parent", "root-wildcard", "probe", "bridge-wildcard",
         "newline-injection", "space", "empty-level", "hash-in-level", "hash-not-last", "too-long", "node-name",
         "bridge-name", "monitor-name", "other-battery", "bad-user-id", "bad-battery"],
)
def test_deploy_refuses_device_topics_outside_the_devices_namespace(bridge: auth.BridgeAccess, message: str) -> None:
    with pytest.raises(auth.AuthError, match=re.escape(message)):
        auth.acl_text(ROOT, ["battery-1"], bridge)


def test_overlap_with_the_root_is_mqtt_matching_not_a_string_prefix() -> None:
    assert foreign_filter_problems("bess/v10/x", ROOT, wildcards=True) == []  # a sibling, not under the root
    assert foreign_filter_problems("bess/v1", ROOT, wildcards=False) != []  # bess/v1/# matches bess/v1 too
    assert foreign_filter_problems("bess/+/x", "site/bess", wildcards=True) == []
    assert intersects("a/+/c", "a/b/#")
    assert intersects("a/#", "a")
    assert not intersects("a/b", "a/c/#")
    assert not intersects("a/+", "a/b/c")
    assert covers(f"N/{PORTAL}/#", f"N/{PORTAL}/system/0/Dc/Battery/Soc")
    assert not covers("solar_assistant/+/+/state", "solar_assistant/total/battery_power/set")


# -- the profile's device_account ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ('publishes = ["#"]', "device_account.publishes[0]: '#' must start with a plain level"),
        ('publishes = ["x/{dev}/#", "+/y"]', "device_account.publishes[1]: '+/y' must start with a plain level"),
        ('publishes = ["x/{nope}/#"]', "device_account.publishes[0]: {nope} is not one of the profile's variables"),
        ('publishes = ["x/{dev}/so#"]', "device_account.publishes[0]: 'x/{dev}/so#': '+' is a whole level"),
        ('publishes = ["x/{dev}/#"]\nreads = ["x//set"]', "device_account.reads[0]: 'x//set' has an empty level"),
        ('publishes = ["x/{dev}/soc"]', "device_account.publishes: no filter covers x/d1/power: the device could "
                                        "not publish what the bridge reads"),
        ('publishes = ["x/{dev}/#"]\nreads = ["x/{dev}/other"]', "device_account.reads: no filter covers x/d1/set"),
        ("publishes = []", "device_account.publishes: Expected `array` of length >= 1"),
    ],
    ids=["hash", "plus-first", "undeclared", "partial-wildcard", "empty-level", "uncovered-reading",
         "uncovered-write", "empty"],
)
def test_a_bad_device_account_stops_the_bridge_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], account: str, expected: str
) -> None:
    path = write(tmp_path, GOOD + "[device_account]\n" + account + "\n")
    line = exit_line({"BESS_BRIDGE_PROFILE": path, "BESS_BRIDGE_VARS": "dev=d1", **SPEC_ENV}, capsys)
    assert expected in line, line


def test_a_device_account_widens_only_what_it_names(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '[device_account]\npublishes = ["x/{dev}/#"]\n')
    found = broker_topics(load(BridgeConfig, {"BESS_BRIDGE_PROFILE": path, "BESS_BRIDGE_VARS": "dev=d1",
                                              **SPEC_ENV}).device().bound)
    assert found == BrokerTopics(("x/d1/soc", "x/d1/power"), ("x/d1/set",), ("x/d1/#",), ("x/d1/set",))


def test_variable_values_cannot_carry_spaces_or_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    line = exit_line(bridge_env("victron", BESS_BRIDGE_PORTAL_ID="c0619\ntopic readwrite x"), capsys)
    assert "must be without spaces or control characters" in line, line


# -- python -m nodes.bridge acl, and deploy asking it ----------------------------------------------------------------


def run_acl(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodes.bridge", "acl"], env={"PATH": "/usr/bin:/bin", **env},
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("profile", sorted(PROFILE_ENV))
def test_the_acl_command_prints_the_topics_of_the_bridges_own_settings(profile: str) -> None:
    done = run_acl(bridge_env(profile))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["profile"], answer["battery"]) == (profile, "home")
    assert {k: v for k, v in answer.items() if k not in ("profile", "battery")} == topics_of(profile).as_json()
    parsed = bridge_access.parse_answer(done.stdout, "gx")
    assert parsed == access(profile, device_user="gx")


def test_the_acl_command_refuses_bad_settings_like_the_bridge_with_exit_2() -> None:
    done = run_acl(bridge_env("victron", BESS_BRIDGE_PORTAL_ID="a/+"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bridge: invalid configuration: variable portal_id='a/+': must be non-empty, without '+', '#' or a "
        "leading/trailing '/'"]
    assert done.stdout == ""


def test_deploy_asks_the_bridge_with_the_venvs_python(tmp_path: Path) -> None:
    cfg = UpConfig.from_env(REPO, {"BESS_VAR_DIR": str(tmp_path), "BESS_MQTT_AUTH": "1"})
    env = {"PATH": "/usr/bin:/bin", **bridge_env("victron"), bridge_access.DEVICE_USER_SETTING: "gx"}
    assert bridge_access.ask_bridge(cfg, env) == access("victron", device_user="gx")
    with pytest.raises(SettingsError, match=r"^bridge: invalid configuration: BESS_BRIDGE_PORTAL_ID"):
        bridge_access.ask_bridge(cfg, {k: v for k, v in env.items() if k != "BESS_BRIDGE_PORTAL_ID"})
    for broken in ("", "{}", '{"bridge": {}, "device": {}}', '{"profile": "p", "battery": "b", "bridge": '
                   '{"read": "N/x", "write": []}, "device": {"publish": [], "read": []}}'):
        with pytest.raises(bridge_access.StackError):
            bridge_access.parse_answer(broken, "gx")
