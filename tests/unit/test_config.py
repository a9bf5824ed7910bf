"""Environment -> strict config Structs: typed values, lists, one-line errors, exit status 2."""

from __future__ import annotations

import msgspec
import pytest

from nodes.runtime.bus import MqttSettings
from nodes.runtime.config import ConfigError, load, load_or_exit


class ExampleConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    ports: list[int] = msgspec.field(default_factory=lambda: [5000, 5003])
    ratio: float = 0.5
    enabled: bool = False


def test_defaults_without_environment() -> None:
    config = load(ExampleConfig, {})
    assert (config.mqtt_port, config.ports, config.topic_root) == (1883, [5000, 5003], "bess/v1")


def test_values_are_converted() -> None:
    config = load(
        ExampleConfig,
        {"BESS_MQTT_PORT": "2883", "BESS_PORTS": "1, 2,3", "BESS_RATIO": "0.25", "BESS_ENABLED": "true"},
    )
    assert (config.mqtt_port, config.ports, config.ratio, config.enabled) == (2883, [1, 2, 3], 0.25, True)


def test_unrelated_variables_are_ignored() -> None:
    assert load(ExampleConfig, {"BESS_SOMETHING_ELSE": "x", "PATH": "/bin"}).mqtt_port == 1883


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"BESS_MQTT_PORT": "abc"}, "BESS_MQTT_PORT"), ({"BESS_PORTS": "1,x"}, "BESS_PORTS")],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load(ExampleConfig, env)


def test_invalid_config_exits_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load_or_exit(ExampleConfig, "demo", {"BESS_RATIO": "lots"})
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "BESS_RATIO" in err[0]
