"""Random and malformed payloads on every subscribed topic, with recorder, planner, renderer, simulator and market
running on the real mosquitto and influxd.

A raw MQTT client (not the Bus, which refuses bad ids) publishes what hypothesis generates to every topic some
node subscribes to: random bytes, JSON of the wrong shape, ``NaN``/``Infinity``/``1e400`` literals, huge
integers, wrong types, missing fields, impossible or naive timestamps, invalid UTF-8, strings and lists one
beyond their contract bound, arrays nested 1,000 and 10,000 deep (as the whole payload and hidden in an unknown
field), and a 2 MB payload. Valid messages are interleaved, including the valid-but-awkward ones: unknown fields
(forward compatible: stored), numbers and strings at their bounds, and timestamps at and beyond the range
InfluxDB 1.x can store (1677-09-21 .. 2262-04-11 in nanoseconds; year 1 and year 9999 are valid in the contract
but not storable).

Whether a payload is "bad" for a topic is decided by the contract's own decoder (``Topic.decode``), exactly what
the nodes run, so the expected ``decode_errors`` of every node is known; a payload over the bus's bound for its
topic (``nodes.runtime.payload_limits``, the nodes' default settings) is counted ``oversized`` instead, without
being decoded. The expectations come from the contract this test imported, so the test first makes sure the
contract on disk (what the node processes import) is still the same. The test then checks:

* no node exits;
* each node's status counts exactly the bad payloads it was sent (``decode_errors``, ``oversized``), and
  ``unrouted`` for topic
  names outside the tree (``battery/UPPER/...``, ``battery/a b/...``, ``market/DE-LU/...``);
* what is stored for the fuzz battery and zone is exactly the valid, storable messages (time and value), the
  unstorable valid ones are counted (``rejected``), the implausible ones (timestamps before 2000 or more than a
  day ahead) are dropped and counted (``implausible``), and the live battery and zone gained only the points
  their real producers wrote;
* a message after all of it is still stored.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from deploy import stack
from nodes.contract.topics import (
    ALARM,
    COMMAND,
    CONTROL,
    HISTORY_REQUEST,
    HISTORY_RESPONSE,
    PRICES,
    REPLAN_REQUEST,
    REQUEST_RESULT,
    SCHEDULE,
    SPEC,
    STATE,
    STATUS,
    STORED,
    TELEMETRY,
    Topic,
)
from nodes.recorder.points import epoch_us
from nodes.runtime.bus import MqttSettings
from nodes.runtime.payload_limits import payload_limit
from tests.support.nodes import NodeProcess
from tests.support.services import Services
from tests.support.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.integration

NODES = ("recorder", "planner", "renderer", "simulator", "market")
CONTRACT_DIR = Path(__file__).resolve().parents[2] / "nodes" / "contract"


def contract_fingerprint() -> str:
    """A hash of the contract's sources as they are on disk now."""
    digest = hashlib.sha256()
    for path in sorted(CONTRACT_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# What this process decodes with; the node processes import the contract from disk when they start.
CONTRACT_AT_IMPORT = contract_fingerprint()
T = datetime(2020, 1, 1, tzinfo=UTC)  # valid fuzz messages live here, far from the live data of the test


# -- targets: every subscribed topic, and who receives it ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One concrete topic that some node subscribes to, and the nodes that receive it."""

    key: str
    topic: Topic[Any]
    params: dict[str, str]
    consumers: tuple[str, ...]

    def name(self, root: str) -> str:
        return self.topic.name(root=root, **self.params)

    def example(self) -> dict[str, Any]:
        """The topic's documented example message as JSON builtins (mutated by the bad-input cases)."""
        value = msgspec.to_builtins(self.topic.example)
        assert isinstance(value, dict)
        return value


def targets(sim: str, fuzz: str, zone: str) -> list[Target]:
    """Every topic a running node subscribes to, on the simulated battery ``sim`` and on a fuzz battery/zone."""
    return [
        Target("telemetry/fuzz", TELEMETRY, {"battery": fuzz}, ("recorder", "planner", "renderer")),
        Target("telemetry/sim", TELEMETRY, {"battery": sim}, ("recorder", "planner", "renderer", "simulator")),
        Target("spec/fuzz", SPEC, {"battery": fuzz}, ("planner", "renderer")),
        Target("spec/sim", SPEC, {"battery": sim}, ("planner", "renderer")),
        # the renderer reads commands too: the control panel's running command and the command history
        Target("set/fuzz", COMMAND, {"battery": fuzz}, ("recorder", "renderer")),
        Target("set/sim", COMMAND, {"battery": sim}, ("recorder", "simulator", "renderer")),
        Target("state/fuzz", STATE, {"battery": fuzz}, ("recorder", "renderer")),
        Target("state/sim", STATE, {"battery": sim}, ("recorder", "renderer")),
        Target("control/fuzz", CONTROL, {"battery": fuzz}, ("planner", "renderer")),
        Target("schedule/fuzz", SCHEDULE, {"battery": fuzz}, ("recorder", "renderer")),
        Target("schedule/sim", SCHEDULE, {"battery": sim}, ("recorder", "renderer")),
        Target("prices/fuzz", PRICES, {"zone": zone}, ("recorder",)),
        Target("prices/de-lu", PRICES, {"zone": "de-lu"}, ("recorder", "planner", "renderer")),
        Target("history/request", HISTORY_REQUEST, {}, ("recorder",)),
        Target("history/response", HISTORY_RESPONSE, {"client": "renderer"}, ("renderer",)),
        Target("stored/sim", STORED, {"battery": sim}, ("simulator",)),
        Target("node/status", STATUS, {"node": "fuzz-node"}, ("renderer",)),
        Target("alarm/fuzz", ALARM, {"battery": fuzz, "rule": "cell_temp_high"}, ("recorder", "renderer")),
        Target("request/result", REQUEST_RESULT, {"battery": fuzz}, ("renderer",)),
        Target("request/replan", REPLAN_REQUEST, {"battery": fuzz}, ("planner",)),
    ]


def unrouted_topics(root: str) -> dict[str, tuple[str, ...]]:
    """Topic names outside the tree (ids the Bus refuses) -> the nodes whose broker filter still matches them.

    They match a ``+`` in some subscription, so the broker delivers them; the Bus must count them as
    ``unrouted``, never decode or store them. ``battery/x/y/telemetry`` has one level too many: no filter of ours
    matches, so nobody receives it at all.
    """
    return {
        f"{root}/battery/UPPER/telemetry": ("recorder", "planner", "renderer"),
        f"{root}/battery/a b/telemetry": ("recorder", "planner", "renderer"),
        f"{root}/battery/x/y/telemetry": (),
        f"{root}/market/DE-LU/prices": ("recorder",),
        f"{root}/node/Bad Node/status": ("renderer",),
    }


def is_oversized(topic: Topic[Any], payload: bytes) -> bool:
    """True if the bus (with the nodes' default settings) drops ``payload`` on ``topic`` without decoding it."""
    settings = MqttSettings()
    limit = payload_limit(topic.payload, max_payload_bytes=settings.mqtt_max_payload_bytes,
                          max_bulk_payload_bytes=settings.mqtt_max_bulk_payload_bytes)
    return len(payload) > limit


def is_bad(topic: Topic[Any], payload: bytes) -> bool:
    """True if the contract's decoder (what every node runs) refuses ``payload`` for ``topic``."""
    try:
        topic.decode(payload)
    except Exception:  # whatever it is, the node must count it and drop it, not choke on it
        return True
    return False


# -- bad inputs --------------------------------------------------------------------------------------------------

HOLE = "\u0001hole\u0001"


def with_raw(message: dict[str, Any], key: str, raw: bytes) -> bytes:
    """``message`` as JSON with ``key`` set to the raw JSON text ``raw`` (which need not be valid JSON)."""
    return json.dumps({**message, key: HOLE}).encode().replace(json.dumps(HOLE).encode(), raw)


def pick(message: dict[str, Any], index: int) -> str:
    keys = sorted(message)
    return keys[index % len(keys)]


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@dataclass(frozen=True)
class Case:
    """One kind of bad input; ``build`` turns a topic's example message into the payload for that topic."""

    kind: str
    detail: str
    build: Callable[[dict[str, Any]], bytes]

    def __repr__(self) -> str:
        return f"Case({self.kind}: {self.detail[:80]})"


def same(kind: str, payload: bytes) -> Case:
    """The same payload for every topic."""
    return Case(kind, repr(payload[:40]), lambda _message: payload)


def replace_raw(kind: str, index: int, raw: bytes) -> Case:
    """One field of each topic's example replaced by raw JSON text."""
    return Case(kind, f"field #{index} = {raw[:40]!r}", lambda m: with_raw(m, pick(m, index), raw))


def replace_value(kind: str, index: int, value: Any) -> Case:
    """One field of each topic's example replaced by another JSON value (usually of the wrong type)."""
    return Case(kind, f"field #{index} = {value!r}", lambda m: json.dumps({**m, pick(m, index): value}).encode())


def drop_field(index: int) -> Case:
    def build(message: dict[str, Any]) -> bytes:
        return json.dumps({k: v for k, v in message.items() if k != pick(message, index)}).encode()

    return Case("missing field", f"field #{index}", build)


def hidden_deep(depth: int) -> Case:
    """A valid example plus an unknown field holding ``depth`` nested arrays (the decoder still has to skip it)."""
    return Case("deep nesting in an unknown field", str(depth), lambda m: with_raw(m, "zz_deep", deep(depth)))


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400, b"-0", b"1e-400", b"nul"]
BAD_TIMES = [
    "2025-01-16T10:00:00",  # naive: the contract wants a zone
    "2025-02-30T10:00:00Z",
    "10000-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2025-01-16T10:00:00+25:00",
    "2025-01-16",
    "",
    "yesterday",
    1_736_992_800,
    -1e400,
]
TIME_KEYS = ("ts", "issued_at", "valid_until", "created_at", "begin", "end", "since", "generated_at")

