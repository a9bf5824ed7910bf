"""Bridge profiles: the shipped ones load and name only declared foreign topics; a bad profile (or a missing
setting it needs) stops the bridge with exit 2 and one line naming the field path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.bridge.config import BridgeConfig
from nodes.bridge.profile import PROFILES_DIR, Profile, load_profile
from nodes.contract.external import EXTERNAL_TOPICS
from nodes.runtime.config import load_or_exit

SHIPPED = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
#: enough of a spec for every shipped profile
SPEC_ENV = {"BESS_BRIDGE_CAPACITY_KWH": "10", "BESS_BRIDGE_MAX_CHARGE_KW": "5", "BESS_BRIDGE_MAX_DISCHARGE_KW": "5"}

GOOD = """
name = "mine"
vendor = "test"
encoding = "scalar"
[variables.dev]
doc = "the device"
[readings.soc]
topic = "x/{dev}/soc"
unit = "%"
[readings.power]
topic = "x/{dev}/power"
unit = "W"
positive = "charge"
[[writes.charge]]
topic = "x/{dev}/set"
setpoint = "W"
positive = "charge"
[[writes.discharge]]
topic = "x/{dev}/set"
setpoint = "W"
positive = "charge"
[[writes.idle]]
topic = "x/{dev}/set"
value = 0
"""


def exit_line(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the bridge prints when it refuses to start (and that it exits 2)."""
    with pytest.raises(SystemExit) as stopped:
        load_or_exit(BridgeConfig, "bridge", env)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_says_what_was_verified(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.verified.strip(), "a shipped profile says what was checked against the vendor's documentation"


def test_the_shipped_profiles_are_the_three_dialects_of_the_issue() -> None:
    assert set(SHIPPED) >= {"victron", "solarassistant", "generic-json"}


def test_topics_md_lists_exactly_the_foreign_topics_of_the_shipped_profiles() -> None:
    used: set[tuple[str, str]] = set()
    for name in SHIPPED:
        profile = load_profile(name)
        topics = [profile.readings.soc.topic, *(s.topic for a in ("charge", "discharge", "idle")
                                                for s in profile.writes.steps(a))]
        if profile.readings.power is not None:
            topics.append(profile.readings.power.topic)
        if profile.keepalive is not None:
            topics.append(profile.keepalive.topic)
        used |= {(name, topic) for topic in topics}
    assert used == {(t.profile, t.template) for t in EXTERNAL_TOPICS}


def test_a_valid_profile_from_a_path_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_or_exit(BridgeConfig, "bridge", {"BESS_BRIDGE_PROFILE": write(tmp_path, GOOD),
                                                   "BESS_BRIDGE_VARS": "dev=d1", **SPEC_ENV})
    device = config.device()
    assert device.bound.topic(device.profile.readings.soc.topic) == "x/d1/soc"
    assert (device.spec.capacity_kwh, device.spec.soc_min_kwh, device.spec.soc_max_kwh) == (10.0, 0.0, 10.0)


def test_json_profiles_load_too(tmp_path: Path) -> None:
    import json
    import tomllib

    path = write(tmp_path, json.dumps(tomllib.loads(GOOD)), "mine.json")
    assert isinstance(load_profile(path), Profile)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.replace('unit = "W"', 'unit = "Watt"'),
         "mine.toml: readings.power.unit: Invalid enum value 'Watt'"),
        (lambda t: t.replace('vendor = "test"', 'vendor = "test"\nvendr = "typo"'),
         "mine.toml: (top level): Object contains unknown field `vendr`"),
        (lambda t: t.replace('positive = "charge"\n[[writes.charge]]', 'positiv = "charge"\n[[writes.charge]]'),
         "mine.toml: readings.power: Object contains unknown field `positiv`"),
        (lambda t: t.replace('topic = "x/{dev}/soc"', 'topic = "x/{device}/soc"'),
         "mine.toml: readings.soc.topic: {device} is not one of the profile's variables (dev)"),
        (lambda t: t.replace('topic = "x/{dev}/soc"', 'topic = "x/+/soc"'),
         "mine.toml: readings.soc.topic: 'x/+/soc' has a wildcard"),
        (lambda t: t.replace("value = 0", 'value = 0\nsetpoint = "W"'),
         "mine.toml: writes.idle[0]: give exactly one of value and setpoint"),
        (lambda t: t.replace('encoding = "scalar"', 'encoding = "json"'),
         "mine.toml: readings.soc.path: the json encoding needs the value's path"),
        (lambda t: t.replace('[[writes.idle]]\ntopic = "x/{dev}/set"\nvalue = 0\n', ""),
         "mine.toml: writes: Object missing required field `idle`"),
        (lambda t: t.replace('[readings.soc]', '[readings.soc'), "mine.toml: not valid TOML"),
        (lambda t: t.replace('stale_after_s = 1', '').replace('encoding = "scalar"',
                                                              'encoding = "scalar"\nstale_after_s = -1'),
         "mine.toml: stale_after_s: Expected `float` > 0.0"),
    ],
    ids=["unit", "unknown-key", "unknown-nested-key", "undeclared-variable", "wildcard", "value-and-setpoint",
         "json-without-path", "missing-idle", "toml-syntax", "negative-stale"],
)
def test_a_bad_profile_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                change: object, expected: str) -> None:
    assert callable(change)
    path = write(tmp_path, change(GOOD))
    line = exit_line({"BESS_BRIDGE_PROFILE": path, "BESS_BRIDGE_VARS": "dev=d1", **SPEC_ENV}, capsys)
    assert line.startswith(f"bridge: invalid configuration: BESS_BRIDGE_PROFILE: {expected}"), line


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "BESS_BRIDGE_PROFILE: not set"),
        ({"BESS_BRIDGE_PROFILE": "victorn"}, "BESS_BRIDGE_PROFILE: no shipped profile 'victorn' (shipped: "),
        ({"BESS_BRIDGE_PROFILE": "/nonexistent/p.toml"}, "BESS_BRIDGE_PROFILE: /nonexistent/p.toml: cannot read it"),
        ({"BESS_BRIDGE_PROFILE": "victron", **SPEC_ENV}, "BESS_BRIDGE_PORTAL_ID: profile victron needs portal_id"),
        ({"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": "abc"},
         "BESS_BRIDGE_CAPACITY_KWH: profile victron does not give the battery's capacity_kwh"),
        ({"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_PORTAL_ID": "a/+", **SPEC_ENV},
         "variable portal_id='a/+': must be non-empty, without '+'"),
        ({"BESS_BRIDGE_PROFILE": "solarassistant", "BESS_BRIDGE_VARS": "inverterr=inverter_2", **SPEC_ENV},
         "profile solarassistant has no variable 'inverterr'"),
        ({"BESS_BRIDGE_PROFILE": "generic-json", **SPEC_ENV, "BESS_BRIDGE_SOC_MAX_KWH": "11"},
         "battery spec (profile [spec] and BESS_BRIDGE_*): soc_max_kwh is above capacity_kwh"),
        ({"BESS_BRIDGE_PROFILE": "generic-json", **SPEC_ENV, "BESS_BRIDGE_BATTERY": "Real One"},
         "BESS_BRIDGE_BATTERY: battery 'Real One' is not a valid id"),
    ],
    ids=["unset", "unknown-name", "unreadable", "missing-variable", "missing-capacity", "bad-variable",
         "unknown-variable", "inconsistent-spec", "bad-battery-id"],
)
def test_a_setting_the_profile_needs_exits_2_naming_the_setting(env: dict[str, str], expected: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    line = exit_line(env, capsys)
    assert expected in line, line


def test_settings_override_the_profiles_spec(tmp_path: Path) -> None:
    text = GOOD + "[spec]\ncapacity_kwh = 20\nmax_charge_kw = 3\nmax_discharge_kw = 4\nsoc_min_kwh = 2\n"
    config = load_or_exit(BridgeConfig, "bridge", {"BESS_BRIDGE_PROFILE": write(tmp_path, text),
                                                   "BESS_BRIDGE_VARS": "dev=d", "BESS_BRIDGE_MAX_CHARGE_KW": "2.5"})
    spec = config.device().spec
    assert (spec.capacity_kwh, spec.max_charge_kw, spec.max_discharge_kw, spec.soc_min_kwh) == (20, 2.5, 4, 2)
