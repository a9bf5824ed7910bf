"""The live dashboard over HTTP (aiohttp): pages, a JSON API and a server-sent-events stream. No MQTT here.

The renderer's node shell owns the bus and feeds a :class:`DashboardState` (``set_figure``, ``set_status``,
``set_state``, ``set_telemetry``); every change is stored as the latest value and fanned out to the
connected browsers. A browser opens ``GET /events?battery=...``, first receives the current figures and
statuses, then live updates, and redraws with ``Plotly.react`` (no reload). Plotly.js is served from the
installed Python package (``/static/plotly.min.js``), never from a CDN: the site may have no internet.

Routes::

    GET  /                        batteries (links) and the node status strip
    GET  /battery/{battery}       one battery: status strip, window selector, one panel per figure
    GET  /static/plotly.min.js    plotly.offline.get_plotlyjs(), built once, cached for a year (versioned URL)
    GET  /static/dashboard.js     the page logic (nodes/renderer/static/)
    GET  /static/dashboard.css
    GET  /api/batteries           {"batteries": [{"battery", "href", "figures", "mode"}]}
    GET  /api/figures/{battery}   {"battery", "figures": {figure_id: Figure}}
    GET  /api/status              {"nodes": {node: NodeStatus}, "batteries": {battery: BatteryState}}
    GET  /events[?battery=id]     text/event-stream; events: figure, status, state, telemetry, window
    POST /api/window              {battery, begin?, end?, window_s?} -> 202; calls on_window_change

Event data is one JSON envelope: ``{"kind": ..., "battery": ... | null, "data": <payload>}``.

Slow browsers: each SSE client has a bounded queue keyed by what the event is about (figure id, node,
battery); a newer value replaces a queued older one (all events are latest-value), and when the queue is
still full the oldest entry is dropped and counted. A stalled browser therefore costs bounded memory and, on
catching up, sees the latest state rather than a backlog.

Lifecycle: ``build_app(state)`` -> run it (``web.AppRunner``) -> on shutdown ``state.close()`` ends every
open event stream so the server stops promptly.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import inspect
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from itertools import count
from typing import Annotated, Any, Final

import msgspec
import plotly
from aiohttp import web

from nodes.contract.messages import BatteryState, Figure, Identifier, NodeStatus, Telemetry, UtcDatetime
from nodes.renderer.figures import FIGURE_IDS

log = logging.getLogger(__name__)

ID_RE: Final = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_WINDOW_S: Final = 366 * 86400
MIN_WINDOW_S: Final = 60
WINDOW_PRESETS: Final = (("6 h", 6 * 3600), ("24 h", 86400), ("7 d", 7 * 86400), ("30 d", 30 * 86400))
STATIC_FILES: Final = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}

WindowCallback = Callable[[str, datetime | None, datetime | None], Awaitable[None] | None]
"""``on_window_change(battery, begin, end)``: ``end`` None means "up to now, following live"."""


class WindowRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/window``: a relative window (``window_s``) or an absolute one (``begin``/``end``)."""

    battery: Identifier
    begin: UtcDatetime | None = None
    end: UtcDatetime | None = None
    window_s: Annotated[int, msgspec.Meta(ge=MIN_WINDOW_S, le=MAX_WINDOW_S)] | None = None


class TimeWindow(msgspec.Struct, kw_only=True, frozen=True):
    """The window a battery's figures should show. ``window_s`` set: the last ``window_s`` seconds, sliding
    with time. Otherwise ``begin`` to ``end`` (``end`` None: up to now)."""

    begin: datetime | None = None
    end: datetime | None = None
    window_s: int | None = None

    def resolve(self, now: datetime) -> tuple[datetime, datetime]:
        """Concrete ``(begin, end)`` at ``now``."""
        if self.window_s is not None:
            return now - timedelta(seconds=self.window_s), now
        end = self.end or now
        return (self.begin or end - timedelta(days=1)), end


DEFAULT_WINDOW: Final = TimeWindow(window_s=86400)

_encoder = msgspec.json.Encoder()
_window_decoder = msgspec.json.Decoder(WindowRequest)

EventKey = tuple[str, str | None, str]


