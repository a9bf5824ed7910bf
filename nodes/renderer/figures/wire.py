"""A plotly figure -> the contract's :class:`~nodes.contract.messages.Figure`, as plain JSON values (pure)."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nodes.contract.messages import Figure
from nodes.renderer.figures.look import iso

DECIMALS = 4
"""Float arrays in :func:`to_message` output are rounded to this many decimals."""


def _array_json(value: np.ndarray[Any, Any]) -> list[Any]:
    if value.ndim > 1:
        return [_array_json(row) for row in value]
    kind = value.dtype.kind
    if kind == "M":
        ms = value.astype("datetime64[ms]")
        nat = np.isnat(ms)
        whole_seconds = bool((ms[~nat].astype(np.int64) % 1000 == 0).all())
        strings: list[Any] = np.datetime_as_string(ms, unit="s" if whole_seconds else "ms").tolist()
        if nat.any():
            strings = [None if missing else s for s, missing in zip(strings, nat.tolist(), strict=True)]
        return strings
    if kind == "f":
        # A figure is for display: 4 decimals (0.1 Wh, 0.0001 EUR/MWh) cut the JSON by ~40 % for measured data.
        value = np.round(value, DECIMALS)
        finite = np.isfinite(value)
        if finite.all():
            return list(value.tolist())
        # JSON has no NaN: a missing value is null (Plotly draws a gap there).
        obj = value.astype(object)
        obj[~finite] = None
        return list(obj.tolist())
    if kind in "iub":
        return list(value.tolist())
    return [json_safe(v) for v in value.tolist()]


def _typed_array_json(spec: dict[str, Any]) -> list[Any]:
    """Plotly >= 6 exports numeric arrays as base64 typed-array specs; subscribers get plain lists."""
    array = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
    shape = spec.get("shape")
    if shape:
        array = array.reshape(tuple(int(n) for n in str(shape).split(",")))
    return _array_json(array)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that any JSON encoder accepts: arrays (numpy or Plotly's base64 typed-array specs)
    become lists (NaN -> null), datetimes
    become ISO 8601 strings (aware ones in UTC with ``Z``; naive ones are taken as UTC), numpy scalars
    become Python numbers."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            return _typed_array_json(value)
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _array_json(value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, datetime):
        return iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def to_message(fig: go.Figure, figure_id: str, battery: str, generated_at: datetime) -> Figure:
    """The contract ``Figure`` for a plotly figure: ``data`` and ``layout`` as plain JSON values.

    Arrays are sent as plain lists (not Plotly's base64 typed arrays), so any subscriber can read them.
    """
    raw = fig.to_plotly_json()
    return Figure(
        figure=figure_id,
        battery=battery,
        generated_at=generated_at,
        data=[json_safe(trace) for trace in raw["data"]],
        layout=json_safe(raw["layout"]),
    )