CASES = st.one_of(
    st.binary(min_size=1, max_size=256).map(lambda b: same("random bytes", b)),
    JSON_VALUES.map(lambda v: same("JSON of the wrong shape", json.dumps(v).encode())),
    st.sampled_from(LITERALS).map(lambda raw: same("bare literal", raw)),
    st.builds(lambda i, raw: replace_raw("NaN/Infinity/huge number in a field", i, raw),
              st.integers(0, 30), st.sampled_from(LITERALS)),
    st.builds(lambda i, v: replace_value("wrong type", i, v), st.integers(0, 30), JSON_VALUES),
    st.integers(0, 30).map(drop_field),
    st.builds(
        lambda key, bad: Case("bad timestamp", f"{key} = {bad!r}", lambda m: json.dumps({**m, key: bad}).encode()),
        st.sampled_from(TIME_KEYS), st.sampled_from(BAD_TIMES),
    ),
    st.builds(lambda i: replace_raw("invalid UTF-8 in a string", i, b'"\xff\xfe\xc3("'), st.integers(0, 30)),
    st.sampled_from([1_000, 10_000]).map(lambda d: same("deep nesting", deep(d))),
    st.sampled_from([1_000, 10_000]).map(hidden_deep),
    # one beyond the contract's string bounds (ShortText 64, Text 500, LongText 4000) and list bounds (32)
    st.builds(lambda i, n: replace_value("string beyond its bound", i, "x" * n),
              st.integers(0, 30), st.sampled_from([65, 501, 4001])),
    st.builds(lambda i: replace_value("list beyond its bound", i, ["x"] * 33), st.integers(0, 30)),
)