@dataclass(eq=False)
class EventClient:
    """One connected event stream: a bounded queue of frames keyed by what they are about."""

    battery: str | None
    limit: int
    pending: OrderedDict[EventKey, bytes] = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    closed: bool = False

    def push(self, key: EventKey, frame: bytes) -> None:
        if key in self.pending:
            self.pending[key] = frame
            self.pending.move_to_end(key)
        else:
            self.pending[key] = frame
            while len(self.pending) > self.limit:
                self.pending.popitem(last=False)
                self.dropped += 1
        self.wake.set()

    def drain(self) -> list[bytes]:
        frames = list(self.pending.values())
        self.pending.clear()
        self.wake.clear()
        return frames

    def wants(self, battery: str | None) -> bool:
        return self.battery is None or battery is None or battery == self.battery


def sse_frame(kind: str, battery: str | None, payload: bytes) -> bytes:
    """One server-sent event: ``event: kind`` and the envelope ``{"kind", "battery", "data": payload}``.

    ``payload`` must be one JSON value; it is spliced in as bytes (never re-encoded, figures are large).
    """
    envelope = b'{"kind":%s,"battery":%s,"data":%s}' % (_encoder.encode(kind), _encoder.encode(battery), payload)
    lines = envelope.split(b"\n")  # msgspec never emits raw newlines; a pretty-printed payload might
    return b"event: " + kind.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


