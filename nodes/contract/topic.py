"""The :class:`Topic` type (one MQTT topic: template, payload, QoS, retain, producers and consumers) and the
:class:`Request` pair; the topics themselves are declared in :mod:`nodes.contract.topics`.

A :class:`Topic` builds concrete names (``name``), subscription filters (``filter``), parses parameters back
(``parse``) and owns one cached msgspec encoder/decoder. Templates are written under the default root ``bess/v1``;
a deployment (or a test) may move the whole tree under another root, which is why every method takes ``root``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec

from nodes.contract.names import DEFAULT_ROOT, ID_SHAPE, PARAM_PATTERN, Role, id_problems, root_problems

P = TypeVar("P", bound=msgspec.Struct)
Q = TypeVar("Q", bound=msgspec.Struct)
A = TypeVar("A", bound=msgspec.Struct)


class TopicError(ValueError):
    """A topic id or root that would break the topic tree (wildcards, slashes, empty, upper case)."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid topic id, else raise :class:`TopicError` naming the problem."""
    problems = id_problems(value, what)
    if problems:
        raise TopicError(problems[0])
    return value


def check_root(root: str) -> str:
    """Validate a topic root such as ``bess/v1`` or ``test-1a2b/bess/v1``."""
    problems = root_problems(root)
    if problems:
        raise TopicError(problems[0])
    return root


@dataclass(frozen=True)
class Topic(Generic[P]):
    """A typed MQTT topic: one declaration shared by every publisher and subscriber."""

    path: str
    payload: type[P]
    qos: int
    retain: bool
    producers: tuple[Role, ...]
    consumers: tuple[Role, ...]
    doc: str
    example: P
    example_params: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = field(init=False, default=())
    _encoder: msgspec.json.Encoder = field(init=False, repr=False, compare=False)
    _decoder: msgspec.json.Decoder[P] = field(init=False, repr=False, compare=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Roles are values the broker ACL is derived from (deploy/auth.py): prose belongs in `doc`.
        for role in (*self.producers, *self.consumers):
            if not isinstance(role, Role):
                raise TypeError(f"topic {self.path}: producers/consumers must be Role members, got {role!r}")
        # Frozen dataclass: derived state is computed once here (object.__setattr__ is the documented way).
        params = tuple(PARAM_PATTERN.findall(self.path))
        pattern = re.escape(self.path)
        for param in params:
            pattern = pattern.replace(re.escape("{" + param + "}"), f"(?P<{param}>{ID_SHAPE})")
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_encoder", msgspec.json.Encoder())
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.payload))
        object.__setattr__(self, "_regex", re.compile(pattern))

    @property
    def template(self) -> str:
        """The full template under the default root, e.g. ``bess/v1/battery/{battery}/telemetry``."""
        return f"{DEFAULT_ROOT}/{self.path}"

    def name(self, *, root: str = DEFAULT_ROOT, **params: str) -> str:
        """A concrete topic name; every id is checked so no wildcard or slash can sneak into the tree."""
        if set(params) != set(self.params):
            raise TopicError(f"topic {self.template} needs parameters {self.params}, got {tuple(params)}")
        name = self.path
        for key, value in params.items():
            name = name.replace("{" + key + "}", check_id(value, key))
        return f"{root}/{name}"

    def filter(self, *, root: str = DEFAULT_ROOT, **fixed: str) -> str:
        """A subscription filter: unspecified parameters become ``+``."""
        name = self.path
        for param in self.params:
            value = check_id(fixed[param], param) if param in fixed else "+"
            name = name.replace("{" + param + "}", value)
        return f"{root}/{name}"

    def parse(self, topic: str, *, root: str = DEFAULT_ROOT) -> dict[str, str] | None:
        """The parameters of a concrete topic, or ``None`` if the topic is not one of ours."""
        prefix = root + "/"
        if not topic.startswith(prefix):
            return None
        match = self._regex.fullmatch(topic[len(prefix) :])
        return None if match is None else match.groupdict()

    def encode(self, message: P) -> bytes:
        """JSON bytes of ``message``."""
        return self._encoder.encode(message)

    def decode(self, payload: bytes) -> P:
        """Decode and validate; raises ``msgspec.DecodeError``/``ValidationError`` with the field path."""
        return self._decoder.decode(payload)


@dataclass(frozen=True)
class Request(Generic[Q, A]):
    """A request/response pair: a ``Q`` published on ``ask`` comes back as one ``A`` on ``answer``.

    The asker names ``answer`` (with ``client`` = its own node id) as the MQTT 5 response topic and gives
    correlation data; the answerer publishes there, echoing the correlation data. Declared here, next to the
    topics, so ``await bus.request(HISTORY, query)`` is typed by the declaration: it returns a ``HistoryResult``.
    """

    ask: Topic[Q]
    answer: Topic[A]

    def __post_init__(self) -> None:
        if self.answer.params != ("client",):
            raise TopicError(f"the answer topic {self.answer.template} must have exactly the parameter {{client}}")
        if self.ask.params:
            # one ask topic per pair: answerers subscribe it whole (shared among replicas), askers need no ids
            raise TopicError(f"the ask topic {self.ask.template} must have no parameters")
        if self.ask.retain or self.answer.retain:
            raise TopicError(f"requests and answers are not retained ({self.ask.template})")
