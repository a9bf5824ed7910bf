"""How many bytes a payload may have before the bus drops it without decoding it.

The contract bounds every string and list of the wire messages (``ShortText``, ``Text``, ``MAX_SLOTS``), so for
most payload types there is a largest JSON encoding any valid message can have: :func:`max_json_bytes` computes
it from the types (worst case: every character of a string a 6-byte ``\\uXXXX`` escape, every number its longest
form). The bus's bound for a topic is then the larger of the operator's ``BESS_MQTT_MAX_PAYLOAD_BYTES`` and that
contract maximum (doubled, plus room for fields a newer producer adds and for pretty-printed JSON), so the bound
never drops a message the contract accepts. Types with an unbounded part (a Figure's Plotly data, a history
answer's rows) get the bulk bound ``BESS_MQTT_MAX_BULK_PAYLOAD_BYTES`` instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from msgspec import inspect as mi

# a float's longest JSON form is "-1.7976931348623157e+308"; an int is 64 bits: "-9223372036854775808"
_FLOAT_BYTES = 24
_INT_BYTES = 20
# "0001-01-01T00:00:00.000000+23:59" with quotes, and a little more for a named zone or a longer fraction
_DATETIME_BYTES = 40
_ESCAPED_CHAR_BYTES = 6
# room for unknown fields of a newer producer (forward compatibility) and for indentation in pretty JSON
HEADROOM_BYTES = 64 * 1024
# an id pattern such as ``^[a-z0-9_-]{1,64}$`` bounds the length as surely as max_length does
_BOUNDED_PATTERN = re.compile(r"\^\[[^\]]*\]\{\d+,(\d+)\}\$")


def _max_chars(t: mi.StrType) -> int | None:
    if t.max_length is not None:
        return t.max_length
    match = _BOUNDED_PATTERN.fullmatch(t.pattern or "")
    return int(match.group(1)) if match else None


def _size(t: mi.Type) -> int | None:
    """Largest compact JSON encoding of a value of type ``t``; None when the type has no bound."""
    match t:
        case mi.Metadata():
            return _size(t.type)
        case mi.StrType():
            chars = _max_chars(t)
            return None if chars is None else 2 + _ESCAPED_CHAR_BYTES * chars
        case mi.FloatType():
            return _FLOAT_BYTES
        case mi.IntType():
            return _INT_BYTES
        case mi.BoolType():
            return len("false")
        case mi.NoneType():
            return len("null")
        case mi.DateTimeType():
            return _DATETIME_BYTES
        case mi.LiteralType():
            return max(len(json.dumps(value)) for value in t.values)
        case mi.UnionType():
            sizes = [_size(sub) for sub in t.types]
            return None if any(s is None for s in sizes) else max(s for s in sizes if s is not None)
        case mi.ListType() | mi.SetType() | mi.FrozenSetType() | mi.VarTupleType():
            item = _size(t.item_type)
            if t.max_length is None or item is None:
                return None
            return 2 + t.max_length * (item + 1)
        case mi.DictType():
            key, value = _size(t.key_type), _size(t.value_type)
            if t.max_length is None or key is None or value is None:
                return None
            return 2 + t.max_length * (key + value + 2)
        case mi.StructType():
            total = 2
            for field in t.fields:
                value = _size(field.type)
                if value is None:
                    return None
                total += len(json.dumps(field.encode_name)) + 1 + value + 1
            return total
        case _:
            return None  # Any, raw JSON and the like: no bound from the type


_computed: dict[type[Any], int | None] = {}


def max_json_bytes(payload: type[Any]) -> int | None:
    """Largest compact JSON encoding of a valid ``payload`` message (known fields only); None if unbounded."""
    if payload not in _computed:
        _computed[payload] = _size(mi.type_info(payload))
    return _computed[payload]


def payload_limit(payload: type[Any], *, max_payload_bytes: int, max_bulk_payload_bytes: int) -> int:
    """The byte bound for payloads of type ``payload``: never below what the contract lets a message be."""
    largest = max_json_bytes(payload)
    if largest is None:
        return max_bulk_payload_bytes
    return max(max_payload_bytes, 2 * largest + HEADROOM_BYTES)


__all__ = ["HEADROOM_BYTES", "max_json_bytes", "payload_limit"]
