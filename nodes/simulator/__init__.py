"""Simulated batteries that behave like devices on the bus."""
