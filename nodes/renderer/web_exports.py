"""The dashboard's data routes beyond figures: the fleet as JSON and CSV, each panel's CSV export, diagnostics.

Routes::

    GET /api/fleet[?page=&q=&sort=&dir=&per_page=]
                                        {"rows": [FleetRow] (one page, :mod:`nodes.renderer.paging`), "totals":
                                        FleetTotals (every battery), "display_tz", "page", "pages", "per_page",
                                        "matched", "batteries"}
    GET /fleet.csv                      the fleet table: one row per battery, then TOTAL
    GET /battery/{battery}/export.csv?series=<panel>[&window=..|&begin=..&end=..]
                                        the data a panel of the battery page draws over the window
                                        (series: telemetry, soc, power, cells, prices, schedule, insights,
                                        alarms, diagnostics; :mod:`nodes.renderer.exports`)
    GET /api/diagnostics/{battery}[?window=..]
                                        the diagnostics panel (:class:`~nodes.renderer.diagnosis.DiagnosticsPanel`)

CSV is UTF-8 with a header row (units in the column names, times UTC in ``_utc`` columns), sent as an attachment
named after the battery, the series, the window and the time of the export. What the rows are (samples or
bucket means) is in the ``X-BESS-Export-Note`` header. Errors are the project's JSON shape.
"""

from __future__ import annotations

import logging
from datetime import UTC

import msgspec
from aiohttp import web

from nodes.renderer import exports
from nodes.renderer.csvout import Table, table_bytes
from nodes.renderer.web import STATE_KEY, json_error, known_battery, requested_page, window_or_error

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


def csv_response(table: Table, filename: str) -> web.Response:
    """A CSV attachment (``filename`` must be a safe token: ids, series names and UTC stamps only)."""
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}.csv"',
        "Cache-Control": "no-store",
        "X-BESS-Export-Note": table.note.encode("ascii", "replace").decode()[:500],
    }
    return web.Response(body=table_bytes(table), content_type="text/csv", charset="utf-8", headers=headers)


def _stamp(request: web.Request) -> str:
    return request.app[STATE_KEY].clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _window_token(key: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in key).strip("-") or "window"


async def api_fleet(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    asked = requested_page(request)
    if isinstance(asked, web.Response):
        return asked
    query, page, totals = asked
    body = {"rows": page.rows, "totals": totals, "display_tz": state.display_tz, "page": page.page,
            "pages": page.pages, "per_page": query.per_page, "matched": page.matched, "batteries": page.total}
    return web.Response(body=_encoder.encode(body), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def fleet_csv(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    rows, totals = state.fleet()
    return csv_response(exports.fleet_table(rows, totals), f"bess-fleet-{_stamp(request)}")


async def battery_csv(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = known_battery(request)
    if isinstance(battery, web.Response):
        return battery
    series = request.query.get("series", "telemetry")
    if series not in exports.SERIES:
        return json_error(422, f"series must be one of {', '.join(exports.SERIES)}", "series")
    window = window_or_error(request)
    if isinstance(window, web.Response):
        return window
    name = f"bess-{battery}-{series}-{_window_token(window.key)}-{_stamp(request)}"
    try:
        if series == "diagnostics":
            if state.diagnostics_provider is None:
                return json_error(503, "this dashboard computes no diagnostics", "series")
            panel = await state.diagnostics_provider(battery, window)
            if panel.status != "ready":
                return json_error(503, f"diagnostics {panel.status}: {panel.note}", "series")
            table = exports.diagnostics_table(panel)
        else:
            if state.export_provider is None:
                return json_error(503, "this dashboard exports no data", "series")
            table = await state.export_provider(battery, window, series)
    except Exception as exc:
        log.exception("export %s of %s over %s failed", series, battery, window.key)
        return json_error(503, f"could not export this window: {exc}", "window")
    return csv_response(table, name)


async def api_diagnostics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    battery = known_battery(request)
    if isinstance(battery, web.Response):
        return battery
    window = window_or_error(request)
    if isinstance(window, web.Response):
        return window
    if state.diagnostics_provider is None:
        return json_error(503, "this dashboard computes no diagnostics", "battery")
    try:
        panel = await state.diagnostics_provider(battery, window)
    except Exception as exc:
        log.exception("diagnostics of %s over %s failed", battery, window.key)
        return json_error(503, f"could not compute the diagnostics: {exc}", "window")
    return web.Response(body=_encoder.encode(panel), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Register this module's routes on the dashboard application."""
    app.router.add_get("/api/fleet", api_fleet)
    app.router.add_get("/fleet.csv", fleet_csv)
    app.router.add_get("/battery/{battery}/export.csv", battery_csv)
    app.router.add_get("/api/diagnostics/{battery}", api_diagnostics)


__all__ = ["add_routes", "csv_response"]
