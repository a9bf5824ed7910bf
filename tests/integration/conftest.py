"""Fixtures shared by the recorder's integration tests (test_recorder, test_recorder_faults, test_faults)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from nodes.runtime.bus import Bus
from tests.integration.test_recorder import Rig, make_publisher, make_rig
from tests.support.nodes import NodeProcess
from tests.support.services import Services


@pytest.fixture
def rig(
    services: Services, run_node: Callable[..., NodeProcess], node_env: dict[str, str], influx_db: str, battery_id: str
) -> Rig:
    return make_rig(services, run_node, node_env, influx_db, battery_id)


@pytest.fixture
async def publisher(services: Services, topic_root: str) -> AsyncIterator[Bus]:
    bus = await make_publisher(services, topic_root)
    yield bus
    await bus.stop()
