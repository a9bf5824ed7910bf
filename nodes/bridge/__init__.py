"""Device bridges: a real battery that speaks its own MQTT dialect, connected with a profile, not code."""
