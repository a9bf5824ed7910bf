"""Who may publish and who consumes each topic, as data: ``nodes/contract/access.json``, generated from
``topics.py`` by ``python -m nodes.contract`` (a test fails when it is out of date) and read by ``deploy/auth.py``.

Why a generated file rather than an import: ``topics.py`` needs msgspec (payload types, examples) and deploy runs
before the virtualenv exists, so deploy reads this file with the standard library instead. It holds only what the
broker ACL needs (constant name, path template, producer and consumer roles); everything else stays in
``topics.py``. This module is standard library only, like :mod:`nodes.contract.names`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nodes.contract.names import PARAM_PATTERN, Role

#: The generated file, next to this module.
ACCESS_FILE: Final = Path(__file__).with_name("access.json")


class AccessError(ValueError):
    """access.json is missing, unreadable or names something that is not a :class:`Role`."""


@dataclass(frozen=True)
class TopicAccess:
    """What the ACL needs of one topic: its contract name (``TELEMETRY``), path template and roles."""

    name: str
    path: str
    producers: tuple[Role, ...]
    consumers: tuple[Role, ...]
    #: for a topic outside the topic root (Home Assistant's discovery): the setting naming its prefix
    prefix_setting: str | None = None
    #: ... and the prefix when that setting is not given
    default_prefix: str | None = None

    @property
    def params(self) -> tuple[str, ...]:
        """The ``{param}`` names of the path, in order."""
        return tuple(PARAM_PATTERN.findall(self.path))

    def filter(self, root: str, **bound: str) -> str:
        """The topic filter under ``root``: bound parameters filled in (unchecked), the others ``+``."""
        path = self.path
        for param in self.params:
            path = path.replace("{" + param + "}", bound.get(param, "+"))
        return f"{root}/{path}"

    def root_of(self, root: str, prefixes: Mapping[str, str]) -> str:
        """Where this topic lives: ``root``, or (outside the root) the prefix its setting names in ``prefixes``."""
        if self.prefix_setting is None:
            return root
        return prefixes.get(self.prefix_setting) or self.default_prefix or root


def render(entries: Iterable[TopicAccess]) -> str:
    """The text of access.json for ``entries``: one topic a line, so a change of rights is a one-line diff."""
    rows = [
        json.dumps(
            {
                "name": entry.name,
                "path": entry.path,
                "producers": [role.value for role in entry.producers],
                "consumers": [role.value for role in entry.consumers],
                **(
                    {"prefix_setting": entry.prefix_setting, "default_prefix": entry.default_prefix}
                    if entry.prefix_setting is not None
                    else {}
                ),
            }
        )
        for entry in entries
    ]
    note = json.dumps("python -m nodes.contract from nodes/contract/topics.py: do not edit")
    return "{\n" + f'  "generated_by": {note},\n  "topics": [\n    ' + ",\n    ".join(rows) + "\n  ]\n}\n"


def load_access(path: Path = ACCESS_FILE) -> tuple[TopicAccess, ...]:
    """Every topic of access.json, in contract order; :class:`AccessError` names what is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AccessError(f"cannot read {path} ({exc}); run `python -m nodes.contract`") from exc
    topics = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(topics, list) or not topics:
        raise AccessError(f"{path} has no list of topics; run `python -m nodes.contract`")
    return tuple(_entry(path, item) for item in topics)


def _entry(path: Path, item: Any) -> TopicAccess:
    if not isinstance(item, dict):
        raise AccessError(f"{path}: a topic entry is not an object: {item!r}")
    name, template = item.get("name"), item.get("path")
    if not isinstance(name, str) or not isinstance(template, str):
        raise AccessError(f"{path}: a topic entry has no name or path: {item!r}")
    producers, consumers = _roles(path, name, item.get("producers")), _roles(path, name, item.get("consumers"))
    setting, default = item.get("prefix_setting"), item.get("default_prefix")
    if setting is not None and not (isinstance(setting, str) and isinstance(default, str)):
        raise AccessError(f"{path}: {name}: prefix_setting and default_prefix must be strings")
    return TopicAccess(name, template, producers, consumers, setting, default)


def _roles(path: Path, name: str, values: Any) -> tuple[Role, ...]:
    if not isinstance(values, list):
        raise AccessError(f"{path}: {name}: producers/consumers must be lists of roles")
    try:
        return tuple(Role(value) for value in values)
    except ValueError:
        unknown = [value for value in values if value not in set(Role)]
        raise AccessError(f"{path}: {name}: unknown role(s) {unknown} (see nodes/contract/names.py Role)") from None
