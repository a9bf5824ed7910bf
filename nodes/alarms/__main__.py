"""``python -m nodes.alarms``: raise and clear every battery's alarms (``BESS_ALARMS``)."""

from nodes.alarms.config import AlarmsConfig
from nodes.alarms.node import Alarms
from nodes.runtime.node import main

if __name__ == "__main__":
    raise SystemExit(main("alarms", AlarmsConfig, Alarms))
