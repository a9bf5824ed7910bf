"""``python -m nodes.recorder``: run the recorder node (configuration from ``BESS_*``, see config.py);
``python -m nodes.recorder migrate``: rewrite points stored under the field names of before currencies;
``python -m nodes.recorder rollups check|backfill``: check the telemetry rollups, compute them for a past range."""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1:
        if sys.argv[1] == "rollups":
            from nodes.recorder.rollups_cli import main as rollups_main

            raise SystemExit(rollups_main(sys.argv[2:]))
        if sys.argv[1] != "migrate":
            print(f"usage: python -m nodes.recorder [migrate [--dry-run] | rollups check | rollups backfill "
                  f"--begin ISO --end ISO [--battery ID]] (not {sys.argv[1]!r})", file=sys.stderr)
            raise SystemExit(2)
        from nodes.recorder.migrate import main as migrate_main

        raise SystemExit(migrate_main(sys.argv[2:]))
    from nodes.recorder.config import RecorderConfig
    from nodes.recorder.node import Recorder
    from nodes.runtime.node import main

    raise SystemExit(main("recorder", RecorderConfig, Recorder))
