"""Command text -> typed order: a table of accepted spellings, a table of refusals, and properties (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.contract.messages import Command
from nodes.contract.topics import COMMAND
from nodes.gateway.commands import (
    MAX_COMMAND_CHARS,
    CommandError,
    ParsedCommand,
    build_command,
    describe,
    parse_command,
)

GOOD = [
    ("DISCHARGE 50kW", "discharge", 50.0),
    ("discharge 50 kw", "discharge", 50.0),
    ("Charge 0.1MW", "charge", 100.0),
    ("DISCHARGE 50kW", "discharge", 50.0),
    ("  discharge   50   KW ", "discharge", 50.0),
    ("CHARGE 100 kW", "charge", 100.0),
    ("charge 250kw", "charge", 250.0),
    ("DISCHARGE 1 MW", "discharge", 1000.0),
    ("discharge 2.5 mw", "discharge", 2500.0),
    ("CHARGE 500 W", "charge", 0.5),
    ("charge 1w", "charge", 0.001),
    ("DISCHARGE 12.75kW", "discharge", 12.75),
    ("DISCHARGE .5 kW", "discharge", 0.5),
    ("DISCHARGE 5. kW", "discharge", 5.0),
    ("DISCHARGE 007 kW", "discharge", 7.0),
    ("DISCHARGE50KW", "discharge", 50.0),
    ("\tdischarge\t50\tkW\n", "discharge", 50.0),
    ("cHaRgE 3 Kw", "charge", 3.0),
    ("DISCHARGE 10000000 kW", "discharge", 1e7),
    ("DISCHARGE 10000 MW", "discharge", 1e7),
    ("IDLE", "idle", 0.0),
    ("idle", "idle", 0.0),
    ("  Idle  ", "idle", 0.0),
    ("STOP", "idle", 0.0),
    ("stop", "idle", 0.0),
]


@pytest.mark.parametrize(("text", "action", "power_kw"), GOOD, ids=[g[0].strip() or "blank" for g in GOOD])
def test_accepted(text: str, action: str, power_kw: float) -> None:
    assert parse_command(text) == ParsedCommand(action=action, power_kw=power_kw)  # type: ignore[arg-type]


BAD = [
    ("", "empty command"),
    ("   ", "empty command"),
    ("FLY 50kW", "unknown command word 'FLY'"),
    ("DISCHARGING 50kW", "unknown command word 'DISCHARGING'"),
    ("50kW", "must start with a word"),
    ("-5 kW", "must start with a word"),
    ("DISCHARGE", "missing power after DISCHARGE"),
    ("charge   ", "missing power after CHARGE"),
    ("DISCHARGE kW", "missing power after DISCHARGE"),
    ("DISCHARGE 50", "missing unit after 50"),
    ("DISCHARGE 50 kWh", "unknown unit 'kWh'"),
    ("DISCHARGE 50 GW", "unknown unit 'GW'"),
    ("DISCHARGE 50 k W", "unknown unit 'k'"),
    ("DISCHARGE 50 watts", "unknown unit 'watts'"),
    ("DISCHARGE 50kW now", "unexpected text 'now'"),
    ("DISCHARGE 50kW 20kW", "unexpected text"),
    ("DISCHARGE -50kW", "must not be negative"),
    ("CHARGE -0.1 MW", "must not be negative"),
    ("DISCHARGE +50kW", "not a decimal number"),
    ("DISCHARGE 1.2.3kW", "not a decimal number"),
    ("DISCHARGE 50,5kW", "not a decimal number"),
    ("DISCHARGE 1e3kW", "uses an exponent"),
    ("DISCHARGE 1E3 kW", "uses an exponent"),
    ("DISCHARGE NaN kW", "missing power"),
    ("DISCHARGE inf kW", "missing power"),
    ("DISCHARGE ٥٠ kW", "not a decimal number"),
    ("CHARGE 0kW", "greater than 0 for CHARGE; send IDLE"),
    ("DISCHARGE 0.000 MW", "greater than 0 for DISCHARGE"),
    ("DISCHARGE 10000001 kW", "above the limit"),
    ("DISCHARGE 99999999999999999999999999999 MW", "above the limit"),
    ("IDLE 5kW", "IDLE takes no power"),
    ("STOP now", "STOP takes no power"),
    ("D" * (MAX_COMMAND_CHARS + 1), "longer than"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0][:30] or "empty" for b in BAD])
def test_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=None) as info:
        parse_command(text)
    assert message in str(info.value)


def test_errors_suggest_the_syntax() -> None:
    with pytest.raises(CommandError, match=r"DISCHARGE <power> <W\|kW\|MW>"):
        parse_command("HALT")


# -- properties ----------------------------------------------------------------------------------------------

SCALE = {"W": Decimal("0.001"), "kW": Decimal(1), "MW": Decimal(1000)}
decimals = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(9999), places=3)
spaces = st.text(alphabet=" \t", max_size=3)


def _random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if up else c.lower() for c, up in zip(word, flips, strict=True))


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, str, Decimal]:
    word = draw(st.sampled_from(["CHARGE", "DISCHARGE"]))
    unit = draw(st.sampled_from(sorted(SCALE)))
    number = draw(decimals)
    text = (
        draw(spaces)
        + _random_case(draw, word)
        + draw(spaces)
        + " "
        + f"{number:f}"
        + draw(spaces)
        + _random_case(draw, unit)
        + draw(spaces)
    )
    return text, word.lower(), number * SCALE[unit]


@given(commands())
def test_any_spelling_of_a_valid_command_parses(case: tuple[str, str, Decimal]) -> None:
    text, action, power = case
    parsed = parse_command(text)
    assert parsed.action == action
    assert parsed.power_kw == pytest.approx(float(power), rel=1e-12)
    assert parsed.power_kw > 0


@given(st.text(max_size=80))
def test_arbitrary_text_either_parses_or_raises_command_error(text: str) -> None:
    try:
        parsed = parse_command(text)
    except CommandError as exc:
        message = str(exc)
        parsed = None
    if parsed is None:
        assert message  # every refusal says why
    else:
        assert parsed.action in ("charge", "discharge", "idle")
        assert 0 <= parsed.power_kw <= 1e7


@given(st.sampled_from(["CHARGE", "DISCHARGE"]), decimals, st.sampled_from(sorted(SCALE)))
def test_canonical_spelling_round_trips(word: str, number: Decimal, unit: str) -> None:
    parsed = parse_command(f"{word} {number:f} {unit}")
    assert parse_command(describe(parsed)) == parsed


def test_build_command_is_a_lease() -> None:
    now = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
    parsed = parse_command("DISCHARGE 50kW")
    command = build_command(parsed, text="DISCHARGE 50kW", command_id="c-1", now=now, lease_s=300)
    assert command == Command(
        command_id="c-1",
        action="discharge",
        power_kw=50.0,
        issued_at=now,
        valid_until=now + timedelta(minutes=5),
        source="gateway",
        text="DISCHARGE 50kW",
    )
    # what goes on the wire decodes back to the same message
    assert COMMAND.decode(COMMAND.encode(command)) == command


def test_describe() -> None:
    assert describe(parse_command("stop")) == "IDLE"
    assert describe(parse_command("charge 0.1 MW")) == "CHARGE 100 kW"
