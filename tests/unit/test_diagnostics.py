"""Diagnostics on synthetic histories with known answers, and on a run of the simulated battery.

Every synthetic battery integrates its SOC with the spec's rule (sqrt(eta) each way,
:func:`nodes.contract.energy.soc_after_power`) and reports, at each reading, the power it holds until the next:
the answers (efficiency, capacity, delay, gap, drift) are known by construction.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from nodes.contract import energy
from nodes.contract.messages import BatterySpec, Command, Telemetry
from nodes.diagnostics.cycles import closed_cycles
from nodes.diagnostics.history import MAX_HOLD_S, History, intervals
from nodes.diagnostics.options import DiagnosticsOptions
from nodes.diagnostics.report import diagnose
from nodes.diagnostics.result import NOT_ENOUGH
from nodes.diagnostics.tracking import timeline
from nodes.renderer import ledger
from nodes.simulator.battery import SimBattery

T0 = datetime(2025, 1, 16, tzinfo=UTC)
SPEC = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=90, max_charge_kw=50, max_discharge_kw=50,
                   roundtrip_efficiency=0.9)


@dataclass
class Cycler:
    """A battery that charges at ``power_kw`` up to ``high_kwh``, rests, discharges down to ``low_kwh``, rests.

    ``scale``: reported SOC kWh per kWh in the cells (above 1: a faded battery whose BMS still counts the
    nominal range); ``drift_kwh_per_day``: a sensor error added to the reported SOC.
    """

    efficiency: float
    power_kw: float = 40.0
    low_kwh: float = 15.0
    high_kwh: float = 85.0
    rest_s: float = 0.0
    dt_s: float = 10.0
    scale: float = 1.0
    drift_kwh_per_day: float = 0.0
    soc_kwh: float = 50.0

    def run(self, hours: float) -> History:
        n = int(hours * 3600 / self.dt_s)
        t = np.arange(n) * self.dt_s + T0.timestamp()
        soc = np.empty(n)
        power = np.empty(n)
        cells = self.soc_kwh
        direction, rest_left = -1.0, 0.0  # start charging (power < 0)
        for k in range(n):
            if rest_left > 0:
                held = 0.0
                rest_left -= self.dt_s
            else:
                if direction < 0 and cells >= self.high_kwh:
                    direction, rest_left = 1.0, self.rest_s
                elif direction > 0 and cells <= self.low_kwh:
                    direction, rest_left = -1.0, self.rest_s
                held = 0.0 if rest_left > 0 else direction * self.power_kw
            soc[k] = self.soc_kwh + (cells - self.soc_kwh) * self.scale + self.drift_kwh_per_day * (
                k * self.dt_s / 86_400)
            power[k] = held
            cells = energy.soc_after_power(cells, held, self.dt_s / 3600, self.efficiency)
        return History.from_arrays(t, soc, power)


# -- round-trip efficiency, capacity, cycles -----------------------------------------------------------------


def test_a_battery_with_85_percent_efficiency_measures_85_percent() -> None:
    history = Cycler(efficiency=0.85).run(hours=24)
    result = diagnose(history, SPEC).efficiency
    assert result.enough
    assert result.roundtrip_efficiency == pytest.approx(0.85, abs=0.005)
    assert result.cycles >= 5
    assert result.summary.startswith("measured 85.0 % vs spec 90 % over ")
    assert f"over {result.cycles} cycles" in result.summary
    assert result.spec_roundtrip_efficiency == 0.9


def test_efficiency_survives_a_coarse_soc_and_noisy_power() -> None:
    """An SOC reported in whole kWh (1 % of capacity) and a power meter with 1 % noise still give 85 +/- 0.5."""
    clean = Cycler(efficiency=0.85, rest_s=600).run(hours=48)
    rng = np.random.default_rng(7)
    noisy = History.from_arrays(clean.time_s, np.round(clean.soc_kwh),
                                clean.power_kw * (1 + rng.normal(0, 0.01, len(clean))))
    result = diagnose(noisy, SPEC).efficiency
    assert result.roundtrip_efficiency == pytest.approx(0.85, abs=0.005)


def test_closed_cycles_start_and_end_at_the_same_soc_and_hold_both_directions() -> None:
    history = Cycler(efficiency=0.85).run(hours=12)
    iv = intervals(history)
    windows = closed_cycles(history, iv, min_depth_kwh=16)
    assert windows
    for window in windows:
        assert window.soc_kwh == pytest.approx(history.soc_kwh[0])
        assert window.charged_kwh > 0
        assert window.discharged_kwh > 0
        assert window.roundtrip_efficiency == pytest.approx(0.85, abs=0.002)
        assert window.depth_kwh >= 16
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


def test_capacity_of_a_faded_battery_is_found_from_partial_cycles() -> None:
    """Cells hold 90 % of what the BMS counts: the usable range holds 80 / (1/0.9) = 72 kWh."""
    history = Cycler(efficiency=0.85, scale=1 / 0.9, low_kwh=30, high_kwh=60).run(hours=24)
    result = diagnose(history, SPEC).capacity
    assert result.usable_kwh == pytest.approx(72.0, rel=0.005)
    assert result.spec_usable_kwh == 80
    assert result.implied_roundtrip_efficiency == pytest.approx(0.85, abs=0.005)
    assert result.summary.startswith("estimated 72.0 kWh usable vs spec 80.0 kWh (90.0 %)")


def test_capacity_of_a_healthy_battery_is_the_spec_range() -> None:
    result = diagnose(Cycler(efficiency=0.85).run(hours=12), SPEC).capacity
    assert result.usable_kwh == pytest.approx(80.0, rel=0.002)
    assert result.soc_scale == pytest.approx(1.0, abs=0.002)


def test_equivalent_full_cycles_are_metered_discharge_over_the_usable_range() -> None:
    history = Cycler(efficiency=0.85).run(hours=24)
    result = diagnose(history, SPEC).cycles
    discharged = float(np.sum(np.clip(history.power_kw[:-1], 0, None) * np.diff(history.time_s)) / 3600)
    assert result.discharged_kwh == pytest.approx(discharged)
    assert result.full_cycles == pytest.approx(discharged / 80)
    assert result.summary.startswith(f"{discharged / 80:.1f} equivalent full cycles")


def test_the_simulated_battery_at_88_percent_measures_88_percent() -> None:
    """The simulator (nodes/simulator/battery.py) driven between its SOC limits for a few cycles."""
    spec = BatterySpec(capacity_kwh=100, soc_min_kwh=10, soc_max_kwh=90, max_charge_kw=50, max_discharge_kw=50,
                       roundtrip_efficiency=0.88)
    battery = SimBattery(spec, 50)
    now, dt = T0, timedelta(seconds=10)
    readings: list[Telemetry] = []
    commands: list[Command] = []

    def send(action: str, power_kw: float) -> None:
        command = Command(command_id=f"c{len(commands)}", action=action, power_kw=power_kw,  # type: ignore[arg-type]
                          issued_at=now, valid_until=now + timedelta(hours=6))
        commands.append(command)
        battery.apply(command, now)

    send("charge", 45)
    while now < T0 + timedelta(hours=14):
        now += dt
        battery.step(dt.total_seconds(), now)
        readings.append(battery.telemetry(now))
        if "soc_max reached" in battery.limits_hit:
            send("discharge", 40)
        elif "soc_min reached" in battery.limits_hit:
            send("charge", 45)
    report = diagnose(History.from_readings(readings), spec, commands)
    assert report.efficiency.roundtrip_efficiency == pytest.approx(0.88, abs=0.01)
    assert report.efficiency.cycles >= 3
    assert "vs spec 88 %" in report.efficiency.summary
    # the simulator obeys at once: the first reading after a command already follows it
    assert report.response.delay_s is not None
    assert report.response.delay_s <= 10
    assert report.tracking.not_following_fraction is not None
    assert report.tracking.not_following_fraction < 0.01


def test_too_little_data_gives_no_number_but_says_what_is_needed() -> None:
    report = diagnose(Cycler(efficiency=0.85).run(hours=1), SPEC)
    for result in (report.efficiency, report.consistency, report.tracking, report.response):
        assert result.need is not None
        assert not result.enough
        assert result.summary == NOT_ENOUGH + result.need
    assert report.efficiency.roundtrip_efficiency is None
    assert "closed SOC cycles" in report.efficiency.need  # type: ignore[operator]
    assert report.consistency.drift_kwh_per_day is None
    assert report.tracking.mean_abs_error_kw is None
    assert "Commands" in report.tracking.need  # type: ignore[operator]
    assert report.response.delay_s is None


def test_the_energy_model_holds_power_as_long_as_the_dashboard_ledger() -> None:
    assert MAX_HOLD_S == ledger.MAX_HOLD_S


def test_a_silence_longer_than_the_hold_is_not_integrated() -> None:
    history = History.from_arrays([0, 10, 11 + MAX_HOLD_S, 21 + MAX_HOLD_S], [50, 50, 50, 50], [-36, -36, 36, 0])
    iv = intervals(history)
    assert list(iv.measured) == [True, False, True]
    assert float(iv.charged_kwh.sum()) == pytest.approx(0.1)
    assert float(iv.discharged_kwh.sum()) == pytest.approx(0.1)
    assert iv.segments() == [(0, 1), (2, 3)]


def test_history_sorts_drops_duplicates_and_reads_telemetry() -> None:
    rows = [Telemetry(ts=T0 + timedelta(seconds=s), soc_kwh=soc, power_kw=p)
            for s, soc, p in ((20, 3.0, None), (0, 1.0, 5.0), (10, 2.0, 1.0), (10, 2.5, 2.0))]
    history = History.from_readings(rows)
    assert list(history.time_s - T0.timestamp()) == [0, 10, 20]
    assert list(history.soc_kwh) == [1.0, 2.5, 3.0]
    assert math.isnan(history.power_kw[2])
    assert history.power_kw[1] == 2.0
    with pytest.raises(ValueError, match="strictly increasing"):
        History(np.array([1.0, 1.0]), np.array([1.0, 2.0]), np.array([0.0, 0.0]))


# -- command tracking and response -------------------------------------------------------------------------


def lagging_battery(lag_s: float, dt_s: float = 5.0, hours: float = 6.0) -> tuple[History, list[Command]]:
    """A battery that reaches each commanded power exactly ``lag_s`` after the command is issued."""
    levels = [30.0, -20.0, 0.0, 45.0, -45.0, 10.0, -5.0, 25.0]
    commands = [
        Command(command_id=f"c{i}", action="discharge" if p > 0 else "charge" if p < 0 else "idle",
                power_kw=abs(p), issued_at=T0 + timedelta(seconds=900 * i + 2.3),
                valid_until=T0 + timedelta(seconds=900 * (i + 1) + 2.3 + 60))
        for i, p in enumerate(levels[i % len(levels)] for i in range(int(hours * 4)))
    ]
    line = timeline(commands)
    t = np.arange(0, hours * 3600, dt_s) + T0.timestamp()
    known, commanded = line.at(t - lag_s)
    power = np.where(known, commanded, 0.0)
    soc = 50 - np.concatenate(([0.0], np.cumsum(power[:-1] * dt_s / 3600)))  # stays inside the limits
    return History.from_arrays(t, soc, power), commands


def test_a_battery_that_lags_commands_by_30_s_shows_a_30_s_delay() -> None:
    history, commands = lagging_battery(30)
    report = diagnose(history, SPEC, commands)
    assert report.response.delay_s is not None
    assert 30 <= report.response.delay_s <= 30 + 5  # resolved to one reading interval
    assert report.response.resolution_s == 5
    assert report.response.steps >= 20
    assert report.response.not_reached == 0
    assert "median response" in report.response.summary
    # off by more than the tolerance for the 30 s after each change of every 900 s
    assert report.tracking.not_following_fraction == pytest.approx(30 / 900, abs=5 / 900)
    assert report.tracking.mean_abs_error_kw is not None
    assert report.tracking.mean_abs_error_kw > 0


def test_a_battery_that_follows_at_once_shows_no_delay_and_no_error() -> None:
    history, commands = lagging_battery(0)
    report = diagnose(history, SPEC, commands)
    assert report.response.delay_s is not None
    assert report.response.delay_s <= 5
    assert report.tracking.mean_abs_error_kw == pytest.approx(0.0, abs=1e-9)
    assert report.tracking.not_following_fraction == 0


def test_leases_that_run_out_mean_idle_and_a_later_command_wins() -> None:
    a = Command(command_id="a", action="discharge", power_kw=20, issued_at=T0, valid_until=T0 + timedelta(hours=1))
    b = Command(command_id="b", action="charge", power_kw=10, issued_at=T0 + timedelta(minutes=10),
                valid_until=T0 + timedelta(minutes=20))
    stale = Command(command_id="s", action="charge", power_kw=99, issued_at=T0 + timedelta(minutes=30),
                    valid_until=T0 + timedelta(minutes=30))
    line = timeline([b, stale, a])
    at = np.array([-1, 0, 5, 10, 15, 20, 30, 59]) * 60.0 + T0.timestamp()
    known, power = line.at(at)
    assert list(known) == [False] + [True] * 7
    assert list(power[1:]) == [20, 20, -10, -10, 0, 0, 0]


def test_a_charge_refused_at_soc_max_is_not_counted_against_the_battery() -> None:
    t = np.arange(0, 3600, 10.0) + T0.timestamp()
    history = History.from_arrays(t, np.full(t.size, 90.0), np.zeros(t.size))
    command = Command(command_id="c", action="charge", power_kw=40, issued_at=T0, valid_until=T0 + timedelta(hours=2))
    result = diagnose(history, SPEC, [command]).tracking
    assert result.need is not None
    assert result.limited_hours == pytest.approx(1.0, abs=0.01)


# -- SOC consistency ---------------------------------------------------------------------------------------


def test_a_soc_sensor_drifting_1_kwh_per_day_is_found() -> None:
    history = Cycler(efficiency=0.9, rest_s=1800, drift_kwh_per_day=1.0).run(hours=240)
    result = diagnose(history, SPEC).consistency
    assert result.drift_kwh_per_day == pytest.approx(1.0, abs=0.05)
    assert result.rest_drift_kwh_per_day == pytest.approx(1.0, abs=0.05)
    assert result.summary.startswith("reported SOC drifts +1.00 kWh/day against the integrated power, 0 expected")
    assert "efficiency is likely" not in result.summary


def test_a_true_soc_shows_no_drift() -> None:
    result = diagnose(Cycler(efficiency=0.9, rest_s=1800).run(hours=48), SPEC).consistency
    assert result.drift_kwh_per_day == pytest.approx(0.0, abs=0.01)


def test_an_efficiency_other_than_the_spec_shows_as_drift_with_energy_moved() -> None:
    """Integrated with the spec's 90 %, a battery at 85 % loses SOC with every kWh it moves (not at rest)."""
    result = diagnose(Cycler(efficiency=0.85, rest_s=1800).run(hours=48), SPEC).consistency
    assert result.drift_kwh_per_day is not None
    assert result.drift_kwh_per_day < -1
    assert result.rest_drift_kwh_per_day == pytest.approx(0.0, abs=0.01)
    assert result.summary.endswith("it grows with energy moved, so the efficiency is likely not the spec's")


