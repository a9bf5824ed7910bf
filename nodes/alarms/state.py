"""Raise and clear alarms without flapping: the state machine every rule shares (pure; the clock passed in).

Each rule of a battery is in one of four phases::

    clear ──on──> raising ──on for raise_after_s──> RAISED ──off──> clearing ──off for clear_after_s──> clear
      ^              │ not on                         ^  │ on/hold/unknown: stays      │ on/hold/unknown
      └──────────────┘                                └──┴─────────────────────────────┘

* a condition must hold on every evaluation for ``raise_after_s`` before the alarm is raised (counted from when
  it began if the inputs say, e.g. the instant a reading turned stale; else from when it was first seen);
* a raised alarm clears only after its clear condition held for ``clear_after_s``; a value between the raise and
  the clear threshold (``hold``) keeps it raised, so a signal wobbling around 55 °C raises once and stays raised
  until it is really below 50 °C;
* ``unknown`` (no fresh reading) cancels a pending raise and keeps a raised alarm raised: an alarm is never
  cleared on missing data;
* a raised alarm whose identity changes (other BMS codes, other nodes down) is published again (``updated``).

:func:`evaluate` takes the current book (rule id -> :class:`RuleState`), the inputs, the settings and ``now``,
and returns the new book, the transitions to publish and when it must be called again at the latest
(``next_due``: a pending deadline, or a reading turning stale), so timing is exact without polling.
:func:`restore` rebuilds the book from the retained alarm messages after a restart, so a raised alarm is
neither raised again nor forgotten.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from nodes.alarms.rules import RULES, AlarmInputs, Observation, Rule
from nodes.alarms.settings import AlarmSettings, RuleSettings
from nodes.contract.alarms import Alarm, Severity

Phase = Literal["clear", "raising", "raised", "clearing"]
TransitionKind = Literal["raised", "cleared", "updated"]
MAX_MESSAGE_CHARS = 500
VALUE_BOUND = 1e9


class RuleState(msgspec.Struct, kw_only=True, frozen=True):
    """Where one rule of one battery stands."""

    phase: Phase = "clear"
    pending_since: datetime | None = None
    """``raising``: when the condition began; ``clearing``: when it went away."""
    raised_at: datetime | None = None
    severity: Severity = "warning"
    """The severity it was raised with."""
    key: str | None = ""
    """The identity it was raised with; None after :func:`restore` (the next one is adopted silently)."""

    @property
    def active(self) -> bool:
        """Is the alarm up (raised, or raised and waiting to clear)?"""
        return self.phase in ("raised", "clearing")


CLEAR = RuleState()


class Transition(msgspec.Struct, kw_only=True, frozen=True):
    """An alarm raised, cleared or updated at ``at``: what the node publishes (:meth:`alarm`) and stores."""

    rule: str
    kind: TransitionKind
    at: datetime
    severity: Severity
    message: str
    value: float | None
    threshold: float | None
    unit: str
    raised_at: datetime

    def alarm(self) -> Alarm:
        """The retained message for ``battery/{battery}/alarm/{rule}``."""
        return Alarm(
            rule=self.rule,
            state="cleared" if self.kind == "cleared" else "raised",
            since=self.raised_at if self.kind == "updated" else self.at,
            severity=self.severity,
            message=self.message[:MAX_MESSAGE_CHARS],
            value=_bounded(self.value),
            threshold=_bounded(self.threshold),
            unit=self.unit,
            raised_at=self.raised_at if self.kind == "cleared" else None,
        )


def _bounded(value: float | None) -> float | None:
    """A value the wire accepts (an age of a never-seen reading is not a number worth a refused message)."""
    if value is None or math.isnan(value):
        return None
    return min(max(value, -VALUE_BOUND), VALUE_BOUND)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What :func:`evaluate` found."""

    book: dict[str, RuleState]
    """Rules not ``clear`` (a missing rule is clear)."""
    transitions: list[Transition]
    next_due: datetime | None
    """Call :func:`evaluate` again at this instant at the latest (None: only on new inputs)."""
    observations: dict[str, Observation]
    """Each enabled rule's judgement of these inputs (for a status view; not published)."""