OVERSIZED = same("oversized (2 MB)", b'{"ts": "' + b"9" * (2 * 1024 * 1024) + b'"')
# valid where the bound is larger (schedule, prices, status, history answer): then not sent, like any valid case
OVERSIZED_VALID = Case("oversized, valid but for a 300 kB unknown field", "zz_blob",
                       lambda m: json.dumps({**m, "zz_blob": "x" * 300_000}).encode())


# -- valid inputs, interleaved with the bad ones --------------------------------------------------------------------


@dataclass(frozen=True)
class Valid:
    """A valid message and what the recorder must make of it."""

    what: str
    target: str
    message: dict[str, Any]
    #: "stored", "implausible" (dropped and counted by the bus: nodes.contract.plausibility), "rejected" (InfluxDB
    #: refuses it) or "stored-or-counted" (either is acceptable)
    outcome: str = "stored"


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def valid_messages(fuzz: str, zone: str) -> list[Valid]:
    """Valid messages for the fuzz battery and zone; times and values are what the stored-point check expects."""
    s = timedelta(seconds=1)

    def tel(ts: str | datetime, soc: float = 1.0, **extra: Any) -> dict[str, Any]:
        return {"ts": ts if isinstance(ts, str) else iso(ts), "soc_kwh": soc, **extra}

    slots = [{"start": iso(T + timedelta(hours=h)), "end": iso(T + timedelta(hours=h + 1)),
              "price_per_mwh": -500.0 + h, "charge_kw": 0.0, "discharge_kw": 1e7, "soc_kwh": 0.0} for h in (1, 2)]
    return [
        Valid("telemetry", "telemetry/fuzz", tel(T, 1.0)),
        Valid("unknown fields (forward compatible)", "telemetry/fuzz",
              tel(T + s, 2.0, firmware="9.9", extra={"nested": [1, [2, [3]]]}, power_kw=-3.5)),
        Valid("numbers at their bounds", "telemetry/fuzz",
              tel(T + 2 * s, 1e7, power_kw=-1e7, target_charge_kw=0, target_discharge_kw=1e7)),
        Valid("a JSON integer", "telemetry/fuzz", tel(T + 3 * s, 700)),
        Valid("a string at its bound", "telemetry/fuzz", tel(T + 4 * s, 5.0, source="x" * 64)),
        Valid("a +01:00 offset", "telemetry/fuzz", tel("2020-01-01T01:00:05+01:00", 6.0)),
        # valid in the contract, implausible as measurements (nodes.contract.plausibility): dropped and counted by
        # every consumer's bus, never stored (issue 16: year 2200 and now + 10 years were stored)
        Valid("earliest time InfluxDB 1.x stores", "telemetry/fuzz", tel("1677-09-21T00:12:43.145225Z", 7.0),
              "implausible"),
        Valid("latest time InfluxDB 1.x stores", "telemetry/fuzz", tel("2262-04-11T23:47:16.854775Z", 8.0),
              "implausible"),
        Valid("year 1", "telemetry/fuzz", tel("0001-01-01T00:00:00Z", 11.0), "implausible"),
        Valid("year 9999", "telemetry/fuzz", tel("9999-12-31T23:59:59.999999Z", 12.0), "implausible"),
        Valid("year 1 at +01:00 (year 0 in UTC)", "telemetry/fuzz", tel("0001-01-01T00:00:00+01:00", 13.0),
              "implausible"),
        Valid("year 2200", "telemetry/fuzz", tel("2200-01-01T00:00:00Z", 14.0), "implausible"),
        Valid("now + 10 years", "telemetry/fuzz", tel(datetime.now(UTC) + timedelta(days=3653), 15.0), "implausible"),
        Valid("1999-12-31", "telemetry/fuzz", tel("1999-12-31T23:59:59Z", 16.0), "implausible"),
        Valid("state in 2200", "state/fuzz", {"ts": "2200-01-01T00:00:00Z", "mode": "idle"}, "implausible"),
        Valid("command issued in 2200", "set/fuzz", {"command_id": "c-fuzz-3", "action": "idle",
              "issued_at": "2200-01-01T00:00:00Z", "valid_until": "2200-01-01T00:05:00Z"}, "implausible"),
        Valid("command", "set/fuzz", {"command_id": "c-fuzz-1", "action": "discharge", "power_kw": 50,
                                      "issued_at": iso(T + 10 * s), "valid_until": iso(T + 310 * s),
                                      "source": "operator", "text": 'DISCHARGE "50kW"\n\\'}),
        # valid_until is year 10000 in UTC: not representable as an RFC 3339 UTC string
        Valid("command whose lease ends 9999-12-31T23:59:59-01:00", "set/fuzz",
              {"command_id": "c-fuzz-2", "action": "idle", "issued_at": iso(T + 11 * s),
               "valid_until": "9999-12-31T23:59:59-01:00"}, "stored-or-counted"),
        Valid("state with lists and strings at their bounds", "state/fuzz",
              {"ts": iso(T + 12 * s), "mode": "idle", "limits_hit": ["soc_min", "a,b", *(["y" * 64] * 30)],
               "reason": 'r"\\\n' + "é" * 496, "unknown": {"x": 1}}),
        Valid("schedule with numbers at their bounds", "schedule/fuzz",
              {"plan_id": "p-fuzz", "created_at": iso(T + 13 * s), "soc_initial_kwh": 0.0, "slots": slots,
               "expected_revenue": -1e12, "solve_ms": 1e9}),
        Valid("prices with an unknown field", "prices/fuzz",
              {"zone": zone, "issued_at": iso(T), "source": "fuzz", "tariff": {"x": [1]},
               "slots": [{"start": iso(T + timedelta(hours=h)), "end": iso(T + timedelta(hours=h + 1)),
                          "price_per_mwh": 1e5 - h} for h in range(3)]}),
        Valid("prices issued in year 1", "prices/fuzz",
              {"zone": zone, "issued_at": "0001-01-01T00:00:00Z",
               "slots": [{"start": iso(T + timedelta(hours=10)), "end": iso(T + timedelta(hours=11)),
                          "price_per_mwh": 0}]}),
        Valid("history query over years 1..9999 (no response topic: nothing to answer)", "history/request",
              {"kind": "telemetry", "battery": fuzz, "begin": "0001-01-01T00:00:00Z",
               "end": "9999-12-31T23:59:59Z", "every_s": 86400}),
        Valid("status of a node nobody knows", "node/status",
              {"node": "fuzz-node", "state": "degraded", "counters": {"x": 1}, "new_field": True}),
        Valid("history response nobody asked for", "history/response", {"ok": True, "rows": [[1, "a", None]]}),
    ]


