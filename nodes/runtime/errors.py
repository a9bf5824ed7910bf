"""The bus's exceptions, shared by every transport (MQTT and in-memory) and caught by node shells."""

from __future__ import annotations


class BusUnavailable(RuntimeError):
    """The broker cannot be reached (or did not acknowledge in time)."""


class PublishRefused(BusUnavailable):
    """The broker answered a publish with a failure reason code (MQTT 5 PUBACK >= 0x80, e.g. 0x87 not authorised)."""


class BusRefused(BusUnavailable):
    """The broker refused the login (bad credentials, not authorised, banned): retrying cannot help."""


class SubscriptionOverlap(ValueError):
    """Two subscriptions of one bus would match the same topic name.

    Refused when the second is made, instead of deciding at delivery time which handler gets a message (or
    handing it to both, while the broker may deliver one copy per matching filter: MQTT 5 leaves that open).
    """


__all__ = ["BusRefused", "BusUnavailable", "PublishRefused", "SubscriptionOverlap"]
