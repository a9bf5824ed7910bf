"""Telemetry history for the benchmarks: synthetic batteries at any rate, loaded straight into InfluxDB (no I/O
but the loader's HTTP).

Shared by ``bench/history.py`` (1 Hz for a year, a fleet at 0.1 Hz) and ``bench/dashboard.py`` (1-minute
telemetry for a year). What a battery does: every UTC day it charges in the cheapest hours before 15:00 and
discharges in the dearest hours after, at its own power (a price-following schedule, so KPIs and revenue are
meaningful); the SOC follows from the power and the one-way efficiency and returns to its start each day. The
lines are the recorder's own layout (``nodes.recorder.points.telemetry_line``: every number, ``source``, and
the ``absent`` mask), optionally with the BMS fields the simulator's pack reports.

Speed: a day of one battery is computed with numpy (vectors, no Python loop over samples), formatted into line
protocol by one f-string per line (about 1 µs a line; numpy's own string functions are slower here), and
written by two threads over keep-alive connections in batches of ``batch_lines`` with ``precision=s`` while the
main thread builds the next batch.
"""

from __future__ import annotations

import csv
import http.client
import math
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nodes.contract.messages import PriceForecast, PriceSlot  # noqa: E402
from nodes.recorder.points import prices_lines  # noqa: E402

PRICES_CSV = ROOT.parent / "shared/data/prices/de_lu_dayahead_2023_hourly.csv"
"""A real year of hourly day-ahead prices (DE-LU 2023, EUR/MWh), when the workspace has it."""
DAY_S = 86_400
ETA_ONE_WAY = math.sqrt(0.9)
COMMISSIONED_S = 1_735_689_600
"""2025-01-01: the lifetime energy counters of the BMS fields count from here."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BatteryProfile:
    """One simulated battery: its id, power, capacity and how many hours a day it charges and discharges."""

    battery: str
    power_kw: float
    hours: int
    capacity_kwh: float

    @property
    def soc_floor_kwh(self) -> float:
        return 0.1 * self.capacity_kwh


def fleet_profiles(count: int, prefix: str = "bench", seed: int = 14) -> list[BatteryProfile]:
    """``count`` batteries with different specs (50-500 kW, 3-5 hours a day); one battery is ``bench-1``."""
    if count == 1:
        return [BatteryProfile(f"{prefix}-1", 250.0, 4, 1250.0)]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        power = float(np.round(rng.uniform(50, 500), 1))
        hours = int(rng.integers(3, 6))
        out.append(BatteryProfile(f"{prefix}-{i + 1:03d}", power, hours, round(1.25 * hours * power, 1)))
    return out


def hourly_prices(start_s: int, hours: int) -> tuple[FloatArray, str]:
    """Prices (EUR/MWh) for ``hours`` hours from ``start_s``: the real DE-LU 2023 year repeated when it is here
    (hour ``h`` of the span takes hour ``h`` of 2023, wrapping), else a synthetic day shape; and which it is."""
    if PRICES_CSV.is_file():
        with PRICES_CSV.open() as handle:
            year = np.array([float(row["price"]) for row in csv.DictReader(handle)])
        return year[np.arange(hours) % year.size], f"real DE-LU 2023 hourly day-ahead prices ({PRICES_CSV.name})"
    h = np.arange(hours) + start_s // 3600
    shape = 80.0 + 60.0 * np.sin(2 * math.pi * (h % 24 - 9) / 24.0) + 15.0 * np.sin(2 * math.pi * h / (24 * 7))
    return shape, "synthetic hourly prices (../shared/data/prices not found)"


def price_lines(zone: str, start_s: int, prices: FloatArray, issued_at: datetime) -> list[str]:
    """The hourly prices as the recorder stores a forecast (its own mapping)."""
    start = datetime.fromtimestamp(start_s, UTC)
    slots = [
        PriceSlot(start=start + timedelta(hours=h), end=start + timedelta(hours=h + 1), price_per_mwh=float(p))
        for h, p in enumerate(prices)
    ]
    return prices_lines(zone, PriceForecast(zone=zone, issued_at=issued_at, slots=slots, source="bench"))


def day_power(profile: BatteryProfile, day_prices: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per hour of one day: the power (kW, + discharging) and the SOC change per hour it causes (kWh/h)."""
    charge = np.argsort(day_prices[:15], kind="stable")[: profile.hours]
    discharge = 15 + np.argsort(-day_prices[15:], kind="stable")[: profile.hours]
    power = np.zeros(24)
    power[charge] = -profile.power_kw
    power[discharge] = profile.power_kw * ETA_ONE_WAY**2  # takes out what the charge put in: SOC is periodic
    soc_rate = np.where(power < 0, -power * ETA_ONE_WAY, -power / ETA_ONE_WAY)
    return power, soc_rate


