"""One real mosquitto and one real influxd for a whole test session.

Where a Docker engine answers (``docker.from_env().ping()``; the docker CLI alone proves nothing) they run in
containers via testcontainers (``eclipse-mosquitto:2`` with deploy/mosquitto.conf, ``influxdb:1.8``). Otherwise,
as on the development machines, they run as local processes on free loopback ports through ``deploy/stack.py``.
``BESS_TEST_SERVICES=local|docker|auto`` (default auto) forces a mode.

Fault tests (stop, kill, start, restart) need the local mode and skip in the container mode.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from deploy import stack
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
Mode = Literal["local", "docker"]


def docker_available() -> bool:
    """True if a Docker engine answers a ping (not merely if the docker CLI or SDK is installed)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@dataclass(frozen=True)
class Services:
    """Addresses of the session's broker and database, plus fault injection (local mode only).

    ``broker`` and ``influxd`` are the :mod:`deploy.stack` handles in local mode (None in docker mode). The
    ports stay the same across stop/kill/start, so clients can reconnect to the same address.
    """

    mqtt_host: str
    mqtt_port: int
    mqtt_ws_port: int | None
    influx_url: str
    mode: Mode
    broker: stack.Mosquitto | None = None
    influxd: stack.Influxd | None = None
    containers: tuple[Any, ...] = ()

    # --- fault injection -------------------------------------------------------------------------------------
    def _local_broker(self) -> stack.Mosquitto:
        if self.broker is None:
            pytest.skip("stopping/killing the broker needs local processes (BESS_TEST_SERVICES=local)")
        return self.broker

    def _local_influxd(self) -> stack.Influxd:
        if self.influxd is None:
            pytest.skip("stopping/killing influxd needs local processes (BESS_TEST_SERVICES=local)")
        return self.influxd

    def stop_broker(self, timeout: float = 10.0) -> int | None:
        """Clean shutdown (SIGTERM): mosquitto writes its persistence file; returns the exit code."""
        return self._local_broker().stop(timeout)

    def kill_broker(self) -> int | None:
        """SIGKILL: sessions and queued messages since the last autosave (every 2 s) are lost; returns the exit code."""
        return self._local_broker().kill()

    def start_broker(self, timeout: float = 15.0) -> None:
        """Start the broker again on the same ports with the same data; returns once it answers."""
        self._local_broker().start(timeout)

    def restart_broker(self, *, hard: bool = False, timeout: float = 15.0) -> None:
        """Stop (``hard``: kill) and start the broker."""
        self._local_broker().restart(timeout, kill=hard)

    def stop_influx(self, timeout: float = 10.0) -> int | None:
        """Clean shutdown of influxd (SIGTERM); returns the exit code."""
        return self._local_influxd().stop(timeout)

    def kill_influx(self) -> int | None:
        """SIGKILL influxd; returns the exit code."""
        return self._local_influxd().kill()

    def start_influx(self, timeout: float = 30.0) -> None:
        """Start influxd again on the same port with the same data; returns once /ping answers."""
        self._local_influxd().start(timeout)

    def restart_influx(self, *, hard: bool = False, timeout: float = 30.0) -> None:
        """Stop (``hard``: kill) and start influxd."""
        self._local_influxd().restart(timeout, kill=hard)

    def ensure_running(self) -> None:
        """Start whatever a test left stopped (the fixtures call this after every test)."""
        if self.broker is not None and not self.broker.running:
            self.broker.start()
        if self.influxd is not None and not self.influxd.running:
            self.influxd.start()

    # --- conveniences ----------------------------------------------------------------------------------------
    @property
    def mqtt_ready(self) -> bool:
        """True if the broker answers MQTT right now."""
        return stack.mqtt_ready(self.mqtt_host, self.mqtt_port)

    @property
    def influx_ready(self) -> bool:
        """True if influxd answers /ping right now."""
        return stack.influx_ping(self.influx_url)

    def mqtt_client(self, **kwargs: Any) -> stack.MiniMqtt:
        """A small blocking MQTT 3.1.1 client connected to the broker (see :class:`deploy.stack.MiniMqtt`)."""
        return stack.MiniMqtt(self.mqtt_host, self.mqtt_port, **kwargs)

    def read_retained(self, topic_filter: str, timeout: float = 5.0) -> dict[str, bytes]:
        """Every retained message under ``topic_filter`` now, as ``{topic: payload}``."""
        return stack.read_retained(self.mqtt_host, self.mqtt_port, topic_filter, timeout)

    def influx_rows(self, db: str, query: str) -> list[dict[str, Any]]:
        """Run an InfluxQL SELECT and return flat dict rows (times in epoch ms)."""
        return stack.influx_rows(self.influx_url, db, query)

    def influx_write(self, db: str, lines: str | list[str], precision: str = "ms") -> None:
        """Write line protocol (raises unless InfluxDB answers 204)."""
        stack.influx_write(self.influx_url, db, lines, precision)

    def close(self) -> None:
        """Stop everything this object started."""
        for service in (self.broker, self.influxd):
            if service is not None:
                service.stop()
        for container in self.containers:
            with contextlib.suppress(Exception):
                container.stop()


