"""Where points go: a small :class:`Store` protocol and two InfluxDB adapters.

* :class:`Influx1Store` speaks the v1 HTTP API (``POST /write`` line protocol, ``/query`` InfluxQL) with one
  aiohttp session (keep-alive). It serves InfluxDB 1.x and the v1-compatible API of InfluxDB 3.x.
* :class:`Influx2Store` uses ``influxdb-client``'s ``InfluxDBClientAsync`` (bucket/org/token, Flux) for
  InfluxDB 2.x and Cloud.

Errors are sorted into the two kinds the batcher must tell apart:

* :class:`StoreUnavailable` (retryable): the server cannot be reached, answers 5xx, refuses our credentials, or
  its database/bucket is missing and cannot be created. Nothing is acknowledged; the batcher retries.
* A rejected line (not retryable): malformed line protocol or a field type conflict. InfluxDB 1.x answers 400
  but **stores the good lines of the batch** (``partial write``), so the batch is done: the outcome counts the
  rejected lines (``unable to parse '…'`` items plus ``dropped=N``) and the caller logs them. Retrying would
  fail the same way forever and block every message behind it. A rejection whose line the server does not
  name (``dropped=N``, an error text we cannot itemise) has ``line=None``: the batcher then splits the batch to
  find the refused lines.
* :class:`StoreRefused` (not retryable as it is): the server refuses the request as a whole for its content,
  e.g. ``413 Request Entity Too Large`` (InfluxDB 1.x: a body over ``max-body-size``, 25 MB by default). The
  batcher splits the batch until the refused line stands alone, rejects it and writes the rest.

:func:`make_store` picks the adapter from the recorder config (``BESS_STORE=influx1|influx2``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import msgspec

from nodes.contract.messages import HistoryQuery, HistoryResult
from nodes.recorder import flux, split
from nodes.recorder.influxql import (
    Plan,
    QueryError,
    count_column,
    ident,
    plan,
    split_values,
    stale_values,
    to_influxql,
)
from nodes.recorder.points import MASK, epoch_us, rfc3339, rfc3339_from_us
from nodes.recorder.routing import Router

log = logging.getLogger("bess.recorder.store")

_UNABLE = re.compile(r"unable to parse '(.*?)': ([^\n]*?)(?=\nunable to parse '| dropped=\d+|$)", re.DOTALL)
_DROPPED = re.compile(r"dropped=(\d+)")
_ERROR_TEXT_LIMIT = 300


class StoreUnavailable(RuntimeError):
    """The store cannot take writes or answer queries right now; retrying later may succeed."""


class StoreError(RuntimeError):
    """The store refused a request for a reason retrying will not fix (e.g. a query error)."""


class StoreForbidden(StoreError):
    """The store's user may not do this (403), e.g. create a database with a login that is not an admin."""


class StoreRefused(StoreError):
    """The store refused a write as a whole for its content (413: too large); a smaller write may succeed."""


