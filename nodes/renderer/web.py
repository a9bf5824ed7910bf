"""The live dashboard over HTTP (aiohttp): pages, a JSON API and a server-sent-events stream. No MQTT here.

The renderer's node shell owns the bus and feeds a :class:`~nodes.renderer.dashboard.DashboardState` (what the
dashboard shows and the fan-out to browsers). A browser opens ``GET /events?battery=...``, first receives the
current statuses and states (and, on the default window, the figures), then live updates, and redraws with
``Plotly.react``.
Plotly.js is served from the installed Python package (``/static/plotly.min.js``), never from a CDN.

The time window belongs to the viewer: it is in the page's URL (``?window=7d``, ``?begin=..&end=..``, see
:mod:`nodes.renderer.windows`). The default window (last 24 h) is what the node renders on every change and
publishes on the retained figure topics; a page on it takes live figure events. A page on another window asks
``GET /api/figures/{battery}?window=..`` (computed on demand by the node's ``figure_provider``, cached briefly
per battery and window) and asks again every ``refresh_s`` the answer names. No viewer changes another's view.

Routes::

    GET  /                        the fleet table (:mod:`nodes.renderer.web_fleet`): every battery's SOC, power,
                                  modes, alarms, plan revenue today, telemetry age, sortable, with totals; 100
                                  rows a page (?page=, ?q= search, ?sort=&dir=: :mod:`nodes.renderer.paging`)
    GET  /battery/{battery}       one battery: status strip, window links, one panel per figure (?window, ?begin/end)
    GET  /static/plotly.min.js    plotly.offline.get_plotlyjs(), built once, cached for a year (versioned URL)
    GET  /static/dashboard.js     the page logic (nodes/renderer/static/)
    GET  /static/dashboard.css
    GET  /api/batteries           {"batteries": [{"battery", "href", "figures", "mode", "soc_kwh", ...}], "page",
                                  "pages", "matched"}: by id, 1,000 a page (?page=, ?per_page=, ?q=)
    GET  /api/figures/{battery}   {"battery", "window", "refresh_s", "figures": {figure_id: Figure}}
    GET  /api/status              {"nodes": {node: NodeStatus}, "batteries": {battery: BatteryState}, ...}
    GET  /events[?battery=id][&figures=0]  text/event-stream; events: figure, status, state, control, telemetry,
                                  alarm; with the index's ?page=/?q=/?sort=: that page's batteries only
    GET  /login, POST /login      only with a dashboard token (:mod:`nodes.renderer.auth`)
    GET  /api/fleet, /fleet.csv, /battery/{battery}/export.csv, /api/diagnostics/{battery}
                                  the fleet, CSV exports and diagnostics (:mod:`nodes.renderer.web_exports`)
    /api/control/..., /api/commands/...   the control panel and command history (:mod:`nodes.renderer.control_web`,
                                  installed by the node through ``build_app(state, install=...)``)

Times: every page has a toggle between UTC and ``BESS_DISPLAY_TZ`` (:mod:`nodes.renderer.timezone`), starting on
the configured zone; data, the API and CSV stay UTC.

Events and how slow browsers are handled: :mod:`nodes.renderer.dashboard`.

Lifecycle: ``build_app(state)`` -> run it (``web.AppRunner``) -> on shutdown ``state.close()`` ends every
open event stream so the server stops promptly.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

import msgspec
import plotly
from aiohttp import web

from nodes.contract.messages import NodeStatus
from nodes.contract.names import ID_PATTERN, ID_RULE
from nodes.renderer import auth as dashboard_auth
from nodes.renderer import paging, web_fleet
from nodes.renderer.control import EVENT_KINDS as CONTROL_EVENT_KINDS
from nodes.renderer.dashboard import (
    DashboardState,
    control_summary,
    figure_order,
)
from nodes.renderer.figures import FIGURE_IDS
from nodes.renderer.fleet import FleetTotals
from nodes.renderer.windows import DEFAULT_WINDOW, WINDOW_PRESETS, TimeWindow, WindowError, parse_window

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()

STATIC_FILES: Final = {"dashboard.js": "application/javascript", "dashboard.css": "text/css",
                       "control.js": "application/javascript", "control.css": "text/css"}
INDEX_KINDS: Final = frozenset({"status", "state", "control", "telemetry", "alarm", "fleet"})
BATTERY_KINDS: Final = INDEX_KINDS | CONTROL_EVENT_KINDS
"""What a battery page on a window of its own takes (no figure events): also its commands and request results."""
PAGE_PARAMS: Final = frozenset({"page", "q", "sort", "dir", "per_page"})
"""``/events`` with any of these streams one index page's batteries (:mod:`nodes.renderer.paging`)."""
WIDE_FIGURES: Final = ("schedule", "alarms")
"""Panels that take the whole width (last, so the half-width ones pair up on a two-column screen)."""
WAITING: Final = {"schedule": "waiting for a schedule", "alarms": "waiting for the alarm history"}