def day_lines(
    profile: BatteryProfile, day_start_s: int, step_s: int, day_prices: FloatArray, rng: np.random.Generator,
    *, bms: bool = False,
) -> list[str]:
    """One UTC day of one battery, a reading every ``step_s`` seconds, as telemetry line protocol (seconds)."""
    n = DAY_S // step_s
    offset = np.arange(n, dtype=np.float64) * step_s
    hour = (offset // 3600).astype(np.int64)
    power_h, rate_h = day_power(profile, day_prices)
    # SOC at each sample: the floor plus the energy moved since midnight (exact per piece of hour)
    soc_at_hour = profile.soc_floor_kwh + np.concatenate([[0.0], np.cumsum(rate_h)])
    soc = soc_at_hour[hour] + rate_h[hour] * (offset - hour * 3600) / 3600.0
    commanded = power_h[hour]
    power = commanded * (1 + rng.normal(0, 0.004, n)) + rng.normal(0, 0.05, n)  # what the meter reads
    charge_target = np.where(commanded < 0, -commanded, 0.0)
    discharge_target = np.where(commanded > 0, commanded, 0.0)
    stamps = (day_start_s + offset).astype(np.int64)
    head = f"telemetry,battery={profile.battery} "
    if not bms:
        return [
            f'{head}soc_kwh={s:.3f},power_kw={p:.3f},target_charge_kw={c:.2f},target_discharge_kw={d:.2f},'
            f'source="device",absent="bms" {t}'
            for s, p, c, d, t in zip(
                soc.tolist(), power.tolist(), charge_target.tolist(), discharge_target.tolist(), stamps.tolist(),
                strict=True,
            )
        ]
    share = np.abs(power) / profile.power_kw
    cell_v = 3.2 + 0.25 * (soc / profile.capacity_kwh) - 0.03 * np.sign(power) * share
    cells = 240
    voltage = cell_v * cells
    current = power * 1000.0 / voltage
    temp = 24.0 + 8.0 * share + rng.normal(0, 0.05, n)
    moved = np.abs(power) * step_s / 3600.0
    days_in_service = max((day_start_s - COMMISSIONED_S) // DAY_S, 0)
    daily_kwh = profile.hours * profile.power_kw
    charged = days_in_service * daily_kwh + np.cumsum(np.where(power < 0, moved, 0.0))
    discharged = days_in_service * daily_kwh * ETA_ONE_WAY**2 + np.cumsum(np.where(power > 0, moved, 0.0))
    soh = 100.0 - 0.002 * discharged / profile.capacity_kwh  # 0.2 % per 100 full cycles
    return [
        f'{head}soc_kwh={s:.3f},power_kw={p:.3f},target_charge_kw={c:.2f},target_discharge_kw={d:.2f},'
        f'pack_voltage_v={v:.2f},pack_current_a={a:.2f},cell_voltage_min_v={cv - 0.004:.4f},'
        f'cell_voltage_max_v={cv + 0.004:.4f},cell_temp_min_c={tc - 1.0:.2f},cell_temp_max_c={tc + 1.5:.2f},'
        f'soh_pct={h:.3f},energy_charged_kwh_total={ec:.3f},energy_discharged_kwh_total={ed:.3f},bms_alarms="",'
        f'source="device",absent="" {t}'
        for s, p, c, d, v, a, cv, tc, h, ec, ed, t in zip(
            soc.tolist(), power.tolist(), charge_target.tolist(), discharge_target.tolist(), voltage.tolist(),
            current.tolist(), cell_v.tolist(), temp.tolist(), soh.tolist(), charged.tolist(), discharged.tolist(),
            stamps.tolist(), strict=True,
        )
    ]


def telemetry_batches(
    profiles: list[BatteryProfile], start_s: int, days: int, step_s: int, prices: FloatArray,
    *, batch_lines: int = 40_000, bms: bool = False, seed: int = 1,
) -> Iterator[str]:
    """Line-protocol bodies of about ``batch_lines`` lines: day by day, every battery's day in turn."""
    rng = np.random.default_rng(seed)
    pending: list[str] = []
    for day in range(days):
        day_start = start_s + day * DAY_S
        day_prices = prices[day * 24 : day * 24 + 24]
        for profile in profiles:
            pending.extend(day_lines(profile, day_start, step_s, day_prices, rng, bms=bms))
            while len(pending) >= batch_lines:
                yield "\n".join(pending[:batch_lines])
                del pending[:batch_lines]
    if pending:
        yield "\n".join(pending)


@dataclass
class LoadReport:
    """What a load took."""

    points: int
    seconds: float
    retries: int

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else math.nan


def load(
    url: str, db: str, bodies: Iterator[str], *, writers: int = 2, precision: str = "s", progress_s: float = 15.0,
    label: str = "points",
) -> LoadReport:
    """Write every body with ``writers`` concurrent keep-alive connections while the caller's generator builds
    the next ones; a 5xx or a dropped connection (influxd's cache full, a compaction stall) is retried."""
    parsed = urllib.parse.urlsplit(url)
    path = "/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
    work: queue.Queue[bytes | None] = queue.Queue(maxsize=2 * writers)
    lock = threading.Lock()
    done = {"points": 0, "retries": 0}
    failures: list[str] = []

    def writer() -> None:
        connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 8086, timeout=300)
        while (body := work.get()) is not None:
            for attempt in range(20):
                try:
                    connection.request("POST", path, body, {"Content-Type": "text/plain"})
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException):
                    connection.close()
                    status, answer = 0, b"connection failed"
                else:
                    status = response.status
                if status == 204:
                    with lock:
                        done["points"] += body.count(b"\n") + 1
                    break
                if status == 400 or attempt == 19:  # a bad line is our bug: stop, say which
                    failures.append(f"HTTP {status}: {answer[:300]!r}")
                    break
                with lock:
                    done["retries"] += 1
                time.sleep(min(0.2 * 2**attempt, 5.0))
        connection.close()

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(writers)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    last = started
    for body in bodies:
        if failures:
            break
        work.put(body.encode())
        now = time.perf_counter()
        if now - last >= progress_s:
            last = now
            print(f"  ... {done['points']:,} {label} in {now - started:.0f} s "
                  f"({done['points'] / (now - started):,.0f}/s)", flush=True)
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"loading failed: {failures[0]}")
    return LoadReport(done["points"], time.perf_counter() - started, done["retries"])


def disk_bytes(*paths: Path) -> int:
    """Bytes on disk under ``paths`` (``du -sb``)."""
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    out = subprocess.run(["du", "-sbc", *existing], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def human_bytes(value: int) -> str:
    """``1536 -> "1.5 KiB"``."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


__all__ = [
    "DAY_S",
    "BatteryProfile",
    "LoadReport",
    "day_lines",
    "disk_bytes",
    "fleet_profiles",
    "hourly_prices",
    "human_bytes",
    "load",
    "price_lines",
    "telemetry_batches",
]
