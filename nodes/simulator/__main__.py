"""``python -m nodes.simulator``: run the simulated batteries of ``BESS_BATTERIES``."""

from nodes.runtime.node import main
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.node import Simulator

if __name__ == "__main__":
    raise SystemExit(main("simulator", SimulatorConfig, Simulator))
