"""Node lifecycle, the same for every node process.

::

    load config --invalid--> exit 2 (one line on stderr)
    (login refused by the broker --> exit 3, one line on stderr)
        |
    Bus(name, config)     the bus exists before the node: not connected yet
    factory(config, bus)  the node, given its bus (``self.bus``, never None)
        |
    setup()               register subscriptions, open resources (nothing is received yet)
        |
    bus.start()           connect with last will node/{node}/status=offline (retained); retry until the
        |                 broker answers; subscribe in on-connect; publish "online"
    run()                 the node's own loop (timers, HTTP servers); handlers run as messages arrive
        |
    SIGTERM / SIGINT
        |
    shutdown()            finish in-flight work, flush buffers
        |
    bus.stop()            publish "offline" (retained), disconnect (the persistent session stays)

A node is a :class:`Service`; ``python -m nodes.<name>`` calls :func:`main` with its factory. Unit tests give a
node a :class:`nodes.runtime.memory.MemoryBus` instead and drive its handlers (``tests/unit/test_*_shell.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from nodes.runtime.bus import Bus
from nodes.runtime.config import MqttSettings, load_or_exit
from nodes.runtime.core import MessageBus
from nodes.runtime.errors import BusRefused

C = TypeVar("C", bound=MqttSettings)
log = logging.getLogger("bess.node")


class Service(Generic[C]):
    """Base class of a node. Override :meth:`setup`, and :meth:`run`/:meth:`shutdown` when needed.

    The bus is passed in (an MQTT :class:`Bus` in a node process, a ``MemoryBus`` in unit tests) and is never
    None; the MQTT receive maximum comes from the config (``MqttSettings.receive_maximum``).
    """

    name: str = "node"

    def __init__(self, config: C, bus: MessageBus) -> None:
        self.config = config
        self.bus = bus

    async def setup(self) -> None:
        """Register subscriptions and open resources; called before the bus connects."""

    async def run(self) -> None:
        """The node's own work; the default waits until the node is stopped."""
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        """Finish in-flight work and flush buffers; called on SIGTERM/SIGINT before the bus disconnects."""


async def serve(service: Service[C], *, stop: asyncio.Event | None = None) -> None:
    """Run ``service`` through its whole lifecycle until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    bus = service.bus
    await service.setup()
    connect = asyncio.create_task(bus.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({connect, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if stopped.done():
        connect.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connect
        return
    await connect
    log.info("%s online (pid %d, root %s)", bus.node, os.getpid(), bus.root)
    runner = asyncio.create_task(service.run(), name=f"{service.name}.run")
    await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        log.error("%s run loop failed", service.name, exc_info=runner.exception())
    await _cancel(runner, service.name)
    log.info("%s stopping", bus.node)
    try:
        await service.shutdown()
    finally:
        await bus.stop()
        stopped.cancel()
    log.info("%s offline", bus.node)


async def _cancel(runner: asyncio.Task[None], name: str) -> None:
    """Cancel the run loop and wait for it, cancelling again while it goes on: Python 3.11's ``asyncio.wait_for``
    swallows a cancellation that arrives as its wait completes, and a run loop around one then never ends (the
    node would need a SIGKILL, its shutdown and offline status skipped)."""
    while not runner.done():
        runner.cancel()
        done, _ = await asyncio.wait({runner}, timeout=1.0)
        if not done:
            log.warning("%s run loop went on after it was cancelled; cancelling it again", name)
    with contextlib.suppress(asyncio.CancelledError):
        await runner


def configure_logging(node: str) -> None:
    """One log format for every node (the level comes from ``BESS_LOG_LEVEL``)."""
    level = os.environ.get("BESS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s %(levelname)s {node} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # gmqtt logs every reconnect attempt at INFO and prints noise; keep ours readable.
    logging.getLogger("gmqtt").setLevel(logging.WARNING)


def main(name: str, config_cls: type[C], factory: Callable[[C, MessageBus], Service[C]]) -> int:
    """Entry point of ``python -m nodes.<name>``: config, logging, bus, node, lifecycle. Returns the exit status."""
    configure_logging(name)
    config = load_or_exit(config_cls, name)
    try:
        service = factory(config, Bus(name, config))
    except (ValueError, msgspec.ValidationError) as exc:
        print(f"{name}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(service))
    except BusRefused as exc:
        # a permanent refusal: exit (non-zero, one line) instead of retrying forever with wrong credentials
        print(f"{name}: {exc}", file=sys.stderr)
        return 3
    return 0
