"""Diagnostics of a battery from its stored history (pure: columns and a spec in, results with their basis out).

What an operator asks after a few weeks of operation, answered from the readings themselves: does the battery
give back what the spec promises (round-trip efficiency, usable capacity), how hard was it used (equivalent full
cycles), does it do what it is told (command tracking, response delay), can its SOC be trusted (integrated power
against the reported SOC) and where is data missing (telemetry gaps).

Every result carries its basis: the method in words, how many readings and hours (and cycles or command changes)
it rests on, and the spec's value next to the measured one where the spec has one. A result without enough data
says ``not enough data: need ...`` and has no number.

Entry point: :func:`nodes.diagnostics.report.diagnose` (a :class:`~nodes.diagnostics.history.History` of raw
readings, the :class:`~nodes.contract.messages.BatterySpec`, optionally the Commands sent) returns a
:class:`~nodes.diagnostics.report.DiagnosticsReport`. Each result also has its own function
(:mod:`~nodes.diagnostics.cycles`, :mod:`~nodes.diagnostics.tracking`, :mod:`~nodes.diagnostics.consistency`,
:mod:`~nodes.diagnostics.gaps`) for callers that need one.
"""