# -- telemetry gaps ----------------------------------------------------------------------------------------


def test_a_gap_of_2_h_is_found_exactly() -> None:
    t = np.arange(0, 10 * 3600 + 1, 10.0)
    hole = (t > 3 * 3600) & (t < 5 * 3600)
    history = History.from_arrays(t[~hole] + T0.timestamp(), np.full(int((~hole).sum()), 50.0))
    result = diagnose(history, SPEC).gaps
    assert len(result.gaps) == 1
    gap = result.gaps[0]
    assert (gap.start, gap.end, gap.duration_s) == (T0 + timedelta(hours=3), T0 + timedelta(hours=5), 7200.0)
    assert result.gap_s == 7200
    assert result.summary.startswith("1 gap above 300 s, 2.0 h in total (20.0 % of 10.0 h)")


def test_gaps_at_the_edges_of_the_window_count_and_short_ones_do_not() -> None:
    t = np.array([3600.0, 3660.0, 3900.0, 7200.0]) + T0.timestamp()
    history = History.from_arrays(t, [50, 50, 50, 50])
    result = diagnose(history, SPEC, begin=T0, end=T0 + timedelta(hours=3)).gaps
    assert [(g.kind, g.duration_s) for g in result.gaps] == [
        ("before_first", 3600.0), ("between", 3300.0), ("after_last", 3600.0)]
    empty = diagnose(History.from_arrays([], []), SPEC, begin=T0, end=T0 + timedelta(hours=1)).gaps
    assert [(g.kind, g.duration_s) for g in empty.gaps] == [("before_first", 3600.0)]


def test_options_are_strict() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_cycle_depth_pct": 0}, DiagnosticsOptions)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_cycles_typo": 3}, DiagnosticsOptions)


def test_cycles_never_straddle_a_gap() -> None:
    """Energy lost in a silence must not count as lost in the cells: each stretch of readings closes its own cycles."""
    full = Cycler(efficiency=0.85).run(hours=30)
    t = full.time_s - full.time_s[0]
    keep = (t < 10 * 3600) | (t > 12.5 * 3600)
    history = History.from_arrays(full.time_s[keep], full.soc_kwh[keep], full.power_kw[keep])
    report = diagnose(history, SPEC)
    assert report.efficiency.roundtrip_efficiency == pytest.approx(0.85, abs=0.005)
    gap_start = T0 + timedelta(seconds=float(t[keep][t[keep] < 10 * 3600][-1]))
    assert all(w.end <= gap_start or w.start > gap_start for w in report.efficiency.windows)
    assert [g.duration_s for g in report.gaps.gaps] == [45_010.0 - 35_990.0]  # last reading before, first after