STATE_KEY: Final = web.AppKey("dashboard_state", DashboardState)
PageParts = Callable[[str], dict[str, str]]
PARTS_KEY: Final[web.AppKey[PageParts]] = web.AppKey("battery_page_parts")
"""Extra placeholders of the battery page by battery (the control panel's); each is empty without it."""
PART_NAMES: Final = ("control_panel", "command_history")


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
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(value)
    return value


def _page(name: str, **values: str) -> web.Response:
    text = _PAGES[name]
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    response = web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})
    if len(text) > 32_768:
        response.enable_compression()  # the fleet table of 200 batteries is ~250 kB of markup, ~20 kB gzipped
    return response


_PAGES: dict[str, str] = {}


def _status_chips(statuses: dict[str, NodeStatus]) -> str:
    if not statuses:
        return '<span class="chip chip-muted" data-empty="1">no node has reported yet</span>'
    chips = []
    for node in sorted(statuses):
        status = statuses[node]
        reason = f" · {html.escape(status.reason)}" if status.reason and status.state != "online" else ""
        tip = f"node {node}: {status.state}" + (f" ({status.reason})" if status.reason else "")
        chips.append(
            f'<span class="chip chip-{status.state}" data-node="{html.escape(node)}" '
            f'data-state="{status.state}" title="{html.escape(tip)}">'
            f'<span class="dot"></span>{html.escape(node)} <b>{status.state}</b>{reason}</span>'
        )
    return "".join(chips)


# -- handlers ------------------------------------------------------------------------------------------------


def _tz_toggle(zone: str) -> str:
    """The page's time-zone toggle: UTC and the configured zone (just a label when that is UTC)."""
    if zone == "UTC":
        return ('<span class="tz-label" id="tz-toggle" data-zones="UTC" title="times are shown in UTC; set '
                'BESS_DISPLAY_TZ (e.g. Europe/Berlin) for a local-time toggle">times in UTC</span>')
    z = html.escape(zone, quote=True)
    return (f'<div class="segmented tz" id="tz-toggle" data-zones="UTC {z}" role="group" aria-label="time zone" '
            f'title="show times in UTC or in {z} (BESS_DISPLAY_TZ); data and CSV exports stay UTC">'
            f'<button type="button" class="seg" data-tz="UTC">UTC</button>'
            f'<button type="button" class="seg" data-tz="{z}">{z}</button></div>')


def requested_page(request: web.Request) -> tuple[paging.PageQuery, paging.FleetPage, FleetTotals] | web.Response:
    """The page of the fleet the query asks for (``?page=``, ``?q=``, ``?sort=``) and the whole fleet's totals, or
    the 422 answer naming the parameter: the index, ``/api/fleet`` and the index's event stream page alike."""
    try:
        query = paging.PageQuery.parse(request.query)
    except paging.PageError as exc:
        return json_error(422, str(exc), exc.field)
    rows, totals = request.app[STATE_KEY].fleet()
    return query, paging.page_of(rows, query), totals


