"""The alarm message: one retained message per battery and rule (``battery/{battery}/alarm/{rule}``).

Why retained and one topic per rule: a dashboard or Home Assistant that connects later must see every alarm
that is up now (a binary sensor per topic), and a cleared alarm must replace its raised message rather than
leave it standing; ``state: cleared`` does that. The topic is not declared in :mod:`nodes.contract.topics` yet
(the alarm node that publishes it comes with the wiring); the payload is defined here so the rules
(:mod:`nodes.alarms`) and every later consumer share one shape.

Forward compatible like every wire Struct: new fields get defaults, unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from nodes.contract.messages import Identifier, ShortText, Text, UtcDatetime

AlarmState = Literal["raised", "cleared"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
"""In rising order of urgency (a banner shows the most urgent first)."""

AlarmValue = Annotated[float, Meta(ge=-1e9, le=1e9, description="the measured value, in the alarm's unit")]


class Alarm(Struct, kw_only=True, omit_defaults=True):
    """An alarm of one battery: raised, or cleared again (retained on ``battery/{battery}/alarm/{rule}``)."""

    rule: Identifier
    """The rule's id, as in the topic (``cell_temp_high``)."""
    state: AlarmState
    since: UtcDatetime
    """When the alarm took this state (raised or cleared)."""
    severity: Severity
    message: Text
    """What is wrong, in words, with the value and the threshold (``max cell temperature 57.2 °C above 55 °C``)."""
    value: AlarmValue | None = None
    """The value that raised it (or, when cleared, the value that cleared it); None for a rule without one."""
    threshold: AlarmValue | None = None
    """The threshold the value crossed (for a cleared alarm: the one it came back past)."""
    unit: ShortText = ""
    """Unit of ``value`` and ``threshold`` (``°C``, ``V``, ``kWh``, ``s``, ``kW``, ``codes``, ``nodes``)."""
    raised_at: UtcDatetime | None = None
    """For a cleared alarm: when it was raised (a history table shows how long it lasted)."""


__all__ = ["SEVERITIES", "Alarm", "AlarmState", "AlarmValue", "Severity"]
