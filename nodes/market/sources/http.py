"""The one HTTP path every price client takes: timeouts, retries with backoff and jitter, 429/Retry-After.

:meth:`Fetcher.fetch` sends an :class:`HttpRequest` and returns the answer for an expected status; otherwise

- a timeout, a connection error, HTTP 429 or 5xx is retried ``attempts`` times, waiting ``base * 2**n`` seconds
  with full jitter (or the server's ``Retry-After``, when it sends one), then :class:`SourceUnavailable`;
  a ``Retry-After`` longer than ``max_retry_after_s`` is not slept through: it is raised at once, with the
  wait, so the feed's scheduler can come back later;
- HTTP 401/403 (and other 4xx) are not retried: :class:`SourceRefused`.

Every log line and exception shows the request through :meth:`HttpRequest.display` and :func:`redact`: a token in
the query string (ENTSO-E's ``securityToken``) is never printed, not even inside an aiohttp error message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from nodes.market.sources.prices import SourceError
from nodes.market.sources.request import HttpRequest, redact

log = logging.getLogger("bess.market.http")

#: a price answer is small (an A44 year is ~2 MB); anything far bigger is not one
MAX_BODY_BYTES = 32 * 1024 * 1024
_BODY_SNIPPET = 200


class SourceUnavailable(SourceError):
    """The provider did not answer usefully after the retries (timeouts, 5xx, rate limiting)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceRefused(SourceError):
    """The provider refused the request (bad token, bad query): retrying the same request will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one fetch tries."""

    attempts: int = 4
    base_delay_s: float = 2.0
    max_delay_s: float = 60.0
    #: a longer Retry-After is handed to the scheduler instead of being slept through
    max_retry_after_s: float = 300.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class HttpAnswer:
    """Status, body and headers (names in lower case) of an answer the caller expected."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _snippet(body: bytes, secrets: Collection[str]) -> str:
    text = body[:_BODY_SNIPPET].decode("utf-8", errors="replace").replace("\n", " ").strip()
    return redact(text, secrets)


class Fetcher:
    """Sends requests on one aiohttp session with the retry policy; ``sleep``/``rng`` are injectable for tests."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry ``attempt`` (1-based)."""
        ceiling = min(self.policy.max_delay_s, self.policy.base_delay_s * 2 ** (attempt - 1))
        return float(self._rng() * ceiling)

    async def _once(self, req: HttpRequest) -> HttpAnswer:
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        async with self.session.request(
            req.method,
            req.url,
            params=dict(req.params) or None,
            json=req.json_body,
            headers=dict(req.headers) or None,
            timeout=timeout,
        ) as resp:
            body = await resp.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise SourceRefused(f"{req.display()}: answer larger than {MAX_BODY_BYTES} bytes", resp.status)
            return HttpAnswer(resp.status, body, {k.lower(): v for k, v in resp.headers.items()})

    async def fetch(self, req: HttpRequest, expect: Collection[int] = (200,)) -> HttpAnswer:
        """The answer to ``req`` if its status is in ``expect``; retries transient failures (see module doc)."""
        secrets = req.secrets
        shown = req.display()
        problem = ""
        wait_hint: float | None = None
        for attempt in range(1, self.policy.attempts + 1):
            wait: float | None = None
            try:
                answer = await self._once(req)
            except TimeoutError:
                problem = f"no answer within {self.policy.timeout_s:g} s"
            except aiohttp.ClientError as exc:
                problem = redact(f"{type(exc).__name__}: {exc}", secrets)
            else:
                status = answer.status
                log.debug("%s -> HTTP %d, %d bytes", shown, status, len(answer.body))
                if status in expect:
                    return answer
                snippet = _snippet(answer.body, secrets)
                if status in (401, 403):
                    raise SourceRefused(f"{shown}: refused with HTTP {status} (check the token): {snippet}", status)
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}" + (f": {snippet}" if snippet else "")
                    wait = retry_after_s(answer.headers.get("retry-after"))
                    if wait is not None and wait > self.policy.max_retry_after_s:
                        raise SourceUnavailable(f"{shown}: {problem}; asked to wait {wait:.0f} s", wait)
                    wait_hint = wait
                else:
                    raise SourceRefused(f"{shown}: HTTP {status}: {snippet}", status)
            if attempt == self.policy.attempts:
                break
            delay = wait if wait is not None else self.backoff_s(attempt)
            log.warning("%s: %s; retry %d/%d in %.1f s", shown, problem, attempt, self.policy.attempts - 1, delay)
            await self._sleep(delay)
        raise SourceUnavailable(f"{shown}: {problem} (after {self.policy.attempts} attempts)", wait_hint)
