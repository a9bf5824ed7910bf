"""``python -m nodes.bridge``: run the device bridge of ``BESS_BRIDGE_PROFILE`` for ``BESS_BRIDGE_BATTERY``."""

from nodes.bridge.config import BridgeConfig
from nodes.bridge.node import Bridge
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("bridge", BridgeConfig, Bridge))