class DashboardState:
    """Latest values for the dashboard and the fan-out of live events to browsers.

    Call its setters from the event loop that runs the web app (they do not block and are not thread-safe).
    Hook: ``on_window_change(battery, begin, end)`` (sync or async) is called when a browser picks a time
    window; ``window_for(battery)`` gives the full choice, including a sliding ``window_s``.
    """

    def __init__(
        self,
        *,
        on_window_change: WindowCallback | None = None,
        queue_size: int = 64,
        keepalive_s: float = 15.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.on_window_change = on_window_change
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self.clock = clock
        self.figures: dict[str, dict[str, bytes]] = {}
        """battery -> figure id -> the contract Figure as JSON bytes (ready to send)."""
        self.statuses: dict[str, NodeStatus] = {}
        self.states: dict[str, BatteryState] = {}
        self.telemetry: dict[str, Telemetry] = {}
        self.windows: dict[str, TimeWindow] = {}
        self.batteries: set[str] = set()
        self._clients: set[EventClient] = set()
        self._unkeyed = count()
        self.events_published = 0

    # -- inputs (called by the node shell) ----------------------------------------------------------------

    def add_battery(self, battery: str) -> None:
        """Make a battery known (listed on the index) before anything arrives for it."""
        if not ID_RE.fullmatch(battery):
            raise ValueError(f"battery id {battery!r} is not [a-z0-9_-]{{1,64}}")
        self.batteries.add(battery)

    def set_figure(self, figure: Figure) -> None:
        """Store a rendered figure and push it to the browsers showing its battery."""
        self.set_figure_json(figure.battery, figure.figure, _encoder.encode(figure))

    def set_figure_json(self, battery: str, figure_id: str, payload: bytes) -> None:
        """As :meth:`set_figure`, for a Figure already encoded as JSON (e.g. the bytes just published)."""
        self.add_battery(battery)
        self.figures.setdefault(battery, {})[figure_id] = payload
        self.publish_event("figure", battery, payload, key=figure_id)

    def set_status(self, status: NodeStatus) -> None:
        """Store a node's status (the status strip) and push it to every browser."""
        self.statuses[status.node] = status
        self.publish_event("status", None, _encoder.encode(status), key=status.node)

    def set_state(self, battery: str, state: BatteryState) -> None:
        """Store what a battery is doing (mode, command lease) and push it."""
        self.add_battery(battery)
        self.states[battery] = state
        self.publish_event("state", battery, _encoder.encode(state), key="state")

    def set_telemetry(self, battery: str, telemetry: Telemetry) -> None:
        """Store the latest measurement (the live readout and ``data-ts``) and push it."""
        self.add_battery(battery)
        self.telemetry[battery] = telemetry
        self.publish_event("telemetry", battery, _encoder.encode(telemetry), key="telemetry")

    def window_for(self, battery: str) -> TimeWindow:
        """The window chosen for ``battery`` (default: the last 24 h, sliding)."""
        return self.windows.get(battery, DEFAULT_WINDOW)

    # -- fan-out -------------------------------------------------------------------------------------------

    def publish_event(self, kind: str, battery: str | None, payload_bytes: bytes, *, key: str | None = None) -> None:
        """Push one event to every connected client that shows ``battery`` (``None``: to all clients).

        ``payload_bytes`` is one JSON value. Events with the same ``(kind, battery, key)`` replace each
        other in a slow client's queue; without a key an event never replaces another. A full queue drops
        its oldest event.
        """
        frame = sse_frame(kind, battery, payload_bytes)
        event_key: EventKey = (kind, battery, key if key is not None else f"#{next(self._unkeyed)}")
        self.events_published += 1
        for client in self._clients:
            if client.wants(battery):
                client.push(event_key, frame)

    def snapshot_frames(self, battery: str | None) -> list[bytes]:
        """What a new client sees first: statuses, battery states and latest telemetry, then figures."""
        frames = [sse_frame("status", None, _encoder.encode(s)) for s in self.statuses.values()]
        for name, state in self.states.items():
            if battery is None or name == battery:
                frames.append(sse_frame("state", name, _encoder.encode(state)))
        for name, telemetry in self.telemetry.items():
            if battery is None or name == battery:
                frames.append(sse_frame("telemetry", name, _encoder.encode(telemetry)))
        if battery is not None:
            if battery in self.windows:
                frames.append(sse_frame("window", battery, _encoder.encode(self.windows[battery])))
            for figure_id in _figure_order(self.figures.get(battery, {})):
                frames.append(sse_frame("figure", battery, self.figures[battery][figure_id]))
        return frames

    def subscribe(self, battery: str | None) -> EventClient:
        """Register an event-stream client (pair with :meth:`unsubscribe`)."""
        client = EventClient(battery=battery, limit=self.queue_size)
        self._clients.add(client)
        return client

    def unsubscribe(self, client: EventClient) -> None:
        """Forget a client; its queue is dropped."""
        self._clients.discard(client)
        if client.dropped:
            log.info("event client for %s dropped %d events (slow reader)", client.battery, client.dropped)

    @property
    def client_count(self) -> int:
        """Connected event-stream clients."""
        return len(self._clients)

    def close(self) -> None:
        """End every open event stream (call on shutdown so the server does not wait for browsers)."""
        for client in self._clients:
            client.closed = True
            client.wake.set()


STATE_KEY: Final = web.AppKey("dashboard_state", DashboardState)


def _figure_order(figures: dict[str, bytes]) -> list[str]:
    known = [f for f in FIGURE_IDS if f in figures]
    return known + sorted(f for f in figures if f not in FIGURE_IDS)


# -- static assets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str
    cache_control: str


def _asset(body: bytes, content_type: str, cache_control: str, *, compress: bool = False) -> _Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    gzipped = gzip.compress(body, compresslevel=6, mtime=0) if compress else None
    return _Asset(body, gzipped, content_type, etag, cache_control)


@cache
def plotly_asset() -> _Asset:
    """plotly.js from the installed package, built once per process (4.8 MB, ~1.4 MB gzipped)."""
    from plotly.offline import get_plotlyjs

    return _asset(
        get_plotlyjs().encode(),
        "application/javascript; charset=utf-8",
        "public, max-age=31536000, immutable",
        compress=True,
    )


def _static_text(name: str) -> str:
    return resources.files("nodes.renderer").joinpath("static", name).read_text(encoding="utf-8")


def _serve(request: web.Request, asset: _Asset) -> web.Response:
    headers = {"ETag": asset.etag, "Cache-Control": asset.cache_control, "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers, content_type=asset.content_type.split(";")[0], charset="utf-8")


# -- helpers -------------------------------------------------------------------------------------------------


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


def json_error(status: int, error: str, field_name: str | None = None) -> web.Response:
    """The HTTP error shape of the project: ``{"error": ..., "field": ...}``."""
    return _json({"error": error, "field": field_name}, status=status)


_FIELD_AT = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_FIELD_NAMED = re.compile(r"field `([A-Za-z_][A-Za-z0-9_]*)`")


def validation_field(message: str) -> str | None:
    """The top-level field a msgspec validation message is about (``... - at `$.battery```), if any."""
    match = _FIELD_AT.search(message) or _FIELD_NAMED.search(message)
    return match.group(1) if match else None


def _battery_param(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not ID_RE.fullmatch(value):
        raise ValueError(value)
    return value


def _page(name: str, **values: str) -> web.Response:
    text = _PAGES[name]
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


_PAGES: dict[str, str] = {}


def _status_chips(statuses: dict[str, NodeStatus]) -> str:
    if not statuses:
        return '<span class="chip chip-muted" data-empty="1">no node has reported yet</span>'
    chips = []
    for node in sorted(statuses):
        status = statuses[node]
        reason = f" · {html.escape(status.reason)}" if status.reason else ""
        chips.append(
            f'<span class="chip chip-{status.state}" data-node="{html.escape(node)}" '
            f'data-state="{status.state}" title="{html.escape(status.reason or status.state)}">'
            f'<span class="dot"></span>{html.escape(node)} <b>{status.state}</b>{reason}</span>'
        )
    return "".join(chips)


# -- handlers ------------------------------------------------------------------------------------------------


async def _index(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cards = []
    for battery in sorted(state.batteries):
        mode = state.states[battery].mode if battery in state.states else "unknown"
        n = len(state.figures.get(battery, {}))
        cards.append(
            f'<a class="card battery-card" id="battery-{battery}" data-battery="{battery}" '
            f'href="/battery/{battery}"><span class="card-title">{battery}</span>'
            f'<span class="chip chip-mode" data-mode="{mode}">{mode}</span>'
            f'<span class="card-sub" data-figures="{n}">{n} figure{"" if n == 1 else "s"}</span></a>'
        )
    empty = (
        "" if cards else '<p class="waiting" id="no-batteries">waiting for telemetry: no battery has reported yet</p>'
    )
    return _page(
        "index.html",
        plotly_version=plotly.__version__,
        status_chips=_status_chips(state.statuses),
        battery_cards="".join(cards) + empty,
    )


async def _battery_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = request.match_info["battery"]
    if not ID_RE.fullmatch(battery):
        raise web.HTTPNotFound(text="no such battery id")
    window = state.window_for(battery)
    panels = []
    # The wide schedule panel goes last so the half-width panels pair up on a two-column screen.
    for figure_id in sorted(FIGURE_IDS, key=lambda f: f == "schedule"):
        wide = " panel-wide" if figure_id == "schedule" else ""
        waiting = "waiting for a schedule" if figure_id == "schedule" else "waiting for telemetry"
        panels.append(
            f'<section class="panel{wide}" id="panel-{figure_id}" data-figure="{figure_id}" '
            f'data-state="waiting" data-points="0" data-traces="0" data-last-update="" data-ts="">'
            f'<div class="plot" id="plot-{figure_id}"></div>'
            f'<div class="panel-waiting" id="waiting-{figure_id}">{waiting}</div></section>'
        )
    presets = "".join(
        f'<button type="button" class="seg" data-window-s="{seconds}">{label}</button>'
        for label, seconds in WINDOW_PRESETS
    )
    return _page(
        "battery.html",
        battery=battery,
        plotly_version=plotly.__version__,
        status_chips=_status_chips(state.statuses),
        panels="".join(panels),
        presets=presets,
        window_json=html.escape(_encoder.encode(window).decode(), quote=True),
    )


async def _plotly_js(request: web.Request) -> web.Response:
    asset = await asyncio.get_running_loop().run_in_executor(None, plotly_asset)
    return _serve(request, asset)


async def _api_batteries(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return _json(
        {
            "batteries": [
                {
                    "battery": b,
                    "href": f"/battery/{b}",
                    "figures": _figure_order(state.figures.get(b, {})),
                    "mode": state.states[b].mode if b in state.states else None,
                }
                for b in sorted(state.batteries)
            ]
        }
    )


async def _api_figures(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = request.match_info["battery"]
    if not ID_RE.fullmatch(battery):
        return json_error(422, "battery id must be 1-64 characters from [a-z0-9_-]", "battery")
    if battery not in state.batteries:
        return json_error(404, f"unknown battery {battery!r}", "battery")
    figures = state.figures.get(battery, {})
    parts = [_encoder.encode(f) + b":" + figures[f] for f in _figure_order(figures)]
    body = b'{"battery":' + _encoder.encode(battery) + b',"figures":{' + b",".join(parts) + b"}}"
    return web.Response(body=body, content_type="application/json")


async def _api_status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return _json(
        {
            "nodes": dict(sorted(state.statuses.items())),
            "batteries": dict(sorted(state.states.items())),
            "telemetry": dict(sorted(state.telemetry.items())),
        }
    )


def _check_window(req: WindowRequest, now: datetime) -> tuple[str, str] | None:
    """(error, field) for a window that is well-typed but makes no sense, else None."""
    if req.window_s is not None and (req.begin is not None or req.end is not None):
        return "give either window_s or begin/end, not both", "window_s"
    if req.window_s is None and req.begin is None:
        return "give window_s, or begin (and optionally end)", "window_s" if req.end is None else "begin"
    if req.begin is not None:
        end = req.end or now
        if end <= req.begin:
            return "end must be after begin" if req.end else "begin must be in the past", "end" if req.end else "begin"
        if (end - req.begin).total_seconds() > MAX_WINDOW_S:
            return f"a window is at most {MAX_WINDOW_S // 86400} days", "begin"
    return None


async def _api_window(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await request.read()
    try:
        req = _window_decoder.decode(body)
    except msgspec.ValidationError as exc:
        return json_error(422, str(exc), validation_field(str(exc)))
    except msgspec.DecodeError as exc:
        return json_error(400, f"body is not valid JSON: {exc}", None)
    now = state.clock()
    problem = _check_window(req, now)
    if problem is not None:
        return json_error(422, problem[0], problem[1])
    if req.battery not in state.batteries:
        return json_error(404, f"unknown battery {req.battery!r}", "battery")
    window = TimeWindow(begin=req.begin, end=req.end, window_s=req.window_s)
    state.windows[req.battery] = window
    begin = req.begin if req.window_s is None else now - timedelta(seconds=req.window_s)
    if state.on_window_change is not None:
        try:
            result = state.on_window_change(req.battery, begin, req.end)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.exception("on_window_change failed for %s", req.battery)
            return json_error(503, f"could not apply the window: {exc}", None)
    state.publish_event("window", req.battery, _encoder.encode(window), key="window")
    return _json({"ok": True, "battery": req.battery, "begin": begin, "end": req.end, "window_s": req.window_s}, 202)


async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    try:
        battery = _battery_param(request.query.get("battery"))
    except ValueError:
        return json_error(422, "battery id must be 1-64 characters from [a-z0-9_-]", "battery")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    client = state.subscribe(battery)  # before the snapshot, so nothing published meanwhile is missed
    try:
        await response.write(b"retry: 3000\n\n" + b"".join(state.snapshot_frames(battery)))
        while not client.closed:
            try:
                await asyncio.wait_for(client.wake.wait(), timeout=state.keepalive_s)
            except TimeoutError:
                await response.write(b": keepalive\n\n")  # also how a vanished browser is noticed
                continue
            frames = client.drain()
            if frames:
                await response.write(b"".join(frames))
    except ConnectionError:
        pass  # the browser went away
    finally:
        state.unsubscribe(client)
    return response


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error in the project's JSON shape (pages too: aiohttp's text/plain 404 is no better for a browser),
    and no bare 500 anywhere. Parse errors before routing are JSON too (:mod:`nodes.runtime.http_serve`)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            field_name = "battery" if exc.status == 404 and "battery" in request.match_info else None
            return json_error(exc.status, exc.reason, field_name)
        raise
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return json_error(500, "internal error (logged)", None)


def build_app(state: DashboardState) -> web.Application:
    """The dashboard application; ``state`` is shared with the node shell that feeds it."""
    if not _PAGES:
        for name in ("index.html", "battery.html"):
            _PAGES[name] = _static_text(name)
    assets = {
        name: _asset(_static_text(name).encode(), ctype, "no-cache", compress=False)
        for name, ctype in STATIC_FILES.items()
    }

    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    app[STATE_KEY] = state

    def static_handler(asset: _Asset) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return _serve(request, asset)

        return handler

    app.router.add_get("/", _index)
    app.router.add_get("/battery/{battery}", _battery_page)
    app.router.add_get("/static/plotly.min.js", _plotly_js)
    for name, asset in assets.items():
        app.router.add_get(f"/static/{name}", static_handler(asset))
    app.router.add_get("/api/batteries", _api_batteries)
    app.router.add_get("/api/figures/{battery}", _api_figures)
    app.router.add_get("/api/status", _api_status)
    app.router.add_post("/api/window", _api_window)
    app.router.add_get("/events", _events)

    async def on_shutdown(_app: web.Application) -> None:
        state.close()

    app.on_shutdown.append(on_shutdown)
    return app
