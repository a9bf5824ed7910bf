"""Device topics of a bridge profile (Victron's ``N/<portal id>/#``), checked before deploy/auth.py puts them into the
broker's ACL: one line of the ACL file each, a valid filter of the device's own namespace, and never touching this
project's topic root, ``$SYS`` or the probe topic, so that no profile widens anyone's rights on our own topics.
Standard library only.
"""

from __future__ import annotations

from deploy.mqtt_probe import PROBE_TOPIC_PREFIX

#: Longest foreign topic filter put into the ACL (a profile's topics are a few levels, not a paragraph).
FOREIGN_FILTER_MAX_CHARS = 512


def intersects(one: str, other: str) -> bool:
    """True if some topic matches both filters."""
    a_levels, b_levels = one.split("/"), other.split("/")
    for a, b in zip(a_levels, b_levels, strict=False):
        if "#" in (a, b):
            return True
        if a != b and "+" not in (a, b):
            return False
    if len(a_levels) == len(b_levels):
        return True
    longer = a_levels if len(a_levels) > len(b_levels) else b_levels
    return longer[min(len(a_levels), len(b_levels))] == "#"  # "x/#" also matches "x"


def foreign_filter_problems(topic_filter: str, root: str, *, wildcards: bool) -> list[str]:
    """Why a device topic (filter) from a bridge profile cannot go into the ACL (empty when it can): one line of
    the ACL file, a valid filter of the device's own namespace, never touching the topic root, ``$SYS`` or the
    probe topic (a profile must not widen any user's rights on this project's own topics)."""
    shown = repr(topic_filter[:80])
    if not topic_filter or len(topic_filter) > FOREIGN_FILTER_MAX_CHARS:
        return [f"device topic {shown}: must be 1-{FOREIGN_FILTER_MAX_CHARS} characters"]
    if any(char.isspace() or not char.isprintable() for char in topic_filter):
        return [f"device topic {shown}: no spaces or control characters (one ACL line each)"]
    levels = topic_filter.split("/")
    if any(not level for level in levels):
        return [f"device topic {shown}: has an empty level"]
    for index, level in enumerate(levels):
        wild = "+" in level or "#" in level
        if wild and not wildcards:
            return [f"device topic {shown}: the bridge's topics are concrete (no '+' or '#')"]
        if wild and (level not in ("+", "#") or (level == "#" and index != len(levels) - 1)):
            return [f"device topic {shown}: '+' is a whole level and '#' only the whole last one"]
    if levels[0] in ("+", "#") or levels[0].startswith("$"):
        return [f"device topic {shown}: must start with a plain level of the device's namespace"]
    for ours in (f"{root}/#", f"{PROBE_TOPIC_PREFIX}/#"):
        if intersects(topic_filter, ours):
            return [f"device topic {shown}: overlaps {ours}, this project's own topics"]
    return []


__all__ = ["FOREIGN_FILTER_MAX_CHARS", "foreign_filter_problems", "intersects"]