def encode_valid(valid: Valid) -> bytes:
    return json.dumps(valid.message).encode()


# -- helpers ---------------------------------------------------------------------------------------------------------


def counters(proc: NodeProcess, services: Services, root: str) -> dict[str, int]:
    status = proc.status(services.mqtt_host, services.mqtt_port, root) or {}
    return {key: int(value) for key, value in (status.get("counters") or {}).items()}


def select(services: Services, db: str, query: str) -> list[dict[str, Any]]:
    result = stack.influx_query(services.influx_url, query, db, epoch="u")
    series = result["results"][0].get("series") or []
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


def counts_by_tag(services: Services, db: str) -> dict[str, int]:
    """``count(*)`` per measurement and tag value: the before/after snapshot of the store."""
    found: dict[str, int] = {}
    for measurement, tag in (("telemetry", "battery"), ("command", "battery"), ("state", "battery"),
                             ("schedule", "battery"), ("plan", "battery"), ("prices", "zone")):
        result = stack.influx_query(
            services.influx_url, f'SELECT count(*) FROM "{measurement}" GROUP BY "{tag}"', db, epoch="u"
        )
        for series in result["results"][0].get("series") or []:
            columns, row = series["columns"], series["values"][0]
            found[f"{measurement}/{series['tags'][tag]}"] = max(
                v or 0 for c, v in zip(columns, row, strict=True) if c != "time"
            )
    return found


