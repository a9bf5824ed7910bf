"""A local stand-in for a price provider: an aiohttp server on 127.0.0.1 that serves recorded answers.

    with RecordedAnswers() as server:                 # runs in its own thread: usable from sync and async tests
        server.answer("GET", "/api", Answer(200, body))                       # served once, then repeated
        server.answer("GET", "/api", Answer(429, headers={"Retry-After": "1"}), Answer(200, body))
        server.respond("GET", "/api", lambda req: Answer(200, make(req.query)))  # computed per request
        url = server.url("/api")
        ...
        server.requests                               # every request seen: method, path, query, body

The last queued answer of a route is repeated; a route with no answer is a 404. ``Answer.delay_s`` holds the
answer back (a provider that times out). Nothing here reaches the internet.

:class:`DayAheadMarket` is a templated ENTSO-E answer: an A44 document for the CET delivery days the request
asks for, made from the request itself, so it covers "today and tomorrow" of whatever moment a test runs at::

    market = DayAheadMarket(token="...", eic="10Y1001A1001A82H", tomorrow=False)
    server.respond("GET", "/api", market.answer)
    market.tomorrow_published.set()                   # from now on the answer holds tomorrow too
    market.expected                                   # every slot served: start (RFC 3339 Z) -> price
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from nodes.market.sources.zones import PUBLICATION_TZ

QUARTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Answer:
    """One recorded answer."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes


Responder = Callable[[Seen], Answer]


class RecordedAnswers:
    """The server; use as a context manager."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], list[Answer]] = {}
        self._responders: dict[tuple[str, str], Responder] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        """Queue answers for a route (the last one repeats)."""
        with self._lock:
            self._queues[(method, path)] = list(answers)
            self._responders.pop((method, path), None)

    def respond(self, method: str, path: str, responder: Responder) -> None:
        """Compute the answer of each request on a route."""
        with self._lock:
            self._responders[(method, path)] = responder
            self._queues.pop((method, path), None)

    def url(self, path: str = "") -> str:
        """The server's URL for ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[Seen]:
        """Requests received on ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path, dict(request.query), await request.read())
        with self._lock:
            self.requests.append(seen)
            key = (request.method, request.path)
            responder = self._responders.get(key)
            queue = self._queues.get(key)
            answer: Answer | None
            if responder is not None:
                answer = None
            elif queue:
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
            else:
                answer = Answer(404, b"no recorded answer")
        if answer is None:
            assert responder is not None
            answer = responder(seen)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers=dict(answer.headers),
            content_type=None if "Content-Type" in answer.headers else answer.content_type,
        )

    def __enter__(self) -> RecordedAnswers:
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; the site serves on this very socket
            self.port = sock.getsockname()[1]
            loop.run_until_complete(web.SockSite(runner, sock).start())
            self._runner = runner
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="recorded-answers", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the recorded-answer server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def a44_document(
    eic: str, created: datetime, periods: list[tuple[datetime, datetime, timedelta, list[float]]]
) -> bytes:
    """An ENTSO-E A44 Publication_MarketDocument (curveType A01), one Period per ``(start, end, step, prices)``."""

    def z(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")

    minutes = {timedelta(minutes=15): "PT15M", timedelta(minutes=30): "PT30M", timedelta(hours=1): "PT60M"}
    body = "".join(
        f"<Period><timeInterval><start>{z(start)}</start><end>{z(end)}</end></timeInterval>"
        f"<resolution>{minutes[step]}</resolution>"
        + "".join(
            f"<Point><position>{i}</position><price.amount>{p:.2f}</price.amount></Point>"
            for i, p in enumerate(prices, start=1)
        )
        + "</Period>"
        for start, end, step, prices in periods
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">'
        f"<mRID>local</mRID><revisionNumber>1</revisionNumber><type>A44</type>"
        f"<createdDateTime>{created.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}</createdDateTime>"
        "<TimeSeries><mRID>1</mRID><auction.type>A01</auction.type><businessType>A62</businessType>"
        f'<in_Domain.mRID codingScheme="A01">{eic}</in_Domain.mRID>'
        f'<out_Domain.mRID codingScheme="A01">{eic}</out_Domain.mRID>'
        "<contract_MarketAgreement.type>A01</contract_MarketAgreement.type>"
        "<currency_Unit.name>EUR</currency_Unit.name><price_Measure_Unit.name>MWH</price_Measure_Unit.name>"
        f"<curveType>A01</curveType>{body}</TimeSeries></Publication_MarketDocument>"
    ).encode()


def cet_days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The CET/CEST delivery days ``(begin, end)`` in UTC that start in [start, end) or hold ``start``."""
    days: list[tuple[datetime, datetime]] = []
    day = start.astimezone(PUBLICATION_TZ).date()
    while True:
        begin = datetime.combine(day, datetime.min.time(), tzinfo=PUBLICATION_TZ).astimezone(UTC)
        if begin >= end:
            return days
        day = day + timedelta(days=1)
        days.append((begin, datetime.combine(day, datetime.min.time(), tzinfo=PUBLICATION_TZ).astimezone(UTC)))


def day_prices(begin: datetime, end: datetime, offset: float) -> list[float]:
    """Quarter-hour prices for one delivery day: negative at night, the SDAC extremes (-500 and 4000 EUR/MWh)
    somewhere in the day, every other price distinct within 48 quarter-hours: easy to recognise downstream."""
    count = (end - begin) // QUARTER
    prices = [round(offset - 40.0 + (i % 48) * 2.25, 2) for i in range(count)]
    prices[count // 3] = -500.0
    prices[2 * count // 3] = 4000.0
    return prices


class DayAheadMarket:
    """A local ENTSO-E Transparency Platform: A44 day-ahead prices in quarter-hours for the requested CET days.

    Today is always published; tomorrow once :attr:`tomorrow_published` is set (set at start with
    ``tomorrow=True``). A request without the right ``securityToken`` gets the platform's 401.
    """

    def __init__(self, token: str, eic: str, *, tomorrow: bool = False) -> None:
        self.token = token
        self.eic = eic
        self.tomorrow_published = threading.Event()
        if tomorrow:
            self.tomorrow_published.set()
        self.expected: dict[str, float] = {}
        """Every slot served so far: its start (``%Y-%m-%dT%H:%M:%SZ``) -> its price."""
        self._lock = threading.Lock()

    def answer(self, seen: Seen) -> Answer:
        """The answer to one ``GET /api`` request (a :data:`Responder`)."""
        if seen.query.get("securityToken") != self.token:
            return Answer(401, b"Unauthorized")
        start = datetime.strptime(seen.query["periodStart"], "%Y%m%d%H%M").replace(tzinfo=UTC)
        end = datetime.strptime(seen.query["periodEnd"], "%Y%m%d%H%M").replace(tzinfo=UTC)
        days = cet_days(start, end)
        if not self.tomorrow_published.is_set():
            days = days[:1]
        periods = []
        for n, (begin, finish) in enumerate(days):
            prices = day_prices(begin, finish, 50.0 * n)
            periods.append((begin, finish, QUARTER, prices))
            with self._lock:
                for i, price in enumerate(prices):
                    self.expected[(begin + i * QUARTER).strftime("%Y-%m-%dT%H:%M:%SZ")] = price
        return Answer(200, a44_document(self.eic, datetime.now(UTC), periods), content_type="application/xml")
