"""The local stack: real mosquitto and influxd as plain processes (see :mod:`deploy.stack`)."""
