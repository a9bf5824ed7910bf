"""Plumbing shared by every node, no domain logic: the bus (``core`` the interface, ``bus`` over MQTT, ``memory`` in
process), its receive rules, status and request/response, the node lifecycle (``node``) and configuration."""