async def _index(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    asked = requested_page(request)
    if isinstance(asked, web.Response):
        return asked
    _query, page, totals = asked
    return _page(
        "index.html",
        plotly_version=plotly.__version__,
        status_chips=_status_chips(state.statuses),
        fleet_table=web_fleet.fleet_table(page.rows, totals, state.display_tz, state.clock(), page),
        fleet_pager=web_fleet.pager_html(page),
        display_tz=html.escape(state.display_tz, quote=True),
        tz_toggle=_tz_toggle(state.display_tz),
    )


def known_battery(request: web.Request) -> str | web.Response:
    """The ``{battery}`` of the path, or the 422 (not an id) or 404 (no such battery) answer naming it."""
    battery = request.match_info["battery"]
    if not ID_PATTERN.fullmatch(battery):
        return json_error(422, f"battery id must be {ID_RULE}", "battery")
    if battery not in request.app[STATE_KEY].batteries:
        return json_error(404, f"unknown battery {battery!r}", "battery")
    return battery


def window_or_error(request: web.Request) -> TimeWindow | web.Response:
    """The viewer's window from the query, or the 422 answer naming the parameter."""
    state = request.app[STATE_KEY]
    try:
        return parse_window(request.query, state.clock())
    except WindowError as exc:
        return json_error(422, str(exc), exc.field)


async def _battery_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = request.match_info["battery"]
    if not ID_PATTERN.fullmatch(battery):
        raise web.HTTPNotFound(text="no such battery id")
    window = window_or_error(request)
    if isinstance(window, web.Response):
        return window
    panels = []
    for figure_id in sorted(FIGURE_IDS, key=lambda f: f in WIDE_FIGURES):
        wide = " panel-wide" if figure_id in WIDE_FIGURES else ""
        waiting = WAITING.get(figure_id, "waiting for telemetry")
        panels.append(
            f'<section class="panel{wide}" id="panel-{figure_id}" data-figure="{figure_id}" '
            f'data-state="waiting" data-points="0" data-traces="0" data-last-update="" data-ts="">'
            f'<div class="plot" id="plot-{figure_id}"></div>'
            f'<div class="panel-waiting" id="waiting-{figure_id}">{waiting}</div>'
            f'{_csv_link(battery, figure_id)}</section>'
        )
    presets = "".join(
        f'<a class="seg" href="/battery/{battery}?window={key}" data-window="{key}" '
        f'title="the last {label} up to now, updating live">{label}</a>'
        for label, key in WINDOW_PRESETS
    )
    panels.append(_diagnostics_panel(battery))
    parts_of = request.app.get(PARTS_KEY)
    parts = parts_of(battery) if parts_of is not None else {}
    return _page(
        "battery.html",
        **{name: parts.get(name, "") for name in PART_NAMES},
        battery=battery,
        display_tz=html.escape(state.display_tz, quote=True),
        tz_toggle=_tz_toggle(state.display_tz),
        plotly_version=plotly.__version__,
        status_chips=_status_chips(state.statuses),
        panels="".join(panels),
        presets=presets,
        window_json=html.escape(_encoder.encode(window).decode(), quote=True),
        window_key=html.escape(window.key, quote=True),
        window_default="true" if window == DEFAULT_WINDOW else "false",
    )


def _csv_link(battery: str, series: str) -> str:
    """A panel's CSV link (the page's script adds the viewer's window to it)."""
    return (f'<a class="panel-csv" data-series="{series}" href="/battery/{battery}/export.csv?series={series}" '
            f'download title="the data this panel draws over the window, as CSV (times UTC, units in the column '
            f'names)">CSV</a>')


def _diagnostics_panel(battery: str) -> str:
    """The diagnostics panel: the page's script fills it from ``GET /api/diagnostics`` (see web_exports)."""
    return (
        '<section class="panel panel-wide panel-table" id="panel-diagnostics" data-figure="diagnostics" '
        'data-state="waiting" data-status="" data-rows="0">'
        '<div class="panel-head"><h2>Diagnostics</h2><span class="panel-sub" id="diagnostics-basis"></span>'
        '<span class="info" title="Computed from the raw readings and the commands stored for this window '
        '(nodes/diagnostics), recomputed at most every BESS_RENDERER_DIAGNOSTICS_REFRESH_S; each line names its '
        'method (hover) and the sample it rests on. A result without enough data says what it needs.">how?</span>'
        '</div><table class="diag" id="diagnostics-table"><thead><tr><th scope="col">diagnostic</th>'
        '<th scope="col">measured</th><th scope="col">spec</th><th scope="col">basis</th>'
        '<th scope="col">result</th></tr></thead><tbody></tbody></table>'
        '<div class="panel-waiting" id="waiting-diagnostics">computing the diagnostics of this window…</div>'
        f'{_csv_link(battery, "diagnostics")}</section>'
    )


async def _plotly_js(request: web.Request) -> web.Response:
    asset = await asyncio.get_running_loop().run_in_executor(None, plotly_asset)
    return _serve(request, asset)


async def _api_batteries(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        query = paging.PageQuery.parse({"per_page": str(paging.MAX_PAGE_ROWS), **request.query})
    except paging.PageError as exc:
        return json_error(422, str(exc), exc.field)
    needle = query.q.casefold()
    names = [b for b in sorted(state.batteries) if needle in b.casefold()]
    pages = max(1, -(-len(names) // query.per_page))
    page = min(query.page, pages)
    shown = names[(page - 1) * query.per_page : page * query.per_page]
    return _json({"batteries": [state.summary(b) for b in shown], "page": page, "pages": pages,
                  "matched": len(names)})


def _figures_body(battery: str, window: TimeWindow, figures: dict[str, bytes], refresh_s: float | None) -> bytes:
    parts = [_encoder.encode(f) + b":" + figures[f] for f in figure_order(figures)]
    return (
        b'{"battery":' + _encoder.encode(battery)
        + b',"window":' + _encoder.encode(window)
        + b',"refresh_s":' + _encoder.encode(refresh_s)
        + b',"figures":{' + b",".join(parts) + b"}}"
    )


async def _api_figures(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = known_battery(request)
    if isinstance(battery, web.Response):
        return battery
    window = window_or_error(request)
    if isinstance(window, web.Response):
        return window
    drawn = state.figures.get(battery, {})
    if state.figure_provider is None or (window == DEFAULT_WINDOW and all(f in drawn for f in FIGURE_IDS)):
        if window != DEFAULT_WINDOW:
            return json_error(503, "this dashboard draws only the default window", "window")
        body = _figures_body(battery, window, drawn, None)
        return web.Response(body=body, content_type="application/json")
    try:
        answer = await state.figure_provider(battery, window)
    except Exception as exc:
        log.exception("figures for %s over %s failed", battery, window.key)
        return json_error(503, f"could not draw this window: {exc}", "window")
    body = _figures_body(battery, window, answer.figures, answer.refresh_s)
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


async def _api_status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    now = state.clock()
    return _json(
        {
            "nodes": dict(sorted(state.statuses.items())),
            "batteries": dict(sorted(state.states.items())),
            "control": {b: control_summary(c, now) | {"control": c} for b, c in sorted(state.controls.items())},
            "telemetry": dict(sorted(state.telemetry.items())),
            "alarms": {b: state.active_alarms(b) for b in sorted(state.alarms)},
        }
    )


async def _events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    try:
        battery = _battery_param(request.query.get("battery"))
    except ValueError:
        return json_error(422, f"battery id must be {ID_RULE}", "battery")
    with_figures = battery is not None and request.query.get("figures", "1") != "0"
    kinds = None if with_figures else BATTERY_KINDS if battery is not None else INDEX_KINDS
    only = None
    if battery is None and PAGE_PARAMS & set(request.query):
        # an index page of many: the events of its own rows (the page's script drops the others anyway)
        asked = requested_page(request)
        if isinstance(asked, web.Response):
            return asked
        only = frozenset(r.battery for r in asked[1].rows)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    client = state.subscribe(battery, kinds, only)  # before the snapshot, so nothing published meanwhile is missed
    try:
        frames = state.snapshot_frames(battery, figures=with_figures, only=only)
        await response.write(b"retry: 3000\n\n" + b"".join(frames))
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


def build_app(state: DashboardState, *, install: Sequence[Callable[[web.Application], None]] = ()) -> web.Application:
    """The dashboard application; ``state`` is shared with the node shell that feeds it; each of ``install`` adds
    its routes (the control panel's: :func:`nodes.renderer.control_web.installer`)."""
    if not _PAGES:
        for name in ("index.html", "battery.html"):
            _PAGES[name] = _static_text(name)
    assets = {
        name: _asset(_static_text(name).encode(), ctype, "no-cache", compress=False)
        for name, ctype in STATIC_FILES.items()
    }
    middlewares: list[Any] = [_errors]
    if state.auth is not None:
        middlewares.append(dashboard_auth.middleware(state.auth))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
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
    app.router.add_get("/events", _events)
    from nodes.renderer import web_exports  # imports this module: registered here, once it is loaded

    web_exports.add_routes(app)
    for extension in install:
        extension(app)

    async def on_shutdown(_app: web.Application) -> None:
        state.close()

    app.on_shutdown.append(on_shutdown)
    return app
