"""Waiting for the recorder's stored confirmations of the records one ``POST /write`` published.

Each record gets a correlation id (``<process token>-<counter>``: ids never repeat within a process, and a
restarted gateway cannot mistake a late receipt meant for its predecessor); the ids are registered *before*
the records are published, so a receipt that beats the broker's PUBACK is not missed. The recorder answers on
``stored/{client}`` with :class:`StoredReceipt`s quoting the ids (one receipt per written batch, see
:mod:`nodes.recorder.confirm`); :meth:`Receipts.on_receipt` marks them. A receipt for an id nobody waits for
any more (timed out, or a redelivery confirmed twice) is counted as late and ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter

from nodes.contract.messages import StoredReceipt


class Expectation:
    """The records of one request: which are confirmed stored, which the store refused."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.stored: set[int] = set()
        self.rejected: dict[int, str] = {}
        self._open = len(ids)
        self._done = asyncio.Event()
        if not ids:
            self._done.set()

    def settle(self, index: int, reason: str | None) -> None:
        """Record ``index`` as stored (``reason`` None) or refused; the first answer for a record counts."""
        if index in self.stored or index in self.rejected:
            return
        if reason is None:
            self.stored.add(index)
        else:
            self.rejected[index] = reason
        self._open -= 1
        if self._open == 0:
            self._done.set()

    @property
    def complete(self) -> bool:
        """Every record is answered (stored or refused)."""
        return self._done.is_set()

    def unconfirmed(self) -> list[int]:
        """Indexes of the records neither confirmed stored nor refused."""
        return [i for i in range(len(self.ids)) if i not in self.stored and i not in self.rejected]

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every record's answer; True if all came."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Receipts:
    """Correlation ids handed out to requests, and the receipts that settle them."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token or uuid.uuid4().hex[:8]
        self._counter = itertools.count()
        self._waiting: dict[str, tuple[Expectation, int]] = {}
        self.counters: Counter[str] = Counter()

    def expect(self, count: int) -> Expectation:
        """A new expectation of ``count`` records, registered under fresh correlation ids."""
        base = next(self._counter)
        ids = [f"{self._token}-{base}.{i}" for i in range(count)]
        expectation = Expectation(ids)
        for index, correlation in enumerate(ids):
            self._waiting[correlation] = (expectation, index)
        return expectation

    def forget(self, expectation: Expectation) -> None:
        """Stop waiting for the expectation's records (answered, timed out or never published)."""
        for correlation in expectation.ids:
            self._waiting.pop(correlation, None)

    @property
    def waiting(self) -> int:
        """Records whose receipt is awaited now."""
        return len(self._waiting)

    def on_receipt(self, receipt: StoredReceipt) -> None:
        """Settle every awaited record the receipt quotes."""
        for correlations, reason in ((receipt.stored, None), (receipt.rejected, receipt.reason or "refused")):
            for correlation in correlations:
                entry = self._waiting.pop(correlation, None)
                if entry is None:
                    self.counters["late_receipts"] += 1
                    continue
                expectation, index = entry
                expectation.settle(index, reason)


__all__ = ["Expectation", "Receipts"]
