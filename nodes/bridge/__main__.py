"""``python -m nodes.bridge``: run the device bridge of ``BESS_BRIDGE_PROFILE`` for ``BESS_BRIDGE_BATTERY``;
``python -m nodes.bridge acl``: print the broker topics it and its device need in secure mode (deploy/up's ACL)."""

import sys

from nodes.bridge.config import BridgeConfig
from nodes.bridge.node import Bridge
from nodes.runtime.node import main

if __name__ == "__main__":
    if sys.argv[1:]:
        from nodes.bridge.acl_command import main as acl_main

        raise SystemExit(acl_main(sys.argv[1:]))
    raise SystemExit(main("bridge", BridgeConfig, Bridge))
