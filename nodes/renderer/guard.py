"""Who may act through the dashboard's control panel, and proof that a browser's request is the panel's own.

The dashboard token (:mod:`nodes.renderer.auth`) decides who may use the dashboard at all; this module adds what
a state-changing request needs on top, because a browser sends cookies with requests other sites make it send
(cross-site request forgery):

* **Control is on only where it is safe.** ``BESS_DASHBOARD_CONTROL=0`` turns it off. Without a dashboard token,
  control is allowed only while the dashboard listens on loopback (``BESS_DASHBOARD_HOST`` 127.0.0.1, ::1 or
  localhost), so only someone already on the machine can use it (as with the gateway's HTTP API); a dashboard
  listening on the network without a token shows the panel disabled and refuses every action (403): nobody
  commands a battery from the network without a token.
* **JSON only.** Actions are ``POST`` with ``Content-Type: application/json``: an HTML form cannot send that
  type, and a script on another site cannot send it without a CORS preflight, which this server never grants.
* **Same origin.** ``Origin`` (or, without it, ``Sec-Fetch-Site`` / ``Referer``) must name this dashboard's own
  host: a request another site's page made is refused (403, field ``Origin``).
* **An anti-CSRF token bound to the browser's cookies.** ``GET /api/control/{battery}`` sets the cookie
  ``bess_csrf`` (a random nonce; ``HttpOnly``, ``SameSite=Strict``) and answers a token, the HMAC of the nonce and
  the dashboard session cookie under a server secret; every action sends it in ``X-CSRF-Token``. Another site can
  neither read the token (no CORS) nor compute it (the secret). A script with ``Authorization: Bearer <token>``
  needs no CSRF token: a browser never adds that header on its own.
* **Host check without a token** (DNS rebinding): a page on ``evil.example`` whose name an attacker points at
  127.0.0.1 is same-origin with itself and gets its own cookie and token; so without a dashboard token the
  ``Host`` header must be a loopback name too (403, field ``Host``).

Refusals are JSON ``{"error", "field"}``: 401 (no or wrong token, from the auth middleware), 403 (control off, a
foreign origin or host, a missing or stale CSRF token), 415 (not JSON).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from nodes.renderer.auth import COOKIE as SESSION_COOKIE
from nodes.renderer.auth import DashboardAuth

CSRF_COOKIE: Final = "bess_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.", "ip6-localhost"})


class Refused(Exception):
    """A control request that must not be acted on: the status, the error and the input at fault."""

    def __init__(self, status: int, error: str, field_name: str | None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field_name


def is_loopback(host: str) -> bool:
    """Is ``host`` (a name or an address, without port) this machine only?"""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _authority(value: str, scheme: str) -> str:
    """``host[:port]`` in lower case, the scheme's default port left out (``Host`` and ``Origin`` compare so)."""
    parts = urlsplit(f"{scheme}://{value}") if "//" not in value else urlsplit(value)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return value.lower()
    default = {"http": 80, "https": 443}.get(parts.scheme or scheme)
    return host if port is None or port == default else f"{host}:{port}"


def _host_name(request: web.Request) -> str:
    return (urlsplit(f"//{request.host}").hostname or "").lower()


