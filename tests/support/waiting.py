"""Wait for a condition with a deadline instead of sleeping a fixed time.

``wait_for(lambda: rows() == 3, timeout=5)`` polls the predicate until it returns something truthy and returns
that value; on timeout it fails the test with the description and the last value (or the last ignored error).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline (an AssertionError, so pytest reports it as a failure)."""


def _message(what: str | None, timeout: float, last: object, error: BaseException | None) -> str:
    text = f"timed out after {timeout} s waiting for {what or 'condition'}; last value: {last!r}"
    if error is not None:
        text += f"; last ignored error: {error!r}"
    return text


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return that value.

    Exceptions of the types in ``ignore`` count as "not yet" (e.g. ``ConnectionError`` while a server starts);
    any other exception propagates at once. Raises :class:`WaitTimeout` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except ignore as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, error))
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    what: str | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Like :func:`wait_for` for asyncio tests: ``predicate`` may be sync or async; waiting never blocks the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            result: T = await value if inspect.isawaitable(value) else value
            last = result
            if result:
                return result
        except ignore as exc:
            error = exc
        if loop.time() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, error))
        await asyncio.sleep(interval)
