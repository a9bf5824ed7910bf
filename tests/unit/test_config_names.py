"""One naming scheme for settings, and renamed settings that keep working for a release (nodes/runtime/config.py)."""

from __future__ import annotations

import logging

import msgspec
import pytest

from nodes.gateway.config import GatewayConfig
from nodes.homeassistant.config import HomeAssistantConfig
from nodes.market.config import MarketConfig
from nodes.planner.config import PlannerConfig
from nodes.recorder.config import RecorderConfig
from nodes.renderer.config import RendererConfig
from nodes.runtime.bus import MqttSettings
from nodes.runtime.config import ConfigError, env_name, env_names, load
from nodes.simulator.config import SimulatorConfig

OWNERS: dict[type[msgspec.Struct], tuple[str, ...]] = {
    GatewayConfig: ("GATEWAY",),
    RecorderConfig: ("RECORDER",),
    PlannerConfig: ("PLANNER",),
    RendererConfig: ("RENDERER", "DASHBOARD"),
    MarketConfig: ("MARKET",),
    SimulatorConfig: ("SIM",),
    # it also reads the dashboard's port and the planner's zone and default mode, to agree with them
    HomeAssistantConfig: ("HA", "DASHBOARD", "PLANNER"),
}
SHARED = (
    "BESS_COMMAND_RATE_PER_MIN", "BESS_COMMAND_BURST",  # the command bound of every producer
    "BESS_GATEWAY_TOKEN", "BESS_GATEWAY_READ_TOKEN",  # the dashboard falls back to the gateway's tokens
    "BESS_STORE", "BESS_INFLUX_",  # the database, which deploy/up runs too
    "BESS_BATTERIES", "BESS_MAX_LEASE_S", "BESS_MAX_OPERATOR_LEASE_S",  # read by deploy/up; a device's lease caps
    "BESS_DISPLAY_TZ",  # the name: what it configures (how people read times), not one node
    "BESS_ALARMS",  # the alarm rules: the homeassistant node gives only the enabled ones a sensor
    "BESS_ENTSOE_", "BESS_ENERGY_CHARTS_", "BESS_AWATTAR_", "BESS_NORDPOOL_", "BESS_ENERGIDATASERVICE_", "BESS_AEMO_",
)


def _current_names(cls: type[msgspec.Struct]) -> list[str]:
    return [env_name(f.encode_name) for f in msgspec.structs.fields(cls)]


@pytest.mark.parametrize("cls", list(OWNERS), ids=lambda c: c.__name__)
def test_every_setting_is_named_by_its_owner(cls: type[msgspec.Struct]) -> None:
    common = set(_current_names(MqttSettings))
    strays = [
        name for name in _current_names(cls)
        if name not in common
        and not name.startswith(tuple(f"BESS_{owner}_" for owner in OWNERS[cls]))
        and not name.startswith(SHARED)
    ]
    assert strays == []


def test_one_thing_has_one_name() -> None:
    assert "BESS_GATEWAY_HISTORY_TIMEOUT_S" in _current_names(GatewayConfig)
    assert "BESS_RENDERER_HISTORY_TIMEOUT_S" in _current_names(RendererConfig)
    assert "BESS_RENDERER_MAX_POINTS" in _current_names(RendererConfig)
    assert "BESS_RECORDER_BATCH_MAX_POINTS" in _current_names(RecorderConfig)


def test_an_old_name_still_works_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bess.config"):
        config = load(GatewayConfig, {"BESS_READ_TIMEOUT_S": "2.5"})
    assert config.read_timeout_s == 2.5
    assert "BESS_READ_TIMEOUT_S is deprecated" in caplog.text
    assert "set BESS_GATEWAY_HISTORY_TIMEOUT_S instead" in caplog.text


def test_the_new_name_wins_and_the_old_one_is_said_to_be_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bess.config"):
        config = load(RendererConfig, {"BESS_MAX_POINTS": "50", "BESS_RENDERER_MAX_POINTS": "60"})
    assert config.max_points == 60
    assert "BESS_MAX_POINTS is ignored" in caplog.text


def test_a_bad_value_names_the_variable_that_was_set() -> None:
    with pytest.raises(ConfigError, match=r"^BESS_BATCH_MAX_POINTS:"):
        load(RecorderConfig, {"BESS_BATCH_MAX_POINTS": "lots"})
    with pytest.raises(ConfigError, match=r"^BESS_RECORDER_BATCH_MAX_POINTS:"):
        load(RecorderConfig, {"BESS_RECORDER_BATCH_MAX_POINTS": "lots"})


def test_the_variables_a_config_reads_include_the_old_names() -> None:
    names = env_names(RecorderConfig)
    assert {"BESS_RECORDER_SHUTDOWN_FLUSH_S", "BESS_SHUTDOWN_FLUSH_S", "BESS_MQTT_HOST"} <= set(names)
    assert "BESS_RECORDER_SHARE_GROUP" in names
    assert "BESS_RECORDER_RECORDER_SHARE_GROUP" not in names


def test_deploy_records_the_new_and_the_deprecated_names_of_a_nodes_settings() -> None:
    """`deploy/up` restarts a node when a variable it reads changed: both spellings of a renamed setting count."""
    from pathlib import Path

    from deploy import check_config

    root = Path(__file__).resolve().parents[2]
    variables = check_config.check(root, "gateway", {})["variables"]
    assert "BESS_GATEWAY_HISTORY_TIMEOUT_S" in variables
    assert "BESS_READ_TIMEOUT_S" in variables
