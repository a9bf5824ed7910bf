"""The reading routes of the gateway, ``GET /read`` and ``GET /alarms``: a HistoryQuery to the recorder over
MQTT 5 request/response, the answer in the shape the records were written (or CSV).

Functions of the :class:`~nodes.gateway.app.Gateway` (bound with ``functools.partial`` when the routes are
added), kept apart so the app module stays about writing and commanding.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from nodes.contract.messages import HistoryQuery, HistoryResult
from nodes.contract.topics import HISTORY
from nodes.gateway import reads
from nodes.gateway.errors import ApiError
from nodes.runtime.errors import BusUnavailable

if TYPE_CHECKING:
    from nodes.gateway.app import Gateway

_ENCODER = msgspec.json.Encoder()
_JSON = "application/json"


async def history(gateway: Gateway, ask: HistoryQuery) -> HistoryResult:
    """Ask the recorder; its silence, the broker's absence or its failure become 504, 503 and 502."""
    timeout_s = gateway.settings.read_timeout_s
    try:
        answer = await gateway.bus.request(HISTORY, ask, timeout=timeout_s)
    except TimeoutError:
        raise ApiError(
            504, f"the recorder did not answer within {timeout_s:g} s (is the recorder node running?)"
        ) from None
    except BusUnavailable as exc:
        raise ApiError(503, f"MQTT broker unavailable: {exc}") from None
    if not answer.ok:
        raise ApiError(502, f"the recorder could not answer: {answer.error or 'no reason given'}")
    return answer

async def read(gateway: Gateway, request: web.Request) -> web.Response:
    """``GET /read``: ask the recorder, answer with records in the shape they were written (or CSV)."""
    gateway._authorize_read(request)
    s = gateway.settings
    query = reads.parse_read_query(
        request.query.items(), now=gateway.clock(), default_battery=s.default_battery, max_rows=s.max_read_rows
    )
    ask = HistoryQuery(
        kind="telemetry", battery=query.battery, begin=query.begin.astimezone(UTC),
        end=query.end.astimezone(UTC), every_s=query.every_s, limit=query.limit,
    )
    answer = await history(gateway, ask)
    if answer.truncated and not query.limit_given:
        raise ApiError(
            422,
            f"the range holds more than {query.limit} rows, too many for one raw response: pass every=1m "
            "(or 15m, 1h) for downsampled means, narrow begin/end, or pass limit=N for the first N rows",
            "every",
        )
    records = reads.to_records(answer)
    gateway.counters["reads"] += 1
    headers = {"X-Truncated": "true"} if answer.truncated else None
    if query.csv:
        return web.Response(text=reads.to_csv(records), content_type="text/csv", headers=headers)
    return web.Response(body=_ENCODER.encode(records), content_type=_JSON, headers=headers)

async def alarms(gateway: Gateway, request: web.Request) -> web.Response:
    """``GET /alarms``: the stored alarm transitions of a battery (raised and cleared), oldest first."""
    gateway._authorize_read(request)
    s = gateway.settings
    query = reads.parse_alarms_query(
        request.query.items(), now=gateway.clock(), default_battery=s.default_battery, max_rows=s.max_read_rows
    )
    ask = HistoryQuery(kind="alarms", battery=query.battery, begin=query.begin.astimezone(UTC),
                       end=query.end.astimezone(UTC), limit=query.limit)
    answer = await history(gateway, ask)
    gateway.counters["reads"] += 1
    headers = {"X-Truncated": "true"} if answer.truncated else None
    return web.Response(body=_ENCODER.encode(reads.to_alarm_records(answer)), content_type=_JSON,
                        headers=headers)
