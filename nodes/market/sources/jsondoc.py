"""Reading a provider's JSON answer (pure): one place for "not JSON" and "not the documented shape" errors."""

from __future__ import annotations

from typing import Any

import msgspec

from nodes.market.sources.prices import ParseError

_decoder = msgspec.json.Decoder()


def load(data: bytes, provider: str) -> Any:
    """The decoded JSON document, or :class:`ParseError` naming the provider."""
    if not data.strip():
        raise ParseError(f"the {provider} answer is empty")
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ParseError(f"the {provider} answer is not JSON: {exc}") from None


def obj(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object, else :class:`ParseError`."""
    if not isinstance(value, dict):
        raise ParseError(f"{what} is not a JSON object")
    return value


def array(value: Any, what: str) -> list[Any]:
    """``value`` as a JSON array, else :class:`ParseError`."""
    if not isinstance(value, list):
        raise ParseError(f"{what} is not a JSON array")
    return value


def text(value: Any, what: str) -> str:
    """``value`` as a string, else :class:`ParseError`."""
    if not isinstance(value, str):
        raise ParseError(f"{what} is not a string")
    return value
