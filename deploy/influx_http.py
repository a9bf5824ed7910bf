"""InfluxDB 1.x over its HTTP API, blocking and standard library only: ping, queries, writes, databases.

For deploy (``up`` creates the database and, in secure mode, its users), the tests and the benchmarks. The
recorder has its own asynchronous client (``nodes/recorder/store.py``, aiohttp): it runs inside the event loop
and sorts every answer into retry or drop, which this module does not need to.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any


class InfluxError(RuntimeError):
    """InfluxDB answered with an error (HTTP status or a per-statement error)."""


# Loopback must never go through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


Login = tuple[str, str]


def _http(
    method: str, url: str, data: bytes | None = None, timeout: float = 10.0, *, login: Login | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    if login is not None:  # HTTP basic auth in a header: never in the URL, which error messages show
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def influx_ping(url: str, timeout: float = 1.0) -> bool:
    """True if ``GET url/ping`` answers 204 (InfluxDB 1.x is up)."""
    try:
        status, _ = _http("GET", url.rstrip("/") + "/ping", timeout=timeout)
    except (OSError, urllib.error.URLError):
        return False
    return status == 204


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: ``"name"`` with ``\\`` and ``"`` escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal: ``'value'`` with ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influx_query(
    url: str, q: str, db: str | None = None, *, post: bool = False, epoch: str = "ms", login: Login | None = None
) -> Any:
    """Run InfluxQL ``q`` and return the decoded JSON; raise :class:`InfluxError` on any error.

    Use ``post=True`` for statements that change things (CREATE/DROP/...). Times come back as ``epoch``.
    ``login`` is ``(user, password)`` for a database with authentication. The error names ``q``: never pass a
    statement that carries a password (:func:`influx_statement` is for those).
    """
    params = {"q": q, "epoch": epoch}
    if db is not None:
        params["db"] = db
    encoded = urllib.parse.urlencode(params)
    base = url.rstrip("/") + "/query"
    if post:
        status, body = _http("POST", base, data=encoded.encode(), login=login)
    else:
        status, body = _http("GET", f"{base}?{encoded}", login=login)
    if status != 200:
        raise InfluxError(f"{q!r}: HTTP {status}: {body[:500]!r}")
    result = json.loads(body)
    for statement in result.get("results", []):
        if "error" in statement:
            raise InfluxError(f"{q!r}: {statement['error']}")
    return result


def influx_statement(url: str, statement: str, login: Login | None) -> tuple[int, dict[str, Any]]:
    """POST one statement; ``(HTTP status, decoded JSON answer)`` whatever the outcome, never raising on an
    answer (:data:`deploy.influx_auth.Run`; an answer that is not JSON becomes ``{"error": text}``)."""
    status, body = _http("POST", url.rstrip("/") + "/query", data=urllib.parse.urlencode({"q": statement}).encode(),
                         login=login)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = {"error": body[:300].decode("utf-8", "replace")}
    return status, answer


def influx_rows(url: str, db: str, q: str, *, login: Login | None = None) -> list[dict[str, Any]]:
    """Run a SELECT and flatten every series into dict rows (tags of a GROUP BY merged in)."""
    rows: list[dict[str, Any]] = []
    for statement in influx_query(url, q, db, login=login).get("results", []):
        for series in statement.get("series", []):
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(series["columns"], values, strict=True))} for values in series["values"])
    return rows


def influx_write(
    url: str, db: str, lines: str | Iterable[str], precision: str = "ms", *, login: Login | None = None
) -> None:
    """Write line protocol; raise :class:`InfluxError` unless InfluxDB answers 204."""
    body = lines if isinstance(lines, str) else "\n".join(lines)
    query = urllib.parse.urlencode({"db": db, "precision": precision})
    status, answer = _http("POST", f"{url.rstrip('/')}/write?{query}", data=body.encode(), login=login)
    if status != 204:
        raise InfluxError(f"write to {db}: HTTP {status}: {answer[:500]!r}")


def create_database(url: str, name: str, *, login: Login | None = None) -> None:
    """``CREATE DATABASE name`` (idempotent)."""
    influx_query(url, f"CREATE DATABASE {quote_ident(name)}", post=True, login=login)


def drop_database(url: str, name: str, *, login: Login | None = None) -> None:
    """``DROP DATABASE name`` (a missing database is not an error)."""
    influx_query(url, f"DROP DATABASE {quote_ident(name)}", post=True, login=login)
