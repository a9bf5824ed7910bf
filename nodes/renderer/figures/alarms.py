"""The alarm history table: every alarm raised in the window, when it cleared and how long it lasted (pure).

Built from the stored transitions (the recorder's ``alarms`` history kind: one row per raise and per clear, a
clear naming when it was raised), so it shows what was published, not a guess. An alarm raised before the
window whose clear falls inside it is listed with its raise time; one raised and not cleared is ``active``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import plotly.graph_objects as go

from nodes.contract.messages import Alarm, HistoryResult
from nodes.renderer.figures.look import COLORS, TEMPLATE, finish, info
from nodes.renderer.figures.plan import table_trace

MAX_ROWS = 200
HISTORY_HELP = (
    "Every alarm of this battery raised or cleared in the window, newest first, as the alarms node published it "
    "(battery/{battery}/alarm/{rule}) and the recorder stored it. Alarms are raised and cleared with hysteresis "
    "(README, Alarms): a condition must hold for the rule's delay before it is raised, and be gone for its delay "
    "before it is cleared."
)
SEVERITY_FILL = {"critical": "#fde2e2", "warning": "#fff4d6", "info": "#e8f0fe"}


def alarms_from_history(result: HistoryResult) -> list[Alarm]:
    """The stored transitions of a history answer (``time`` is each one's ``since``); rows that are not an
    alarm (a hand-written point) are skipped."""
    found: list[Alarm] = []
    for row in result.rows:
        values = dict(zip(result.columns, row, strict=False))
        values["since"] = values.pop("time", None)
        try:
            found.append(msgspec.convert({k: v for k, v in values.items() if v is not None}, Alarm))
        except msgspec.ValidationError:
            continue
    return found


def _when(value: datetime) -> str:
    return f"{value.astimezone(UTC):%m-%d %H:%M:%S}"


def _lasted(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def history_rows(alarms: Sequence[Alarm], now: datetime) -> list[dict[str, str]]:
    """One row per alarm (its raise and, if any, its clear), newest raise first, at most :data:`MAX_ROWS`."""
    clears = {(a.rule, a.raised_at): a for a in alarms if a.state == "cleared" and a.raised_at is not None}
    rows: list[tuple[datetime, dict[str, str]]] = []
    raises = {(a.rule, a.since): a for a in alarms if a.state == "raised"}
    for key in sorted(set(raises) | set(clears), key=lambda k: k[1], reverse=True):
        raised, cleared = raises.get(key), clears.get(key)
        first = raised or cleared
        assert first is not None
        began = key[1]
        ended = cleared.since if cleared is not None else None
        rows.append((began, {
            "raised (UTC)": _when(began),
            "cleared (UTC)": _when(ended) if ended is not None else "active",
            "lasted": _lasted(((ended or now) - began).total_seconds()) + ("" if ended else " so far"),
            "severity": first.severity,
            "rule": first.rule,
            "message": (raised or first).message,
        }))
    return [row for _, row in rows[:MAX_ROWS]]


def alarm_history_figure(alarms: Sequence[Alarm], now: datetime, *, note: str | None = None,
                         uirevision: str | None = None) -> go.Figure:
    """The alarm history table of one battery over the window (``note``: why there is no history to show)."""
    rows = history_rows(alarms, now)
    layout = {
        "template": TEMPLATE,
        "title": {"text": f"Alarm history · {len(rows)} alarm(s) in this window"},
        "height": 140 + 24 * min(max(len(rows), 1), 12),
        "margin": {"l": 16, "r": 16, "t": 56, "b": 16},
        "uirevision": uirevision or "alarms",
        "meta": {"figure": "alarms"},
        "annotations": [info("how?", HISTORY_HELP)],
        "xaxis": {"visible": False},
        "yaxis": {"visible": False},
    }
    if not rows:
        return finish([], layout, [note or "no alarm in this window"], None)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    fills = [SEVERITY_FILL.get(s, "#ffffff") for s in columns["severity"]]
    table = table_trace(columns, ["left"] * len(columns), [1.1, 1.1, 0.8, 0.8, 1.3, 4.0],
                   fill={"color": [fills] * len(columns)})
    layout["annotations"].append({"name": "legend", "text": "red: critical · amber: warning · blue: info",
                                  "xref": "paper", "yref": "paper", "x": 0, "y": 1.0, "xanchor": "left",
                                  "yanchor": "bottom", "showarrow": False,
                                  "font": {"size": 11, "color": COLORS["muted"]}})
    return finish([table], layout, [note] if note else [], None)


__all__ = ["HISTORY_HELP", "MAX_ROWS", "alarm_history_figure", "alarms_from_history", "history_rows"]
