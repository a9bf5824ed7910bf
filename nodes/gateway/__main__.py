"""``python -m nodes.gateway``: run the gateway node; ``python -m nodes.gateway openapi``: print its OpenAPI JSON."""

from __future__ import annotations

import sys

from nodes.gateway.config import GatewayConfig
from nodes.gateway.node import GatewayService
from nodes.gateway.openapi import render
from nodes.runtime.node import main


def cli(argv: list[str]) -> int:
    """Dispatch the command line."""
    if argv == ["openapi"]:
        sys.stdout.write(render())
        return 0
    if argv:
        print("usage: python -m nodes.gateway [openapi]", file=sys.stderr)
        return 2
    return main("gateway", GatewayConfig, GatewayService)


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
