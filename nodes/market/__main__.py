"""``python -m nodes.market``: run the price feed."""

from nodes.market.node import Market, MarketConfig
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("market", MarketConfig, Market))
