"""The Debian packages behind the commands the stack needs: find them, apt-get install what is missing.

Standard library only (it runs before the virtualenv exists): ``python3 deploy/stack.py ensure-packages [--test]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.errors import StackError

#: Commands the stack needs, mapped to the Debian package that provides each.
REQUIRED_COMMANDS: Mapping[str, str] = {
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "influxd": "influxdb",
}
TEST_COMMANDS: Mapping[str, str] = {"wrk": "wrk"}
OPTIONAL_TEST_COMMANDS: Mapping[str, str] = {"chromium": "chromium"}


def find_binary(name: str) -> str | None:
    """Path of ``name`` on PATH or in the sbin dirs (a normal user's PATH on Debian lacks /usr/sbin/mosquitto)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


_apt_updated = False


def _apt(args: Sequence[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError(f"apt-get not found: install the packages for {' '.join(args[2:])} by hand")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise StackError(f"need root for `apt-get {' '.join(args)}`; run it as root, then retry")
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*prefix, apt, *args], check=True, env=env, stdin=subprocess.DEVNULL)


def ensure_packages(commands: Mapping[str, str] | None = None, optional: Mapping[str, str] | None = None) -> list[str]:
    """Apt-get install the Debian package behind every missing command; return the packages installed.

    ``commands`` maps a command to its package and defaults to :data:`REQUIRED_COMMANDS` (mosquitto,
    mosquitto-clients, influxdb). A failure to install an ``optional`` package is reported and ignored.
    ``apt-get update`` runs once per process, and only if something is missing.
    """
    global _apt_updated
    commands = REQUIRED_COMMANDS if commands is None else commands
    optional = {} if optional is None else optional
    missing = sorted({pkg for cmd, pkg in commands.items() if find_binary(cmd) is None})
    missing_optional = sorted({pkg for cmd, pkg in optional.items() if find_binary(cmd) is None})
    if not missing and not missing_optional:
        return []
    try:
        if not _apt_updated:
            _apt(["update", "-q"])
            _apt_updated = True
        if missing:
            _apt(["install", "-y", "-q", "--no-install-recommends", *missing])
    except (subprocess.CalledProcessError, StackError) as exc:
        if missing:
            raise StackError(f"could not install {' '.join(missing)}: {exc}") from exc
        print(f"warning: optional package(s) {' '.join(missing_optional)} not installed: {exc}", file=sys.stderr)
        return []
    installed = list(missing)
    for pkg in missing_optional:
        try:
            _apt(["install", "-y", "-q", pkg])
            installed.append(pkg)
        except (subprocess.CalledProcessError, StackError) as exc:
            print(f"warning: optional package {pkg} not installed: {exc}", file=sys.stderr)
    return installed


def require_binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise StackError(
            f"{name} is not installed; run deploy/up once (it apt-installs it) or "
            f"apt-get install {REQUIRED_COMMANDS.get(name, name)}"
        )
    return path
