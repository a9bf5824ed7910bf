"""Raw telemetry as columns, and the energy model every diagnostic shares (pure, no I/O).

Why one model: efficiency, capacity, cycles and the SOC check all integrate the same power over the same
intervals; if each integrated its own way, the panel could show a measured efficiency that the SOC check
contradicts. The model is the dashboard ledger's (:mod:`nodes.renderer.ledger`), so a diagnostic and a KPI over
the same readings count the same energy:

* interval ``k`` is ``[t_k, t_k+1)`` between consecutive readings; the power reported at ``t_k`` holds until the
  next reading (a setpoint-driven battery behaves so; the simulator reports the power it will hold next);
* it is **measured** when that power was reported and the next reading follows within ``max_hold_s``
  (:data:`MAX_HOLD_S`, the ledger's limit); anything else (no power, a longer silence) is not integrated, and a
  run of measured intervals is a **segment**;
* grid-side energy is ``power x hours`` (:func:`nodes.contract.energy.energy_kwh`): charged when the power is
  negative, discharged when positive.

Diagnostics need raw readings: a downsampled answer (bucket means) blurs the SOC turning points and the response
to a command. Time is POSIX seconds (float64, UTC).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from nodes.contract import energy

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

MAX_HOLD_S = 900.0
"""A reported power holds at most this long (the ledger's ``MAX_HOLD_S``; a test keeps the two equal)."""


class ReadingLike(Protocol):
    """What a reading needs for diagnostics; :class:`~nodes.contract.messages.Telemetry` is one."""

    @property
    def ts(self) -> datetime: ...

    @property
    def soc_kwh(self) -> float: ...

    @property
    def power_kw(self) -> float | None: ...


class SeriesLike(Protocol):
    """Telemetry columns (the renderer's ``TelemetrySeries`` of raw samples is one)."""

    @property
    def time_s(self) -> FloatArray: ...

    @property
    def soc_kwh(self) -> FloatArray: ...

    @property
    def power_kw(self) -> FloatArray: ...


def to_datetime(time_s: float) -> datetime:
    """POSIX seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(time_s, tz=UTC)


@dataclass(frozen=True, slots=True, eq=False)
class History:
    """Readings in time order: strictly increasing ``time_s``, ``soc_kwh``, ``power_kw`` (NaN: not reported)."""

    time_s: FloatArray
    soc_kwh: FloatArray
    power_kw: FloatArray

    def __post_init__(self) -> None:
        n = self.time_s.shape[0]
        if self.soc_kwh.shape[0] != n or self.power_kw.shape[0] != n:
            raise ValueError("History columns differ in length")
        if n > 1 and not bool(np.all(np.diff(self.time_s) > 0)):
            raise ValueError("History.time_s must be strictly increasing (use History.from_arrays)")

    @classmethod
    def from_arrays(
        cls, time_s: npt.ArrayLike, soc_kwh: npt.ArrayLike, power_kw: npt.ArrayLike | None = None
    ) -> History:
        """Build from array-likes in any order: rows sorted by time, a later row with the same time wins, rows
        without a time or an SOC dropped (``None`` entries become NaN)."""
        t = np.asarray(time_s, dtype=np.float64)
        soc = np.asarray(soc_kwh, dtype=np.float64)
        power = np.full(t.shape[0], np.nan) if power_kw is None else np.asarray(power_kw, dtype=np.float64)
        keep = np.isfinite(t) & np.isfinite(soc)
        t, soc, power = t[keep], soc[keep], power[keep]
        order = np.argsort(t, kind="stable")
        t, soc, power = t[order], soc[order], power[order]
        if t.shape[0] > 1:
            # the last of equal times wins, as a re-sent reading replaces the stored one
            last = np.append(np.diff(t) > 0, True)
            t, soc, power = t[last], soc[last], power[last]
        return cls(t, soc, power)

    @classmethod
    def from_readings(cls, readings: Iterable[ReadingLike]) -> History:
        """Build from messages (Telemetry or anything shaped like it), in any order."""
        rows = list(readings)
        return cls.from_arrays(
            [r.ts.timestamp() for r in rows],
            [r.soc_kwh for r in rows],
            [np.nan if r.power_kw is None else r.power_kw for r in rows],
        )

    @classmethod
    def from_series(cls, series: SeriesLike) -> History:
        """Build from telemetry columns of raw samples (not bucket means)."""
        return cls.from_arrays(series.time_s, series.soc_kwh, series.power_kw)

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def span_hours(self) -> float:
        """Hours from the first reading to the last (0 for fewer than two)."""
        return float(self.time_s[-1] - self.time_s[0]) / energy.SECONDS_PER_HOUR if len(self) > 1 else 0.0

    def sample_period_s(self) -> float | None:
        """The median time between readings: the resolution of anything timed from them."""
        return float(np.median(np.diff(self.time_s))) if len(self) > 1 else None


@dataclass(frozen=True, slots=True, eq=False)
class Intervals:
    """The energy model over a history: one entry per interval ``[t_k, t_k+1)`` (``len(history) - 1``)."""

    dt_s: FloatArray
    power_kw: FloatArray
    """The power held over the interval (the reading at its start); NaN where not reported."""
    measured: BoolArray
    """Power reported and the next reading within ``max_hold_s``: the interval is integrated."""
    charged_kwh: FloatArray
    """Grid-side energy charged over the interval (0 where not measured or not charging)."""
    discharged_kwh: FloatArray
    """Grid-side energy discharged over the interval (0 where not measured or not discharging)."""
    soc_change_kwh: FloatArray
    """Reported SOC at the end minus at the start."""

    @property
    def measured_s(self) -> float:
        """Seconds covered by measured intervals."""
        return float(self.dt_s[self.measured].sum())

    def segments(self) -> list[tuple[int, int]]:
        """Runs of measured intervals as ``(first reading, last reading)`` index pairs (readings inclusive)."""
        if self.measured.shape[0] == 0:
            return []
        flags = np.concatenate(([False], self.measured, [False])).astype(np.int8)
        edges = np.diff(flags)
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)  # interval index one past the run = its last reading
        return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def intervals(history: History, max_hold_s: float = MAX_HOLD_S) -> Intervals:
    """The energy model over ``history`` (see the module docstring)."""
    dt = np.diff(history.time_s)
    power = history.power_kw[:-1] if len(history) > 0 else history.power_kw
    measured = np.isfinite(power) & (dt <= max_hold_s)
    held = np.where(measured, power, 0.0)
    grid = energy.energy_kwh(held, dt)
    return Intervals(
        dt_s=dt,
        power_kw=power,
        measured=measured,
        charged_kwh=np.where(grid < 0, -grid, 0.0),
        discharged_kwh=np.where(grid > 0, grid, 0.0),
        soc_change_kwh=np.diff(history.soc_kwh),
    )


def limit_stops(history: History, iv: Intervals, soc_min_kwh: float, soc_max_kwh: float,
                tolerance_kwh: float) -> BoolArray:
    """Intervals that end at an SOC limit in the direction of travel.

    Why they are left out of per-interval ratios: the device stops somewhere inside such an interval, while the
    held power says it ran the whole interval, so its energy and SOC change do not match.
    """
    end_soc = history.soc_kwh[1:]
    with np.errstate(invalid="ignore"):
        charging = iv.power_kw < 0
        discharging = iv.power_kw > 0
    return (charging & (end_soc >= soc_max_kwh - tolerance_kwh)) | (
        discharging & (end_soc <= soc_min_kwh + tolerance_kwh)
    )


__all__ = [
    "MAX_HOLD_S",
    "History",
    "Intervals",
    "ReadingLike",
    "SeriesLike",
    "intervals",
    "limit_stops",
    "to_datetime",
]
