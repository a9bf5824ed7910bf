"""Alarms on the real broker and influxd: three simulated batteries, a hot cell injected on one of them; the alarms
node raises its retained alarm within seconds and clears it after the fault ends, the recorder stores both
transitions, and a restarted alarms node neither raises it again nor forgets it. The BMS fields travel the same
way: published by the simulator, stored by the recorder, read back by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodes.contract.messages import BMS_NUMBERS
from nodes.contract.topics import ALARM, TELEMETRY
from tests.support.services import Services
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

FAULT_AT_S, FAULT_FOR_S = 3.0, 8.0
ALARMS = {"defaults": {"cell_temp_high": {"raise_after_s": 1, "clear_after_s": 2},
                       "prices_stale": {"enabled": False}}}


def retained(services: Services, topic: str) -> Any:
    payload = services.read_retained(topic, timeout=1.0).get(topic)
    return None if payload is None else json.loads(payload)


def influx_rows(services: Services, db: str, query: str) -> list[dict[str, Any]]:
    return services.influx_rows(db, query)


def test_a_hot_cell_is_raised_retained_cleared_after_the_fault_and_stored(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    influx_db = node_env["BESS_INFLUX_DB"]
    batteries = [f"{battery_id}-a", f"{battery_id}-b", f"{battery_id}-c"]
    hot = batteries[1]
    env = {
        **node_env,
        "BESS_BATTERIES": ",".join(batteries),
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_FAULT": json.dumps({hot: {"kind": "hot_cell", "at_s": FAULT_AT_S, "for_s": FAULT_FOR_S}}),
        "BESS_ALARMS": json.dumps(ALARMS),
        "BESS_ALARMS_RESTORE_WAIT_S": "0.5",
        "BESS_RECORDER_BATCH_MAX_DELAY_MS": "50",
        "BESS_STATUS_INTERVAL_S": "0.5",
    }
    run_node("recorder", env).wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    alarms = run_node("alarms", env)
    alarms.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("simulator", env)
    topic = ALARM.name(root=topic_root, battery=hot, rule="cell_temp_high")

    def state(wanted: str) -> Any:
        alarms.assert_alive()
        alarm = retained(services, topic)
        return alarm if alarm and alarm["state"] == wanted else None

    raised = wait_for(lambda: state("raised"), 20, 0.2, what="the hot cell alarm raised (retained)")
    assert raised["severity"] == "critical"
    assert raised["value"] == 58.0
    assert raised["threshold"] == 55.0
    assert raised["message"] == "max cell temperature 58.0 °C above 55 °C"
    for other in (batteries[0], batteries[2]):
        assert retained(services, ALARM.name(root=topic_root, battery=other, rule="cell_temp_high")) is None

    cleared = wait_for(lambda: state("cleared"), FAULT_FOR_S + 20, 0.2, what="the alarm cleared after the fault")
    assert cleared["raised_at"] == raised["since"]
    held_s = (datetime.fromisoformat(cleared["since"]) - datetime.fromisoformat(raised["since"])).total_seconds()
    assert FAULT_FOR_S - 1.5 <= held_s <= FAULT_FOR_S + 6, "up about as long as the fault lasted, plus the delays"

    def stored() -> list[dict[str, Any]] | None:
        rows = influx_rows(services, influx_db,
                           f"SELECT * FROM \"alarms\" WHERE \"battery\"='{hot}' AND \"rule\"='cell_temp_high'")
        return rows if len(rows) == 2 else None

    rows = wait_for(stored, 15, 0.2, what="both transitions in InfluxDB")
    assert [r["state"] for r in rows] == ["raised", "cleared"]
    assert rows[1]["raised_at"] == raised["since"].replace("+00:00", "Z")

    # the BMS fields the simulator reports are stored by name
    reading = retained(services, TELEMETRY.name(root=topic_root, battery=batteries[0]))
    assert all(reading.get(name) is not None for name in BMS_NUMBERS)
    assert reading["bms_alarms"] == []
    (row,) = influx_rows(services, influx_db, f"SELECT last(\"pack_voltage_v\") FROM \"telemetry\" "
                                               f"WHERE \"battery\"='{batteries[0]}'")
    assert 700 < row["last"] < 850

    # a restart with the alarm cleared publishes nothing new for it; the retained book is adopted
    assert alarms.stop() == 0
    before = retained(services, topic)
    alarms = run_node("alarms", env)
    alarms.wait_online(services.mqtt_host, services.mqtt_port, topic_root)

    def judged() -> Any:
        status = alarms.status(services.mqtt_host, services.mqtt_port, topic_root)
        counters = status.get("counters", {}) if status else {}
        return counters if counters.get("evaluations", 0) >= 10 and counters.get("batteries") == 3 else None

    counters = wait_for(judged, 15, 0.2, what="the restarted alarms node to judge every battery a few times")
    assert counters.get("alarms_raised", 0) == 0, counters
    assert retained(services, topic) == before


def test_a_stuck_power_and_a_telemetry_gap_raise_their_alarms_and_clear_after_the_faults(
    run_node: Any, node_env: dict[str, str], services: Services, topic_root: str, battery_id: str
) -> None:
    stuck, silent, fine = f"{battery_id}-a", f"{battery_id}-b", f"{battery_id}-c"
    env = {
        **node_env,
        "BESS_BATTERIES": f"{stuck},{silent},{fine}",
        "BESS_SIM_TELEMETRY_INTERVAL_S": "0.5",
        "BESS_SIM_FAULT": json.dumps({stuck: {"kind": "stuck_power", "at_s": 0, "for_s": 10, "power_kw": 40},
                                      silent: {"kind": "telemetry_gap", "at_s": 2, "for_s": 6}}),
        "BESS_ALARMS": json.dumps({"defaults": {
            "prices_stale": {"enabled": False},
            "telemetry_stale": {"stale_after_s": 2, "clear_after_s": 1},
            "command_not_followed": {"raise_after_s": 1, "clear_after_s": 1},
        }}),
        "BESS_ALARMS_RESTORE_WAIT_S": "0.5",
    }
    alarms = run_node("alarms", env)
    alarms.wait_online(services.mqtt_host, services.mqtt_port, topic_root)
    run_node("simulator", env)
    now = datetime.now(UTC)
    idle = {"command_id": "c-idle", "action": "idle", "issued_at": now.isoformat(),
            "valid_until": (now + timedelta(minutes=5)).isoformat(), "source": "operator"}
    with services.mqtt_client() as client:
        for battery in (stuck, fine):
            client.publish(f"{topic_root}/battery/{battery}/set", json.dumps(idle), qos=1)

    def alarm(battery: str, rule: str, wanted: str) -> Any:
        alarms.assert_alive()
        found = retained(services, ALARM.name(root=topic_root, battery=battery, rule=rule))
        return found if found and found["state"] == wanted else None

    raised = wait_for(lambda: alarm(stuck, "command_not_followed", "raised"), 15, 0.2,
                      what="command not followed by the stuck battery")
    assert "idle 0 kW asked by c-idle, battery at 40 kW" in raised["message"]
    gap = wait_for(lambda: alarm(silent, "telemetry_stale", "raised"), 15, 0.2, what="the telemetry gap")
    assert gap["severity"] == "critical"
    wait_for(lambda: alarm(silent, "telemetry_stale", "cleared"), 20, 0.2, what="the gap to end")
    wait_for(lambda: alarm(stuck, "command_not_followed", "cleared"), 20, 0.2, what="the stuck power to end")
    for rule in ("command_not_followed", "telemetry_stale"):
        assert retained(services, ALARM.name(root=topic_root, battery=fine, rule=rule)) is None
