"""deploy/up and the device bridge: the bridge runs only with BESS_BRIDGE_PROFILE, the simulator then leaves the
bridged battery alone (and does not run when that was its only one), and secure mode refuses the bridge."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import preflight
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
    assert plan.overrides == {"simulator": {"BESS_BATTERIES": "battery-1,spare"}}
    assert plan_nodes(ROOT, env, ("battery-1",)).overrides == {}  # a battery it never simulated: nothing to drop


def test_secure_mode_refuses_the_bridge_with_one_line(tmp_path: Path) -> None:
    cfg = UpConfig.from_env(ROOT, {"BESS_VAR_DIR": str(tmp_path), "BESS_MQTT_AUTH": "1"})
    preflight.check_bridge(cfg, {})  # no bridge asked for: fine
    with pytest.raises(SettingsError, match="BESS_BRIDGE_PROFILE: the device bridge does not run with BESS_MQTT_AUTH"):
        preflight.check_bridge(cfg, {"BESS_BRIDGE_PROFILE": "victron"})
