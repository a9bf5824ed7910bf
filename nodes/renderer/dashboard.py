"""What the dashboard shows, and the fan-out of every change to the connected browsers (no HTTP, no MQTT here).

The renderer's node shell feeds a :class:`DashboardState` (``set_figures``, ``set_status``, ``set_state``,
``set_control``, ``set_telemetry``, ``set_alarm``); every change is stored as the latest value and pushed to the
event streams of the browsers that show it (:mod:`nodes.renderer.web` serves them). A figure provider
(:data:`FigureProvider`) draws windows other than the default one on demand.

Event data is one JSON envelope: ``{"kind": ..., "battery": ... | null, "data": <payload>}``. A node status
belongs to the topic it arrived on: ``set_status(node, status)`` keys it by that name, never by the name
inside the payload (a node cannot report for another).

Slow browsers: each SSE client has a bounded queue keyed by what the event is about (figure id, node,
battery); a newer value replaces a queued older one (all events are latest-value), and when the queue is
still full the oldest entry is dropped and counted. A stalled browser therefore costs bounded memory and, on
catching up, sees the latest state rather than a backlog.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

import msgspec

from nodes.contract.messages import (
    SEVERITIES,
    Alarm,
    BatterySpec,
    BatteryState,
    ControlMode,
    Figure,
    NodeStatus,
    Schedule,
    Telemetry,
)
from nodes.contract.names import ID_PATTERN, ID_SHAPE
from nodes.renderer import auth as dashboard_auth
from nodes.renderer import fleet
from nodes.renderer.csvout import Table
from nodes.renderer.diagnosis import DiagnosticsPanel
from nodes.renderer.figures import FIGURE_IDS
from nodes.renderer.timezone import DEFAULT_ZONE
from nodes.renderer.windows import TimeWindow

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

@dataclass(frozen=True)
class WindowFigures:
    """Figures for one window: encoded contract Figures by id, and when the page should ask again."""

    figures: dict[str, bytes]
    refresh_s: float | None

    @classmethod
    def of(cls, figures: Sequence[Figure], refresh_s: float | None) -> WindowFigures:
        """The encoded form of contract Figures, as the dashboard serves them."""
        return cls({figure.figure: _encoder.encode(figure) for figure in figures}, refresh_s)


FigureProvider = Callable[[str, TimeWindow], Awaitable[WindowFigures]]
"""``provider(battery, window)``: the figures of a battery for a viewer's window (computed on demand)."""
DiagnosticsProvider = Callable[[str, TimeWindow], Awaitable[DiagnosticsPanel]]
"""``provider(battery, window)``: the diagnostics panel of a battery for a viewer's window."""
ExportProvider = Callable[[str, TimeWindow, str], Awaitable[Table]]
"""``provider(battery, window, series)``: the CSV export of one panel of a battery page."""
INDEX_QUEUE_PER_BATTERY = 6
"""An index stream's queue holds this many events per battery (telemetry, state, control, alarms, fleet), so a
fleet of 200 does not push one battery's latest reading out of a slow browser's queue."""


EventKey = tuple[str, str | None, str]


@dataclass(eq=False)
class EventClient:
    """One connected event stream: a bounded queue of frames keyed by what they are about."""

    battery: str | None
    limit: int
    kinds: frozenset[str] | None = None
    only: frozenset[str] | None = None
    """An index page of many: the batteries of its rows (events of the others would only be dropped there)."""
    pending: OrderedDict[EventKey, bytes] = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: int = 0
    closed: bool = False

    def push(self, key: EventKey, frame: bytes) -> None:
        if key in self.pending:
            self.pending[key] = frame
            self.pending.move_to_end(key)
        else:
            self.pending[key] = frame
            while len(self.pending) > self.limit:
                self.pending.popitem(last=False)
                self.dropped += 1
        self.wake.set()

    def drain(self) -> list[bytes]:
        frames = list(self.pending.values())
        self.pending.clear()
        self.wake.clear()
        return frames

    def wants(self, kind: str, battery: str | None) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.only is not None and battery is not None and battery not in self.only:
            return False
        return self.battery is None or battery is None or battery == self.battery


