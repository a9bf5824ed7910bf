"""``python -m nodes.market``: run the price feed; ``python -m nodes.market parse ...``: parse a saved answer."""

import sys

from nodes.market.config import MarketConfig
from nodes.market.node import Market
from nodes.runtime.node import main

if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1] != "parse":
            print(f"usage: python -m nodes.market [parse --source SOURCE --zone ZONE FILE] (not {sys.argv[1]!r})",
                  file=sys.stderr)
            raise SystemExit(2)
        from nodes.market.cli import main as parse_main

        raise SystemExit(parse_main(sys.argv[2:]))
    raise SystemExit(main("market", MarketConfig, Market))
