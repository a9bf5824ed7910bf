"""The HTTP gateway: the seed's curl calls (POST /write, GET /read, POST /mqtt/publish) as typed MQTT messages."""
