"""What ``POST /write`` answers, from what the broker and the recorder confirmed (pure).

``?ack=broker``: 202 ``accepted`` at the PUBACK, nothing confirmed stored. ``ack=stored`` (the default): 200
``stored`` when the recorder confirmed every record in the database, 202 ``accepted`` listing the records not
confirmed within the timeout (they may yet be stored, or be lost if the broker crashes first), and a 422 when the
database refused a record (re-sending it unchanged is refused again).
"""

from __future__ import annotations

from typing import Any

from nodes.gateway.config import AckMode
from nodes.gateway.errors import ApiError
from nodes.gateway.receipts import Expectation

RESEND_IS_SAFE = "re-sending is safe (a record is identified by battery and timestamp)"
ACK_MODES: tuple[AckMode, ...] = ("stored", "broker")


def ack_mode(given: str | None, default: AckMode) -> AckMode:
    """``?ack=``: what the write waits for (``default``, ``BESS_GATEWAY_WRITE_ACK``, when not given); else a 422."""
    if given is None:
        return default
    for mode in ACK_MODES:
        if given == mode:
            return mode
    raise ApiError(422, f"ack={given!r}: use ack=stored (wait until the database has the records, the "
                   "default) or ack=broker (answer once the broker has them)", "ack")


def write_outcome(
    n: int, expectation: Expectation | None, *, single: bool, stored_timeout_s: float
) -> tuple[int, dict[str, Any]]:
    """The status code and the outcome fields of the answer to ``n`` records (a 422 :class:`ApiError` when the
    database refused any); ``expectation`` None: the write waited for the broker only."""
    if expectation is None:
        return 202, {"status": "accepted", "ack": "broker", "stored": None, "unconfirmed": None,
                     "note": "accepted by the broker (PUBACK), not confirmed stored: ?ack=broker does not wait "
                     "for the database"}
    stored, unconfirmed = len(expectation.stored), expectation.unconfirmed()
    if expectation.rejected:
        index, reason = min(expectation.rejected.items())
        which = "the record" if single else f"{len(expectation.rejected)} of {n} records (first: [{index}])"
        rest = "" if single else f"; {stored} stored, {len(unconfirmed)} not confirmed"
        raise ApiError(422, f"the database refused {which}: {reason[:300]}{rest}; re-sending it unchanged will "
                       "be refused again", None if single else f"[{index}]")
    if not unconfirmed:
        return 200, {"status": "stored", "ack": "stored", "stored": stored, "unconfirmed": [],
                     "note": "stored: the recorder confirmed every record in the database"}
    return 202, {
        "status": "accepted", "ack": "stored", "stored": stored, "unconfirmed": unconfirmed,
        "note": f"accepted by the broker (PUBACK), but {len(unconfirmed)} of {n} records were not confirmed "
        f"stored within {stored_timeout_s:g} s (is the recorder running, is InfluxDB up?): they may yet be stored, or "
        f"be lost if the broker crashes before delivering them; {RESEND_IS_SAFE}",
    }


__all__ = ["ACK_MODES", "RESEND_IS_SAFE", "ack_mode", "write_outcome"]
