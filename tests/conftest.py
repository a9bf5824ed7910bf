"""Shared fixtures: one real mosquitto + influxd per session, and per-test isolation on top of them.

Session:
    services      -> Services   broker + database (started lazily: only when an integration test asks for it)
Per test:
    topic_root    -> str        "t<hex8>/bess/v1", a private topic tree (segments of [A-Za-z0-9_-])
    battery_id    -> str        "b-<hex8>"
    influx_db     -> str        a fresh database "t_<hex12>", dropped after the test
    node_env      -> dict       BESS_* variables that point a node process at all of the above
    run_node      -> callable   run_node(name, env=None, *, args=()) -> NodeProcess, stopped at teardown

Any test that uses ``services`` (directly or through another fixture) is marked ``integration`` automatically,
so ``pytest -m "not integration"`` runs without servers. A test that stops or kills a server need not restart
it: the fixtures start whatever is down again after each test.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so `deploy.stack` and `tests.support` import however pytest was started
    sys.path.insert(0, str(ROOT))

from deploy import stack  # noqa: E402
from tests.support.nodes import NodeProcess, start_node  # noqa: E402
from tests.support.services import Services, start_services  # noqa: E402

_active: list[Services] = []
_NODES = pytest.StashKey[list[NodeProcess]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the real servers as ``integration``."""
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every node the test started to the report of a failing test."""
    report = yield
    if report.failed:
        for proc in item.stash.get(_NODES, []):
            report.sections.append((f"node {proc.name} log ({proc.log_path})", proc.log_tail(80)))
    return report


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """One mosquitto (TCP + websockets) and one influxd for the whole session: containers if a Docker engine
    answers, else local processes on free loopback ports."""
    try:
        started = start_services(tmp_path_factory.mktemp("services"))
    except stack.StackError as exc:
        pytest.fail(f"could not start mosquitto/influxd: {exc}", pytrace=False)
    _active.append(started)
    try:
        yield started
    finally:
        _active.remove(started)
        started.close()


@pytest.fixture(autouse=True)
def _restart_stopped_services() -> Iterator[None]:
    """After each test, start any server a fault test left stopped (never starts the services by itself)."""
    yield
    for started in _active:
        started.ensure_running()


@pytest.fixture
def topic_root() -> str:
    """A topic root no other test uses, e.g. ``t1a2b3c4d/bess/v1`` (pass it as BESS_TOPIC_ROOT)."""
    return f"t{uuid.uuid4().hex[:8]}/bess/v1"


@pytest.fixture
def battery_id() -> str:
    """A battery id no other test uses, e.g. ``b-1a2b3c4d`` (valid in topics: [a-z0-9_-])."""
    return f"b-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def influx_db(services: Services) -> Iterator[str]:
    """A fresh InfluxDB database for this test; its name (``t_<hex12>``). Dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    stack.create_database(services.influx_url, name)
    yield name
    services.ensure_running()
    with contextlib.suppress(stack.InfluxError, OSError):
        stack.drop_database(services.influx_url, name)


@pytest.fixture
def node_env(services: Services, topic_root: str, influx_db: str) -> dict[str, str]:
    """Environment for a node process in this test (merged over os.environ by ``start_node``/``run_node``).

    Gateway and dashboard ports are free ports picked now, so nodes of different tests never collide.
    """
    return {
        "BESS_MQTT_HOST": services.mqtt_host,
        "BESS_MQTT_PORT": str(services.mqtt_port),
        "BESS_MQTT_WS_PORT": str(services.mqtt_ws_port or ""),
        "BESS_INFLUX_URL": services.influx_url,
        "BESS_INFLUX_DB": influx_db,
        "BESS_TOPIC_ROOT": topic_root,
        "BESS_GATEWAY_PORTS": f"{stack.free_port()},{stack.free_port()}",
        "BESS_DASHBOARD_PORT": str(stack.free_port()),
    }


RunNode = Callable[..., NodeProcess]


@pytest.fixture
def run_node(
    request: pytest.FixtureRequest, services: Services, node_env: dict[str, str], tmp_path: Path
) -> Iterator[RunNode]:
    """``run_node(name, env=None, *, args=())`` starts ``python -m nodes.<name>`` with ``node_env`` (or
    ``env``), logging to ``tmp_path/<name>.log``; every node is stopped (SIGTERM, then SIGKILL) at teardown and
    its log is attached to the report if the test fails."""
    procs: list[NodeProcess] = []
    request.node.stash[_NODES] = procs

    def run(name: str, env: Mapping[str, str] | None = None, *, args: Sequence[str] = ()) -> NodeProcess:
        proc = start_node(name, node_env if env is None else env, log_dir=tmp_path, args=args)
        procs.append(proc)
        return proc

    yield run
    services.ensure_running()  # a node shuts down faster when it can still say goodbye to the broker
    for proc in procs:
        proc.stop()
