"""``python -m nodes.recorder``: run the recorder node (configuration from ``BESS_*``, see config.py)."""

from nodes.recorder.config import RecorderConfig
from nodes.recorder.node import Recorder
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("recorder", RecorderConfig, Recorder))