def sse_frame(kind: str, battery: str | None, payload: bytes) -> bytes:
    """One server-sent event: ``event: kind`` and the envelope ``{"kind", "battery", "data": payload}``.

    ``payload`` must be one JSON value; it is spliced in as bytes (never re-encoded, figures are large).
    """
    envelope = b'{"kind":%s,"battery":%s,"data":%s}' % (_encoder.encode(kind), _encoder.encode(battery), payload)
    lines = envelope.split(b"\n")  # msgspec never emits raw newlines; a pretty-printed payload might
    return b"event: " + kind.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def control_summary(control: ControlMode | None, now: datetime) -> dict[str, Any]:
    """What the status strip and the index say about who commands a battery (from the CONTROL topic)."""
    if control is None:
        return {"mode": None, "text": "Control: planner default (no mode set)", "until": None}
    active = control.mode_at(now)
    if active is None:
        until = control.until.astimezone(UTC).strftime("%H:%M UTC") if control.until else ""
        return {"mode": None, "text": f"Control: planner default ({control.mode} ended {until})", "until": None}
    text = f"Control: {control.mode}"
    if control.until is not None:
        text += f" until {control.until.astimezone(UTC):%H:%M} UTC"
    why = control.reason or (f"set by {control.source}" if control.source else "")
    if why:
        text += f" ({why})"
    return {"mode": control.mode, "text": text, "until": control.until}


