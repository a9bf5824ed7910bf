"""What ``up`` refuses before it starts anything (exit 2 for a setting, 1 for a server that cannot serve): settings
that contradict the running stack, HTTP listeners on the network without a token, battery ids that cannot be
broker users (nor a bridge's device), device topics of a bridge profile outside the device's namespace, and a
broker or database already answering with the other authentication mode. Standard library only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from deploy import auth
from deploy.bridge_access import DEVICE_USER_SETTING, bridged_device_user
from deploy.errors import SettingsError
from deploy.influx_http import influx_ping, influx_statement
from deploy.launch import bridged_battery, running_pids
from deploy.mqtt_probe import mqtt_connack
from deploy.processes import HOST, read_live_pid
from deploy.settings import UpConfig
from nodes.contract.names import id_problems


def check_location(cfg: UpConfig) -> None:
    """Refuse explicit settings that contradict the stack running under ``cfg.var_dir`` (:data:`LOCATION`)."""
    conflicts = cfg.conflicts()
    if not conflicts:
        return
    running = running_pids(cfg)
    if running:
        raise SettingsError(
            f"the stack in {cfg.var_dir} runs ({', '.join(running)}) with other settings: {'; '.join(conflicts)}. "
            "Leave the variables out (they are remembered in stack.json), or run deploy/down first to change them"
        )


def broker_auth_mismatch(cfg: UpConfig, credentials: auth.Credentials | None) -> str | None:
    """Why the broker answering on the MQTT port cannot serve this run (auth on or off), or None if it can."""
    anonymous = mqtt_connack(HOST, cfg.mqtt_port)
    if anonymous is None:
        return None
    if credentials is None:
        if anonymous != 0:
            return (
                f"the broker on port {cfg.mqtt_port} refuses anonymous clients (CONNACK code {anonymous}): it runs "
                "with authentication. Run with BESS_MQTT_AUTH=1, or stop it (deploy/down) and run deploy/up again"
            )
        return None
    if anonymous == 0:
        return (
            f"the broker on port {cfg.mqtt_port} accepts anonymous clients: it was started without "
            "BESS_MQTT_AUTH=1. Stop it (deploy/down), then run BESS_MQTT_AUTH=1 deploy/up again"
        )
    user, password = credentials.login(auth.PROBE_USER)
    code = mqtt_connack(HOST, cfg.mqtt_port, username=user, password=password)
    if code not in (None, 0):
        return (
            f"the broker on port {cfg.mqtt_port} refuses the {user} user of {credentials.credentials_file} (CONNACK "
            f"code {code}): it uses other credentials. Stop it (deploy/down) and run deploy/up again"
        )
    return None


def influx_mismatch(cfg: UpConfig) -> str | None:
    """Why an InfluxDB that answers on the port but was not started by ``up`` cannot serve this run, or None.

    Ours is restarted with the right configuration by :func:`_bring_up`; somebody else's is used as it is, so
    in secure mode it must refuse anonymous clients, and in the open mode it must not require credentials.
    """
    influx = cfg.influxd()
    assert influx.pid_path is not None
    if not influx_ping(cfg.influx_url) or read_live_pid(influx.pid_path, str(influx.config_path)):
        return None
    status, _ = influx_statement(cfg.influx_url, "SHOW DATABASES", None)
    where = f"the InfluxDB on port {cfg.influx_port} (not started by deploy/up)"
    if cfg.secure and status == 200:
        return (f"{where} accepts unauthenticated queries: secure mode needs a database with authentication. "
                "Stop it or set BESS_INFLUX_PORT to another port")
    if not cfg.secure and status in (401, 403):
        return (f"{where} requires authentication: run with BESS_MQTT_AUTH=1 (secure mode) if it is the "
                "database of a secure stack, or set BESS_INFLUX_PORT to another port")
    return None


#: Settings that would put an HTTP listener of a node on the network, and the node they belong to.
HTTP_HOSTS: Mapping[str, str] = {"BESS_GATEWAY_HOST": "gateway", "BESS_DASHBOARD_HOST": "dashboard"}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything: treat it as the network


def check_exposure(env: Mapping[str, str]) -> None:
    """Nothing of the local stack listens beyond loopback unless asked for, and then only with authentication:
    a gateway or dashboard host on the network needs BESS_GATEWAY_TOKEN."""
    for var, what in HTTP_HOSTS.items():
        host = env.get(var, "")
        if host and not is_loopback(host) and not env.get("BESS_GATEWAY_TOKEN", "").strip():
            raise SettingsError(
                f"{var}={host} puts the {what} on the network: set BESS_GATEWAY_TOKEN too (bearer token), or leave "
                f"{var} unset (127.0.0.1)"
            )


def check_devices(cfg: UpConfig) -> None:
    """With authentication every battery id becomes a broker user: refuse ids that cannot be one."""
    if cfg.mqtt_auth:
        try:
            auth.check_devices(cfg.batteries)
        except auth.AuthError as exc:
            raise SettingsError(f"BESS_BATTERIES: {exc}") from None


def check_bridge(cfg: UpConfig, env: Mapping[str, str]) -> None:
    """In secure mode the bridge and the device behind it get broker users: refuse a device user that cannot be
    one (not an id, or the name of another user). The bridge's other settings are its own check's."""
    battery, device_user = bridged_battery(env), bridged_device_user(env)
    if battery is None or device_user is None or not cfg.mqtt_auth or id_problems(battery):
        return
    try:
        auth.check_bridge_users(battery, device_user, cfg.batteries)
    except auth.AuthError as exc:
        default = "" if env.get(DEVICE_USER_SETTING, "").strip() else " (unset: the bridged battery's id)"
        raise SettingsError(f"{DEVICE_USER_SETTING}{default}: {exc}") from None


def check_bridge_topics(cfg: UpConfig, bridge: auth.BridgeAccess | None) -> None:
    """The device topics a bridge profile asks for stay in the device's own namespace (never the topic root,
    ``$SYS`` or a wildcard level first) and fit the ACL file: else the profile is refused (exit 2)."""
    if bridge is None:
        return
    try:
        auth.check_bridge(bridge, cfg.batteries, cfg.topic_root)
    except auth.AuthError as exc:
        raise SettingsError(f"BESS_BRIDGE_PROFILE: {exc}") from None
