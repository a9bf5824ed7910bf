"""The recorder's rollup upkeep: create and check the CQs and RPs at start and every few minutes, apply the raw
retention, and say ``degraded`` when the server cannot hold them (history then comes from raw means).

Also :class:`Conditions`: the node's state is ``degraded`` while any of its parts (the store's writes, the
rollups) says so, with every reason; one part recovering does not hide another's problem.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nodes.contract.messages import NodeState
from nodes.recorder.rollup_admin import RollupSettings, apply_raw_retention, ensure, shown
from nodes.recorder.rollups import drop_cq, look_back_s, owner
from nodes.recorder.routing import Router
from nodes.recorder.store import Influx1Store, Store, StoreError, StoreUnavailable, rows_of

log = logging.getLogger("bess.recorder.rollups")
RECHECK_S = 600.0
"""How often the CQs and RPs are checked again (an operator may drop one) and the raw retention applied."""
RETRY_S = 10.0
"""How soon to try again while the database is unreachable."""

StateSetter = Callable[[NodeState, str], None]


class Conditions:
    """Combine the states of a node's parts into one (degraded while any part is, reasons joined)."""

    def __init__(self, publish: StateSetter) -> None:
        self._publish = publish
        self._parts: dict[str, str] = {}

    def setter(self, part: str) -> StateSetter:
        """The ``on_state`` callback of one part."""

        def set_state(state: NodeState, reason: str = "") -> None:
            if state == "online":
                self._parts.pop(part, None)
            else:
                self._parts[part] = reason
            if self._parts:
                self._publish("degraded", "; ".join(self._parts.values())[:1000])
            else:
                self._publish("online", "")

        return set_state


def start_rollups(config: Any, store: Store, on_state: StateSetter) -> asyncio.Task[None] | None:
    """Route means to the rollups and start their upkeep (None when off, or on a store without CQs)."""
    if not isinstance(store, Influx1Store):
        if config.recorder_rollups:
            log.info("rollups are kept on InfluxDB 1.x only (README, History rollups): means come from raw points")
        return None
    if not config.recorder_rollups:
        log.info("rollups off (BESS_RECORDER_ROLLUPS=0): history means come from raw points")
        return asyncio.create_task(stop_cqs(store), name="rollups-off")
    settings = RollupSettings.from_config(config)
    store.router = Router({rp.name: rp.duration_s for rp in settings.rps()}, rows_of,
                          {r.name: look_back_s(r, settings.late_s) for r in settings.rollups})
    return asyncio.create_task(keep(store, settings, on_state), name="rollups")


async def stop_cqs(store: Influx1Store) -> None:
    """Rollups off: drop the recorder's CQs (the database stops the work; their rollups and RPs stay, and when
    rollups are on again their coverage starts anew, so history is never served from a rollup with a gap)."""
    try:
        names, _ = await shown(store)
        for name in names:
            if owner(name) is not None:
                log.warning("rollups off: dropping the continuous query %s", name)
                await store.influxql([drop_cq(store.database, name)])
    except (StoreUnavailable, StoreError) as exc:
        log.warning("rollups off, but their continuous queries could not be dropped: %s", exc)


async def keep(store: Influx1Store, settings: RollupSettings, on_state: StateSetter, *,
               recheck_s: float = RECHECK_S, retry_s: float = RETRY_S,
               clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """Ensure the rollups now and every ``recheck_s``; apply the raw retention after each check."""
    waiting: str | None = None
    while True:
        try:
            report = await ensure(store, settings, clock())
            if report.changes:
                log.info("rollups: %d change(s) made; every CQ and RP is as configured", len(report.changes))
            on_state("online", "")
            reason = await apply_raw_retention(store, settings, clock())
            if reason != waiting and reason is not None:
                log.warning("%s", reason)
            waiting = reason
            delay = recheck_s
        except StoreUnavailable as exc:  # the batcher reports the outage; just try again soon
            log.debug("rollups: database unreachable: %s", exc)
            delay = retry_s
        except (StoreError, RuntimeError) as exc:
            on_state("degraded", f"rollups not maintained, history means come from raw points: {exc}"[:500])
            delay = recheck_s
        await asyncio.sleep(delay)


__all__ = ["Conditions", "keep", "start_rollups", "stop_cqs"]
