"""Gateway configuration from BESS_* variables, and the node's wiring that needs no broker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.gateway.config import GatewayConfig, settings_from, ssl_context
from nodes.runtime.config import ConfigError, load, load_or_exit


def test_defaults() -> None:
    config = load(GatewayConfig, {})
    assert config.gateway_ports == [5000, 5003]
    assert (config.gateway_host, config.default_battery, config.command_lease_s) == ("127.0.0.1", "battery-1", 300)
    assert (config.gateway_token, config.gateway_max_body_bytes) == (None, 4_000_000)
    assert ssl_context(config) is None


def test_environment() -> None:
    config = load(
        GatewayConfig,
        {
            "BESS_GATEWAY_PORTS": "8080, 8081",
            "BESS_DEFAULT_BATTERY": "b-2",
            "BESS_COMMAND_LEASE_S": "60",
            "BESS_GATEWAY_TOKEN": "t",
            "BESS_GATEWAY_MAX_BODY_BYTES": "2048",
            "BESS_READ_TIMEOUT_S": "2.5",
            "BESS_MAX_READ_ROWS": "500",
        },
    )
    settings = settings_from(config)
    assert config.gateway_ports == [8080, 8081]
    assert (settings.default_battery, settings.command_lease_s, settings.token) == ("b-2", 60, "t")
    assert (settings.max_body_bytes, settings.read_timeout_s, settings.max_read_rows) == (2048, 2.5, 500)


def test_read_token_defaults_to_the_write_token() -> None:
    assert settings_from(load(GatewayConfig, {"BESS_GATEWAY_TOKEN": "w"})).read_token is None  # = the same token
    separate = settings_from(load(GatewayConfig, {"BESS_GATEWAY_TOKEN": "w", "BESS_GATEWAY_READ_TOKEN": "r"}))
    assert (separate.token, separate.read_token) == ("w", "r")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BESS_GATEWAY_PORTS": "http"}, "BESS_GATEWAY_PORTS"),
        ({"BESS_GATEWAY_PORTS": "70000"}, "BESS_GATEWAY_PORTS"),
        ({"BESS_DEFAULT_BATTERY": "Battery 1"}, "BESS_DEFAULT_BATTERY"),
        ({"BESS_COMMAND_LEASE_S": "0"}, "BESS_COMMAND_LEASE_S"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load(GatewayConfig, env)


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"BESS_GATEWAY_PORTS": "5000,5000"}, "lists a port twice"),
        ({"BESS_GATEWAY_TLS_CERT": "/x.pem"}, "must be set together"),
        ({"BESS_GATEWAY_TOKEN": " "}, "BESS_GATEWAY_TOKEN is empty"),
        ({"BESS_GATEWAY_TOKEN": "w", "BESS_GATEWAY_READ_TOKEN": ""}, "BESS_GATEWAY_READ_TOKEN is empty"),
        ({"BESS_GATEWAY_READ_TOKEN": "r"}, "set without BESS_GATEWAY_TOKEN"),
    ],
)
def test_inconsistent_config_exits_2(env: dict[str, str], reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        load_or_exit(GatewayConfig, "gateway", env)
    assert info.value.code == 2
    assert reason in capsys.readouterr().err


def test_module_prints_openapi() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nodes.gateway", "openapi"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith('{\n  "openapi": "3.1.0"')


def test_module_rejects_unknown_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nodes.gateway", "serve"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_tls_context_from_cert_and_key(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=True,
    )
    config = load(GatewayConfig, {"BESS_GATEWAY_TLS_CERT": str(cert), "BESS_GATEWAY_TLS_KEY": str(key)})
    context = ssl_context(config)
    assert context is not None
    assert context.check_hostname is False  # a server-side context
