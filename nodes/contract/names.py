"""Who and what has a name in the system: the roles that publish and consume topics, the nodes, and the rule for
ids and topic roots. One definition each, read by the topic contract (``topics.py``, ``messages.py``) and by
``deploy/`` (the broker ACL, the node list ``deploy/up`` starts).

Standard library only, on purpose: ``deploy/stack.py`` runs before the virtualenv exists and imports this module
(``nodes/__init__.py`` and ``nodes/contract/__init__.py`` must stay import-free for that;
``tests/unit/test_auth_acl.py`` runs deploy without site-packages to prove it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """Who publishes or consumes a topic (``Topic.producers`` / ``Topic.consumers``).

    The broker ACL of ``deploy/auth.py`` is derived from these, so they are values, not prose: the reasons
    and nuances go in the topic's ``doc``. A node's role is its name (its broker user, ``nodes.<name>``).
    """

    DEVICE = "device"
    RECORDER = "recorder"
    PLANNER = "planner"
    GATEWAY = "gateway"
    RENDERER = "renderer"
    MARKET = "market"
    SIMULATOR = "simulator"
    BRIDGE = "bridge"
    ALARMS = "alarms"
    HOMEASSISTANT = "homeassistant"
    HASS = "hass"
    EVERY_NODE = "every-node"
    REQUESTER = "requester"
    DASHBOARD = "dashboard"
    ANYONE = "anyone"


#: Every node, in the order ``deploy/up`` starts them (the recorder first: it stores from the first message).
NODES: Final[tuple[Role, ...]] = (
    Role.RECORDER,
    Role.PLANNER,
    Role.GATEWAY,
    Role.RENDERER,
    Role.HOMEASSISTANT,
    Role.MARKET,
    Role.SIMULATOR,
    Role.ALARMS,
)
#: The node names (``nodes/<name>``, broker users), in start order.
NODE_NAMES: Final[tuple[str, ...]] = tuple(role.value for role in NODES)

#: Nodes ``deploy/up`` starts only when their setting is set (after the others): the device bridge runs only for
#: a real device (``BESS_BRIDGE_PROFILE``). Not in :data:`NODES`: a default stack never runs them.
OPT_IN_NODES: Final[Mapping[str, str]] = {Role.BRIDGE.value: "BESS_BRIDGE_PROFILE"}
#: Every node ``deploy/up`` may run: the default ones in start order, then the opt-in ones.
ALL_NODE_NAMES: Final[tuple[str, ...]] = (*NODE_NAMES, *OPT_IN_NODES)

#: What each role means, for topics.md (a node's is its package; the others are not processes of their own).
ROLE_DOCS: Final[Mapping[Role, str]] = {
    Role.DEVICE: "a battery controller (the simulator plays one per simulated battery); with broker "
    "authentication one user per battery id, limited to its own `battery/<id>/...`",
    Role.RECORDER: "nodes/recorder: stores messages in InfluxDB, answers history requests",
    Role.PLANNER: "nodes/planner: optimal schedules, the autopilot's commands",
    Role.GATEWAY: "nodes/gateway: the HTTP API (ports 5000 and 5003)",
    Role.RENDERER: "nodes/renderer: Plotly figures and the dashboard (port 8050)",
    Role.MARKET: "nodes/market: the price feed",
    Role.SIMULATOR: "nodes/simulator: simulated batteries (acts as their device)",
    Role.BRIDGE: "nodes/bridge: a real device that speaks its own MQTT dialect, translated by a profile "
    "(acts as its device; its foreign topics are listed under External topics); with broker authentication the "
    "user `bridge`, bound to its one battery, and the device behind it a user of its own (its dialect's topics only)",
    Role.ALARMS: "nodes/alarms: raises and clears each battery's alarms (rules with hysteresis)",
    Role.HOMEASSISTANT: "nodes/homeassistant: Home Assistant MQTT discovery configs and the values they need "
    "that no other topic carries",
    Role.HASS: "Home Assistant itself (not a node of this project): with broker authentication the `hass` user",
    Role.EVERY_NODE: "each node about itself only (`{node}` is its own name)",
    Role.REQUESTER: "the client that asked (`{client}` is its own name)",
    Role.DASHBOARD: "browsers, through the renderer's HTTP (not an MQTT client)",
    Role.ANYONE: "any subscriber allowed to read (an operator's mosquitto_sub as the monitor user)",
}

# -- ids and topic roots ---------------------------------------------------------------------------------------

#: Longest id (battery, zone, node, figure, client): one topic level, never a wildcard or a slash.
ID_MAX_CHARS: Final = 64
#: The characters of an id, as a regex character class.
ID_CHARS: Final = "[a-z0-9_-]"
#: One id as a regex fragment (a topic parameter inside a longer pattern).
ID_SHAPE: Final = f"{ID_CHARS}{{1,{ID_MAX_CHARS}}}"
#: A whole id, anchored (JSON Schema ``pattern``, msgspec ``Meta(pattern=...)``).
ID_REGEX: Final = f"^{ID_SHAPE}$"
ID_PATTERN: Final = re.compile(ID_REGEX)
#: The rule in words, for error messages.
ID_RULE: Final = f"1-{ID_MAX_CHARS} characters from {ID_CHARS}"

#: A topic root such as ``bess/v1`` or ``site-7/bess/v2``: segments of [A-Za-z0-9_-] joined by ``/``.
ROOT_REGEX: Final = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
ROOT_PATTERN: Final = re.compile(ROOT_REGEX)
#: The default topic root (``BESS_TOPIC_ROOT``).
DEFAULT_ROOT: Final = "bess/v1"
#: A parameter in a topic template (``battery/{battery}/telemetry``).
PARAM_PATTERN: Final = re.compile(r"\{([a-z_]+)\}")


def id_problems(value: str, what: str = "id") -> list[str]:
    """``[]`` when ``value`` is a valid id, else the one-line reason (for a config's ``problems()``)."""
    if ID_PATTERN.fullmatch(value):
        return []
    return [f"{what} {value!r} is not a valid id: use {ID_RULE}"]


def root_problems(root: str) -> list[str]:
    """``[]`` when ``root`` is a valid topic root, else the one-line reason."""
    if ROOT_PATTERN.fullmatch(root):
        return []
    return [f"topic root {root!r} must be segments of [A-Za-z0-9_-] joined by '/'"]
