"""``python -m nodes.bridge acl``: print the broker topics the configured bridge and its device need in secure mode,
as JSON, from the same ``BESS_BRIDGE_*`` settings the bridge reads (``deploy/up`` runs it with the venv's python and
puts the answer into the broker's ACL)::

    $ BESS_BRIDGE_PROFILE=victron BESS_BRIDGE_PORTAL_ID=c0619ab1b2c3 ... python -m nodes.bridge acl
    {"profile": "victron", "battery": "battery-1",
     "bridge": {"read": ["N/c0619ab1b2c3/system/0/Dc/Battery/Soc", ...], "write": [...]},
     "device": {"publish": ["N/c0619ab1b2c3/#"], "read": ["W/c0619ab1b2c3/#", "R/c0619ab1b2c3/#"]}}

An invalid setting or profile is the bridge's own one line on stderr and exit 2, as at its start.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

from nodes.bridge.acl import broker_topics
from nodes.bridge.config import BridgeConfig
from nodes.runtime.config import load_or_exit


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``acl``: print the JSON; exit 2 (one line) for bad settings or a usage error."""
    if list(argv) != ["acl"]:
        print("usage: python -m nodes.bridge [acl]", file=sys.stderr)
        return 2
    config = load_or_exit(BridgeConfig, "bridge", os.environ if environ is None else environ)
    device = config.device()  # checked by load_or_exit (problems), so no ProfileError here
    answer = {"profile": device.profile.name, "battery": config.bridge_battery,
              **broker_topics(device.bound).as_json()}
    print(json.dumps(answer))
    return 0


__all__ = ["main"]
