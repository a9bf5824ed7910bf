"""The device bridge in secure mode: which broker topics outside the contract its profile needs, asked from the
bridge package itself (``python -m nodes.bridge acl`` in the venv's python, from the settings the bridge will get),
and the name of the device's own broker user (``BESS_BRIDGE_DEVICE_USER``). Standard library only.

Why a subprocess and not a profile reader of deploy's own: the profile is TOML or JSON validated by msgspec Structs
and bound with the bridge's own settings rules (``BESS_BRIDGE_VARS``, defaults); a second reader here would be a
second implementation that could grant other topics than the bridge uses. deploy then checks what it gets
(:func:`deploy.auth.check_bridge`) before a line of it goes into the ACL.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from deploy import auth
from deploy.errors import SettingsError, StackError
from deploy.launch import bridged_battery
from deploy.node_settings import node_python
from deploy.settings import UpConfig

#: The setting that names the device's broker user (default: the bridged battery's id, like any device's user).
DEVICE_USER_SETTING = "BESS_BRIDGE_DEVICE_USER"
ASK_TIMEOUT_S = 60.0


def bridged_device_user(env: Mapping[str, str]) -> str | None:
    """The broker user of the device behind the bridge, or None when no bridge is asked for."""
    battery = bridged_battery(env)
    if battery is None:
        return None
    return env.get(DEVICE_USER_SETTING, "").strip() or battery


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise StackError(f"python -m nodes.bridge acl: {where} is not a list of topics")
    return tuple(value)


def parse_answer(text: str, device_user: str) -> auth.BridgeAccess:
    """The :class:`~deploy.auth.BridgeAccess` in what ``python -m nodes.bridge acl`` printed (shape checked; the
    topics themselves are checked by :func:`deploy.auth.check_bridge`)."""
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not all(isinstance(answer.get(k), dict) for k in ("bridge", "device")):
        raise StackError(f"python -m nodes.bridge acl printed no topics: {text[:200]!r}")
    profile, battery = answer.get("profile"), answer.get("battery")
    if not isinstance(profile, str) or not isinstance(battery, str):
        raise StackError("python -m nodes.bridge acl: no profile or battery in its answer")
    bridge, device = answer["bridge"], answer["device"]
    return auth.BridgeAccess(
        profile=profile,
        battery=battery,
        device_user=device_user,
        bridge_read=_strings(bridge.get("read"), "bridge.read"),
        bridge_write=_strings(bridge.get("write"), "bridge.write"),
        device_publish=_strings(device.get("publish"), "device.publish"),
        device_read=_strings(device.get("read"), "device.read"),
    )


def ask_bridge(cfg: UpConfig, env: Mapping[str, str]) -> auth.BridgeAccess:
    """Run ``python -m nodes.bridge acl`` with the bridge's environment ``env``; its refusal (a bad setting or
    profile: the bridge's own one line) is a :class:`SettingsError`, anything else a :class:`StackError`."""
    device_user = bridged_device_user(env)
    if device_user is None:
        raise StackError("no device bridge is configured (BESS_BRIDGE_PROFILE)")
    try:
        done = subprocess.run(
            [node_python(cfg.root), "-m", "nodes.bridge", "acl"], env=dict(env), cwd=cfg.root,
            capture_output=True, text=True, timeout=ASK_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"python -m nodes.bridge acl did not answer within {ASK_TIMEOUT_S:.0f} s") from None
    complaint = (done.stderr.strip().splitlines() or [""])[-1]
    if done.returncode == 2:
        raise SettingsError(complaint or "bridge: invalid configuration")
    if done.returncode != 0:
        raise StackError(f"python -m nodes.bridge acl failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return parse_answer(done.stdout, device_user)


__all__ = ["DEVICE_USER_SETTING", "ask_bridge", "bridged_device_user", "parse_answer"]
