"""``python -m nodes.homeassistant``: publish Home Assistant discovery configs for every known battery."""

from nodes.homeassistant.config import HomeAssistantConfig
from nodes.homeassistant.node import HomeAssistantNode
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("homeassistant", HomeAssistantConfig, HomeAssistantNode))
