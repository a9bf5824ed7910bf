"""The alarm message: one retained message per battery and rule (``battery/{battery}/alarm/{rule}``).

Why retained and one topic per rule: a dashboard or Home Assistant that connects later must see every alarm
that is up now (a binary sensor per topic), and a cleared alarm must replace its raised message rather than
leave it standing; ``state: cleared`` does that. The topic is :data:`nodes.contract.topics.ALARM`, published by
the alarms node (:mod:`nodes.alarms.node`); the rules that raise and clear it are :mod:`nodes.alarms`.

The Struct lives with every other wire payload in :mod:`nodes.contract.messages` (``ALL_MESSAGES``, the generated
schemas); this module names the alarm's part of the contract for the modules that only need that.
"""

from __future__ import annotations

from nodes.contract.messages import SEVERITIES, Alarm, AlarmState, AlarmValue, Severity

__all__ = ["SEVERITIES", "Alarm", "AlarmState", "AlarmValue", "Severity"]
