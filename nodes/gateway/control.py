"""Control precedence at the gateway, pure: what an operator command does to a battery's control mode.

The rule (the README's "Control precedence"):

* An operator command (``POST /mqtt/publish``) sets the battery to ``manual`` until the command's lease ends
  (``until = valid_until``): the planner sends no command meanwhile and resumes at that instant. A mode already
  in force that covers the lease (``manual`` without an end, or ending later) is kept as it is.
* ``idle`` is a lock: only ``IDLE``/``STOP`` commands pass; anything else is refused (409) until the mode is
  changed with ``POST /control``.
* ``POST /control`` sets any mode, optionally for ``for_s`` seconds (then the planner's configured default
  applies again).
"""

from __future__ import annotations

from datetime import UTC, datetime

from nodes.contract.messages import Command, ControlMode, ControlModeName

SOURCE = "gateway"


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with ``Z``, as everywhere else on the wire."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def mode_now(control: ControlMode | None, now: datetime) -> ControlModeName | None:
    """The mode in force at ``now``, or None when none is (the planner's default applies)."""
    return None if control is None else control.mode_at(now)


def locked_out(control: ControlMode | None, command: Command, now: datetime) -> str | None:
    """Why ``command`` must be refused (the battery is in mode idle and the command would move it), or None."""
    if command.action == "idle" or mode_now(control, now) != "idle":
        return None
    assert control is not None
    until = f" until {iso(control.until)}" if control.until else ""
    why = f" ({control.reason})" if control.reason else ""
    return (f"the battery is in control mode idle{until}, set by {control.source} at {iso(control.set_at)}"
            f"{why}: only IDLE or STOP pass; POST /control {{\"mode\": \"manual\"}} first to command it")


def after_operator_command(
    control: ControlMode | None, command: Command, now: datetime, *, source: str = SOURCE
) -> ControlMode | None:
    """The ControlMode to publish for an operator ``command``, or None when the mode in force already covers it
    (a longer ``manual``, or ``idle``, which only an IDLE command gets through and which it keeps). ``source``
    names who asked (the gateway for HTTP, ``homeassistant`` for its MQTT requests)."""
    if mode_now(control, now) == "idle":
        return None
    if mode_now(control, now) == "manual":
        assert control is not None
        if control.until is None or control.until >= command.valid_until:
            return None
    text = f" ({command.text})" if command.text else ""
    who = "operator" if source == SOURCE else source
    return ControlMode(
        mode="manual",
        set_at=now,
        until=command.valid_until,
        source=source,
        reason=f"{who} command {command.command_id}{text}"[:500],
    )


def describe(control: ControlMode | None, now: datetime) -> str:
    """One sentence for an operator: who commands the battery now, and until when."""
    mode = mode_now(control, now)
    if mode is None or control is None:
        return "no control mode in force: the planner's configured default applies (BESS_PLANNER_AUTOPILOT)"
    until = f" until {iso(control.until)}" if control.until else " until changed with POST /control"
    if mode == "autopilot":
        return f"autopilot{until}: the planner sends each slot's command"
    if mode == "manual":
        return f"manual{until}: the autopilot sends no command, operator commands rule"
    return f"idle{until}: the battery is held idle, only IDLE or STOP commands pass"


__all__ = ["SOURCE", "after_operator_command", "describe", "iso", "locked_out", "mode_now"]
