"""One JSON error shape for every HTTP error the gateway returns: ``{"error": "...", "field": "..." | null}``.

* :class:`ApiError` is raised by handlers for every known bad input (4xx) and for an unreachable broker (503),
  a silent recorder (504) or a failing recorder (502).
* :func:`from_msgspec` turns a msgspec error into a 400 (malformed JSON) or a 422 (valid JSON, invalid content)
  and translates msgspec's error path (``$.SOC``, ``$[2].timestamp``, ``$.slots[0].end``) into ``field``
  (``SOC``, ``[2].timestamp``, ``slots[0].end``).
* :func:`error_middleware` renders them, renders aiohttp's own HTTP errors (404, 405, 413) in the same shape,
  and, as the last resort, turns an unexpected exception into a JSON 500 carrying an error id that is also in
  the log with the traceback. It never answers a bare (HTML/text) 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import hdrs, web

from nodes.contract.topics import id_problems
from nodes.runtime.errors import BusUnavailable

log = logging.getLogger("bess.gateway")

_ENCODER = msgspec.json.Encoder()
_NAMED = re.compile(r"Object (missing required|contains unknown) field `([^`]*)`")


class ErrorBody(msgspec.Struct, kw_only=True):
    """The body of every error response. ``field`` names the offending input (body path or query parameter)."""

    error: str
    field: str | None = None


class ApiError(Exception):
    """An HTTP error with the gateway's JSON error shape."""

    def __init__(
        self, status: int, error: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """The JSON response for this error."""
        return error_response(self.status, self.error, self.field, self.headers)


class ImplausibleTimestamp(ApiError):
    """A 422 for a timestamp the plausibility rule refuses (:mod:`nodes.contract.plausibility`); counted."""


def check_battery(value: str, field: str = "battery") -> str:
    """A valid battery id, or a 422 on ``field`` (the contract's id rule: it becomes part of a topic)."""
    problems = id_problems(value, "battery")
    if problems:
        raise ApiError(422, problems[0], field)
    return value


def error_response(
    status: int, error: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON error response ``{"error": ..., "field": ...}``."""
    return web.Response(
        status=status,
        body=_ENCODER.encode(ErrorBody(error=error, field=field)),
        content_type="application/json",
        headers=headers,
    )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def from_msgspec(exc: msgspec.DecodeError) -> ApiError:
    """Translate a msgspec decode/validation error into a 400 (malformed JSON) or a 422 with ``field``."""
    if not isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        if text == "Input data was truncated":
            text = "body is empty or truncated JSON"
        return ApiError(400, f"malformed JSON: {text}")
    message = str(exc)
    text, sep, path = message.rpartition(" - at `")
    if sep:
        path = path.rstrip("`").removeprefix("$").removeprefix(".")
    else:
        text, path = message, ""
    named = _NAMED.fullmatch(text)
    if named is not None:
        what, name = named.groups()
        field = _join(path, name)
        if what == "missing required":
            return ApiError(422, f"missing required field {field}", field)
        return ApiError(422, f"unknown field {field} (misspelt? unknown fields are refused)", field)
    if text == "Number out of range":
        text = "number out of range: it must be a finite number"
    else:
        text = text.replace("`", "")
        text = text[:1].lower() + text[1:]
    if not path:
        return ApiError(422, f"invalid body: {text}")
    return ApiError(422, f"invalid {path}: {text}", path)


def _http_error_text(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route {request.method} {request.path}; see /openapi.json for the API"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return "request body is too large"
    return exc.reason


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as ``{"error", "field"}``; unexpected exceptions become a JSON 500 with an error id."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)}
        return error_response(exc.status, _http_error_text(request, exc), headers=headers)
    except BusUnavailable as exc:
        return error_response(
            503, f"MQTT broker unavailable, the message was not acknowledged (retry later): {exc}"
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", error_id, request.method, request.path_qs[:300])
        return error_response(500, f"internal error {error_id}: the gateway log has the details")


__all__ = ["ApiError", "ErrorBody", "ImplausibleTimestamp", "error_middleware", "error_response", "from_msgspec"]
