"""The wire contract: topic names, parsing, validation at the boundary, generated docs in sync."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.contract import docs
from nodes.contract.messages import BatterySpec, Command, Telemetry
from nodes.contract.topics import (
    ALL_TOPICS,
    COMMAND,
    FIGURE,
    HISTORY_REQUEST,
    PRICES,
    STATUS,
    TELEMETRY,
    TopicError,
)

REPO = Path(__file__).resolve().parents[2]


def test_generated_docs_match_checked_in_files() -> None:
    assert docs.differences(REPO) == [], "run `python -m nodes.contract` and commit topics.md and schemas/"


def test_every_topic_is_documented_with_a_mosquitto_sub_line() -> None:
    text = (REPO / "topics.md").read_text()
    for topic in ALL_TOPICS:
        assert f"## `{topic.template}`" in text
        assert f"-t '{topic.filter()}'" in text


def test_examples_round_trip_through_their_topic() -> None:
    for topic in ALL_TOPICS:
        assert topic.decode(topic.encode(topic.example)) == topic.example


def test_name_filter_parse() -> None:
    assert TELEMETRY.name(battery="b1") == "bess/v1/battery/b1/telemetry"
    assert TELEMETRY.filter() == "bess/v1/battery/+/telemetry"
    assert FIGURE.filter(battery="b1") == "bess/v1/battery/b1/figure/+"
    assert FIGURE.parse("bess/v1/battery/b1/figure/soc") == {"battery": "b1", "figure": "soc"}
    assert PRICES.parse("x/y/market/de-lu/prices", root="x/y") == {"zone": "de-lu"}
    assert HISTORY_REQUEST.name() == "bess/v1/history/request"
    assert TELEMETRY.parse("bess/v1/battery/b1/state") is None
    assert TELEMETRY.parse("other/battery/b1/telemetry") is None
    assert STATUS.name(root="t1/bess/v1", node="recorder") == "t1/bess/v1/node/recorder/status"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "UPPER", "x" * 65, "sp ace", "é"])
def test_ids_that_would_break_the_topic_tree_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        COMMAND.name(battery=bad)


def test_missing_or_extra_params_are_refused() -> None:
    with pytest.raises(TopicError):
        TELEMETRY.name()
    with pytest.raises(TopicError):
        TELEMETRY.name(battery="b1", zone="x")


@given(st.from_regex(r"[a-z0-9_-]{1,64}", fullmatch=True))
def test_parse_inverts_name(battery: str) -> None:
    assert TELEMETRY.parse(TELEMETRY.name(battery=battery)) == {"battery": battery}


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (b'{"ts": "2025-01-16T10:00:00", "soc_kwh": 1}', "$.ts"),  # no zone
        (b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": -1}', "$.soc_kwh"),
        (b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": 1e400}', "$.soc_kwh"),
        (b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": "7"}', "$.soc_kwh"),
        (b'{"soc_kwh": 1}', "ts"),
    ],
)
def test_telemetry_validation_names_the_field(payload: bytes, path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=path.replace("$", r"\$")):
        TELEMETRY.decode(payload)


def test_nan_literal_is_not_json() -> None:
    with pytest.raises(msgspec.DecodeError):
        TELEMETRY.decode(b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": NaN}')


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    msg = TELEMETRY.decode(b'{"ts": "2025-01-16T10:00:00Z", "soc_kwh": 1, "voltage_v": 700}')
    assert msg == Telemetry(ts=msg.ts, soc_kwh=1.0)


def test_command_action_is_a_closed_set() -> None:
    raw = msgspec.json.encode(COMMAND.example).replace(b'"discharge"', b'"explode"')
    with pytest.raises(msgspec.ValidationError, match="action"):
        COMMAND.decode(raw)
    assert isinstance(COMMAND.example, Command)


def test_battery_spec_cross_field_problems() -> None:
    too_big = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=120, max_charge_kw=1, max_discharge_kw=1)
    assert too_big.problems() == ["soc_max_kwh is above capacity_kwh"]
    inverted = BatterySpec(capacity_kwh=100, soc_min_kwh=90, soc_max_kwh=80, max_charge_kw=1, max_discharge_kw=1)
    assert inverted.problems() == ["soc_min_kwh is above soc_max_kwh"]
    assert BatterySpec(**{**msgspec.structs.asdict(too_big), "soc_max_kwh": 95.0}).problems() == []