@dataclass(frozen=True)
class ControlGuard:
    """The checks of every control action (see the module docstring); ``secret`` signs the CSRF tokens."""

    auth: DashboardAuth | None
    listen_host: str
    enabled: bool = True
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def create(cls, auth: DashboardAuth | None, listen_host: str, enabled: bool = True) -> ControlGuard:
        """A guard whose secret survives a restart when there is a token (so an open page's CSRF token keeps
        working), and is random per process without one."""
        if auth is None:
            return cls(auth, listen_host, enabled)
        secret = hmac.new(auth.token.encode(), b"bess-dashboard-csrf-v1", hashlib.sha256).digest()
        return cls(auth, listen_host, enabled, secret)

    def disabled_reason(self) -> str | None:
        """Why control is off on this dashboard, or None when it is on."""
        if not self.enabled:
            return "control is turned off on this dashboard (BESS_DASHBOARD_CONTROL=0)"
        if self.auth is None and not is_loopback(self.listen_host):
            return (f"the dashboard listens on {self.listen_host} without a token: set BESS_DASHBOARD_TOKEN to "
                    "allow control (no control from the network without one)")
        return None

    def refusal_for(self, request: web.Request) -> str | None:
        """Why this viewer cannot act (control off, or signed in with the view token only), or None: the panel
        shows it disabled instead of failing on the first click."""
        why = self.disabled_reason()
        if why is not None or self.auth is None:
            return why
        if self._bearer(request) or self._session_ok(request):
            return None
        return "signed in with the view token: control needs the dashboard token (BESS_DASHBOARD_TOKEN)"

    # -- CSRF tokens ---------------------------------------------------------------------------------------

    def token_for(self, nonce: str, request: web.Request) -> str:
        """The CSRF token of a browser: its ``bess_csrf`` nonce bound to its dashboard session cookie."""
        session = request.cookies.get(SESSION_COOKIE, "")
        return hmac.new(self.secret, f"{nonce}|{session}".encode(), hashlib.sha256).hexdigest()

    def issue(self, request: web.Request) -> tuple[str, str | None]:
        """The page's CSRF token and, when the browser has no nonce yet, the new nonce to set as its cookie."""
        nonce = request.cookies.get(CSRF_COOKIE, "")
        fresh = None
        if len(nonce) != 32 or not all(c in "0123456789abcdef" for c in nonce):
            nonce = fresh = secrets.token_hex(16)
        return self.token_for(nonce, request), fresh

    @staticmethod
    def set_cookie(response: web.StreamResponse, nonce: str, request: web.Request) -> None:
        """Give the browser its nonce: HttpOnly (no script reads it), SameSite=Strict (no other site sends it)."""
        response.set_cookie(CSRF_COOKIE, nonce, httponly=True, samesite="Strict", path="/", secure=request.secure)

    # -- the checks ----------------------------------------------------------------------------------------

    def check(self, request: web.Request) -> None:
        """Raise :class:`Refused` unless ``request`` may act (control on, JSON, same origin, CSRF token)."""
        why = self.disabled_reason()
        if why is not None:
            raise Refused(403, why, "control")
        media = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise Refused(415, "control actions are JSON: send 'Content-Type: application/json'", "Content-Type")
        bearer = self._bearer(request)
        if self.auth is not None and not bearer and not self._session_ok(request):
            # the auth middleware refuses these first; this keeps the rule true if it is ever mounted without it
            raise Refused(401, "missing or wrong dashboard token: sign in or send 'Authorization: Bearer <token>'",
                          "Authorization")
        self._same_origin(request)
        if self.auth is None and not is_loopback(_host_name(request)):
            raise Refused(403, f"Host {request.host!r} is not this machine: without BESS_DASHBOARD_TOKEN control "
                          "is allowed only at a loopback address (127.0.0.1, ::1, localhost)", "Host")
        if bearer:
            return  # a script's own header: no browser sends it by itself, so there is nothing to forge
        nonce = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get(CSRF_HEADER, "")
        if not nonce or not given:
            raise Refused(403, f"missing anti-CSRF token: send the {CSRF_HEADER} header from GET "
                          "/api/control/{battery} (with its cookie)", CSRF_HEADER)
        if not hmac.compare_digest(given.encode(), self.token_for(nonce, request).encode()):
            raise Refused(403, "stale or wrong anti-CSRF token: reload the page", CSRF_HEADER)

    def _bearer(self, request: web.Request) -> bool:
        if self.auth is None:
            return False
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        return scheme.lower() == "bearer" and self.auth.level(given) == "write"

    def _session_ok(self, request: web.Request) -> bool:
        assert self.auth is not None
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.auth.session.encode())

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        own = _authority(request.host, request.scheme)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            if origin == "null" or _authority(origin, request.scheme) != own:
                raise Refused(403, f"cross-origin request refused: Origin {origin!r} is not this dashboard "
                              f"({own})", "Origin")
            return
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"cross-site request refused (Sec-Fetch-Site: {site})", "Origin")
        referer = request.headers.get(hdrs.REFERER)
        if referer and _authority(referer, request.scheme) != own:
            raise Refused(403, "cross-origin request refused: the Referer is not this dashboard", "Origin")


__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "ControlGuard", "Refused", "is_loopback"]
