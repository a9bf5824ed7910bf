"""The simulated BMS reports plausible values, and BESS_SIM_FAULT makes a battery misbehave for a while (strictly
parsed, each kind doing what it says), on the simulator's own clock and on the in-memory bus."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from nodes.contract.messages import BatterySpec, BatteryState, Command, Telemetry
from nodes.contract.topics import COMMAND, STATE, TELEMETRY
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus
from nodes.simulator.battery import SimBattery
from nodes.simulator.cells import PackModel, ocv_v
from nodes.simulator.config import SimulatorConfig
from nodes.simulator.faults import DEFAULT_HOT_CELL_C, FaultError, parse_faults
from nodes.simulator.node import Simulator
from tests.support.waiting import wait_for_async

T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=1000, soc_min_kwh=100, soc_max_kwh=950, max_charge_kw=250, max_discharge_kw=250)


def pack() -> PackModel:
    return PackModel(capacity_kwh=1000, max_power_kw=250)


# -- the BMS model ---------------------------------------------------------------------------------------------


def test_pack_voltage_rises_with_soc_and_sags_under_discharge() -> None:
    model = pack()
    low, high = model.report(150, 0.0), model.report(900, 0.0)
    assert 700 < float(low["pack_voltage_v"]) < float(high["pack_voltage_v"]) < 840  # type: ignore[arg-type]
    assert ocv_v(0.0) < ocv_v(0.5) < ocv_v(1.0)
    loaded = model.report(900, 250.0)
    assert float(loaded["pack_voltage_v"]) < float(high["pack_voltage_v"])  # type: ignore[arg-type]
    assert float(loaded["pack_current_a"]) > 0, "+ discharging, like power_kw"  # type: ignore[arg-type]
    assert float(model.report(900, -250.0)["pack_current_a"]) < 0  # type: ignore[arg-type]
    assert loaded["cell_voltage_min_v"] < loaded["cell_voltage_max_v"]  # type: ignore[operator]


def test_temperature_rises_with_power_and_settles_back_at_rest() -> None:
    model = pack()
    model.step(0.0, 3600)
    assert model.temp_c == pytest.approx(25.0)
    model.step(250.0, 4 * 1800)  # four time constants at full power
    assert model.temp_c == pytest.approx(25.0 + 12.0, abs=0.3)
    hot = model.report(500, 250.0)
    assert hot["cell_temp_min_c"] < model.temp_c < hot["cell_temp_max_c"]  # type: ignore[operator]
    model.step(0.0, 10 * 1800)
    assert model.temp_c == pytest.approx(25.0, abs=0.01)


def test_counters_add_energy_in_and_out_and_health_fades_with_cycles() -> None:
    model = pack()
    model.step(-200.0, 3600)  # 200 kWh in
    model.step(100.0, 1800)  # 50 kWh out
    report = model.report(500, 0.0)
    assert (report["energy_charged_kwh_total"], report["energy_discharged_kwh_total"]) == (200.0, 50.0)
    before = model.soh_pct
    model.discharged_kwh_total += 100 * 1000  # 100 equivalent full cycles more
    assert model.soh_pct == pytest.approx(before - 0.4)
    assert report["bms_alarms"] == []


def test_the_bms_reports_its_own_code_beyond_its_hard_limit() -> None:
    model = pack()
    assert model.report(500, 0.0, hot_cell_c=DEFAULT_HOT_CELL_C)["bms_alarms"] == []
    assert model.report(500, 0.0, hot_cell_c=61.0)["bms_alarms"] == ["CELL_OVER_TEMP"]


def test_a_simulated_reading_carries_the_bms_fields_and_one_without_a_bms_none() -> None:
    reading = SimBattery(SPEC, 500, pack=pack()).telemetry(T0)
    assert reading.pack_voltage_v is not None
    assert reading.bms_alarms == []
    assert reading.soh_pct == 98.0
    plain = SimBattery(SPEC, 500).telemetry(T0)
    assert (plain.pack_voltage_v, plain.bms_alarms, plain.cell_temp_max_c) == (None, None, None)


# -- the fault setting -----------------------------------------------------------------------------------------


def test_faults_parse_for_one_battery_or_a_list() -> None:
    plan = parse_faults('{"b2": {"kind": "hot_cell", "at_s": 10, "for_s": 60}}', ["b1", "b2"])
    assert plan.active("b2", 9.9, "hot_cell") is None
    fault = plan.active("b2", 10.0, "hot_cell")
    assert fault is not None
    assert fault.hot_cell_c == DEFAULT_HOT_CELL_C
    assert plan.active("b2", 69.9, "hot_cell") is not None
    assert plan.active("b2", 70.0, "hot_cell") is None
    assert plan.active("b1", 20.0, "hot_cell") is None
    both = parse_faults('{"b1": [{"kind": "stuck_power", "power_kw": -20}, {"kind": "telemetry_gap", "at_s": 5}]}',
                        ["b1"])
    assert both.active("b1", 1e6, "telemetry_gap") is not None, "no for_s: until the simulator stops"
    stuck = both.active("b1", 0.0, "stuck_power")
    assert stuck is not None
    assert stuck.power_kw == -20
    assert parse_faults(None, ["b1"]).faults == {} == parse_faults("  ", ["b1"]).faults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected an object"),
        ('{"b9": {"kind": "hot_cell"}}', "b9: not a simulated battery"),
        ('{"b1": {"kind": "melt"}}', "b1.kind: Invalid enum value 'melt'"),
        ('{"b1": {"kind": "melt"}}', "(one of stuck_power, hot_cell, telemetry_gap)"),
        ('{"b1": [{"kind": "hot_cell"}, {"kind": "hot_cell", "for_s": 0}]}', "b1[1].for_s: Expected `float` > 0.0"),
        ('{"b1": {"kind": "hot_cell", "at": 5}}', "b1: Object contains unknown field `at`"),
        ('{"b1": {"kind": "telemetry_gap", "temp_c": 70}}', "b1.temp_c: only for kind hot_cell"),
        ('{"b1": {"kind": "hot_cell", "power_kw": 5}}', "b1.power_kw: only for kind stuck_power"),
    ],
)
def test_a_bad_fault_setting_is_an_error_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(FaultError, match=r"^BESS_SIM_FAULT: ") as caught:
        parse_faults(text, ["b1"])
    assert message in str(caught.value)
    problems = SimulatorConfig(batteries=["b1"], sim_fault=text).problems()
    assert any(message in p for p in problems), "and the simulator refuses to start with it"


def test_a_stuck_battery_ignores_its_commands_and_says_why_but_stops_at_its_soc_limit() -> None:
    battery = SimBattery(SPEC, 101, pack=pack())
    battery.stuck_kw = 50.0
    command = Command(command_id="c-1", action="charge", power_kw=100, issued_at=T0,
                      valid_until=T0 + timedelta(hours=1))
    battery.apply(command, T0)
    assert (battery.mode, battery.power_kw) == ("discharging", 50.0)
    assert battery.reason == "fault: power stuck at 50 kW, ignoring charge by operator command c-1"
    battery.step(3600.0, T0)  # an hour at 50 kW from 101 kWh: the SOC limit stops it
    assert (battery.mode, battery.power_kw, battery.soc_kwh) == ("idle", 0.0, 100.0)
    battery.stuck_kw = None
    battery.step(0.0, T0)
    assert (battery.mode, battery.power_kw) == ("charging", -100.0), "the fault over, it obeys again"


# -- wiring: the simulator on the in-memory bus ------------------------------------------------------------------


class Watcher:
    def __init__(self, broker: MemoryBroker) -> None:
        self.bus = MemoryBus("watcher", broker)
        self.readings: list[Telemetry] = []
        self.states: list[BatteryState] = []
        self.bus.subscribe(TELEMETRY, self._reading, battery="b1")
        self.bus.subscribe(STATE, self._state, battery="b1")

    async def _reading(self, params: dict[str, str], message: Telemetry, delivery: Delivery) -> None:
        self.readings.append(message)

    async def _state(self, params: dict[str, str], message: BatteryState, delivery: Delivery) -> None:
        self.states.append(message)


def simulator(broker: MemoryBroker, fault: str) -> Simulator:
    config = SimulatorConfig(batteries=["b1"], sim_telemetry_interval_s=0.02, sim_keep_unconfirmed=0,
                             sim_fault=fault)
    return Simulator(config, MemoryBus("simulator", broker))


async def test_a_hot_cell_fault_shows_in_the_readings_while_it_lasts() -> None:
    broker = MemoryBroker()
    watcher = Watcher(broker)
    sim = simulator(broker, '{"b1": {"kind": "hot_cell", "at_s": 0.2, "for_s": 0.4, "temp_c": 66}}')
    await sim.setup()
    runner = asyncio.create_task(sim.run())
    try:
        await wait_for_async(lambda: any(r.cell_temp_max_c == 66.0 for r in watcher.readings), 5,
                             what="a reading with the hot cell")
        first_hot = next(i for i, r in enumerate(watcher.readings) if r.cell_temp_max_c == 66.0)
        assert all(r.cell_temp_max_c is not None and r.cell_temp_max_c < 40 for r in watcher.readings[:first_hot])
        assert watcher.readings[first_hot].bms_alarms == ["CELL_OVER_TEMP"], "66 °C is beyond the BMS's own limit"
        await wait_for_async(lambda: watcher.readings[-1].cell_temp_max_c != 66.0
                             and len(watcher.readings) > first_hot + 3, 5, what="the fault to end")
        assert watcher.readings[-1].cell_temp_max_c is not None
        assert watcher.readings[-1].cell_temp_max_c < 40
    finally:
        runner.cancel()


async def test_a_telemetry_gap_publishes_nothing_while_it_lasts_and_a_stuck_power_ignores_commands() -> None:
    broker = MemoryBroker()
    watcher = Watcher(broker)
    sim = simulator(broker, '{"b1": [{"kind": "telemetry_gap", "at_s": 0.3, "for_s": 0.5},'
                            ' {"kind": "stuck_power", "at_s": 0, "power_kw": 30}]}')
    await sim.setup()
    runner = asyncio.create_task(sim.run())
    try:
        await wait_for_async(lambda: len(watcher.readings) >= 3, 5, what="readings before the gap")
        assert watcher.readings[-1].power_kw == 30.0
        now = datetime.now(UTC)
        await watcher.bus.publish(COMMAND, Command(command_id="c-1", action="idle", issued_at=now,
                                                   valid_until=now + timedelta(minutes=5)), battery="b1")
        await broker.idle()
        assert watcher.states[-1].reason.startswith("fault: power stuck at 30 kW, ignoring idle")
        def gaps() -> list[float]:
            ts = [r.ts for r in watcher.readings]
            return [(b - a).total_seconds() for a, b in itertools.pairwise(ts)]

        await wait_for_async(lambda: any(g >= 0.45 for g in gaps()[:-2]), 5,
                             what="readings to resume after a gap of the fault's length")
        assert sum(g >= 0.45 for g in gaps()) == 1, "one gap, the fault's"
        assert watcher.readings[-1].power_kw == 30.0
    finally:
        runner.cancel()


def test_no_pack_of_a_varied_fleet_raises_a_bms_code_at_full_power_in_its_working_range() -> None:
    """The voltage lift follows the C-rate: a 2 MWh block charging at 1C reads what a 1 MWh one does, so a fresh
    simulated fleet shows no CELL_OVER_VOLTAGE (it did for battery-0007: 2 MWh charging at 2 MW at 14 % SOC).
    Charging is checked up to 90 % SOC: above it a real LFP pack at 1C reaches 3.65 V too (its BMS then tapers
    the current; the model has no taper, see nodes.simulator.cells)."""
    from nodes.simulator.fleet import fleet_ids, varied_spec

    codes: list[tuple[str, float, object]] = []
    for battery in fleet_ids(300):
        spec = varied_spec(battery, SPEC)
        model = PackModel(capacity_kwh=spec.capacity_kwh, max_power_kw=max(spec.max_charge_kw, spec.max_discharge_kw))
        charge_top = min(spec.soc_max_kwh, 0.9 * spec.capacity_kwh)
        for soc_kwh in (spec.soc_min_kwh, 0.5 * (spec.soc_min_kwh + charge_top), charge_top):
            alarms = model.report(soc_kwh, -spec.max_charge_kw)["bms_alarms"]
            codes += [(battery, soc_kwh, code) for code in alarms]  # type: ignore[attr-defined]
        for soc_kwh in (spec.soc_min_kwh, spec.soc_max_kwh):
            alarms = model.report(soc_kwh, spec.max_discharge_kw)["bms_alarms"]
            codes += [(battery, soc_kwh, code) for code in alarms]  # type: ignore[attr-defined]
    assert codes == []
