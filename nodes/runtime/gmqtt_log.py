"""gmqtt's log lines that need taming (only ``nodes.runtime`` touches gmqtt; this is all of its logging).

When the broker dies, gmqtt logs ``[TRYING WRITE TO CLOSED SOCKET]`` at WARNING for every packet it tries to
write (``gmqtt.mqtt.protocol.BaseMQTTProtocol.write_data``): every publish, acknowledgement and ping until the
reconnect, about 10,000 lines in one outage. :class:`ClosedSocketFilter` lets the first through per
disconnect (reworded), counts the rest, and :meth:`ClosedSocketFilter.rearm` (called by the bus on every
disconnect and connect) starts the next episode and says how many were left out.

``tests/unit/test_gmqtt_log.py`` fails when a gmqtt upgrade renames the logger or changes the line.
"""

from __future__ import annotations

import logging

PROTOCOL_LOGGER = "gmqtt.mqtt.protocol"
CLOSED_SOCKET = "[TRYING WRITE TO CLOSED SOCKET]"
REWORDED = ("gmqtt: write to a closed socket (the broker connection is down); further writes are not logged until "
            "the connection is back")


class ClosedSocketFilter(logging.Filter):
    """One ``[TRYING WRITE TO CLOSED SOCKET]`` line per disconnect; the others are counted, not logged."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != CLOSED_SOCKET:
            return True
        if not self.armed:
            self.suppressed += 1
            return False
        self.armed = False
        record.msg, record.args = REWORDED, ()
        return True

    def rearm(self) -> int:
        """Start a new episode (the next closed-socket write is logged again); returns how many were left out."""
        suppressed, self.suppressed, self.armed = self.suppressed, 0, True
        return suppressed


_FILTER = ClosedSocketFilter()


def closed_socket_filter() -> ClosedSocketFilter:
    """The process's filter, installed on gmqtt's protocol logger (once, however often this is called)."""
    logger = logging.getLogger(PROTOCOL_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return _FILTER


__all__ = ["CLOSED_SOCKET", "PROTOCOL_LOGGER", "ClosedSocketFilter", "closed_socket_filter"]
