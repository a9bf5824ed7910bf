"""Alarm rules for every battery (pure: inputs, settings and the clock in; raised/cleared transitions out).

:mod:`~nodes.alarms.rules` says when each condition holds, :mod:`~nodes.alarms.state` raises and clears with
hysteresis in time and value so nothing flaps, :mod:`~nodes.alarms.settings` reads the per-battery settings
(``BESS_ALARMS``). The message published per battery and rule is :class:`nodes.contract.alarms.Alarm`.
"""
