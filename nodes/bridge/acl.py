"""The broker topics outside this project's tree that secure mode (``BESS_MQTT_AUTH=1``) must grant for one bound
profile: the bridge's, and those of the device behind it (pure).

* The **bridge** (broker user ``bridge``) reads exactly the profile's reading topics and writes exactly its write
  topics and keep-alive, with the variables filled in (``N/c0619ab1b2c3/system/0/Dc/Battery/Soc``,
  ``W/c0619ab1b2c3/settings/0/Settings/CGwacs/AcPowerSetPoint``, ``R/c0619ab1b2c3/keepalive``): no wildcard, so
  it sees nothing else of the installation (mosquitto checks a read grant per delivered message, so a
  subscription to exactly these topics needs nothing more).
* The **device** (its own user, ``BESS_BRIDGE_DEVICE_USER``) is the mirror image: it publishes what the bridge reads
  and reads what the bridge writes. A profile's ``device_account`` widens its publishing (and, if it must, its
  reading) to the device's own namespace: a GX publishes every value of the installation after a keep-alive
  (``N/<portal id>/#``), and a denied publish is dropped without a word (a denied QoS 1 publish even closes the
  connection, mosquitto 2.0.11). Every filter starts with a plain level, and every topic of the profile must be
  covered by one, so a profile cannot leave the device unable to publish what the bridge reads.

``deploy/auth.py`` turns these into ACL lines and checks them again (nothing under the topic root, no ``$``
level, nothing a line of the ACL file could not hold). ``python -m nodes.bridge acl`` prints them
(:mod:`nodes.bridge.acl_command`): deploy is standard library only and cannot load a profile itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodes.bridge.profile import BoundProfile, ProfileError


def covers(topic_filter: str, topic: str) -> bool:
    """True if the MQTT filter ``topic_filter`` matches the concrete ``topic``."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels) or (level != "+" and level != t_levels[index]):
            return False
    return len(f_levels) == len(t_levels)


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class BrokerTopics:
    """The foreign topics of one bound profile, in profile order, each once."""

    #: concrete topics the bridge subscribes to (the readings)
    bridge_read: tuple[str, ...]
    #: concrete topics the bridge publishes (the writes of every action, then the keep-alive)
    bridge_write: tuple[str, ...]
    #: filters the device may publish on (covering every reading topic)
    device_publish: tuple[str, ...]
    #: filters the device may read (covering every write and the keep-alive)
    device_read: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """What ``python -m nodes.bridge acl`` prints (with the profile and battery around it)."""
        return {"bridge": {"read": list(self.bridge_read), "write": list(self.bridge_write)},
                "device": {"publish": list(self.device_publish), "read": list(self.device_read)}}


def broker_topics(bound: BoundProfile) -> BrokerTopics:
    """The topics of ``bound`` to grant; :class:`ProfileError` (naming the field) when a ``device_account`` filter
    leaves out a topic of the profile, or a filled-in filter is not one."""
    profile = bound.profile
    readings = [profile.readings.soc.topic]
    if profile.readings.power is not None:
        readings.append(profile.readings.power.topic)
    writes = [step.topic for action in ("charge", "discharge", "idle") for step in profile.writes.steps(action)]
    if profile.keepalive is not None:
        writes.append(profile.keepalive.topic)
    bridge_read = _unique([bound.topic(template) for template in readings])
    bridge_write = _unique([bound.topic(template) for template in writes])
    account = profile.device_account
    if account is None:
        return BrokerTopics(bridge_read, bridge_write, bridge_read, bridge_write)
    publish = _unique([bound.topic(template) for template in account.publishes])
    read = bridge_write if account.reads is None else _unique([bound.topic(template) for template in account.reads])
    for kind, filters, topics, what in (("publishes", publish, bridge_read, "publish what the bridge reads"),
                                        ("reads", read, bridge_write, "read what the bridge writes")):
        for topic in topics:
            if not any(covers(topic_filter, topic) for topic_filter in filters):
                raise ProfileError(f"profile {profile.name}: device_account.{kind}: no filter covers {topic}: "
                                   f"the device could not {what}")
    return BrokerTopics(bridge_read, bridge_write, publish, read)


__all__ = ["BrokerTopics", "broker_topics", "covers"]