def _transition(rule: Rule, kind: TransitionKind, obs: Observation, now: datetime, *, severity: Severity,
                raised_at: datetime) -> Transition:
    return Transition(rule=rule.id, kind=kind, at=now, severity=severity, message=obs.message, value=obs.value,
                      threshold=obs.threshold, unit=rule.unit, raised_at=raised_at)


def step(rule: Rule, state: RuleState, obs: Observation, timing: RuleSettings,
         now: datetime) -> tuple[RuleState, Transition | None]:
    """One rule's phase after ``obs`` at ``now`` (see the module docstring), and the transition it makes."""
    raise_after = timedelta(seconds=timing.raise_after_s)
    clear_after = timedelta(seconds=timing.clear_after_s)
    if state.phase in ("clear", "raising"):
        if obs.level != "on":
            return CLEAR, None
        began = state.pending_since if state.phase == "raising" else min(obs.began_at or now, now)
        assert began is not None
        if now - began >= raise_after:
            raised = RuleState(phase="raised", raised_at=now, severity=timing.severity, key=obs.key)
            return raised, _transition(rule, "raised", obs, now, severity=timing.severity, raised_at=now)
        return RuleState(phase="raising", pending_since=began, severity=timing.severity), None
    raised_at = state.raised_at or now
    if obs.level == "off":
        went = state.pending_since if state.phase == "clearing" else now
        assert went is not None
        if now - went >= clear_after:
            return CLEAR, _transition(rule, "cleared", obs, now, severity=state.severity, raised_at=raised_at)
        return msgspec.structs.replace(state, phase="clearing", pending_since=went), None
    back = msgspec.structs.replace(state, phase="raised", pending_since=None)
    if obs.level == "on" and obs.key != state.key:
        if state.key is None:  # restored: adopt what is wrong now without publishing it again
            return msgspec.structs.replace(back, key=obs.key), None
        return (msgspec.structs.replace(back, key=obs.key),
                _transition(rule, "updated", obs, now, severity=state.severity, raised_at=raised_at))
    return back, None


def _deadline(state: RuleState, timing: RuleSettings) -> datetime | None:
    if state.pending_since is None:
        return None
    wait = timing.raise_after_s if state.phase == "raising" else timing.clear_after_s
    return state.pending_since + timedelta(seconds=wait)


def evaluate(book: Mapping[str, RuleState], inputs: AlarmInputs, settings: AlarmSettings,
             now: datetime) -> Evaluation:
    """Every rule of one battery at ``now``: the new book, the transitions, the next wake-up."""
    new: dict[str, RuleState] = {}
    transitions: list[Transition] = []
    observations: dict[str, Observation] = {}
    due: list[datetime] = []
    for rule in RULES:
        timing = settings.rule(rule.id)
        state = book.get(rule.id, CLEAR)
        if not timing.enabled:
            if state.active:
                gone = Observation("off", f"{rule.title}: rule disabled in the alarm settings")
                transitions.append(_transition(rule, "cleared", gone, now, severity=state.severity,
                                               raised_at=state.raised_at or now))
            continue
        obs = rule.observe(inputs, settings, now)
        observations[rule.id] = obs
        state, transition = step(rule, state, obs, timing, now)
        if transition is not None:
            transitions.append(transition)
        if state.phase != "clear":
            new[rule.id] = state
        deadline = _deadline(state, timing)
        due += [t for t in (deadline, obs.flips_at) if t is not None and t > now]
    return Evaluation(book=new, transitions=transitions, next_due=min(due) if due else None,
                      observations=observations)


def restore(alarms: Iterable[Alarm]) -> dict[str, RuleState]:
    """The book as the retained alarm messages left it (after a restart): raised ones stay raised."""
    known = {rule.id for rule in RULES}
    return {
        alarm.rule: RuleState(phase="raised", raised_at=alarm.since, severity=alarm.severity, key=None)
        for alarm in alarms
        if alarm.state == "raised" and alarm.rule in known
    }


__all__ = ["CLEAR", "Evaluation", "Phase", "RuleState", "Transition", "evaluate", "restore", "step"]
