"""An HTTP request a price client will make (pure), and how it is shown in logs without its secrets.

A request names its secret query parameters (ENTSO-E's ``securityToken``); :meth:`HttpRequest.display` is the
only form that goes into log lines and exception messages, and :func:`redact` scrubs a secret from any text
(an aiohttp error message can quote the whole URL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

REDACTED = "***"


@dataclass(frozen=True)
class HttpRequest:
    """Method, URL, query parameters, optional JSON body; ``secret_params`` never appear in :meth:`display`."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    json_body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    secret_params: frozenset[str] = frozenset()
    #: what the request is for, in log lines ("ENTSO-E A44 de-lu 2025-01-15..2025-01-17")
    label: str = ""

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values carried by this request."""
        return tuple(v for k, v in self.params.items() if k in self.secret_params and v)

    def display(self) -> str:
        """The URL with its query, secret parameters replaced by ``***``."""
        shown = {k: (REDACTED if k in self.secret_params else v) for k, v in self.params.items()}
        query = urlencode(shown, safe="*,:")
        return f"{self.method} {self.url}" + (f"?{query}" if query else "")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and its URL-encoded form) replaced by ``***``."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, REDACTED)
    return text