def start_local(base_dir: Path) -> Services:
    """Broker and influxd as local processes under ``base_dir`` on free loopback ports (no websockets listener:
    mosquitto would bind it on every interface, and nothing uses it)."""
    if stack.find_binary("mosquitto") is None or stack.find_binary("influxd") is None:
        stack.ensure_packages()  # apt-get install when running as root; otherwise a clear StackError
    broker = stack.start_mosquitto(base_dir / "mosquitto", die_with_parent=True)
    try:
        influxd = stack.start_influxd(base_dir / "influxdb", die_with_parent=True)
    except BaseException:
        broker.stop()
        raise
    return Services(
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_ws_port=broker.ws_port,
        influx_url=influxd.url,
        mode="local",
        broker=broker,
        influxd=influxd,
    )


def start_docker() -> Services:
    """Broker and influxd as containers (testcontainers); ports are whatever Docker maps."""
    from testcontainers.core.container import DockerContainer

    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    # The config travels in an env var rather than a bind mount, so a remote Docker engine works too.
    write_and_run = (
        'printf "%s\\n" "$BESS_MOSQUITTO_CONF" > /mosquitto/config/mosquitto.conf'
        " && exec mosquitto -c /mosquitto/config/mosquitto.conf"
    )
    broker = (
        DockerContainer("eclipse-mosquitto:2")
        .with_exposed_ports(1883)
        .with_env("BESS_MOSQUITTO_CONF", conf)
        .with_command(["sh", "-c", write_and_run])
    )
    influx = (
        DockerContainer("influxdb:1.8")
        .with_exposed_ports(8086)
        .with_env("INFLUXDB_REPORTING_DISABLED", "true")
        .with_env("INFLUXDB_MONITOR_STORE_ENABLED", "false")
        .with_env("INFLUXDB_HTTP_LOG_ENABLED", "false")
    )
    started: list[Any] = []
    try:
        for container in (broker, influx):
            container.start()
            started.append(container)
        host = broker.get_container_host_ip()
        services = Services(
            mqtt_host=host,
            mqtt_port=int(broker.get_exposed_port(1883)),
            mqtt_ws_port=None,
            influx_url=f"http://{influx.get_container_host_ip()}:{influx.get_exposed_port(8086)}",
            mode="docker",
            containers=(broker, influx),
        )
        wait_for(lambda: services.mqtt_ready, timeout=60, interval=0.2, what="mosquitto container")
        wait_for(lambda: services.influx_ready, timeout=60, interval=0.2, what="influxdb container")
    except BaseException:
        for container in started:
            with contextlib.suppress(Exception):
                container.stop()
        raise
    return services


def start_services(base_dir: Path) -> Services:
    """Start the session's services in the mode chosen by ``BESS_TEST_SERVICES`` (auto: docker if it answers)."""
    mode = os.environ.get("BESS_TEST_SERVICES", "auto")
    if mode not in ("auto", "local", "docker"):
        raise ValueError(f"BESS_TEST_SERVICES={mode!r}: use auto, local or docker")
    if mode == "docker" or (mode == "auto" and docker_available()):
        return start_docker()
    return start_local(base_dir)
