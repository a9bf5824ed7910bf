"""Dashboard access with one token (``BESS_DASHBOARD_TOKEN``, by default ``BESS_GATEWAY_TOKEN``).

With a token set:

* every request that is not ``GET``/``HEAD`` needs it (there is no state-changing route today; any added
  later is protected from the start);
* viewing needs it too unless ``BESS_DASHBOARD_VIEW_TOKEN_REQUIRED=0``; when the dashboard uses the gateway's
  token, the gateway's read token (``BESS_GATEWAY_READ_TOKEN``) may view as well, never write.

A client proves it with ``Authorization: Bearer <token>`` (scripts) or the session cookie a browser gets from
the login form (``GET /login``, ``POST /login``) or from opening any page once with ``?token=<token>`` (the
token is then removed from the address). The cookie holds an HMAC of the token, never the token; it is
``HttpOnly`` and ``SameSite=Strict``. Every comparison is constant-time (``hmac.compare_digest``). Refusals
are JSON ``{"error", "field"}`` with 401 under ``/api`` and ``/events``, and the login page elsewhere.
Static assets (plotly.js, the page script and style) are public: they hold no data.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from aiohttp import hdrs, web

COOKIE: Final = "bess_dashboard"
PUBLIC_PREFIXES: Final = ("/static/", "/login")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), expected.encode())


@dataclass(frozen=True)
class DashboardAuth:
    """The token check; ``view_required`` False leaves GET routes open (writes still need the token).

    ``view_token`` (the gateway's read token when the dashboard shares the gateway's token) may view, never
    write, as on the gateway.
    """

    token: str
    view_required: bool = True
    view_token: str | None = None

    def session_for(self, token: str) -> str:
        """The cookie value for a token: an HMAC of it (a stolen cookie does not reveal the token)."""
        return hmac.new(token.encode(), b"bess-dashboard-session-v1", hashlib.sha256).hexdigest()

    @property
    def session(self) -> str:
        return self.session_for(self.token)

    def token_ok(self, given: str) -> bool:
        return _equal(given, self.token)

    def level(self, given: str) -> str | None:
        """``"write"`` for the token, ``"view"`` for the view token, None for anything else."""
        if _equal(given, self.token):
            return "write"
        if self.view_token is not None and _equal(given, self.view_token):
            return "view"
        return None

    def allows(self, request: web.Request) -> bool:
        """Does the request carry a token (header) or session cookie good enough for its method?"""
        reading = request.method in ("GET", "HEAD")
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "bearer":
            level = self.level(given)
            if level == "write" or (level == "view" and reading):
                return True
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            return False
        if hmac.compare_digest(cookie.encode(), self.session.encode()):
            return True
        return reading and self.view_token is not None and hmac.compare_digest(
            cookie.encode(), self.session_for(self.view_token).encode()
        )

    def needs_token(self, request: web.Request) -> bool:
        if request.path.startswith(PUBLIC_PREFIXES):
            return False
        if request.method not in ("GET", "HEAD"):
            return True
        return self.view_required


def _json_401(message: str) -> web.Response:
    body = json.dumps({"error": message, "field": "Authorization"})
    return web.Response(
        status=401,
        text=body,
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="bess-dashboard"'},
    )


def _safe_next(target: str | None) -> str:
    # only a path on this site: "//evil.example" or "https://..." would be an open redirect
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def login_page(next_path: str, error: str = "") -> web.Response:
    """The login form (status 401 when shown instead of a page)."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · BESS dashboard</title><link rel="stylesheet" href="/static/dashboard.css"></head>
<body data-page="login"><header class="topbar"><div class="brand"><a href="/">BESS</a></div></header>
<main class="login"><form method="post" action="/login" class="card" id="login">
<h1>Dashboard token</h1>
<p class="card-sub">This dashboard needs the token set as BESS_DASHBOARD_TOKEN (or BESS_GATEWAY_TOKEN).</p>
{message}<label>token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<button type="submit" class="primary">sign in</button></form></main></body></html>"""
    return web.Response(status=401, text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


def _redirect_with_cookie(target: str, session: str, secure: bool) -> web.Response:
    response = web.Response(status=303, headers={hdrs.LOCATION: target, "Cache-Control": "no-store"})
    response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/", secure=secure)
    return response


def middleware(auth: DashboardAuth) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The aiohttp middleware enforcing ``auth`` (see the module docstring)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        secure = request.secure
        if request.path == "/login":
            if request.method == "POST":
                form = await request.post()
                token = str(form.get("token", ""))
                target = _safe_next(str(form.get("next", "/")))
                if auth.level(token) is None:
                    return login_page(target, "wrong token")
                return _redirect_with_cookie(target, auth.session_for(token.strip()), secure)
            return login_page(_safe_next(request.query.get("next")))
        given = request.query.get("token")
        if given is not None and request.method == "GET":
            # ?token= once: set the cookie and drop the token from the address bar (and the history)
            rest = [(k, v) for k, v in request.query.items() if k != "token"]
            target = request.path + ("?" + urlencode(rest) if rest else "")
            if auth.level(given) is not None:
                return _redirect_with_cookie(target, auth.session_for(given.strip()), secure)
        if not auth.needs_token(request) or auth.allows(request):
            return await handler(request)
        if request.path.startswith(("/api/", "/events")) or request.method not in ("GET", "HEAD"):
            return _json_401("missing or wrong dashboard token: send 'Authorization: Bearer <token>' or sign in")
        return login_page(request.path_qs)

    return check
