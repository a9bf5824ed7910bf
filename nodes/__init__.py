"""BESS: real-time battery monitoring, control and market optimisation over MQTT."""

__version__ = "0.1.0"