@dataclass(frozen=True)
class Rejection:
    """One line the store refused, with its reason; ``line`` is None when the store does not say which."""

    reason: str
    line: str | None = None


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one write: how many lines are stored and which were rejected (and why)."""

    written: int
    rejected: tuple[Rejection, ...] = field(default=())


class Store(Protocol):
    """A time series store the recorder writes line protocol to and answers history queries from."""

    async def open(self) -> None:
        """Prepare (session, database); must not fail when the server is down (writes will retry)."""

    async def write(self, lines: list[str]) -> WriteOutcome:
        """Write line protocol (``precision=u``); raise :class:`StoreUnavailable` when it may be retried."""

    async def query(self, q: HistoryQuery) -> HistoryResult:
        """Answer a history query; raise QueryError/StoreError/StoreUnavailable instead of returning ok=False."""

    async def ping(self) -> bool:
        """True when the server answers."""

    async def close(self) -> None:
        """Release connections."""


def rejections_from_error(text: str, total: int) -> tuple[Rejection, ...]:
    """The rejected lines described by an InfluxDB 400 error text (at most ``total``).

    1.x lists each unparsable line as ``unable to parse '<line>': <reason>`` and counts points it refused for
    other reasons (field type conflicts) as ``dropped=N``; when a batch has both, it may report only one kind.
    """
    found = [Rejection(reason=m.group(2).strip(), line=m.group(1)) for m in _UNABLE.finditer(text)]
    dropped = _DROPPED.search(text)
    if dropped:
        reason = text[: dropped.start()].strip()
        found += [Rejection(reason=reason)] * int(dropped.group(1))
    if not found:  # a 400 we cannot itemise: assume one bad line, never "all good"
        found = [Rejection(reason=text[:_ERROR_TEXT_LIMIT])]
    return tuple(found[:total])


def _error_text(body: bytes) -> str:
    try:
        decoded = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:_ERROR_TEXT_LIMIT]
    if isinstance(decoded, dict):
        for key in ("error", "message"):  # 1.x says "error", 2.x says "message"
            value = decoded.get(key)
            if isinstance(value, str):
                return value
    return body.decode("utf-8", "replace")[:_ERROR_TEXT_LIMIT]


def _result(checked: Plan, columns: list[str], rows: list[list[Any]]) -> HistoryResult:
    """Shape rows as the contract wants: ``time`` first (RFC 3339), floats as floats, ``truncated`` flag.

    ``columns`` are what the query selected (:attr:`Plan.query_columns`); the answer has ``time`` and
    :attr:`Plan.columns`. A raw row drops the values its ``absent`` mask names and reads ``""`` as absent where
    the series says so: a record is what its latest write said, never a merge (:mod:`nodes.recorder.points`).
    """
    series = checked.series
    numeric = {i for i, name in enumerate(columns) if name in series.numeric}
    truncated = len(rows) > checked.limit
    rows = rows[: checked.limit]
    blank = [i for i, name in enumerate(columns) if name in series.blank_is_none]
    mask = columns.index(MASK) if MASK in columns else None
    position = {name: i for i, name in enumerate(columns)}
    for row in rows:
        for i in numeric:
            value = row[i]
            if isinstance(value, int) and not isinstance(value, bool):
                row[i] = float(value)
        for i in blank:
            if row[i] == "":
                row[i] = None
        if mask is not None and row[mask]:
            for name in series.masked(str(row[mask])):
                if name in position:
                    row[position[name]] = None
    keep = [position[name] for name in ("time", *checked.columns)]
    if keep != list(range(len(columns))):
        rows = [[row[i] for i in keep] for row in rows]
    return HistoryResult(ok=True, columns=["time", *checked.columns], rows=rows, truncated=truncated)


def _take_out_stale(checked: Plan, columns: list[str], rows: list[list[Any]], stale: list[list[Any]]) -> None:
    """Correct downsampled means for values a later write left out (see :func:`influxql.stale_values`).

    ``rows`` hold per bucket the mean and the count of each optional field; ``stale`` the points (time in us,
    ``absent``, the optional fields) whose value is not part of their record. Buckets are aligned to the epoch, as
    InfluxQL's ``GROUP BY time`` aligns them.
    """
    if not stale or not checked.every_s:
        return
    every_us = checked.every_s * 1_000_000
    position = {name: i for i, name in enumerate(columns)}
    by_bucket = {int(row[0]): row for row in rows}
    optional = checked.series.optional
    for point in stale:
        bucket = by_bucket.get(int(point[0]) - int(point[0]) % every_us)
        if bucket is None:
            continue
        absent = checked.series.masked(str(point[1] or ""))
        for offset, name in enumerate(optional):
            value = point[2 + offset]
            if name not in absent or value is None:
                continue
            mean_at, count_at = position[name], position[count_column(name)]
            count = bucket[count_at] or 0
            if count <= 1 or bucket[mean_at] is None:
                bucket[mean_at], bucket[count_at] = None, 0
                continue
            bucket[mean_at] = (bucket[mean_at] * count - float(value)) / (count - 1)
            bucket[count_at] = count - 1


def _encode(lines: list[str]) -> bytes:
    # "replace": a lone surrogate in a string field must not make the whole batch unencodable.
    return "\n".join(lines).encode("utf-8", "replace")


class Influx1Store:
    """InfluxDB v1 HTTP API (1.x, and 3.x's v1-compatible ``/write`` and ``/query``)."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self._headers = {"Authorization": f"Token {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._write_params = {"db": database, "precision": "u"}
        #: serves means from the rollups (:mod:`nodes.recorder.routing`); None: means over raw points only
        self.router: Router | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise StoreUnavailable("the store is closed")  # no new session (and no leak) after close()
        if self._session is None or self._session.closed:
            # One connection is plenty (one write in flight); keep-alive saves a TCP handshake per batch.
            self._session = aiohttp.ClientSession(
                auth=self._auth,
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=4, keepalive_timeout=60),
            )
        return self._session

    async def open(self) -> None:
        """Open the session and create the database if the server is up (else the first write does it)."""
        self._closed = False
        self._http()
        try:
            await self.create_database()
        except StoreForbidden:
            # a login without admin rights (deploy/up's secure mode gives the recorder its database only, which
            # deploy creates): the database must exist already, nothing to warn about
            log.info("database %r is not the recorder's to create (no admin rights); using it", self.database)
        except (StoreUnavailable, StoreError) as exc:
            log.warning("could not create database %r yet: %s", self.database, exc)

    async def close(self) -> None:
        """Close the HTTP session; later calls raise :class:`StoreUnavailable` until :meth:`open`."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ping(self) -> bool:
        """GET /ping answers 204."""
        try:
            async with self._http().get(f"{self.url}/ping") as response:
                return response.status == 204
        except (aiohttp.ClientError, OSError, TimeoutError, StoreUnavailable):
            return False

    async def _post(self, path: str, *, params: dict[str, str], data: Any) -> tuple[int, bytes]:
        session = self._http()
        try:
            async with session.post(f"{self.url}{path}", params=params, data=data) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc or type(exc).__name__}") from exc

    async def create_database(self) -> None:
        """``CREATE DATABASE`` (idempotent in 1.x). 3.x creates databases on first write and may refuse it."""
        status, body = await self._post(
            "/query", params={}, data={"q": f"CREATE DATABASE {ident(self.database)}"}
        )
        if status >= 500:
            raise StoreUnavailable(f"InfluxDB answered {status} to CREATE DATABASE: {_error_text(body)}")
        if status == 403:
            raise StoreForbidden(f"CREATE DATABASE refused ({status}): {_error_text(body)}")
        if status != 200:
            raise StoreError(f"CREATE DATABASE refused ({status}): {_error_text(body)}")

    async def write(self, lines: list[str], *, retention_policy: str | None = None) -> WriteOutcome:
        """POST /write?db=..&precision=u (into the database's default retention policy unless one is named); see
        the module docstring for how answers are sorted."""
        if not lines:
            return WriteOutcome(written=0)
        body = _encode(lines)
        params = self._write_params if retention_policy is None else {**self._write_params, "rp": retention_policy}
        status, answer = await self._post("/write", params=params, data=body)
        if status == 404:
            # The database was dropped (or never created while the server was down): create it and retry once.
            log.warning("database %r not found; creating it", self.database)
            try:
                await self.create_database()
            except StoreError as exc:
                raise StoreUnavailable(f"database {self.database!r} missing and not creatable: {exc}") from exc
            status, answer = await self._post("/write", params=params, data=body)
        if status in (200, 204):
            return WriteOutcome(written=len(lines))
        text = _error_text(answer)
        if status == 400:
            rejected = rejections_from_error(text, len(lines))
            return WriteOutcome(written=len(lines) - len(rejected), rejected=rejected)
        if status == 413:
            raise StoreRefused(f"InfluxDB write answered 413 for {len(body)} bytes: {text[:_ERROR_TEXT_LIMIT]}")
        # 401/403 (credentials), 404 (still no database), 429, 5xx: keep the messages and retry.
        raise StoreUnavailable(f"InfluxDB write answered {status}: {text[:_ERROR_TEXT_LIMIT]}")

    async def influxql(self, statements: list[str]) -> list[dict[str, Any]]:
        """Run read statements in one request (``epoch=u``); the answer of each, in order. Raises
        :class:`StoreUnavailable` (5xx, unreachable) or :class:`StoreError` (refused, or a statement failed)."""
        status, body = await self._post(
            "/query", params={"db": self.database, "epoch": "u"}, data={"q": ";".join(statements)}
        )
        if status >= 500:
            raise StoreUnavailable(f"InfluxDB query answered {status}: {_error_text(body)}")
        if status != 200:
            raise StoreError(f"query refused ({status}): {_error_text(body)}")
        try:
            results = msgspec.json.decode(body)["results"]
            errors = [answer.get("error") for answer in results if isinstance(answer, dict)]
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"unexpected query answer: {body[:_ERROR_TEXT_LIMIT]!r}") from exc
        for error in errors:
            if error:  # 1.x answers a request of several statements on a missing database with "not executed"
                raise StoreError(f"query failed: {error}")
        if len(errors) != len(statements) or len(results) != len(statements):
            raise StoreError(f"unexpected query answer: {body[:_ERROR_TEXT_LIMIT]!r}")
        return list(results)

    async def query(self, q: HistoryQuery) -> HistoryResult:
        """Run the InfluxQL for ``q`` (``q.limit`` rows at most) with ``epoch=u``; for means, also the stale values
        to take out of them and the currencies in the range, in the same request (:mod:`nodes.recorder.split`:
        a second request only when the range holds several currencies)."""
        checked = plan(q)
        if self.router is not None and checked.every_s:
            routed = await self.router.rows(self, checked)
            if routed is not None:
                for row in routed:
                    row[0] = rfc3339_from_us(int(row[0]))
                return _result(checked, ["time", *checked.query_columns], routed)
        statements = [to_influxql(checked)]
        stale = stale_values(checked)
        if stale is not None:
            statements.append(stale)
        values = split_values(checked)
        if values is not None:
            statements.append(values)
        statement, *extra = await self.influxql(statements)
        columns = ["time", *checked.query_columns]
        rows = rows_of(statement, columns)
        if stale is not None:
            _take_out_stale(checked, columns, rows, rows_of(extra[0], ["time", MASK, *checked.series.optional]))
        if values is not None and checked.series.split_by:
            found = split.values(rows_of(extra[-1], ["time", "distinct"]))
            if len(found) > 1:
                parts = await self.influxql([to_influxql(checked, value) for value in found])
                rows = split.merge({value: rows_of(part, columns) for value, part in zip(found, parts, strict=True)})
            else:
                rows = split.label(rows, found[0] if found else None)
            columns.append(checked.series.split_by)
        for row in rows:
            row[0] = rfc3339_from_us(int(row[0]))
        return _result(checked, columns, rows)


def rows_of(statement: dict[str, Any], columns: list[str]) -> list[list[Any]]:
    """The rows of one InfluxQL statement's answer, in ``columns`` order (time as epoch microseconds)."""
    rows: list[list[Any]] = []
    for series in statement.get("series") or []:
        index = [series["columns"].index(name) if name in series["columns"] else None for name in columns]
        for values in series["values"]:
            rows.append([None if i is None else values[i] for i in index])
    return rows


class Influx2Store:
    """InfluxDB 2.x / Cloud through ``influxdb-client``'s async client (bucket, org, token, Flux)."""

    def __init__(self, url: str, *, token: str, org: str, bucket: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.token = token
        self.org = org
        self.bucket = bucket
        self.timeout_ms = int(timeout_s * 1000)
        self._client: Any = None
        self._write_api: Any = None

    async def open(self) -> None:
        """Create the client (it must be created inside the running loop)."""
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self._client = InfluxDBClientAsync(url=self.url, token=self.token, org=self.org, timeout=self.timeout_ms)
        self._write_api = self._client.write_api()

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()
            self._client = self._write_api = None

    def _require(self) -> Any:
        if self._client is None:
            raise StoreUnavailable("Influx2Store used before open()")
        return self._client

    async def ping(self) -> bool:
        """The server answers ``/ping``."""
        try:
            return bool(await self._require().ping())
        except Exception:
            return False

    async def write(self, lines: list[str]) -> WriteOutcome:
        """Write line protocol at microsecond precision.

        2.x may refuse the whole batch when one line does not parse, so after a 400 the lines it did not
        name are written once more (idempotent: rewriting a stored point changes nothing).
        """
        if not lines:
            return WriteOutcome(written=0)
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        self._require()
        api = self._write_api
        try:
            await api.write(bucket=self.bucket, org=self.org, record=_encode(lines), write_precision=WritePrecision.US)
            return WriteOutcome(written=len(lines))
        except ApiException as exc:
            status = int(exc.status or 0)
            text = _error_text(exc.body.encode() if isinstance(exc.body, str) else (exc.body or b""))
            if status == 413:
                raise StoreRefused(f"InfluxDB write answered 413: {text[:_ERROR_TEXT_LIMIT]}") from exc
            if status != 400:
                raise StoreUnavailable(f"InfluxDB write answered {status}: {text[:_ERROR_TEXT_LIMIT]}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc or type(exc).__name__}") from exc
        rejected = rejections_from_error(text, len(lines))
        named = {r.line for r in rejected if r.line is not None}
        rest = [line for line in lines if line not in named]
        if named and rest:
            try:
                await api.write(bucket=self.bucket, org=self.org, record=_encode(rest),
                                write_precision=WritePrecision.US)
            except ApiException as exc:
                if int(exc.status or 0) != 400:
                    raise StoreUnavailable(f"InfluxDB rewrite answered {exc.status}") from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc
        return WriteOutcome(written=len(lines) - len(rejected), rejected=rejected)

    async def query(self, q: HistoryQuery) -> HistoryResult:
        """Run the Flux equivalent of the InfluxQL query."""
        checked = plan(q)
        split_by = checked.series.split_by if checked.every_s else None
        found: list[str] = []
        if split_by:
            # means in one currency only: Flux has no cheap way to average each currency's points on their own
            # here, so a range holding several is refused with the reason (never one mean over two currencies)
            tables = await self._flux(flux.split_values(checked, self.bucket))
            found = split.values([None, r.values.get("_value")] for t in tables for r in t.records)
            if len(found) > 1:
                raise QueryError(
                    f"the range holds {checked.series.measurement} in {', '.join(found)}: InfluxDB 2.x means are "
                    "in one currency only; ask for the raw rows (no every_s) or a range in one currency"
                )
        tables = await self._flux(flux.to_flux(checked, self.bucket))
        # raw rows carry the absent mask (applied by _result); Flux means are not corrected for values a later
        # write left out (the README says so): only the InfluxQL store runs the stale-values query
        columns = ["time", *(checked.query_columns if not checked.every_s else checked.series.numeric)]
        rows: list[tuple[int, list[Any]]] = []
        for table in tables:
            for record in table.records:
                when = record.values["_time"]
                rows.append((epoch_us(when), [rfc3339(when), *(record.values.get(c) for c in columns[1:])]))
        rows.sort(key=lambda item: item[0])
        shaped = [row for _, row in rows]
        if split_by:
            shaped = split.label(shaped, found[0] if found else None)
            columns.append(split_by)
        return _result(checked, columns, shaped)

    async def _flux(self, script: str) -> Any:
        from influxdb_client.rest import ApiException

        try:
            return await self._require().query_api().query(script, org=self.org)
        except ApiException as exc:
            if int(exc.status or 0) >= 500:
                raise StoreUnavailable(f"InfluxDB query answered {exc.status}") from exc
            raise StoreError(f"query failed ({exc.status}): {exc.body!s:.300}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc


def make_store(config: Any) -> Store:
    """The adapter chosen by ``config.store`` (``influx1`` or ``influx2``)."""
    if config.store == "influx2":
        return Influx2Store(
            config.influx_url,
            token=config.influx_token or "",
            org=config.influx_org or "",
            bucket=config.influx_bucket or config.influx_db,
            timeout_s=config.influx_timeout_s,
        )
    return Influx1Store(
        config.influx_url,
        config.influx_db,
        username=config.influx_username,
        password=config.influx_password,
        token=config.influx_token,
        timeout_s=config.influx_timeout_s,
    )


__all__ = [
    "Influx1Store",
    "Influx2Store",
    "Rejection",
    "Store",
    "StoreError",
    "StoreForbidden",
    "StoreRefused",
    "StoreUnavailable",
    "WriteOutcome",
    "make_store",
    "rejections_from_error",
    "rows_of",
]
