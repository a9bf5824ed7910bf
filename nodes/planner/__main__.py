"""``python -m nodes.planner``: run the planner node; ``plan`` / ``backtest`` run the model offline (CLI)."""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("plan", "backtest", "-h", "--help"):
        from nodes.planner.cli import main as cli_main

        raise SystemExit(cli_main(sys.argv[1:]))
    from nodes.planner.config import PlannerConfig
    from nodes.planner.node import Planner
    from nodes.runtime.node import main

    raise SystemExit(main("planner", PlannerConfig, Planner))