# -- the test ----------------------------------------------------------------------------------------------------


def test_bad_payloads_on_every_topic_are_counted_dropped_and_never_stored(
    run_node: Callable[..., NodeProcess], node_env: dict[str, str], services: Services, battery_id: str
) -> None:
    started = time.monotonic()
    root, db = node_env["BESS_TOPIC_ROOT"], node_env["BESS_INFLUX_DB"]
    fuzz, zone = f"fz-{uuid.uuid4().hex[:8]}", f"fz-{uuid.uuid4().hex[:6]}"
    env = {**node_env, "BESS_BATTERIES": battery_id, "BESS_STATUS_INTERVAL_S": "0.5",
           "BESS_SIM_TELEMETRY_INTERVAL_S": "1"}
    procs = {name: run_node(name, env) for name in NODES}
    for proc in procs.values():
        proc.wait_online(services.mqtt_host, services.mqtt_port, root, timeout=30)
    # Once the contract was edited while this ran: the nodes decoded with the new bounds, the expectations came
    # from the old ones, and two valid-by-the-old-contract messages were "counted twice as many" (issue 9).
    assert contract_fingerprint() == CONTRACT_AT_IMPORT, (
        "nodes/contract changed on disk since this test imported it: the nodes run another contract than the "
        "one the expected counts come from; run the test again"
    )
    wall_start = datetime.now(UTC)
    all_targets = {t.key: t for t in targets(battery_id, fuzz, zone)}
    unrouted = unrouted_topics(root)
    valids = valid_messages(fuzz, zone)
    for valid in valids:  # the contract's own decoder agrees that these are valid
        assert not is_bad(all_targets[valid.target].topic, encode_valid(valid)), valid.what
    before_counters = {name: counters(proc, services, root) for name, proc in procs.items()}
    before_store = counts_by_tag(services, db)

    expected_decode: Counter[str] = Counter()
    expected_oversized: Counter[str] = Counter()
    expected_unrouted: Counter[str] = Counter()
    sent_by_kind: Counter[str] = Counter()
    skipped_valid = 0
    queue = deque(valids)

    with services.mqtt_client(timeout=30) as client:

        def send_valid() -> None:
            if queue:
                valid = queue.popleft()
                client.publish(all_targets[valid.target].name(root), encode_valid(valid), qos=1)

        def send(case: Case) -> None:
            nonlocal skipped_valid
            for target in all_targets.values():
                payload = case.build(target.example())
                oversized = is_oversized(target.topic, payload)
                if not oversized and not is_bad(target.topic, payload):
                    skipped_valid += 1  # valid by chance (e.g. an optional field set to null): not bad input
                    continue
                client.publish(target.name(root), payload, qos=1)
                sent_by_kind[case.kind] += 1
                # the bus drops an oversized payload before decoding it, valid or not
                (expected_oversized if oversized else expected_decode).update(target.consumers)
            for name, consumers in unrouted.items():
                client.publish(name, case.build(all_targets["telemetry/fuzz"].example()), qos=1)
                sent_by_kind["topic outside the tree"] += 1
                expected_unrouted.update(consumers)
            send_valid()

        @seed(20250116)
        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: every example is published, and counted
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )
        @given(case=CASES)
        @example(case=OVERSIZED)
        @example(case=OVERSIZED_VALID)
        @example(case=same("deep nesting", deep(10_000)))
        @example(case=hidden_deep(10_000))
        @example(case=same("bare literal", b"NaN"))
        @example(case=replace_raw("NaN/Infinity/huge number in a field", 0, b"1e400"))
        @example(case=replace_value("wrong type", 1, {"a": [1]}))
        @example(case=same("random bytes", b"\xff\xfe\x00\x01"))
        def fuzz_every_topic(case: Case) -> None:
            send(case)

        fuzz_every_topic()
        while queue:
            send_valid()

        # A topic filter is not a topic name: the broker disconnects a client that publishes to one.
        for pattern in (f"{root}/battery/+/telemetry", f"{root}/battery/#"):
            with services.mqtt_client() as rogue, pytest.raises((stack.MqttError, OSError)):
                rogue.publish(pattern, b"{}", qos=1)

        # Later valid messages are still handled.
        last = T + timedelta(seconds=99)
        client.publish(all_targets["telemetry/fuzz"].name(root), json.dumps({"ts": iso(last), "soc_kwh": 99}).encode(),
                       qos=1)
    fuzz_done = time.monotonic()

    # Every node counts exactly what it dropped.
    seen: dict[str, tuple[int, int, int]] = {}
    expected = {name: (expected_decode[name], expected_oversized[name], expected_unrouted[name]) for name in NODES}

    def tallied() -> dict[str, dict[str, int]] | None:
        now = {name: counters(proc, services, root) for name, proc in procs.items()}
        for name in NODES:
            procs[name].assert_alive()
            decode, oversized, unrouted_ = (
                now[name].get(key, 0) - before_counters[name].get(key, 0)
                for key in ("decode_errors", "oversized", "unrouted")
            )
            seen[name] = (decode, oversized, unrouted_)
        return now if seen == expected else None

    try:
        after_counters = wait_for(tallied, 30, 0.2, what="every node's decode_errors, oversized and unrouted",
                                  ignore=(OSError,))
    except WaitTimeout:
        pytest.fail(f"(decode_errors, oversized, unrouted) per node: expected {expected}, counted {seen}",
                    pytrace=False)
    assert after_counters is not None
    wait_for(lambda: select(services, db, f"SELECT soc_kwh FROM telemetry WHERE time = {epoch_us(last)}u"), 20, 0.1,
             what="the valid message sent after all the bad ones")

    # -- the store: exactly the valid, storable messages for the fuzz battery and zone ---------------------------
    stored_expected = [v for v in valids if v.outcome == "stored"]
    telemetry_expected = {epoch_us(datetime.fromisoformat(v.message["ts"])): float(v.message["soc_kwh"])
                          for v in stored_expected if v.target == "telemetry/fuzz"}
    telemetry_expected[epoch_us(last)] = 99.0
    rows = select(services, db, f"SELECT soc_kwh, power_kw, source FROM telemetry WHERE battery = '{fuzz}'")
    assert {r["time"]: r["soc_kwh"] for r in rows} == telemetry_expected
    assert next(r for r in rows if r["soc_kwh"] == 5.0)["source"] == "x" * 64

    commands = select(services, db, f"SELECT command_id, text FROM command WHERE battery = '{fuzz}'")
    assert "c-fuzz-1" in {r["command_id"] for r in commands}
    assert {r["command_id"] for r in commands} <= {"c-fuzz-1", "c-fuzz-2"}  # never c-fuzz-3 (issued in 2200)
    assert next(r["text"] for r in commands if r["command_id"] == "c-fuzz-1") == 'DISCHARGE "50kW"\n\\'
    assert [r["time"] for r in select(services, db, f"SELECT mode FROM state WHERE battery = '{fuzz}'")] == [
        epoch_us(T + timedelta(seconds=12))
    ]
    assert len(select(services, db, f"SELECT soc_kwh FROM schedule WHERE battery = '{fuzz}'")) == 2
    (plan,) = select(services, db, f"SELECT * FROM plan WHERE battery = '{fuzz}'")
    assert plan["solve_ms"] == 1e9
    assert len(select(services, db, f"SELECT price_per_mwh FROM prices WHERE zone = '{zone}'")) == 4

    # Unstorable valid messages are counted, never silently lost, and never wedge the recorder.
    recorder = after_counters["recorder"]
    unstorable = sum(v.outcome == "rejected" for v in valids) + (
        0 if "c-fuzz-2" in {r["command_id"] for r in commands} else 1
    )
    accounted = recorder.get("rejected", 0) + recorder.get("handler_errors", 0)
    assert accounted == unstorable, recorder
    assert recorder.get("implausible", 0) == sum(v.outcome == "implausible" for v in valids), recorder

    # -- the live battery and zone gained only what their real producers wrote --------------------------------
    window = (epoch_us(wall_start - timedelta(minutes=10)), epoch_us(datetime.now(UTC) + timedelta(minutes=1)))
    outside = f"(time < {window[0]}u OR time > {window[1]}u)"
    assert select(services, db, f"SELECT * FROM telemetry WHERE battery = '{battery_id}' AND {outside}") == []
    assert select(services, db, f"SELECT * FROM telemetry WHERE battery = '{battery_id}' AND source != 'device'") == []
    assert select(services, db, f"SELECT * FROM state WHERE battery = '{battery_id}' AND {outside}") == []
    assert select(services, db, f"SELECT * FROM plan WHERE battery = '{battery_id}' AND {outside}") == []
    assert select(services, db, f"SELECT * FROM command WHERE battery = '{battery_id}'") == []  # nobody sends any
    market_sources = {r["source"] for r in select(services, db, "SELECT source FROM prices WHERE zone = 'de-lu'")}
    assert len(market_sources) == 1
    after_store = counts_by_tag(services, db)
    tags = {key.split("/", 1)[1] for key in after_store}
    assert tags <= {fuzz, zone, battery_id, "de-lu"}, tags  # nothing stored for UPPER, "a b", x/y, DE-LU...

    for proc in procs.values():
        proc.assert_alive()
    delta = {
        name: {key: after_counters[name].get(key, 0) - before_counters[name].get(key, 0)
               for key in ("received", "decode_errors", "oversized", "unrouted", "handler_errors", "render_errors",
                           "rejected", "stored", "messages", "history_requests", "history_errors")
               if after_counters[name].get(key, 0) - before_counters[name].get(key, 0)}
        for name in NODES
    }
    print(f"\n[topic fuzz] sent by kind: {dict(sent_by_kind)}; skipped as valid by chance: {skipped_valid}; "
          f"valid interleaved: {len(valids) + 1}")
    print(f"[topic fuzz] counters gained per node: {delta}")
    print(f"[topic fuzz] store before: {before_store}")
    print(f"[topic fuzz] store after:  {after_store}")
    print(f"[topic fuzz] fuzzing took {fuzz_done - started:.1f} s (with node start-up), "
          f"whole test {time.monotonic() - started:.1f} s")
