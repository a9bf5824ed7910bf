"""Home Assistant MQTT discovery: every battery as a device with live values and controls."""
