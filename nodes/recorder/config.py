"""The recorder's configuration (``BESS_*`` environment variables, see :mod:`nodes.runtime.config`).

The database settings (``BESS_STORE``, ``BESS_INFLUX_*``) are shared with ``deploy/up``; the recorder's own are
``BESS_RECORDER_*``. Renamed in this release (the old names work until the next one, with a warning; the attributes
keep them until then): ``BESS_BATCH_MAX_POINTS``, ``BESS_BATCH_MAX_DELAY_MS``, ``BESS_BATCH_AWAITED_DELAY_MS``,
``BESS_HISTORY_MAX_ROWS``, ``BESS_SHUTDOWN_FLUSH_S`` (now ``BESS_RECORDER_*``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from nodes.recorder.rollups import retention_s
from nodes.runtime.config import MqttSettings

#: MQTT 5 caps receive_maximum at 65535.
RECEIVE_MAXIMUM_LIMIT = 65_535


class RecorderConfig(MqttSettings, kw_only=True, forbid_unknown_fields=True):
    """Where to store (``BESS_STORE``, ``BESS_INFLUX_*``), how to batch and how to share the stream."""

    store: Literal["influx1", "influx2"] = "influx1"
    influx_url: str = "http://127.0.0.1:8086"
    influx_db: str = "bess"
    influx_token: str | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_username: str | None = None
    influx_password: str | None = None
    influx_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10.0
    batch_max_points: Annotated[int, Meta(ge=1, le=100_000)] = msgspec.field(
        default=5000, name="recorder_batch_max_points"
    )
    batch_max_delay_ms: Annotated[int, Meta(ge=0, le=60_000)] = msgspec.field(
        default=200, name="recorder_batch_max_delay_ms"
    )
    #: how long a batch holding a message someone waits for (a durable HTTP write) may wait before it is written;
    #: 0: as soon as the write before it is done (under load such messages are still written in groups)
    batch_awaited_delay_ms: Annotated[int, Meta(ge=0, le=60_000)] = msgspec.field(
        default=0, name="recorder_batch_awaited_delay_ms"
    )
    #: publish battery/{battery}/stored (StoredUpTo) for devices that keep their readings until stored
    recorder_confirm_devices: bool = True
    #: at most one StoredUpTo per battery per this many ms
    recorder_confirm_interval_ms: Annotated[int, Meta(ge=10, le=600_000)] = 1000
    #: unacknowledged messages the broker may have in flight to us: the bounded buffer during an outage.
    #: 0 = automatic: 2 x batch_max_points, at least 10000 (capped at 65535).
    recorder_receive_maximum: Annotated[int, Meta(ge=0, le=RECEIVE_MAXIMUM_LIMIT)] = 0
    recorder_share_group: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    history_max_rows: Annotated[int, Meta(ge=1, le=10_000_000)] = msgspec.field(
        default=100_000, name="recorder_history_max_rows"
    )
    shutdown_flush_s: Annotated[float, Meta(ge=0, le=600)] = msgspec.field(
        default=10.0, name="recorder_shutdown_flush_s"
    )
    #: telemetry rollups (1 min, 1 h) maintained by InfluxDB 1.x continuous queries (see nodes/recorder/rollups.py)
    recorder_rollups: bool = True
    #: how far back every CQ run re-rolls (late samples); older late samples need `rollups backfill`
    recorder_rollup_late_s: Annotated[int, Meta(ge=60, le=7 * 86400)] = 900
    #: retention of the 1-min and 1-h rollups (`inf`, or e.g. `400d`, `52w`; at least 1h)
    recorder_rollup_1m_retention: str = "inf"
    recorder_rollup_1h_retention: str = "inf"
    #: raw telemetry older than this is deleted, only once the rollups cover it (`inf`: nothing is deleted)
    recorder_raw_retention: str = "inf"

    def problems(self) -> list[str]:
        """Cross-field checks (called by ``load_or_exit``)."""
        found: list[str] = []
        if self.store == "influx2":
            missing = [name for name in ("influx_token", "influx_org") if not getattr(self, name)]
            found += [f"BESS_{name.upper()} is required with BESS_STORE=influx2" for name in missing]
        for name in ("recorder_rollup_1m_retention", "recorder_rollup_1h_retention", "recorder_raw_retention"):
            try:
                retention_s(getattr(self, name))
            except ValueError as exc:
                found.append(f"BESS_{name.upper()}: {exc}")
        if not self.influx_url.startswith(("http://", "https://")):
            found.append(f"BESS_INFLUX_URL must start with http:// or https://, got {self.influx_url!r}")
        return found

    @property
    def receive_maximum(self) -> int:
        """The MQTT receive maximum to ask for (always at least one full batch)."""
        if self.recorder_receive_maximum:
            return max(self.recorder_receive_maximum, min(self.batch_max_points, RECEIVE_MAXIMUM_LIMIT))
        return min(RECEIVE_MAXIMUM_LIMIT, max(10_000, 2 * self.batch_max_points))


__all__ = ["RECEIVE_MAXIMUM_LIMIT", "RecorderConfig"]
