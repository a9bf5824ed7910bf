"""A node's health as its status message tells it: state, reason, per-item details and counters.

The bus owns one :class:`Health` and publishes :meth:`Health.status` on ``node/{node}/status`` (retained) on every
connect, whenever the state or the details change, and every ``BESS_STATUS_INTERVAL_S``. Counters are the bus's own
(``received``, ``decode_errors``, ``published``, ...), the ones a node shell adds (``bus.counters["plans"] += 1``)
and those of an optional source merged in at each status (``set_counters_source``: points stored, polls).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from nodes import __version__
from nodes.contract.messages import NodeState, NodeStatus

log = logging.getLogger("bess.bus")


class Health:
    """State, reason, details and counters of one node."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.counters: Counter[str] = Counter()
        self.state: NodeState = "online"
        self.reason = ""
        self.details: dict[str, str] = {}
        self.since = datetime.now(UTC)
        self._extra_counters: Callable[[], dict[str, int]] | None = None

    def set_counters_source(self, source: Callable[[], dict[str, int]]) -> None:
        """Extra counters (e.g. points stored) merged into every status message."""
        self._extra_counters = source

    def set_state(self, state: NodeState, reason: str = "") -> bool:
        """Change the state (online/degraded); True when it changed (the bus then publishes at once)."""
        if (state, reason) == (self.state, self.reason):
            return False
        if state != self.state:
            self.since = datetime.now(UTC)
            log.log(logging.WARNING if state != "online" else logging.INFO, "state %s %s", state, reason)
        self.state, self.reason = state, reason
        return True

    def set_details(self, details: dict[str, str]) -> bool:
        """Per-item notes (keyed by battery id) that do not change the state; True when they changed."""
        if details == self.details:
            return False
        self.details = dict(details)
        return True

    def status(self) -> NodeStatus:
        """The status message as it would be published now."""
        counters = dict(self.counters)
        if self._extra_counters:
            counters.update(self._extra_counters())
        return NodeStatus(
            node=self.node,
            state=self.state,
            since=self.since,
            version=__version__,
            reason=self.reason,
            pid=os.getpid(),
            counters=counters,
            details=self.details,
        )


__all__ = ["Health"]
