"""The control panel and the command history over HTTP (aiohttp): routes, the panel's markup, the checks.

Routes (installed by :func:`installer`; the dashboard token of :mod:`nodes.renderer.auth` applies to all)::

    GET  /api/control/{battery}           the panel's data: running command, state, control mode, last results,
                                          the spec's limits (input hints), whether control is on, and the
                                          anti-CSRF token (sets the ``bess_csrf`` cookie when missing)
    POST /api/control/{battery}/command   {"action": "charge"|"discharge"|"idle", "power_kw", "lease_s"}
    POST /api/control/{battery}/mode      {"mode": "autopilot"|"manual"|"idle", "for_s", "reason"}
    POST /api/control/{battery}/replan    {"reason"}
    GET  /api/commands/{battery}[?window] the command history table of the window (default: the last 24 h)

Every POST passes :class:`nodes.renderer.guard.ControlGuard` first (control on, JSON, same origin, anti-CSRF
token), then its body is decoded strictly (422 with the field), then :class:`nodes.renderer.control.ControlDesk`
sends the request and waits for the gateway's verdict: 202 with the Command (or mode) it sent, the gateway's own
status and text for a refusal (404, 409, 422, 429), 504 when the gateway does not answer, 503 when the broker
does not take the request. Errors are JSON ``{"error", "field"}``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from nodes.contract.names import ID_PATTERN, ID_RULE
from nodes.renderer import command_log
from nodes.renderer.command_history import CommandHistory, Stored
from nodes.renderer.control import Answer, BodyError, CommandBody, ControlDesk, ModeBody, ReplanBody
from nodes.renderer.dashboard import control_summary
from nodes.renderer.guard import CSRF_HEADER, ControlGuard, Refused
from nodes.renderer.web import PARTS_KEY, STATE_KEY, json_error, validation_field
from nodes.renderer.windows import WindowError, parse_window
from nodes.runtime.errors import BusUnavailable

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
B = TypeVar("B")

DESK_KEY: Final = web.AppKey("control_desk", ControlDesk)
GUARD_KEY: Final = web.AppKey("control_guard", ControlGuard)
HISTORY_KEY: Final = web.AppKey("command_history", CommandHistory)
_DECODERS: Final = {name: msgspec.json.Decoder(kind) for name, kind in
                    (("command", CommandBody), ("mode", ModeBody), ("replan", ReplanBody))}
MAX_BODY_BYTES: Final = 4096


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _battery(request: web.Request) -> str:
    battery = request.match_info["battery"]
    if not ID_PATTERN.fullmatch(battery):
        raise Refused(422, f"battery id must be {ID_RULE}", "battery")
    return battery


def _decode(raw: bytes, decoder: msgspec.json.Decoder[B]) -> B:
    try:
        return decoder.decode(raw or b"{}")
    except msgspec.ValidationError as exc:
        raise Refused(422, str(exc), validation_field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise Refused(400, f"malformed JSON: {exc}", None) from None


# -- handlers --------------------------------------------------------------------------------------------------


async def panel_data(request: web.Request) -> web.Response:
    """``GET /api/control/{battery}``: what the panel shows, and its anti-CSRF token."""
    try:
        battery = _battery(request)
    except Refused as exc:
        return json_error(exc.status, exc.error, exc.field)
    desk, guard, state = request.app[DESK_KEY], request.app[GUARD_KEY], request.app[STATE_KEY]
    token, fresh = guard.issue(request)
    refusal = guard.refusal_for(request)
    body = desk.snapshot(battery) | {
        "control": control_summary(state.controls.get(battery), state.clock()) | {
            "control": state.controls.get(battery)},
        "enabled": refusal is None,
        "disabled_reason": refusal,
        "csrf_header": CSRF_HEADER,
        "csrf_token": token,
        "outcome_help": command_log.OUTCOME_HELP,
    }
    response = _json(body)
    if fresh is not None:
        guard.set_cookie(response, fresh, request)
    return response


def _action(run: Callable[[ControlDesk, str, Any], Awaitable[Answer]], name: str) -> Callable[
        [web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        desk, guard = request.app[DESK_KEY], request.app[GUARD_KEY]
        try:
            battery = _battery(request)
            guard.check(request)
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise Refused(413, f"body larger than {MAX_BODY_BYTES} bytes", None)
            body = _decode(await request.read(), _DECODERS[name])
            answer = await run(desk, battery, body)
        except Refused as exc:
            return json_error(exc.status, exc.error, exc.field)
        except BodyError as exc:
            return json_error(422, exc.error, exc.field)
        except BusUnavailable as exc:  # pragma: no cover - the desk answers 503 itself
            return json_error(503, f"MQTT broker unavailable ({exc})", None)
        log.info("%s: dashboard %s from %s -> %d %s", battery, name, request.remote, answer.status,
                 answer.body.get("error") or answer.body.get("outcome"))
        request.app[HISTORY_KEY].forget(battery)
        return _json(answer.body, answer.status)

    return handler


async def command_history(request: web.Request) -> web.Response:
    """``GET /api/commands/{battery}?window=``: the history table of the window, newest first."""
    try:
        battery = _battery(request)
    except Refused as exc:
        return json_error(exc.status, exc.error, exc.field)
    state, desk, history = request.app[STATE_KEY], request.app[DESK_KEY], request.app[HISTORY_KEY]
    now = state.clock()
    try:
        window = parse_window(request.query, now)
    except WindowError as exc:
        return json_error(422, str(exc), exc.field)
    begin, end = window.resolve(now)
    entry = desk.batteries.get(battery)
    live_commands = list(entry.commands) if entry else []
    live_states = list(entry.states) if entry else []
    note: str | None = None
    try:
        stored = await history.stored(battery, window.key, begin, end)
    except (TimeoutError, RuntimeError, BusUnavailable) as exc:
        note = f"stored history unavailable ({exc or 'the recorder did not answer'}): only commands seen live"
        stored = Stored([], [], None, 0.0)
    rows = history.rows(stored, live_commands=live_commands, live_states=live_states, begin=begin, end=end, now=now,
                        spec=entry.spec if entry else None)
    return _json({"battery": battery, "window": window, "begin": begin, "end": end, "rows": rows,
                  "limit": history.limit, "note": note or stored.note, "outcome_help": command_log.OUTCOME_HELP})


# -- the battery page's parts ------------------------------------------------------------------------------------


def panel_html(battery: str) -> str:
    """The control panel's markup (the page script fills and wires it: static/control.js)."""
    b = html.escape(battery)
    return f"""<section class="control-panel" id="control-panel" data-battery="{b}" data-enabled="unknown"
  data-busy="false" aria-label="operator control">
  <div class="cp-head"><h2>Control</h2>
    <span class="cp-note" id="cp-disabled" hidden></span>
    <span class="cp-help" title="Every action is a request to the gateway (battery/{b}/request/...), checked by the
same rules as its HTTP API: the battery's limits, the control mode (idle holds the battery), the command rate and
the lease. A manual command pauses the autopilot until its lease ends.">how?</span></div>
  <div class="cp-groups">
    <form class="cp-group" id="cp-command" autocomplete="off">
      <h3>Manual command</h3>
      <div class="segmented" id="cp-action" role="radiogroup" aria-label="action">
        <button type="button" class="seg" data-action="charge" aria-pressed="false">charge</button>
        <button type="button" class="seg" data-action="discharge" aria-pressed="true">discharge</button>
        <button type="button" class="seg" data-action="idle" aria-pressed="false">idle</button>
      </div>
      <label>power <input type="number" id="cp-power" name="power_kw" min="0" step="0.1" value="10" required>
        kW</label>
      <label>lease <input type="number" id="cp-lease" name="lease_min" min="1" max="1440" step="1" value="15">
        min</label>
      <button type="submit" class="primary" id="cp-send">send</button>
      <span class="cp-hint" id="cp-limits">limits: waiting for the battery's spec</span>
    </form>
    <div class="cp-group" id="cp-autopilot">
      <h3>Autopilot</h3>
      <div class="cp-row"><span class="cp-mode" id="cp-mode" data-mode="default">planner default</span></div>
      <div class="cp-row">
        <button type="button" class="cp-btn" id="cp-pause" data-mode="manual"
          title="the planner keeps planning but sends no command until you resume">pause</button>
        <label>for <select id="cp-pause-for"><option value="">until resumed</option><option value="900">15 min</option>
          <option value="3600">1 h</option><option value="14400">4 h</option><option value="86400">24 h</option>
          </select></label>
        <button type="button" class="cp-btn" id="cp-resume" data-mode="autopilot"
          title="hand the battery back to the planner now">resume</button>
        <button type="button" class="cp-btn cp-danger" id="cp-hold-idle" data-mode="idle"
          title="send IDLE and hold the battery idle: only IDLE/STOP pass until the mode changes">hold idle</button>
      </div>
    </div>
    <div class="cp-group" id="cp-plan">
      <h3>Plan</h3>
      <div class="cp-row"><button type="button" class="cp-btn" id="cp-replan">re-plan now</button></div>
      <div class="cp-row cp-hint" id="cp-plan-info">no plan yet</div>
    </div>
    <div class="cp-group" id="cp-running" data-command-id="" data-valid-until="" data-source="">
      <h3>Running command</h3>
      <div id="cp-running-text">no command seen yet</div>
      <div class="cp-hint" id="cp-running-lease"></div>
    </div>
  </div>
  <div class="cp-result" id="cp-result" data-outcome="" data-request-id="" data-status="" role="status"
    aria-live="polite" hidden></div>
</section>"""


