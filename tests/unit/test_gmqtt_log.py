"""gmqtt's ``[TRYING WRITE TO CLOSED SOCKET]``: one line per disconnect, not per write (issue 16, item 10).

Before: about 10,000 such lines when the broker died. The first test drives gmqtt's real protocol object, so it
fails loudly when a gmqtt upgrade renames the logger or changes the line.
"""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from gmqtt.mqtt import protocol

from nodes.runtime.bus import Bus, MqttSettings
from nodes.runtime.gmqtt_log import CLOSED_SOCKET, PROTOCOL_LOGGER, closed_socket_filter


class _Closed(asyncio.Transport):
    def is_closing(self) -> bool:
        return True


class _Connection:
    _last_data_out = 0.0


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == PROTOCOL_LOGGER and "closed socket" in r.getMessage().lower()]


async def test_ten_thousand_writes_to_a_dead_broker_make_one_line_per_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert protocol.logger.name == PROTOCOL_LOGGER
    assert CLOSED_SOCKET in inspect.getsource(protocol.BaseMQTTProtocol.write_data)
    bus = Bus("planner", MqttSettings())  # installs the filter
    proto = protocol.BaseMQTTProtocol()
    proto._transport = _Closed()
    proto._connection = _Connection()
    with caplog.at_level(logging.WARNING, logger=PROTOCOL_LOGGER):
        bus._on_disconnect(None, None)  # type: ignore[arg-type]
        for _ in range(10_000):
            proto.write_data(b"\x30\x00")
        assert len(_lines(caplog)) == 1
        assert "further writes are not logged" in _lines(caplog)[0].getMessage()
        assert closed_socket_filter().suppressed == 9_999
        # the broker is back, then dies again: one more line
        bus._first_connect_done = True
        with caplog.at_level(logging.INFO, logger="bess.bus"):
            bus._on_connect(None, 1, 0, {})  # type: ignore[arg-type]
        assert any("9999 more writes to the closed socket" in r.getMessage() for r in caplog.records)
        bus._on_disconnect(None, None)  # type: ignore[arg-type]
        for _ in range(1_000):
            proto.write_data(b"\x30\x00")
    assert len(_lines(caplog)) == 2


def test_other_gmqtt_warnings_pass() -> None:
    record = logging.LogRecord(PROTOCOL_LOGGER, logging.WARNING, "p", 1, "[EXC: CONN LOST]", (), None)
    assert closed_socket_filter().filter(record)
