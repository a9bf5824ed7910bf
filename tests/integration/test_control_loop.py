"""The control loop closed on real services: price feed -> planner -> schedule + commands -> battery -> telemetry."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import pytest

from nodes.contract.topics import SCHEDULE, STATE, STATUS
from tests.support.services import Services
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=1.0).get(topic)
    return None if payload is None else json.loads(payload)


def test_planner_plans_and_drives_the_simulated_battery(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_STATUS_INTERVAL_S": "0.5",
    }
    run_node("simulator", env)
    run_node("market", env)
    planner = run_node("planner", env)

    schedule_topic = SCHEDULE.name(root=topic_root, battery=battery_id)
    schedule = wait_for(lambda: _retained(services, schedule_topic), timeout=60, what="a retained schedule")
    slots = schedule["slots"]
    assert len(slots) >= 24, "the plan covers the rest of today and tomorrow"
    assert all(not (s["charge_kw"] > 1e-6 and s["discharge_kw"] > 1e-6) for s in slots)
    assert all(100.0 - 1e-6 <= s["soc_kwh"] <= 950.0 + 1e-6 for s in slots)  # the simulator's default spec
    assert schedule["expected_revenue_eur"] >= (schedule.get("baseline_revenue_eur") or 0.0) - 1e-6

    # the autopilot sends the current slot's command; the battery reports following it, with the slot's end
    # as the lease
    state_topic = STATE.name(root=topic_root, battery=battery_id)

    def following_planner() -> Any:
        state = _retained(services, state_topic)
        return state if state and state.get("command_source") == "planner" else None

    state = wait_for(following_planner, timeout=30, what="the battery following a planner command")
    lease = datetime.fromisoformat(state["valid_until"])
    assert lease.isoformat() in {datetime.fromisoformat(s["end"]).isoformat() for s in slots}

    def counted() -> Any:
        status = _retained(services, STATUS.name(root=topic_root, node="planner"))
        counters = status.get("counters", {}) if status else {}
        return status if counters.get("plans", 0) >= 1 and counters.get("commands", 0) >= 1 else None

    status = wait_for(counted, timeout=10, what="planner status counting its plans and commands")
    assert status["state"] == "online", status
    planner.assert_alive()
    assert msgspec.json.decode(json.dumps(schedule).encode(), type=SCHEDULE.payload).plan_id == schedule["plan_id"]


def test_planner_reports_degraded_without_prices(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    env = {**node_env, "BESS_BATTERIES": battery_id, "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5"}
    run_node("simulator", env)
    run_node("planner", env)

    def degraded() -> Any:
        status = _retained(services, STATUS.name(root=topic_root, node="planner"))
        return status if status and status["state"] == "degraded" else None

    status = wait_for(degraded, timeout=30, what="planner degraded without prices")
    assert "no price forecast" in status["reason"]
    assert _retained(services, SCHEDULE.name(root=topic_root, battery=battery_id)) is None
