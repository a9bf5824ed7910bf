"""A recorder stand-in on a :class:`nodes.runtime.memory.MemoryBroker`, for unit tests of the nodes that ask it.

It answers as the real recorder does, over the bus: a record published with the MQTT 5 response topic
``stored/{client}`` and correlation data gets a StoredReceipt there (``mode`` says how: ``stored``, ``refused``
or ``silent``; records whose arrival index, from 0, is in ``unconfirmed`` get none, as if the recorder died before
writing them), and a history request gets ``answer`` on its response topic (None: no answer, the asker times out).
"""

from __future__ import annotations

from typing import Literal

from nodes.contract.messages import HistoryQuery, HistoryResult, StoredReceipt, Telemetry
from nodes.contract.topics import HISTORY, STORED_RESPONSE, TELEMETRY
from nodes.runtime.dispatch import Delivery
from nodes.runtime.memory import MemoryBroker, MemoryBus

RecorderMode = Literal["stored", "refused", "silent"]


class RecorderDouble:
    """Confirms records and answers history requests on ``broker``, recording what it was asked."""

    def __init__(self, broker: MemoryBroker, node: str = "recorder") -> None:
        self.bus = MemoryBus(node, broker)
        self.mode: RecorderMode = "stored"
        self.unconfirmed: set[int] = set()
        self.answer: HistoryResult | None = None
        self.queries: list[HistoryQuery] = []
        self.records = 0
        self.bus.subscribe(TELEMETRY, self._on_record)
        self.bus.subscribe(HISTORY.ask, self._on_query)

    async def _on_record(self, params: dict[str, str], telemetry: Telemetry, delivery: Delivery) -> None:
        index, self.records = self.records, self.records + 1
        client = self.bus.reply_client(STORED_RESPONSE, delivery)
        correlation = delivery.correlation_data
        if client is None or correlation is None or self.mode == "silent" or index in self.unconfirmed:
            return
        if self.mode == "refused":
            receipt = StoredReceipt(recorder="fake", rejected=[correlation.decode()], reason="field type conflict")
        else:
            receipt = StoredReceipt(recorder="fake", stored=[correlation.decode()])
        await self.bus.publish(STORED_RESPONSE, receipt, client=client)

    async def _on_query(self, params: dict[str, str], query: HistoryQuery, delivery: Delivery) -> None:
        self.queries.append(query)
        if self.answer is not None:
            await self.bus.respond(delivery, HISTORY, self.answer)


__all__ = ["RecorderDouble", "RecorderMode"]
