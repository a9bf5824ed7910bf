"""``python -m nodes.renderer``: figures on MQTT and the dashboard on ``BESS_DASHBOARD_PORT``."""

from nodes.renderer.node import Renderer, RendererConfig
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("renderer", RendererConfig, Renderer))
