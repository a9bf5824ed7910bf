"""Stored confirmations (pure: no I/O, no clock): what the recorder tells publishers once their data is written.

Two kinds, both collected here by the handlers after :meth:`nodes.recorder.batcher.Batcher.add` returned (the
batch holding the message is written) and taken out by the node, which publishes them:

* **Receipts** (``stored/{client}``, :class:`StoredReceipt`): for messages that carried an MQTT 5 response
  topic and correlation data. All such messages of one written batch wake up together, so one receipt per
  response topic quotes them all (chunks of ``MAX_RECEIPT_IDS``): a durable HTTP write of 10,000 records costs
  ten receipts, not 10,000.
* **Device marks** (``battery/{battery}/stored``, :class:`StoredUpTo`): per battery, the newest timestamp of its
  own (``source`` device, not retained) readings stored so far. Batches are written one after the other in the
  order their lines arrived, so when a batch is done every reading received before it is stored too: the
  mark is contiguous in the order the recorder received them. Taken out every confirm interval, only for
  batteries whose mark moved.
"""

from __future__ import annotations

from datetime import datetime

from nodes.contract.messages import MAX_RECEIPT_IDS, StoredReceipt, StoredUpTo

_MAX_CORRELATION_CHARS = 64


def correlation_text(data: bytes | None) -> str | None:
    """Correlation data as the text a receipt quotes, or None when it cannot be quoted (absent, too long, binary)."""
    if not data or len(data) > _MAX_CORRELATION_CHARS:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


class Confirmations:
    """Receipts and device marks waiting to be published."""

    def __init__(self, recorder: str) -> None:
        self.recorder = recorder
        self._stored: dict[str, list[str]] = {}  # response topic -> correlation ids
        self._rejected: dict[str, list[str]] = {}
        self._reasons: dict[str, str] = {}
        self._marks: dict[str, datetime] = {}  # battery -> newest stored device reading
        self._moved: set[str] = set()

    # -- receipts -----------------------------------------------------------------------------------------------

    def stored(self, response_topic: str, correlation: str) -> None:
        """The message with this correlation is written."""
        self._stored.setdefault(response_topic, []).append(correlation)

    def rejected(self, response_topic: str, correlation: str, reason: str) -> None:
        """The store refused the message's point for good."""
        self._rejected.setdefault(response_topic, []).append(correlation)
        self._reasons.setdefault(response_topic, reason[:500])

    @property
    def has_receipts(self) -> bool:
        """True when receipts wait to be published."""
        return bool(self._stored or self._rejected)

    def take_receipts(self) -> list[tuple[str, StoredReceipt]]:
        """``(response topic, receipt)`` for everything collected since the last call."""
        out: list[tuple[str, StoredReceipt]] = []
        for topic in dict.fromkeys([*self._stored, *self._rejected]):
            stored, rejected = self._stored.get(topic, []), self._rejected.get(topic, [])
            reason = self._reasons.get(topic, "")
            for start in range(0, max(len(stored), len(rejected)), MAX_RECEIPT_IDS):
                end = start + MAX_RECEIPT_IDS
                chunk_rejected = rejected[start:end]
                out.append((topic, StoredReceipt(recorder=self.recorder, stored=stored[start:end],
                                                 rejected=chunk_rejected,
                                                 reason=reason if chunk_rejected else "")))
        self._stored.clear()
        self._rejected.clear()
        self._reasons.clear()
        return out

    # -- device marks -------------------------------------------------------------------------------------------

    def device_reading(self, battery: str, ts: datetime) -> None:
        """A device reading of ``battery`` stamped ``ts`` is written (with everything received before it)."""
        mark = self._marks.get(battery)
        if mark is None or ts > mark:
            self._marks[battery] = ts
            self._moved.add(battery)

    def unsent_mark(self, battery: str) -> None:
        """The mark of ``battery`` taken out could not be published: take it out again next time."""
        if battery in self._marks:
            self._moved.add(battery)

    def take_marks(self) -> list[tuple[str, StoredUpTo]]:
        """``(battery, StoredUpTo)`` for every battery whose mark moved since the last call."""
        out = [(b, StoredUpTo(ts=self._marks[b], recorder=self.recorder)) for b in sorted(self._moved)]
        self._moved.clear()
        return out


__all__ = ["Confirmations", "correlation_text"]
