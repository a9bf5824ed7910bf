"""``python -m nodes.renderer``: figures on MQTT and the dashboard on ``BESS_DASHBOARD_PORT``;
``python -m nodes.renderer kpis backfill --battery B --begin ISO --end ISO [--force]``: store the final KPI days
of a past range (:mod:`nodes.renderer.kpi_backfill`)."""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1:3] != ["kpis", "backfill"]:
            print("usage: python -m nodes.renderer [kpis backfill --battery B --begin ISO --end ISO [--force]]",
                  file=sys.stderr)
            raise SystemExit(2)
        from nodes.renderer.kpi_backfill import main as backfill_main

        raise SystemExit(backfill_main(sys.argv[3:]))
    from nodes.renderer.config import RendererConfig
    from nodes.renderer.node import Renderer
    from nodes.runtime.node import main

    raise SystemExit(main("renderer", RendererConfig, Renderer))
