"""The shape every diagnostic result shares: a number only with its basis (pure).

Why a common base: the panel that shows diagnostics must be able to print, for any result, one line with the
number, the sample it rests on and the spec's value (``summary``), the method in words (``method``) and, when the
data do not suffice, what is missing (``need``), without knowing each result's fields.
"""

from __future__ import annotations

import msgspec

NOT_ENOUGH = "not enough data: need "


class Result(msgspec.Struct, kw_only=True, frozen=True):
    """A diagnostic with its basis. Subclasses add their numbers (None when ``need`` is set, never a guess)."""

    title: str
    """What is measured, e.g. ``round-trip efficiency``."""
    summary: str
    """One line: ``measured 86.8 % vs spec 90 % over 41 cycles (...)`` or ``not enough data: need ...``."""
    method: str
    """How the number is computed, in words an operator can check."""
    readings: int
    """Readings the result rests on."""
    hours: float
    """Hours of history the result rests on."""
    need: str | None = None
    """What is missing for a number (None when the result has one)."""

    @property
    def enough(self) -> bool:
        """Does the result carry a number?"""
        return self.need is None


def not_enough(need: str) -> str:
    """The summary of a result without enough data."""
    return NOT_ENOUGH + need


def pct(fraction: float, digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals: ``0.8682`` -> ``86.8 %``."""
    return f"{fraction * 100:.{digits}f} %"


def spec_pct(fraction: float) -> str:
    """A spec's fraction as the percentage it was written as: ``0.9`` -> ``90 %``, ``0.925`` -> ``92.5 %``."""
    return f"{round(fraction * 100, 3):g} %"


def kwh(value: float) -> str:
    """An energy for a summary: ``812 kWh``, ``8.4 kWh``, ``0.31 kWh``."""
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 1 else 2
    return f"{value:,.{digits}f} kWh"


def hours(value: float) -> str:
    """A duration in hours for a summary: ``240.0 h``."""
    return f"{value:,.1f} h"


__all__ = ["NOT_ENOUGH", "Result", "hours", "kwh", "not_enough", "pct", "spec_pct"]
