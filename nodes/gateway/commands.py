"""Pure parsing of operator command text (``"DISCHARGE 50kW"``) into a typed order, and into a contract Command.

Grammar (case-insensitive, any amount of white space around and between the parts)::

    command := ("CHARGE" | "DISCHARGE") number unit
             | ("IDLE" | "STOP")
    number  := digits ["." digits] | "." digits          (a plain decimal: no sign, no exponent)
    unit    := "W" | "kW" | "MW"                          (any case: "kw", "KW", "mw" all work)

So ``DISCHARGE 50kW``, ``discharge 50 kw``, ``Charge 0.1MW`` and ``  discharge   50   KW `` all parse.
``STOP`` is a synonym of ``IDLE``.

Decisions:

* ``CHARGE 0kW`` / ``DISCHARGE 0kW`` are errors, not idle: a zero-power charge is almost always a typo, and
  the explicit ``IDLE`` says what is meant. The error message says so.
* The unit is required: ``DISCHARGE 50`` is refused (is it W or kW? a factor of 1000 matters on a battery).
* Because the case is forgiven, ``mw`` means megawatt (there is no milliwatt battery command).
* Power is bounded by the contract's ``PowerKw`` (at most 1e7 kW); the battery's own limit (its BatterySpec)
  is checked by the gateway, not here, because it needs state.

No I/O and no clock here: :func:`parse_command` takes text, :func:`build_command` takes the time explicitly.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

from nodes.contract.messages import Action, Command

MAX_COMMAND_CHARS = 200
MAX_POWER_KW = Decimal("1e7")
_UNIT_KW = {"w": Decimal("0.001"), "kw": Decimal(1), "mw": Decimal(1000)}
_WORD_ACTION: dict[str, Action] = {"charge": "charge", "discharge": "discharge", "idle": "idle", "stop": "idle"}
# word, then an optional "rest" (number and unit, possibly glued together: "50kW").
_SHAPE = re.compile(r"([A-Za-z]+)\s*(.*)", re.DOTALL)
_NUMBER_UNIT = re.compile(r"([^\sA-Za-z]*)\s*(.*)", re.DOTALL)
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_EXPONENT = re.compile(r"[eE][+-]?[0-9]")
_UNIT_REST = re.compile(r"([A-Za-z]+)\s*(.*)", re.DOTALL)

CommandSource = Literal["gateway", "planner", "operator", "homeassistant", "dashboard"]
"""Who a Command names as its source (a subset of :class:`nodes.contract.messages.Command`'s ``source``)."""


class CommandError(ValueError):
    """Command text that cannot be understood; the message says what is wrong and how to write it."""


class ParsedCommand(msgspec.Struct, frozen=True, kw_only=True):
    """The meaning of a command text: what to do and at what power (0 for idle)."""

    action: Action
    power_kw: float = 0.0


_USAGE = "use CHARGE <power> <W|kW|MW>, DISCHARGE <power> <W|kW|MW>, IDLE or STOP (e.g. 'DISCHARGE 50kW')"


def parse_command(text: str) -> ParsedCommand:
    """Parse command text; raise :class:`CommandError` naming the problem (word, power or unit)."""
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandError(f"command is longer than {MAX_COMMAND_CHARS} characters")
    stripped = text.strip()
    if not stripped:
        raise CommandError(f"empty command: {_USAGE}")
    shape = _SHAPE.fullmatch(stripped)
    if shape is None:
        raise CommandError(f"command must start with a word: {_USAGE}")
    word, rest = shape.group(1), shape.group(2).strip()
    action = _WORD_ACTION.get(word.lower())
    if action is None:
        raise CommandError(f"unknown command word {word!r}: {_USAGE}")
    if action == "idle":
        if rest:
            raise CommandError(f"{word.upper()} takes no power, got {rest!r}")
        return ParsedCommand(action="idle")
    return ParsedCommand(action=action, power_kw=_parse_power(word.upper(), rest))


def _parse_power(word: str, rest: str) -> float:
    if not rest:
        raise CommandError(f"missing power after {word}: e.g. '{word} 50kW'")
    parts = _NUMBER_UNIT.fullmatch(rest)
    assert parts is not None  # the pattern matches any string
    number, unit = parts.group(1), parts.group(2).strip()
    if not number:
        raise CommandError(f"missing power after {word}: expected a number before {rest!r}, e.g. '{word} 50kW'")
    if number.startswith("-"):
        raise CommandError(f"power must not be negative ({number}); the word {word} gives the direction")
    if not _DECIMAL.fullmatch(number):
        raise CommandError(f"power {number!r} is not a decimal number (write e.g. 50 or 0.5)")
    if _EXPONENT.match(unit):
        raise CommandError(f"power '{number}{unit.split()[0]}' uses an exponent: write a plain decimal such as 1000")
    if not unit:
        raise CommandError(f"missing unit after {number}: use W, kW or MW (e.g. '{word} {number}kW')")
    unit_rest = _UNIT_REST.fullmatch(unit)
    scale = _UNIT_KW.get(unit_rest.group(1).lower()) if unit_rest else None
    if unit_rest is None or scale is None:
        raise CommandError(f"unknown unit {unit.split()[0]!r}: use W, kW or MW")
    unit, extra = unit_rest.group(1), unit_rest.group(2)
    if extra:
        raise CommandError(f"unexpected text {extra!r} after '{number} {unit}'")
    try:
        power = Decimal(number) * scale
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise CommandError(f"power {number!r} is not a decimal number") from exc
    if power == 0:
        raise CommandError(f"power must be greater than 0 for {word}; send IDLE (or STOP) to stop the battery")
    if power > MAX_POWER_KW:
        raise CommandError(f"power {number} {unit} is above the limit of 1e7 kW")
    return float(power)


def build_command(
    parsed: ParsedCommand,
    *,
    text: str,
    command_id: str,
    now: datetime,
    lease_s: float,
    source: CommandSource = "gateway",
) -> Command:
    """The contract :class:`Command` for ``parsed``: issued ``now``, valid for ``lease_s`` seconds."""
    return Command(
        command_id=command_id,
        action=parsed.action,
        power_kw=parsed.power_kw,
        issued_at=now,
        valid_until=now + timedelta(seconds=lease_s),
        source=source,
        text=text,
    )


def from_signed_power(power_kw: float) -> ParsedCommand:
    """The order for a setpoint signed like telemetry: + discharge, - charge, 0 idle (Home Assistant's number)."""
    if power_kw > 0:
        return ParsedCommand(action="discharge", power_kw=power_kw)
    if power_kw < 0:
        return ParsedCommand(action="charge", power_kw=-power_kw)
    return ParsedCommand(action="idle")


def describe(parsed: ParsedCommand) -> str:
    """A canonical spelling, e.g. ``DISCHARGE 50 kW`` or ``IDLE`` (used in messages)."""
    if parsed.action == "idle":
        return "IDLE"
    return f"{parsed.action.upper()} {plain_number(parsed.power_kw)} kW"


def plain_number(value: float) -> str:
    """``value`` as a plain decimal without exponent or trailing zeros (``100.0`` -> ``100``, ``1e-06`` ->
    ``0.000001``), so a described command parses again."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


__all__ = [
    "CommandError",
    "CommandSource",
    "ParsedCommand",
    "build_command",
    "describe",
    "from_signed_power",
    "parse_command",
    "plain_number",
]
