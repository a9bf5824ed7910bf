"""The device side of ``battery/{battery}/stored`` (pure: no I/O, no clock): keep readings until they are stored.

A device that can keep a small buffer must not trust the broker's PUBACK alone: a broker that crashes before
its next save (mosquitto's ``autosave_interval``) forgets readings it had acknowledged. So every reading stays
in the :class:`Outbox` until the recorder's :class:`StoredUpTo` covers it, and the rule of topics.md decides
when a confirmation may be trusted:

* every (re)connect starts a new *connection epoch*; the first publish in it re-sends every kept reading,
  oldest first, before the new one;
* a confirmation counts only when it arrives in the epoch of the last re-send and covers a reading first
  published in that epoch after the re-send (``trust_from``). The broker hands one connection's messages to the
  recorder in order, so such a confirmation proves that the re-sent readings before it were received and stored
  as well. An older confirmation (about readings published before the crash, or about a copy gmqtt re-sent on
  its own at reconnect, ahead of the re-send) proves nothing about the readings the broker may have lost;
* the outbox is bounded (``limit``): when full, the oldest reading is dropped and counted (``overflowed``).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from nodes.contract.messages import Telemetry


class Outbox:
    """One battery's readings that are not yet confirmed stored."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.kept: deque[Telemetry] = deque()
        self.epoch: int | None = None
        #: the first reading published in this epoch after the re-send; confirmations below it are not trusted
        self.trust_from: datetime | None = None
        self.resent = 0
        self.overflowed = 0
        self.confirmed = 0
        self.ignored = 0

    def to_publish(self, reading: Telemetry, epoch: int) -> tuple[list[Telemetry], Telemetry]:
        """What to publish now, in order: the re-sends (when ``epoch`` is new) and then ``reading``.

        ``reading`` is kept until a trusted confirmation covers it.
        """
        resend: list[Telemetry] = []
        if epoch != self.epoch:
            self.epoch = epoch
            self.trust_from = None
            resend = list(self.kept)
            self.resent += len(resend)
        if self.trust_from is None:
            self.trust_from = reading.ts
        self.kept.append(reading)
        if len(self.kept) > self.limit:
            self.kept.popleft()
            self.overflowed += 1
        return resend, reading

    def publish_failed(self) -> None:
        """A publish of this battery failed: re-send everything kept at the next publish, as after a reconnect."""
        self.epoch = None
        self.trust_from = None

    def stored_up_to(self, ts: datetime, epoch: int) -> int:
        """A confirmation arrived in ``epoch``: drop what it covers if it may be trusted; how many were dropped."""
        if epoch != self.epoch or self.trust_from is None or ts < self.trust_from:
            self.ignored += 1
            return 0
        dropped = 0
        while self.kept and self.kept[0].ts <= ts:
            self.kept.popleft()
            dropped += 1
        self.confirmed += dropped
        return dropped


__all__ = ["Outbox"]
