"""``python -m nodes.renderer``: figures on MQTT and the dashboard on ``BESS_DASHBOARD_PORT``."""

from nodes.renderer.config import RendererConfig
from nodes.renderer.node import Renderer
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("renderer", RendererConfig, Renderer))
