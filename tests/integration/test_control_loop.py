"""The control loop closed on real services: price feed -> planner -> schedule + commands -> battery -> telemetry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from nodes.contract.messages import Command, PriceForecast, PriceSlot, Schedule, Telemetry
from nodes.contract.topics import COMMAND, CONTROL, PRICES, SCHEDULE, SPEC, STATE, STATUS, TELEMETRY
from nodes.planner.inputs import planned_soc_at
from nodes.runtime.bus import Bus, Delivery, MqttSettings
from tests.integration.test_gateway import http_json, start_gateway
from tests.support.services import Services
from tests.support.waiting import wait_for, wait_for_async

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
    assert schedule["expected_revenue"] >= (schedule.get("baseline_revenue") or 0.0) - 1e-6

    # the autopilot sends the current slot's command; the battery reports following it, with a lease that ends
    # at the slot's end or one planner lease (300 s by default) after it was issued, whichever is sooner
    state_topic = STATE.name(root=topic_root, battery=battery_id)

    def following_planner() -> Any:
        state = _retained(services, state_topic)
        return state if state and state.get("command_source") == "planner" else None

    state = wait_for(following_planner, timeout=30, what="the battery following a planner command")
    lease = datetime.fromisoformat(state["valid_until"])
    issued = datetime.fromisoformat(state["ts"])
    slot_ends = {datetime.fromisoformat(s["end"]) for s in slots}
    assert lease in slot_ends or timedelta(0) < lease - issued <= timedelta(seconds=301)

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


def test_a_dead_planner_leaves_the_battery_idle_when_its_lease_runs_out(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    """Planner killed while the battery discharges on autopilot: the lease expires and the battery idles."""
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_SOC_INITIAL_KWH": "900",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_PLANNER_LEASE_S": "4",
    }
    run_node("simulator", env)
    planner = run_node("planner", env)
    # prices that make discharging now the only sensible plan: very dear now, cheap for the next hours
    now = datetime.now(UTC).replace(microsecond=0)
    forecast = PriceForecast(
        zone="de-lu",
        issued_at=now,
        slots=[
            PriceSlot(start=now + timedelta(hours=h), end=now + timedelta(hours=h + 1),
                      price_per_mwh=900.0 if h == 0 else 5.0)
            for h in range(12)  # more than BESS_PLANNER_PRICES_STALE_AFTER_H (6): fresh prices, planner online
        ],
    )
    with services.mqtt_client() as client:
        client.publish(PRICES.name(root=topic_root, zone="de-lu"), msgspec.json.encode(forecast), qos=1, retain=True)
    state_topic = STATE.name(root=topic_root, battery=battery_id)

    def discharging_for_planner() -> Any:
        state = _retained(services, state_topic)
        ok = state and state["mode"] == "discharging" and state.get("command_source") == "planner"
        return state if ok else None

    state = wait_for(discharging_for_planner, timeout=30, what="the battery discharging on autopilot")
    wait_for(lambda: (_retained(services, state_topic) or {}).get("command_id") != state["command_id"],
             timeout=15, what="the autopilot renewing its lease")
    planner.kill_now()
    killed_at = datetime.now(UTC)

    def idle() -> Any:
        state = _retained(services, state_topic)
        return state if state and state["mode"] == "idle" else None

    idle_state = wait_for(idle, timeout=20, what="the battery idle after the lease ran out")
    assert "expired" in idle_state["reason"]
    assert datetime.fromisoformat(idle_state["ts"]) - killed_at < timedelta(seconds=4 + 3)


async def test_in_autopilot_the_battery_soc_follows_the_plan(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    """A small, fast battery on 2-minute price slots: its measured SOC tracks the planned SOC."""
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_CAPACITY_KWH": "10",
        "BESS_SIM_SOC_MIN_KWH": "1",
        "BESS_SIM_SOC_MAX_KWH": "9",
        "BESS_SIM_SOC_INITIAL_KWH": "5",
        "BESS_SIM_MAX_CHARGE_KW": "120",  # 2 kWh a minute: the SOC moves visibly within seconds
        "BESS_SIM_MAX_DISCHARGE_KW": "120",
        "BESS_PLANNER_AUTOPILOT": "true",
    }
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    probe = Bus(f"probe-{battery_id}", settings)
    samples: list[tuple[datetime, float]] = []
    schedules: list[Schedule] = []

    async def on_telemetry(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        if message.source == "device" and not delivery.retain:
            samples.append((message.ts, message.soc_kwh))

    async def on_schedule(params: dict[str, str], message: Schedule, delivery: Delivery) -> None:
        schedules.append(message)

    probe.subscribe(TELEMETRY, on_telemetry, battery=battery_id)
    probe.subscribe(SCHEDULE, on_schedule, battery=battery_id)
    await probe.start()
    try:
        run_node("simulator", env)
        run_node("planner", env)
        now = datetime.now(UTC).replace(microsecond=0)
        prices = [900.0, 5.0, 5.0, 900.0, 5.0, 900.0]  # sell, buy, buy, sell, ...: every slot has work to do
        forecast = PriceForecast(
            zone="de-lu",
            issued_at=now,
            slots=[
                PriceSlot(start=now + timedelta(minutes=2 * i), end=now + timedelta(minutes=2 * (i + 1)),
                          price_per_mwh=price)
                for i, price in enumerate(prices)
            ],
        )
        await probe.publish(PRICES, forecast, wait_ack=True, zone="de-lu")
        await wait_for_async(lambda: schedules, timeout=30, what="a schedule")
        started = len(samples)
        await wait_for_async(lambda: len(samples) - started >= 30, timeout=30, what="15 s of telemetry")
    finally:
        await probe.stop()

    plan = schedules[-1]
    followed = [(ts, soc) for ts, soc in samples[started:] if ts >= plan.created_at + timedelta(seconds=1)]
    deviations = [abs(soc - (planned_soc_at(plan, ts) or soc)) for ts, soc in followed]
    moved = max(soc for _, soc in followed) - min(soc for _, soc in followed)
    assert moved > 0.3, "the battery must actually move for the comparison to mean anything"
    assert max(deviations) < 0.25, f"SOC off the plan by up to {max(deviations):.3f} kWh (moved {moved:.2f} kWh)"


async def test_an_operator_command_pauses_the_autopilot_until_control_hands_it_back(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    """POST /mqtt/publish DISCHARGE 50kW: the planner sends nothing during the lease (it renews every 2 s
    otherwise); POST /control autopilot hands the battery back and the planner commands again at once."""
    env = {
        **node_env,
        "BESS_BATTERIES": battery_id,
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_SOC_INITIAL_KWH": "900",
        "BESS_PLANNER_AUTOPILOT": "true",
        "BESS_PLANNER_LEASE_S": "4",  # without the pause the planner would renew its command every 2 s
    }
    settings = MqttSettings(mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, topic_root=topic_root)
    probe = Bus(f"probe-{battery_id}", settings, persistent=False)
    commands: list[Command] = []
    readings: list[Telemetry] = []

    async def on_command(params: dict[str, str], message: Command, delivery: Delivery) -> None:
        commands.append(message)

    async def on_telemetry(params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        if message.source == "device" and not delivery.retain:
            readings.append(message)

    probe.subscribe(COMMAND, on_command, battery=battery_id)
    probe.subscribe(TELEMETRY, on_telemetry, battery=battery_id)
    await probe.start()
    try:
        run_node("simulator", env)
        run_node("planner", env)
        base = start_gateway(run_node, services, env)[1][0]
        await wait_for_async(lambda: battery_id in http_json("GET", base + "/health")[1]["specs_known"], 20,
                             what="the gateway to know the battery")
        now = datetime.now(UTC).replace(microsecond=0)
        await probe.publish(PRICES, _discharge_now(now), wait_ack=True, zone="de-lu")
        await wait_for_async(lambda: any(c.source == "planner" for c in commands), 30, what="a planner command")

        status, body = http_json("POST", base + "/mqtt/publish", {"command": "DISCHARGE 50kW", "battery": battery_id})
        assert status == 202, body
        lease_end = body["message"]["valid_until"]
        assert body["control"]["mode"] == "manual"
        assert body["control"]["autopilot_paused_until"] == lease_end
        retained = _retained(services, CONTROL.name(root=topic_root, battery=battery_id))
        assert (retained["mode"], retained["until"], retained["source"]) == ("manual", lease_end, "gateway")
        assert body["message"]["command_id"] in retained["reason"]
        await wait_for_async(lambda: any(c.command_id == body["message"]["command_id"] for c in commands), 10,
                             what="the operator's command on the set topic")
        paused_at = len(commands)
        seen = len(readings)
        # 16 readings at 0.5 s: 8 s in which an unpaused autopilot would have renewed its 4 s lease 3 times
        await wait_for_async(lambda: len(readings) - seen >= 16, 30, what="8 s of device telemetry")
        assert commands[paused_at:] == [], "the autopilot commanded during the operator's lease"
        assert http_json("GET", f"{base}/control?battery={battery_id}")[1]["mode"] == "manual"

        status, body = http_json("POST", base + "/control", {"mode": "autopilot", "battery": battery_id})
        assert status == 202, body
        await wait_for_async(lambda: any(c.source == "planner" for c in commands[paused_at:]), 10,
                             what="the planner to command again after POST /control autopilot")
        assert http_json("GET", f"{base}/control?battery={battery_id}")[1]["mode"] == "autopilot"
    finally:
        await probe.stop()


def _discharge_now(now: datetime) -> PriceForecast:
    """Very dear for the first hour, cheap after: discharging now is the only sensible plan."""
    return PriceForecast(
        zone="de-lu",
        issued_at=now,
        slots=[
            PriceSlot(start=now + timedelta(hours=h), end=now + timedelta(hours=h + 1),
                      price_per_mwh=900.0 if h == 0 else 5.0)
            for h in range(12)  # more than BESS_PLANNER_PRICES_STALE_AFTER_H (6): fresh prices, planner online
        ],
    )


def test_per_battery_problems_are_notes_and_a_rejected_spec_recovers(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    """A spec that fails to decode, then one that fails its checks, are named in the planner's status details
    (the node stays online); a battery that only got HTTP-style writes is monitored, not planned; a valid spec
    brings the battery back at once."""
    env = {**node_env, "BESS_STATUS_INTERVAL_S": "0.5"}
    now = datetime.now(UTC).replace(microsecond=0)
    spec_topic = SPEC.name(root=topic_root, battery=battery_id)
    written_only = f"{battery_id}-written"
    good = {"capacity_kwh": 1000, "soc_min_kwh": 100, "soc_max_kwh": 950, "max_charge_kw": 250,
            "max_discharge_kw": 250}
    with services.mqtt_client() as client:
        client.publish(PRICES.name(root=topic_root, zone="de-lu"), msgspec.json.encode(_discharge_now(now)), qos=1,
                       retain=True)
        client.publish(TELEMETRY.name(root=topic_root, battery=battery_id),
                       msgspec.json.encode(Telemetry(ts=now, soc_kwh=500)), qos=1, retain=True)
        client.publish(spec_topic, json.dumps({**good, "soc_min_kwh": -5}), qos=1, retain=True)
    planner = run_node("planner", env)
    planner.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    with services.mqtt_client() as client:
        client.publish(TELEMETRY.name(root=topic_root, battery=written_only),
                       msgspec.json.encode(Telemetry(ts=now, soc_kwh=300, source="gateway")), qos=1)
    status_topic = STATUS.name(root=topic_root, node="planner")

    def details(condition: Any) -> Any:
        status = _retained(services, status_topic)
        return status if status and condition(status.get("details", {})) else None

    status = wait_for(lambda: details(lambda d: battery_id in d and written_only in d), 30,
                      what="notes for both batteries")
    assert status["state"] == "online", status
    assert status["details"][written_only] == "monitored, not planned: no spec received"
    assert status["details"][battery_id].startswith(f"not planned: spec for {battery_id} rejected: Expected `float`")
    assert "soc_min_kwh" in status["details"][battery_id]

    with services.mqtt_client() as client:
        client.publish(spec_topic, json.dumps({**good, "soc_min_kwh": 960}), qos=1, retain=True)
    wait_for(lambda: details(lambda d: d.get(battery_id) == f"not planned: spec for {battery_id} rejected: "
                             "soc_min_kwh is above soc_max_kwh"), 30, what="the spec's problem named")
    with services.mqtt_client() as client:
        client.publish(spec_topic, json.dumps(good), qos=1, retain=True)
    status = wait_for(lambda: details(lambda d: battery_id not in d), 30, what="the valid spec to clear the note")
    assert status["state"] == "online"
    schedule = wait_for(lambda: _retained(services, SCHEDULE.name(root=topic_root, battery=battery_id)), 30,
                        what="a schedule once the spec is valid")
    assert schedule["soc_initial_kwh"] == 500.0
