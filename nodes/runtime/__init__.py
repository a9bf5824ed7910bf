"""Plumbing shared by every node: the MQTT bus, the node lifecycle and configuration (no domain logic)."""