class DashboardState:
    """Latest values for the dashboard and the fan-out of live events to browsers.

    Call its setters from the event loop that runs the web app (they do not block and are not thread-safe).
    ``figure_provider`` builds figures for a window other than the default (None: only the default exists).
    """

    def __init__(
        self,
        *,
        figure_provider: FigureProvider | None = None,
        auth: dashboard_auth.DashboardAuth | None = None,
        queue_size: int = 64,
        keepalive_s: float = 15.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.figure_provider = figure_provider
        self.auth = auth
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self.clock = clock
        self.figures: dict[str, dict[str, bytes]] = {}
        """battery -> figure id -> the contract Figure of the default window as JSON bytes (ready to send)."""
        self.statuses: dict[str, NodeStatus] = {}
        """node (from the status topic) -> its latest status."""
        self.states: dict[str, BatteryState] = {}
        self.controls: dict[str, ControlMode] = {}
        self.telemetry: dict[str, Telemetry] = {}
        self.alarms: dict[str, dict[str, Alarm]] = {}
        """battery -> rule -> the latest alarm message (raised or cleared) from its retained topic."""
        self.specs: dict[str, BatterySpec] = {}
        self.schedules: dict[str, Schedule] = {}
        self.display_tz = DEFAULT_ZONE
        """``BESS_DISPLAY_TZ``: the zone a page shows times in by default (its toggle switches to UTC and back)."""
        self.diagnostics_provider: DiagnosticsProvider | None = None
        self.export_provider: ExportProvider | None = None
        self.batteries: set[str] = set()
        self.on_view: Callable[[str], None] | None = None
        """Called with the battery when a live figure stream opens for it (the renderer draws it at once)."""
        self._clients: set[EventClient] = set()
        self._unkeyed = count()
        self.events_published = 0

    # -- inputs (called by the node shell) ----------------------------------------------------------------

    def add_battery(self, battery: str) -> None:
        """Make a battery known (listed on the index) before anything arrives for it."""
        if not ID_PATTERN.fullmatch(battery):
            raise ValueError(f"battery id {battery!r} is not {ID_SHAPE}")
        self.batteries.add(battery)

    def set_figure(self, figure: Figure) -> None:
        """Store a rendered figure (of the default window) and push it to the browsers showing its battery."""
        self.set_figure_json(figure.battery, figure.figure, _encoder.encode(figure))

    def set_figures(self, battery: str, figures: Sequence[Figure]) -> None:
        """Store a battery's whole set of figures (of the default window) and push each to its browsers."""
        for figure in figures:
            self.set_figure_json(battery, figure.figure, _encoder.encode(figure))

    def set_figure_json(self, battery: str, figure_id: str, payload: bytes) -> None:
        """As :meth:`set_figure`, for a Figure already encoded as JSON (e.g. the bytes just published)."""
        self.add_battery(battery)
        self.figures.setdefault(battery, {})[figure_id] = payload
        self.publish_event("figure", battery, payload, key=figure_id)

    def set_status(self, node: str, status: NodeStatus) -> None:
        """Store the status that arrived on ``node``'s status topic and push it to every browser.

        The key is the topic's node, not ``status.node``: a node's payload cannot speak for another node.
        """
        if status.node != node:
            log.warning("status on node/%s/status names node %r: shown as %r", node, status.node[:64], node)
            status = msgspec.structs.replace(status, node=node)
        self.statuses[node] = status
        self.publish_event("status", None, _encoder.encode(status), key=node)

    def forget_status(self, node: str) -> None:
        """A node removed for good (its retained status cleared): browsers drop its chip and notes."""
        if self.statuses.pop(node, None) is not None:
            self.publish_event("status", None, _encoder.encode({"node": node, "removed": True}), key=node)

    def set_state(self, battery: str, state: BatteryState) -> None:
        """Store what a battery is doing (mode, command lease) and push it."""
        self.add_battery(battery)
        self.states[battery] = state
        self.publish_event("state", battery, _encoder.encode(state), key="state")

    def set_control(self, battery: str, control: ControlMode) -> None:
        """Store who commands a battery (autopilot, manual, idle) and push it."""
        self.add_battery(battery)
        self.controls[battery] = control
        self.publish_event("control", battery, self._control_payload(battery), key="control")

    def set_telemetry(self, battery: str, telemetry: Telemetry) -> None:
        """Store the latest measurement (the live readout and ``data-ts``) and push it."""
        self.add_battery(battery)
        previous = self.telemetry.get(battery)
        if previous is not None and previous.ts > telemetry.ts:
            return  # a back-dated write is history, not the latest reading
        self.telemetry[battery] = telemetry
        self.publish_event("telemetry", battery, _encoder.encode(telemetry), key="telemetry")

    def set_alarm(self, battery: str, alarm: Alarm, rule: str | None = None) -> None:
        """Store a battery's alarm (by the rule of its topic) and push it: the banners show the raised ones."""
        self.add_battery(battery)
        key = rule or alarm.rule
        self.alarms.setdefault(battery, {})[key] = alarm
        self.publish_event("alarm", battery, _encoder.encode(alarm), key=key)

    def set_spec(self, battery: str, spec: BatterySpec) -> None:
        """Store a battery's spec (the fleet table's SOC %) and push its fleet row to the index."""
        self.add_battery(battery)
        self.specs[battery] = spec
        self._publish_row(battery)

    def set_schedule(self, battery: str, schedule: Schedule) -> None:
        """Store a battery's current plan (the fleet table's plan revenue today) and push its fleet row."""
        self.add_battery(battery)
        self.schedules[battery] = schedule
        self._publish_row(battery)

    def _publish_row(self, battery: str) -> None:
        self.publish_event("fleet", battery, _encoder.encode(self.fleet_row(battery)), key="fleet")

    # -- derived views -------------------------------------------------------------------------------------

    def fleet_row(self, battery: str) -> fleet.FleetRow:
        """The battery's row of the fleet table (:mod:`nodes.renderer.fleet`)."""
        now = self.clock()
        control = control_summary(self.controls.get(battery), now)
        return fleet.fleet_row(
            battery, now=now, telemetry=self.telemetry.get(battery), state=self.states.get(battery),
            control_mode=control["mode"], control_text=control["text"], alarms=self.active_alarms(battery),
            spec=self.specs.get(battery), schedule=self.schedules.get(battery), notes=self.notes_for(battery),
        )

    def fleet(self) -> tuple[list[fleet.FleetRow], fleet.FleetTotals]:
        """Every battery's row (by id) and the fleet's totals."""
        rows = [self.fleet_row(b) for b in sorted(self.batteries)]
        return rows, fleet.fleet_totals(rows)

    def active_alarms(self, battery: str) -> list[Alarm]:
        """The battery's alarms up now, most urgent first (then the oldest first)."""
        raised = [a for a in self.alarms.get(battery, {}).values() if a.state == "raised"]
        return sorted(raised, key=lambda a: (-SEVERITIES.index(a.severity), a.since))

    def notes_for(self, battery: str) -> dict[str, str]:
        """Per-battery notes from the nodes' statuses (``NodeStatus.details``), by node."""
        return {node: s.details[battery] for node, s in sorted(self.statuses.items()) if battery in s.details}

    def _control_payload(self, battery: str) -> bytes:
        control = self.controls.get(battery)
        summary = control_summary(control, self.clock())
        return _encoder.encode({"control": control, **summary})

    def summary(self, battery: str) -> dict[str, Any]:
        """One battery's state for the index: SOC, power, modes, telemetry age, notes."""
        now = self.clock()
        telemetry = self.telemetry.get(battery)
        state = self.states.get(battery)
        control = control_summary(self.controls.get(battery), now)
        return {
            "battery": battery,
            "href": f"/battery/{battery}",
            "figures": figure_order(self.figures.get(battery, {})),
            "mode": state.mode if state else None,
            "control_mode": control["mode"],
            "control": control["text"],
            "soc_kwh": telemetry.soc_kwh if telemetry else None,
            "power_kw": telemetry.power_kw if telemetry else None,
            "telemetry_ts": telemetry.ts if telemetry else None,
            "telemetry_age_s": round((now - telemetry.ts).total_seconds(), 1) if telemetry else None,
            "notes": self.notes_for(battery),
            "alarms": self.active_alarms(battery),
        }

    # -- fan-out -------------------------------------------------------------------------------------------

    def publish_event(self, kind: str, battery: str | None, payload_bytes: bytes, *, key: str | None = None) -> None:
        """Push one event to every connected client that shows ``battery`` (``None``: to all clients).

        ``payload_bytes`` is one JSON value. Events with the same ``(kind, battery, key)`` replace each
        other in a slow client's queue; without a key an event never replaces another. A full queue drops
        its oldest event.
        """
        frame = sse_frame(kind, battery, payload_bytes)
        event_key: EventKey = (kind, battery, key if key is not None else f"#{next(self._unkeyed)}")
        self.events_published += 1
        for client in self._clients:
            if client.wants(kind, battery):
                client.push(event_key, frame)

    def snapshot_frames(self, battery: str | None, *, figures: bool = True,
                        only: frozenset[str] | None = None) -> list[bytes]:
        """What a new client sees first: statuses, battery states, control modes, latest telemetry and alarms,
        then figures (of the default window, when ``figures``); ``only``: of those batteries alone."""
        frames = [sse_frame("status", None, _encoder.encode(s)) for s in self.statuses.values()]

        def shown(name: str) -> bool:
            return (battery is None or name == battery) and (only is None or name in only)

        for name, state in self.states.items():
            if shown(name):
                frames.append(sse_frame("state", name, _encoder.encode(state)))
        for name in self.controls:
            if shown(name):
                frames.append(sse_frame("control", name, self._control_payload(name)))
        for name, telemetry in self.telemetry.items():
            if shown(name):
                frames.append(sse_frame("telemetry", name, _encoder.encode(telemetry)))
        for name, by_rule in self.alarms.items():
            if shown(name):
                frames += [sse_frame("alarm", name, _encoder.encode(alarm)) for alarm in by_rule.values()]
        if battery is not None and figures:
            for figure_id in figure_order(self.figures.get(battery, {})):
                frames.append(sse_frame("figure", battery, self.figures[battery][figure_id]))
        return frames

    def subscribe(self, battery: str | None, kinds: frozenset[str] | None = None,
                  only: frozenset[str] | None = None) -> EventClient:
        """Register an event-stream client (pair with :meth:`unsubscribe`); ``only``: events of those batteries
        alone (and of none)."""
        rows = len(only) if only is not None else len(self.batteries)
        limit = self.queue_size if battery is not None else max(self.queue_size, INDEX_QUEUE_PER_BATTERY * rows + 64)
        client = EventClient(battery=battery, limit=limit, kinds=kinds, only=only)
        self._clients.add(client)
        if battery is not None and kinds is None and self.on_view is not None:
            self.on_view(battery)
        return client

    def figure_viewers(self) -> set[str]:
        """The batteries with a live figure stream open (a battery page on the default window)."""
        return {c.battery for c in self._clients if c.battery is not None and c.kinds is None}

    def unsubscribe(self, client: EventClient) -> None:
        """Forget a client; its queue is dropped."""
        self._clients.discard(client)
        if client.dropped:
            log.info("event client for %s dropped %d events (slow reader)", client.battery, client.dropped)

    @property
    def client_count(self) -> int:
        """Connected event-stream clients."""
        return len(self._clients)

    def close(self) -> None:
        """End every open event stream (call on shutdown so the server does not wait for browsers)."""
        for client in self._clients:
            client.closed = True
            client.wake.set()


def figure_order(figures: dict[str, bytes]) -> list[str]:
    """Figure ids in dashboard order (:data:`FIGURE_IDS`), then any others alphabetically."""
    known = [f for f in FIGURE_IDS if f in figures]
    return known + sorted(f for f in figures if f not in FIGURE_IDS)


__all__ = ["DashboardState", "DiagnosticsProvider", "EventClient", "ExportProvider", "FigureProvider", "WindowFigures",
           "control_summary", "figure_order", "sse_frame"]
