"""deploy/up and the device bridge: the bridge runs only with BESS_BRIDGE_PROFILE, the simulator then leaves the
bridged battery alone (and does not run when that was its only one); in secure mode the bridge's device gets a
user of its own, and a profile's device topics are kept out of this project's tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import auth, preflight
from deploy.errors import SettingsError
from deploy.launch import plan_nodes
from deploy.settings import UpConfig
from nodes.contract.names import NODE_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_profile_the_default_nodes_run_and_no_bridge() -> None:
    plan = plan_nodes(ROOT, {}, ("battery-1",))
    assert plan.run == NODE_NAMES
    assert (plan.overrides, plan.skipped) == ({}, {})


def test_a_bridge_for_the_only_simulated_battery_replaces_the_simulator() -> None:
    plan = plan_nodes(ROOT, {"BESS_BRIDGE_PROFILE": "victron"}, ("battery-1",))
    assert plan.run == (*(n for n in NODE_NAMES if n != "simulator"), "bridge")
    assert "battery-1, its only battery, is the bridge's device" in plan.skipped["simulator"]


def test_the_simulator_keeps_simulating_the_other_batteries() -> None:
    env = {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_BATTERY": "home"}
    plan = plan_nodes(ROOT, env, ("battery-1", "home", "spare"))
    assert "simulator" in plan.run
    assert "bridge" in plan.run
    assert plan.overrides["simulator"] == {"BESS_BATTERIES": "battery-1,spare"}
    assert "simulator" not in plan_nodes(ROOT, env, ("battery-1",)).overrides  # never simulated: nothing to drop


def test_home_assistant_shows_the_bridged_battery_live_while_the_bridge_is() -> None:
    env = {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_BATTERY": "home"}
    plan = plan_nodes(ROOT, env, ("battery-1", "home"))
    assert plan.overrides["homeassistant"] == {"BESS_HA_DEVICE_NODE_OF": "home=bridge"}
    mine = plan_nodes(ROOT, {**env, "BESS_HA_DEVICE_NODE_OF": "home=gx"}, ("battery-1",))
    assert mine.overrides["homeassistant"] == {"BESS_HA_DEVICE_NODE_OF": "home=bridge,home=gx"}, "the user's wins"


def test_secure_mode_runs_the_bridge_and_checks_its_devices_user(tmp_path: Path) -> None:
    cfg = UpConfig.from_env(ROOT, {"BESS_VAR_DIR": str(tmp_path), "BESS_MQTT_AUTH": "1",
                                   "BESS_BATTERIES": "battery-1,spare"})
    preflight.check_bridge(cfg, {})  # no bridge asked for: fine
    preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron"})  # its device's user: battery-1, the default
    preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_DEVICE_USER": "gx"})
    with pytest.raises(SettingsError, match=r"^BESS_BRIDGE_DEVICE_USER: device user 'spare' clashes"):
        preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_DEVICE_USER": "spare"})
    with pytest.raises(SettingsError, match=r"^BESS_BRIDGE_DEVICE_USER \(unset: the bridged battery's id\): "
                                            "device user 'recorder' clashes"):
        preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_BATTERY": "recorder"})
    with pytest.raises(SettingsError, match=r"^BESS_BRIDGE_DEVICE_USER: device user 'G X' is not a valid id"):
        preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_DEVICE_USER": "G X"})
    open_mode = UpConfig.from_env(ROOT, {"BESS_VAR_DIR": str(tmp_path)})
    preflight.check_bridge(open_mode, {"BESS_BRIDGE_PROFILE": "victron", "BESS_BRIDGE_DEVICE_USER": "recorder"})


def test_secure_mode_refuses_a_profile_whose_device_topics_reach_into_the_topic_root(tmp_path: Path) -> None:
    cfg = UpConfig.from_env(ROOT, {"BESS_VAR_DIR": str(tmp_path), "BESS_MQTT_AUTH": "1"})
    good = auth.BridgeAccess("mine", "battery-1", "battery-1", ("x/soc",), ("x/set",), ("x/#",), ("x/set",))
    preflight.check_bridge_topics(cfg, good)
    preflight.check_bridge_topics(cfg, None)
    bad = auth.BridgeAccess("mine", "battery-1", "battery-1", ("x/soc",), ("bess/v1/battery/battery-2/set",),
                            ("x/#",), ("x/set",))
    with pytest.raises(SettingsError, match=r"^BESS_BRIDGE_PROFILE: profile mine: device topic "
                                            r"'bess/v1/battery/battery-2/set': overlaps bess/v1/#"):
        preflight.check_bridge_topics(cfg, bad)
