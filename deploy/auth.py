"""Broker authentication for the local stack: one MQTT user per node and per device, and a least-privilege ACL
generated from the topic contract (``BESS_MQTT_AUTH=1 deploy/up``).

What ``deploy/up`` gets from :func:`ensure_credentials` (all under ``<var>/mqtt-auth/``, directory 0700, files
0600, never committed: ``var/`` is gitignored)::

    credentials.json   {"users": {"recorder": "<password>", ...}}: made on the first run, reused afterwards
    passwd             mosquitto's password file (PBKDF2 hashes, made with ``mosquitto_passwd -U``)
    acl                mosquitto's ACL file, rewritten on every run from :func:`acl_text`

Users:

* one per node (:data:`NODE_USERS`); ``deploy/up`` gives each node process ``BESS_MQTT_USERNAME=<node>`` and
  ``BESS_MQTT_PASSWORD``;
* one per device, named by its battery id (``BESS_BATTERIES``, default ``battery-1``): a real battery
  controller that may touch only its own battery's topics;
* with a device bridge (``BESS_BRIDGE_PROFILE``, :class:`BridgeAccess`): the user ``bridge`` (its contract topics,
  bound to its battery, plus exactly its profile's foreign topics) and the user of the device behind it
  (``BESS_BRIDGE_DEVICE_USER``, default the bridged battery's id), which may use only its own dialect's topics
  (Victron: publish ``N/<portal id>/#``, read the bridge's ``W/...`` writes and ``R/.../keepalive``); the bridged
  battery has no contract device user then (the bridge is its device);
* :data:`HASS_USER`: Home Assistant itself (its MQTT integration's username), with the rights of the contract's
  ``hass`` role (read what its entities show, write its controls' request topics and ``<prefix>/status``) and
  read on its discovery prefix (``BESS_HA_DISCOVERY_PREFIX``: Home Assistant subscribes ``<prefix>/#``);
* :data:`MONITOR_USER`, read-only: an operator's ``mosquitto_sub``;
* :data:`PROBE_USER`, read-only like the monitor: ``deploy/up``'s readiness and status probes (``$SYS/#``, node
  statuses). A user of its own because the broker binds client ids to users (``use_username_as_clientid``, so
  no user can take over another's session): one user is one connection at a time, and a probe must not
  kick an operator's ``mosquitto_sub`` off.

How the ACL is derived: the ``producers`` and ``consumers`` of every topic in ``nodes/contract/topics.py`` are
roles (:class:`nodes.contract.names.Role`, values, not prose), so a node may write exactly the topics it
produces and read exactly the ones it consumes, with the topic parameters bound as tightly as the contract allows
(``node/{node}/status`` to the node itself, ``history/response/{client}`` to the client that asked,
``battery/{battery}/...`` to the device itself). The few places where least privilege differs from those lists
are spelled out, with the reason, in :data:`ADDED` and :data:`WITHHELD`. Topics outside the root (Home
Assistant's discovery) are granted under the prefix their setting names (``prefixes``). This module is standard
library only
(like ``deploy/stack.py``, it runs before the virtualenv exists), so it reads the roles from
``nodes/contract/access.json``, which ``python -m nodes.contract`` generates from ``topics.py`` (a test fails when
it is stale), and the node list and id rule from ``nodes/contract/names.py`` (standard library only too).

Longer than 600 lines: the users, their grants and the files that hold them are one derivation from the
contract, read top to bottom (the bridge's and Home Assistant's accounts are cases of it); split, every part
would need the others' user lists, and ``python3 deploy/auth.py password`` must stay this file.

Command line (prints a password for ``mosquitto_sub -u USER -P ...``)::

    python3 deploy/auth.py password USER [AUTH_DIR]     # AUTH_DIR defaults to $BESS_VAR_DIR/mqtt-auth
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # run as `python3 deploy/auth.py`: make `nodes.contract` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy.accounts import private_dir, write_atomic
from deploy.apt import find_binary
from deploy.foreign_topics import foreign_filter_problems
from deploy.mqtt_probe import PROBE_TOPIC_PREFIX
from nodes.contract.access import AccessError, TopicAccess, load_access  # standard library only, like this module
from nodes.contract.names import NODE_NAMES, NODES, Role, id_problems, root_problems

#: Every node that gets its own broker user, in start order (the contract's node list).
NODE_USERS: tuple[str, ...] = NODE_NAMES
#: Home Assistant's broker user (the contract's role ``hass``).
HASS_USER = "hass"
#: The read-only user of an operator's mosquitto_sub.
MONITOR_USER = "monitor"
#: The read-only user of deploy/up's and deploy/status's probes (same rights as the monitor, its own connection).
PROBE_USER = "probe"
#: Users that may read everything and write nothing but their probe markers.
READ_ONLY_USERS: tuple[str, ...] = (MONITOR_USER, PROBE_USER)
#: Devices when BESS_BATTERIES is not set (the simulator's default battery).
DEFAULT_BATTERIES: tuple[str, ...] = ("battery-1",)
AUTH_DIR_NAME = "mqtt-auth"
CREDENTIALS_FILE = "credentials.json"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"

Access = Literal["read", "write", "readwrite"]

# Roles of the contract that are not a node, and what each gets.
DEVICE = Role.DEVICE  # one user per battery id, scoped to battery/<id>/...
EVERY_NODE = Role.EVERY_NODE  # each node its own {node}
REQUESTER = Role.REQUESTER  # each asking client its own {client}
#: Readers named in the contract that get no broker grant of their own: least privilege means only the named
#: nodes read a topic ("anyone" may ask the monitor user); the dashboard is HTTP from the renderer, not MQTT.
NO_GRANT_ROLES: frozenset[Role] = frozenset({Role.ANYONE, Role.DASHBOARD})
#: The device bridge: an opt-in node, a broker user only when ``deploy/up`` runs one (:class:`BridgeAccess`).
BRIDGE = Role.BRIDGE
BRIDGE_USER = BRIDGE.value
#: A response topic's readers are the producers of its request topic (contract constant names). Stored receipts
#: answer telemetry published with that response topic (the gateway's durable POST /write).
RESPONSE_TO: Mapping[str, str] = {"HISTORY_RESPONSE": "HISTORY_REQUEST", "STORED_RESPONSE": "TELEMETRY"}
#: Parameters that name the client itself: bound to the user's own name, never a wildcard, for the
#: roles EVERY_NODE (``node/{node}/status``) and REQUESTER (``history/response/{client}``).
IDENTITY_PARAMS = frozenset({"node", "client"})
#: Home Assistant itself: one user (:data:`HASS_USER`) with exactly the contract's ``hass`` rights.
HASS = Role.HASS
#: Every role this module knows what to grant (a role added to the contract fails :func:`grants` until it is here).
KNOWN_ROLES: frozenset[Role] = frozenset({*NODES, BRIDGE, DEVICE, EVERY_NODE, REQUESTER, HASS, *NO_GRANT_ROLES})


class AuthError(RuntimeError):
    """Credentials or the ACL could not be made (bad battery id, broken credentials.json, no mosquitto_passwd)."""


@dataclass(frozen=True)
class BridgeAccess:
    """The device bridge of this run and what its profile needs beyond the contract: the device's own topics,
    filled in with the configured portal id / device (``python -m nodes.bridge acl``, :mod:`nodes.bridge.acl`)."""

    #: the profile's name, for the ACL's comments
    profile: str
    #: the battery the bridge stands for (its contract topics are bound to it)
    battery: str
    #: the broker user of the device behind the bridge (a GX's link, a SolarAssistant unit)
    device_user: str
    #: concrete topics the bridge reads (the profile's readings)
    bridge_read: tuple[str, ...]
    #: concrete topics the bridge writes (the device's writes and keep-alive)
    bridge_write: tuple[str, ...]
    #: filters the device publishes on (its namespace, covering the readings)
    device_publish: tuple[str, ...]
    #: filters the device reads (covering the bridge's writes)
    device_read: tuple[str, ...]


@dataclass(frozen=True)
class Adjustment:
    """A grant that differs from the contract's producer/consumer lists, with the reason.

    ``role`` is a node name or :data:`DEVICE`; ``target`` is a contract constant name (``TELEMETRY``) or a
    filter relative to the topic root (``battery/#``). For a device, ``{battery}`` is bound to its own id.
    """

    role: Role
    access: Literal["read", "write"]
    target: str
    why: str


ADDED: tuple[Adjustment, ...] = (
    Adjustment(Role.SIMULATOR, "read", "TELEMETRY", "resumes each battery from its own last retained telemetry"),
    Adjustment(DEVICE, "read", "TELEMETRY", "resumes from its own last retained telemetry after a restart"),
    Adjustment(Role.RENDERER, "read", "battery/#", "the dashboard may show anything of a battery (commands too)"),
)
WITHHELD: tuple[Adjustment, ...] = (
    Adjustment(Role.SIMULATOR, "read", "SCHEDULE", "listed as a consumer, but devices follow commands (set) only"),
    Adjustment(DEVICE, "read", "SCHEDULE", "listed as a consumer, but devices follow commands (set) only"),
)


# --------------------------------------------------------------------------------------------------------------
# the contract, as data


@functools.cache
def contract_topics() -> tuple[TopicAccess, ...]:
    """Every topic of the contract with its producer and consumer roles, in contract order (access.json)."""
    try:
        return load_access()
    except AccessError as exc:
        raise AuthError(str(exc)) from exc


def roles_of(roles: Iterable[Role]) -> frozenset[Role]:
    """The roles that get broker rights among ``roles`` (:data:`NO_GRANT_ROLES` dropped); an unknown role
    raises :class:`AuthError`, so a new role in the contract cannot silently get (or lose) broker rights."""
    found = frozenset(roles)
    unknown = found - KNOWN_ROLES
    if unknown:
        names = ", ".join(sorted(role.value for role in unknown))
        raise AuthError(f"role(s) {names} of the topic contract: say in deploy/auth.py what they may do")
    return found - NO_GRANT_ROLES


def prefixes_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The prefixes of the topics outside the root, as ``environ`` sets them (``BESS_HA_DISCOVERY_PREFIX``)."""
    settings = {decl.prefix_setting for decl in contract_topics() if decl.prefix_setting is not None}
    return {name: environ[name] for name in sorted(settings) if environ.get(name)}


# --------------------------------------------------------------------------------------------------------------
# grants and the ACL file


def check_devices(devices: Iterable[str]) -> list[str]:
    """The device (battery) ids, checked: valid topic ids, unique, and not a node or the monitor user's name."""
    result: list[str] = []
    for device in devices:
        for problem in id_problems(device, "battery id"):
            raise AuthError(problem)
        if device in NODE_USERS or device in READ_ONLY_USERS or device == HASS_USER:
            raise AuthError(f"battery id {device!r} clashes with the broker user of the same name")
        if device in result:
            raise AuthError(f"battery id {device!r} is listed twice")
        result.append(device)
    return result


def _check_root(root: str) -> str:
    for problem in root_problems(root):
        raise AuthError(problem)
    return root


def _covers(broad: str, narrow: str) -> bool:
    """True if every topic matched by filter ``narrow`` is matched by filter ``broad``."""
    b_levels, n_levels = broad.split("/"), narrow.split("/")
    for index, level in enumerate(b_levels):
        if level == "#":
            return True
        if index >= len(n_levels) or n_levels[index] == "#":
            return False
        if level != "+" and level != n_levels[index]:
            return False
    return len(b_levels) == len(n_levels)


def check_bridge_users(bridge_battery: str, device_user: str, devices: Iterable[str]) -> list[str]:
    """The contract device users left when ``bridge_battery`` is bridged (it has none: the bridge is its device),
    checked against the bridged device's user: a valid id that is nobody else's user name."""
    for problem in id_problems(bridge_battery, "bridged battery id"):
        raise AuthError(problem)
    for problem in id_problems(device_user, "device user"):
        raise AuthError(problem)
    left = [device for device in devices if device != bridge_battery]
    if device_user in (*NODE_USERS, BRIDGE_USER, HASS_USER, *READ_ONLY_USERS, *left):
        raise AuthError(f"device user {device_user!r} clashes with the broker user of the same name")
    return left


def check_bridge(bridge: BridgeAccess, devices: Sequence[str], root: str) -> list[str]:
    """The contract devices left beside ``bridge`` (:func:`check_bridge_users`), after checking its topics."""
    left = check_bridge_users(bridge.battery, bridge.device_user, devices)
    topics = [(f, False) for f in (*bridge.bridge_read, *bridge.bridge_write)]
    topics += [(f, True) for f in (*bridge.device_publish, *bridge.device_read)]
    for topic_filter, wildcards in topics:
        for problem in foreign_filter_problems(topic_filter, root, wildcards=wildcards):
            raise AuthError(f"profile {bridge.profile}: {problem}")
    return left


class _Grants:
    """Filters per access for one user, in insertion order."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.write: list[str] = []

    def add(self, access: Literal["read", "write"], topic_filter: str) -> None:
        bucket = self.read if access == "read" else self.write
        if topic_filter not in bucket:
            bucket.append(topic_filter)

    def discard(self, access: Literal["read", "write"], topic_filter: str) -> None:
        bucket = self.read if access == "read" else self.write
        with contextlib.suppress(ValueError):
            bucket.remove(topic_filter)

    def lines(self) -> list[tuple[Access, str]]:
        """``(access, filter)`` pairs: readwrite, then read, then write (contract order within each); a filter
        covered by a broader one of the same access is dropped, read plus write of one filter is readwrite."""
        both = [f for f in self.read if f in self.write]
        read = [f for f in self.read if f not in both and not any(o != f and _covers(o, f) for o in self.read)]
        write = [f for f in self.write if f not in both and not any(o != f and _covers(o, f) for o in self.write)]
        return [*(("readwrite", f) for f in both), *(("read", f) for f in read), *(("write", f) for f in write)]


def _target_filter(target: str, root: str, topics: Mapping[str, TopicAccess], bound: Mapping[str, str]) -> str:
    if target in topics:
        return topics[target].filter(root, **bound)
    return f"{root}/{target}"


def _node_grants(node: Role, root: str, bound: Mapping[str, str], prefixes: Mapping[str, str]) -> _Grants:
    """A node's contract grants: what it produces and consumes, its own status and answers; ``bound`` fixes
    parameters for a node that serves one battery only (the bridge: ``{"battery": <its battery>}``); topics
    outside the root are granted under their prefix (``prefixes``, see :func:`grants`)."""
    decls = contract_topics()
    by_name = {decl.name: decl for decl in decls}
    requesters = {response: roles_of(by_name[request].producers) for response, request in RESPONSE_TO.items()}
    acl = _Grants()
    for decl in decls:
        producers, consumers = roles_of(decl.producers), roles_of(decl.consumers)
        own = {param: node.value for param in decl.params if param in IDENTITY_PARAMS}
        fixed = {param: value for param, value in bound.items() if param in decl.params}
        where = decl.root_of(root, prefixes)
        if node in producers:
            acl.add("write", decl.filter(where, **fixed))
        if node in consumers:
            acl.add("read", decl.filter(where, **fixed))
        if EVERY_NODE in producers:  # its own status: the status itself and its last will
            acl.add("write", decl.filter(where, **own))
            acl.add("read", decl.filter(where, **own))
        if REQUESTER in consumers and node in requesters.get(decl.name, frozenset()):
            acl.add("read", decl.filter(where, **own))
    _adjust(acl, node, root, by_name, {})
    return acl


def grants(
    root: str, devices: Sequence[str], bridge: BridgeAccess | None = None, *, prefixes: Mapping[str, str] | None = None
) -> dict[str, list[tuple[Access, str]]]:
    """Every user's ACL lines, ``{user: [(access, topic filter), ...]}``: nodes, the bridge, devices, the device
    behind the bridge, Home Assistant, then the read-only users. ``prefixes`` maps the settings of topics outside
    the root to their prefix (``{"BESS_HA_DISCOVERY_PREFIX": "homeassistant"}``; unset: each topic's default).

    Pure: the same root, devices, bridge, prefixes and contract always give the same result.
    """
    root = _check_root(root)
    devices = check_devices(devices)
    if bridge is not None:
        devices = check_bridge(bridge, devices, root)
    prefixes = {key: _check_root(value) for key, value in (prefixes or {}).items()}
    decls = contract_topics()
    by_name = {decl.name: decl for decl in decls}
    result: dict[str, list[tuple[Access, str]]] = {}

    for node in NODES:
        result[node.value] = _node_grants(node, root, {}, prefixes).lines()

    if bridge is not None:
        acl = _node_grants(BRIDGE, root, {"battery": bridge.battery}, prefixes)
        for topic in bridge.bridge_read:
            acl.add("read", topic)
        for topic in bridge.bridge_write:
            acl.add("write", topic)
        result[BRIDGE_USER] = acl.lines()

    for device in devices:
        acl = _Grants()
        for decl in decls:
            producers, consumers = roles_of(decl.producers), roles_of(decl.consumers)
            if DEVICE not in producers | consumers:
                continue
            if "battery" not in decl.params:
                raise AuthError(f"{decl.name} ({decl.path}) is a device topic without {{battery}}: cannot scope it")
            if DEVICE in producers:
                acl.add("write", decl.filter(root, battery=device))
            if DEVICE in consumers:
                acl.add("read", decl.filter(root, battery=device))
        _adjust(acl, DEVICE, root, by_name, {"battery": device})
        result[device] = acl.lines()

    if bridge is not None:
        acl = _Grants()
        for topic_filter in bridge.device_publish:
            acl.add("write", topic_filter)
        for topic_filter in bridge.device_read:
            acl.add("read", topic_filter)
        result[bridge.device_user] = acl.lines()

    hass = _Grants()
    for decl in decls:
        where = decl.root_of(root, prefixes)
        if HASS in roles_of(decl.producers):
            hass.add("write", decl.filter(where))
        if HASS in roles_of(decl.consumers):
            hass.add("read", decl.filter(where))
        if decl.prefix_setting is not None:  # Home Assistant subscribes its whole discovery prefix
            hass.add("read", f"{where}/#")
    result[HASS_USER] = hass.lines()

    for user in READ_ONLY_USERS:
        result[user] = [
            ("read", f"{root}/#"),
            ("read", "$SYS/#"),
            ("readwrite", f"{PROBE_TOPIC_PREFIX}/#"),
        ]
    if bridge is not None:  # the operator watches the device too (README: check the signs with mosquitto_sub)
        result[MONITOR_USER] += [("read", f) for f in (*bridge.device_publish, *bridge.device_read)]
    return result


def _adjust(acl: _Grants, role: Role, root: str, topics: Mapping[str, TopicAccess], bound: Mapping[str, str]) -> None:
    for adjustment in WITHHELD:
        if adjustment.role == role:
            acl.discard(adjustment.access, _target_filter(adjustment.target, root, topics, bound))
    for adjustment in ADDED:
        if adjustment.role == role:
            acl.add(adjustment.access, _target_filter(adjustment.target, root, topics, bound))


def acl_text(
    root: str, devices: list[str], bridge: BridgeAccess | None = None, *, prefixes: Mapping[str, str] | None = None
) -> str:
    """The mosquitto ACL file for topic root ``root``, these device (battery) ids, the device bridge and the
    prefixes of the topics outside the root (see :func:`grants`)."""
    lines = [
        f"# mosquitto ACL for topic root {root}, generated by deploy/auth.py from the roles of",
        "# nodes/contract/topics.py (as nodes/contract/access.json holds them).",
        "# Do not edit: deploy/up rewrites it on every start (change the contract or deploy/auth.py instead).",
        "#",
        "# Default deny: a user may use only the topics under its `user` line; anonymous clients are refused.",
        "# Mind mosquitto: a denied PUBLISH is acknowledged and dropped, a denied SUBSCRIBE is granted and then",
        "# delivers nothing. A broken grant shows up as silence, not as an error.",
        "#",
        "# Devices get explicit `user` blocks, not `pattern ... %u` lines: a pattern applies to EVERY user, so",
        "# the node users would also get device rights on a battery named like them, and a reviewer would have",
        "# to expand %u in their head. Explicit blocks list exactly who may do what; the price is that this file",
        "# changes with BESS_BATTERIES, and deploy/up rewrites it on every start anyway.",
    ]
    for user, entries in grants(root, devices, bridge, prefixes=prefixes).items():
        lines.append("")
        role: str
        if user in NODE_USERS:
            role, title = user, f"node {user}"
        elif bridge is not None and user == BRIDGE_USER:
            role, title = user, (
                f"node bridge: battery {bridge.battery} only, and exactly the device topics of profile "
                f"{bridge.profile}\n#   it reads and writes (nodes/bridge/acl.py)"
            )
        elif bridge is not None and user == bridge.device_user:
            role, title = user, (
                f"device {user}: the {bridge.profile} device behind the bridge (battery {bridge.battery}), its own\n"
                "#   dialect's topics only: it publishes its readings, it reads the bridge's writes"
            )
        elif user == HASS_USER:
            role, title = HASS, (
                "Home Assistant: what its entities read, its controls' request topics, its discovery prefix"
            )
        elif user in READ_ONLY_USERS:
            purpose = "an operator's mosquitto_sub" if user == MONITOR_USER else "deploy/up's and status's probes"
            role, title = user, (
                f"read-only, for {purpose}; bess-probe/# only carries the\n"
                "#   end marker of deploy/mqtt_probe.py's read_retained"
            )
        else:
            role, title = DEVICE, f"device {user}: only its own battery"
        lines.append(f"# {title}")
        if bridge is not None and user == MONITOR_USER:
            lines.append(f"#   also reads the topics of the {bridge.profile} device behind the bridge")
        lines.extend(f"#   also {adj.access} {adj.target}: {adj.why}" for adj in ADDED if adj.role == role)
        lines.extend(f"#   not {adj.access} {adj.target}: {adj.why}" for adj in WITHHELD if adj.role == role)
        lines.append(f"user {user}")
        lines.extend(f"topic {access} {topic_filter}" for access, topic_filter in entries)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# credentials on disk


@dataclass(frozen=True)
class Credentials:
    """The broker users of one deployment and where their files are."""

    directory: Path
    passwords: Mapping[str, str] = field(repr=False)  # never in a traceback or a test failure
    #: the contract device users (battery ids; not the bridged battery)
    devices: tuple[str, ...] = ()
    #: the device bridge of this run, whose users (``bridge`` and its device's) are in ``passwords``
    bridge: BridgeAccess | None = None

    @property
    def credentials_file(self) -> Path:
        """``credentials.json``: every password in clear text (0600)."""
        return self.directory / CREDENTIALS_FILE

    @property
    def password_file(self) -> Path:
        """mosquitto's ``password_file`` (hashes)."""
        return self.directory / PASSWORD_FILE

    @property
    def acl_file(self) -> Path:
        """mosquitto's ``acl_file``."""
        return self.directory / ACL_FILE

    def password(self, user: str) -> str:
        """The password of ``user`` (KeyError if there is no such user)."""
        return self.passwords[user]

    def login(self, user: str) -> tuple[str, str]:
        """``(user, password)``."""
        return user, self.passwords[user]

    def node_env(self, node: str) -> dict[str, str]:
        """``BESS_MQTT_USERNAME`` / ``BESS_MQTT_PASSWORD`` for a node process."""
        return {"BESS_MQTT_USERNAME": node, "BESS_MQTT_PASSWORD": self.passwords[node]}


def auth_dir(var_dir: Path) -> Path:
    """``<var>/mqtt-auth``."""
    return var_dir / AUTH_DIR_NAME


def read_passwords(directory: Path) -> dict[str, str]:
    """The ``users`` of ``directory/credentials.json`` ({} if the file does not exist)."""
    path = directory / CREDENTIALS_FILE
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AuthError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AuthError(f"{path} is not valid JSON ({exc}); fix or delete it (new passwords are made)") from exc
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
        raise AuthError(f"{path} has no {{'users': {{name: password}}}} object; fix or delete it")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)  # someone loosened it: passwords in clear text are for the owner only
    return dict(users)


def load_credentials(var_dir: Path, devices: Sequence[str] = ()) -> Credentials | None:
    """The credentials ``up`` made earlier under ``var_dir``, or None if there are none (nothing is written)."""
    directory = auth_dir(var_dir)
    passwords = read_passwords(directory)
    if not passwords:
        return None
    return Credentials(directory, passwords, tuple(devices))


def ensure_credentials(
    var_dir: Path,
    root: str,
    devices: Sequence[str],
    *,
    bridge: BridgeAccess | None = None,
    mosquitto_passwd: str | None = None,
    prefixes: Mapping[str, str] | None = None,
) -> Credentials:
    """Make (first run) or reuse the credentials under ``<var_dir>/mqtt-auth`` and (re)write passwd and acl.

    Passwords already in credentials.json are kept; missing users get a new random one. The password file
    and the ACL list only the users of this run (a battery dropped from ``devices`` loses its access; its
    password stays in credentials.json in case it comes back; the same for the bridge and its device).
    """
    devices = check_devices(devices)
    acl = acl_text(root, devices, bridge, prefixes=prefixes)  # validates root, devices, bridge, prefixes before writing
    if bridge is not None:
        devices = check_bridge(bridge, devices, root)
    passwd_bin = mosquitto_passwd or _find_mosquitto_passwd()
    directory = auth_dir(var_dir)
    private_dir(directory, 0o700)
    stored = read_passwords(directory)
    bridged = [BRIDGE_USER, bridge.device_user] if bridge is not None else []
    users = [*NODE_USERS, *bridged[:1], *devices, *bridged[1:], HASS_USER, *READ_ONLY_USERS]
    passwords = dict(stored)
    for user in users:
        passwords.setdefault(user, secrets.token_urlsafe(24))
    if passwords != stored:
        write_atomic(directory / CREDENTIALS_FILE, json.dumps({"users": passwords}, indent=2) + "\n", mode=0o600)
    creds = Credentials(directory, {user: passwords[user] for user in users}, tuple(devices), bridge)

    # mosquitto_passwd -U hashes a plain "user:password" file in place; unlike -b it never puts a password
    # on a command line (visible in ps). token_urlsafe passwords contain no ':' or newline.
    plain = creds.password_file.with_name(f".{PASSWORD_FILE}.{os.getpid()}.new")
    write_atomic(plain, "".join(f"{user}:{creds.passwords[user]}\n" for user in users), mode=0o600)
    try:
        result = subprocess.run(
            [passwd_bin, "-U", str(plain)], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise AuthError(f"mosquitto_passwd -U failed ({result.returncode}): {result.stderr.strip()}")
        plain.chmod(0o600)
        os.replace(plain, creds.password_file)
    finally:
        plain.unlink(missing_ok=True)
    write_atomic(creds.acl_file, acl, mode=0o600)
    return creds


def _find_mosquitto_passwd() -> str:
    found = find_binary("mosquitto_passwd")
    if found is None:
        raise AuthError("mosquitto_passwd is not installed (Debian package mosquitto); run deploy/up once")
    return found


def _default_auth_dir() -> Path:
    var_dir = Path(os.environ.get("BESS_VAR_DIR") or "var")
    if not var_dir.is_absolute():
        var_dir = Path(__file__).resolve().parent.parent / var_dir
    return auth_dir(var_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 deploy/auth.py password USER [AUTH_DIR]``: print USER's broker password."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3) or args[0] != "password":
        print("usage: auth.py password USER [AUTH_DIR]   (AUTH_DIR: $BESS_VAR_DIR/mqtt-auth)", file=sys.stderr)
        return 2
    directory = Path(args[2]) if len(args) == 3 else _default_auth_dir()
    try:
        passwords = read_passwords(directory)
    except AuthError as exc:
        print(f"auth.py: {exc}", file=sys.stderr)
        return 1
    if args[1] not in passwords:
        print(f"auth.py: no user {args[1]!r} in {directory / CREDENTIALS_FILE}", file=sys.stderr)
        return 1
    print(passwords[args[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