def history_html(battery: str) -> str:
    """The command history table's frame (rows come from ``GET /api/commands/{battery}``)."""
    return f"""<section class="command-history" id="command-history" data-battery="{html.escape(battery)}"
  data-state="waiting" data-rows="0" aria-label="command history">
  <div class="cp-head"><h2>Command history</h2>
    <label class="cp-filter"><input type="checkbox" id="ch-operator-only"> operator commands only</label>
    <span class="cp-help" id="ch-help" title="">what is outcome?</span>
    <span class="cp-note" id="ch-note" hidden></span></div>
  <div class="ch-scroll"><table class="ch-table" id="ch-table">
    <thead><tr><th>issued (UTC)</th><th>source</th><th>command</th><th>lease until</th><th>outcome</th>
      <th>end</th></tr></thead>
    <tbody id="ch-rows"><tr class="ch-empty"><td colspan="6">loading the command history…</td></tr></tbody>
  </table></div>
</section>"""


def page_parts(battery: str) -> dict[str, str]:
    """The battery page's placeholders this module fills (``{{control_panel}}``, ``{{command_history}}``)."""
    return {"control_panel": panel_html(battery), "command_history": history_html(battery)}


def installer(desk: ControlDesk, guard: ControlGuard, history: CommandHistory) -> Callable[[web.Application], None]:
    """What :func:`nodes.renderer.web.build_app` calls to add the control routes and page parts."""

    def install(app: web.Application) -> None:
        app[DESK_KEY] = desk
        app[GUARD_KEY] = guard
        app[HISTORY_KEY] = history
        app[PARTS_KEY] = page_parts
        app.router.add_get("/api/control/{battery}", panel_data)
        app.router.add_post("/api/control/{battery}/command", _action(lambda d, b, body: d.command(b, body),
                                                                      "command"))
        app.router.add_post("/api/control/{battery}/mode", _action(lambda d, b, body: d.mode(b, body), "mode"))
        app.router.add_post("/api/control/{battery}/replan", _action(lambda d, b, body: d.replan(b, body), "replan"))
        app.router.add_get("/api/commands/{battery}", command_history)

    return install


__all__ = ["DESK_KEY", "GUARD_KEY", "HISTORY_KEY", "history_html", "installer", "page_parts", "panel_html"]
