"""What goes wrong in deploy/: each message says what to look at (``deploy/stack.py`` turns them into exit codes)."""

from __future__ import annotations


class StackError(RuntimeError):
    """A server could not be installed, started or reached; the message says what to look at."""


class PortInUseError(StackError):
    """A port we were told (or chose) to listen on already accepts connections."""


class SettingsError(StackError):
    """A setting is invalid or contradicts what runs: ``up`` stops before starting anything (exit 2)."""
