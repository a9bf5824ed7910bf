"""Every payload that crosses MQTT, as a msgspec Struct.

Wire Structs are forward compatible: new fields get defaults and unknown fields are ignored, so an older node
keeps reading what a newer node publishes. Units live in field names (``soc_kwh``, ``power_kw``,
``price_per_mwh``); money and prices are in the ``currency`` (ISO 4217) the message names; timestamps are
timezone-aware (``Meta(tz=True)``) and published as UTC.

Numbers carry bounds on purpose: JSON allows ``1e400`` (infinity after decoding), and a bound turns that,
NaN and negative energies into a validation error at the boundary instead of a corrupt point in the database.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from nodes.contract.names import ID_REGEX, ID_SHAPE

# -- constrained scalar types (one place for the bounds, reused by every Struct) ---------------------------

UtcDatetime = Annotated[
    datetime, Meta(tz=True, description="RFC 3339 timestamp with a zone, e.g. 2025-01-16T10:00:00Z")
]
EnergyKwh = Annotated[float, Meta(ge=0.0, le=1e7, description="energy in kWh")]
PowerKw = Annotated[float, Meta(ge=0.0, le=1e7, description="power in kW")]
SignedPowerKw = Annotated[
    float, Meta(ge=-1e7, le=1e7, description="power in kW: + discharging (to the grid), - charging")
]
PricePerMwh = Annotated[
    float, Meta(ge=-1e5, le=1e5, description="price per MWh in the message's currency (may be negative)")
]
Money = Annotated[float, Meta(ge=-1e12, le=1e12, description="an amount of money in the message's currency")]
CURRENCY_PATTERN = "^[A-Z]{3}$"
CURRENCY_RE = re.compile(CURRENCY_PATTERN)
Currency = Annotated[
    str,
    Meta(min_length=3, max_length=3, pattern=CURRENCY_PATTERN, description="ISO 4217 currency code, e.g. EUR, AUD"),
]
DEFAULT_CURRENCY = "EUR"
"""The currency of a price or plan message that names none (what every message meant before ``currency``)."""
Efficiency = Annotated[float, Meta(gt=0.0, le=1.0, description="fraction in (0, 1]")]
Identifier = Annotated[str, Meta(pattern=ID_REGEX, description=f"id: {ID_SHAPE}")]
# Every string and list on the wire is bounded: one schema-valid message carrying a 26 MB string once made
# InfluxDB refuse a whole batch (413). The bounds are generous for real content and stop abuse at decode time.
ShortText = Annotated[str, Meta(max_length=64, description="short text, at most 64 characters")]
Text = Annotated[str, Meta(max_length=500, description="text, at most 500 characters")]
LongText = Annotated[str, Meta(max_length=4000, description="text, at most 4000 characters")]
MAX_SLOTS = 20_000
# What a BMS reports (optional Telemetry fields): bounds wide enough for any real pack, tight enough to refuse junk.
PackVolts = Annotated[float, Meta(ge=0.0, le=1e5, description="pack voltage in V")]
PackAmps = Annotated[float, Meta(ge=-1e6, le=1e6, description="pack current in A: + discharging, - charging")]
CellVolts = Annotated[float, Meta(ge=0.0, le=10.0, description="cell voltage in V")]
Celsius = Annotated[float, Meta(ge=-100.0, le=200.0, description="temperature in °C")]
SohPercent = Annotated[float, Meta(ge=0.0, le=150.0, description="state of health in % of the new capacity")]
LifetimeKwh = Annotated[float, Meta(ge=0.0, le=1e12, description="lifetime energy counter in kWh")]
MAX_BMS_CODES = 32
BmsCode = Annotated[
    str, Meta(min_length=1, max_length=32, pattern="^[^,]+$", description="a BMS alarm or warning code (no comma)")
]

Action = Literal["charge", "discharge", "idle"]
ControlModeName = Literal["autopilot", "manual", "idle"]
Mode = Literal["idle", "charging", "discharging", "offline"]
NodeState = Literal["online", "degraded", "offline"]
HistoryKind = Literal["telemetry", "command", "state", "schedule", "prices", "alarms", "kpi", "kpi_day"]


class Telemetry(Struct, kw_only=True, omit_defaults=True):
    """A battery measurement at one instant (published by the device, or by the gateway for ``POST /write``)."""

    ts: UtcDatetime
    soc_kwh: EnergyKwh
    power_kw: SignedPowerKw | None = None
    target_charge_kw: PowerKw | None = None
    target_discharge_kw: PowerKw | None = None
    #: who measured it: ``device`` (the battery's own feed) or ``gateway`` (an HTTP write, set by the gateway)
    source: ShortText = "device"
    # -- what a BMS reports, when the device has it (every field optional: older devices send none of them) --
    pack_voltage_v: PackVolts | None = None
    pack_current_a: PackAmps | None = None
    """+ discharging, - charging, like ``power_kw``."""
    cell_voltage_min_v: CellVolts | None = None
    cell_voltage_max_v: CellVolts | None = None
    cell_temp_min_c: Celsius | None = None
    cell_temp_max_c: Celsius | None = None
    soh_pct: SohPercent | None = None
    """State of health as the BMS reports it (its own estimate of usable capacity against new)."""
    bms_alarms: Annotated[list[BmsCode], Meta(max_length=MAX_BMS_CODES)] | None = None
    """Alarm and warning codes the BMS reports now; ``[]``: none; absent: the device does not report codes."""
    energy_charged_kwh_total: LifetimeKwh | None = None
    """Lifetime counter: energy taken in since commissioning (grows monotonically)."""
    energy_discharged_kwh_total: LifetimeKwh | None = None
    """Lifetime counter: energy given out since commissioning."""


BMS_NUMBERS: tuple[str, ...] = (
    "pack_voltage_v",
    "pack_current_a",
    "cell_voltage_min_v",
    "cell_voltage_max_v",
    "cell_temp_min_c",
    "cell_temp_max_c",
    "soh_pct",
    "energy_charged_kwh_total",
    "energy_discharged_kwh_total",
)
"""The optional BMS number fields of :class:`Telemetry`, in declaration order (stored, read and drawn alike)."""


class BatterySpec(Struct, kw_only=True, omit_defaults=True):
    """What a battery can do; the planner plans within it and the gateway refuses commands beyond it."""

    capacity_kwh: Annotated[float, Meta(gt=0.0, le=1e7)]
    soc_min_kwh: EnergyKwh
    soc_max_kwh: EnergyKwh
    max_charge_kw: PowerKw
    max_discharge_kw: PowerKw
    roundtrip_efficiency: Efficiency = 0.9
    cycle_cost_per_mwh: Annotated[float, Meta(ge=0.0, le=1e5)] = 0.0
    """Wear cost per MWh discharged, in the currency of the prices the battery is planned on."""
    manufacturer: ShortText | None = None
    """Who made the battery (shown by Home Assistant on the battery's device), if the device says."""
    model: ShortText | None = None
    """The battery's model, if the device says."""

    def problems(self) -> list[str]:
        """Cross-field checks msgspec cannot express; empty when the spec is consistent."""
        found: list[str] = []
        if self.soc_min_kwh > self.soc_max_kwh:
            found.append("soc_min_kwh is above soc_max_kwh")
        if self.soc_max_kwh > self.capacity_kwh:
            found.append("soc_max_kwh is above capacity_kwh")
        return found


class Command(Struct, kw_only=True, omit_defaults=True):
    """An order to a battery. It is a lease: after ``valid_until`` the device falls back to idle."""

    command_id: Annotated[str, Meta(min_length=1, max_length=64)]
    action: Action
    power_kw: PowerKw = 0.0
    issued_at: UtcDatetime
    valid_until: UtcDatetime
    source: Literal["gateway", "planner", "operator", "homeassistant", "dashboard", "bridge"] = "operator"
    plan_id: ShortText | None = None
    text: Text | None = None


class BatteryState(Struct, kw_only=True, omit_defaults=True):
    """What the device is doing now and why (published on every change)."""

    ts: UtcDatetime
    mode: Mode
    power_kw: SignedPowerKw = 0.0
    command_id: ShortText | None = None
    command_source: ShortText | None = None
    valid_until: UtcDatetime | None = None
    limits_hit: Annotated[list[ShortText], Meta(max_length=32)] = msgspec.field(default_factory=list)
    reason: Text = ""


class ScheduleSlot(Struct, kw_only=True, omit_defaults=True):
    """One slot of a plan; ``soc_kwh`` is the state of charge at the slot's end."""

    start: UtcDatetime
    end: UtcDatetime
    price_per_mwh: PricePerMwh
    charge_kw: PowerKw
    discharge_kw: PowerKw
    soc_kwh: EnergyKwh


class Schedule(Struct, kw_only=True, omit_defaults=True):
    """An optimal charge/discharge plan over the price horizon."""

    plan_id: ShortText
    created_at: UtcDatetime
    soc_initial_kwh: EnergyKwh
    slots: Annotated[list[ScheduleSlot], Meta(max_length=MAX_SLOTS)]
    expected_revenue: Money
    baseline_revenue: Money | None = None
    currency: Currency = DEFAULT_CURRENCY
    """Currency of every price and amount of this plan: the currency of the forecast it was planned on."""
    zone: ShortText | None = None
    solver: ShortText = ""
    solve_ms: Annotated[float, Meta(ge=0.0, le=1e9)] = 0.0
    reason: Text = ""


class PriceSlot(Struct, kw_only=True, omit_defaults=True):
    """One delivery period of a price forecast."""

    start: UtcDatetime
    end: UtcDatetime
    price_per_mwh: PricePerMwh


class PriceForecast(Struct, kw_only=True, omit_defaults=True):
    """Forecast (or day-ahead) prices for a market zone."""

    zone: Identifier
    issued_at: UtcDatetime
    slots: Annotated[list[PriceSlot], Meta(max_length=MAX_SLOTS)]
    currency: Currency = DEFAULT_CURRENCY
    """ISO 4217 code of every ``price_per_mwh`` of this forecast."""
    source: ShortText = ""


class HistoryQuery(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    """A request for stored history; the answer goes to the MQTT 5 response topic of the request."""

    kind: HistoryKind = "telemetry"
    battery: Identifier | None = None
    zone: Identifier | None = None
    begin: UtcDatetime
    end: UtcDatetime
    every_s: Annotated[int, Meta(ge=1, le=366 * 86400)] | None = None
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000


class HistoryResult(Struct, kw_only=True, omit_defaults=True):
    """Rows in time order. ``columns[0]`` is ``time`` (RFC 3339 UTC); ``truncated`` means ``limit`` was hit.

    With ``every_s`` the rows are the means of the numeric columns over the bucket starting at ``time``; prices and
    schedules add the ``currency`` of each mean, and a bucket holding two currencies is one row per currency.
    """

    ok: bool
    columns: list[str] = msgspec.field(default_factory=list)
    rows: list[list[Any]] = msgspec.field(default_factory=list)
    truncated: bool = False
    error: str | None = None


class NodeStatus(Struct, kw_only=True, omit_defaults=True):
    """A node's health, retained; the broker publishes ``offline`` as the node's last will."""

    node: ShortText
    state: NodeState
    since: UtcDatetime | None = None
    version: ShortText = ""
    #: node-wide problem (what makes the node ``degraded``); per-battery problems go into ``details``
    reason: LongText = ""
    pid: int | None = None
    counters: Annotated[dict[ShortText, int], Meta(max_length=200)] = msgspec.field(default_factory=dict)
    #: per-item notes that do not degrade the node, keyed by battery id (e.g. the planner's
    #: ``"my-bat": "monitored, not planned: no spec received"``); bounded so a fleet cannot bloat the status
    details: Annotated[dict[ShortText, Text], Meta(max_length=1000)] = msgspec.field(default_factory=dict)


#: what a correlation id may be for the recorder to quote it back in a StoredReceipt (MQTT 5 correlation data)
CorrelationText = Annotated[
    str, Meta(min_length=1, max_length=64, description="correlation data of one message, as text (printable ASCII)")
]
MAX_RECEIPT_IDS = 1000


class StoredReceipt(Struct, kw_only=True, omit_defaults=True):
    """The recorder's answer to data messages published with an MQTT 5 response topic: which are in the store.

    ``stored`` quotes the correlation data of every such message whose points the store acknowledged (InfluxDB
    answered the write); ``rejected`` those the store refused for good (re-sending them unchanged cannot help),
    with the store's ``reason`` for the first of them. One receipt covers the messages of one written batch that
    named the same response topic (up to 1000; more go in several receipts). A message redelivered after a
    recorder restart is written and confirmed again: receivers ignore ids they no longer wait for.
    """

    recorder: ShortText
    stored: Annotated[list[CorrelationText], Meta(max_length=MAX_RECEIPT_IDS)] = msgspec.field(default_factory=list)
    rejected: Annotated[list[CorrelationText], Meta(max_length=MAX_RECEIPT_IDS)] = msgspec.field(
        default_factory=list
    )
    reason: Text = ""


class StoredUpTo(Struct, kw_only=True, omit_defaults=True):
    """Device confirmation: the device's own readings (``source`` device) are stored up to ``ts``.

    Every reading of the battery that this recorder received up to and including the one stamped ``ts``
    (contiguous in the order the recorder received them) is in the store, or was refused by it for good (counted
    as ``rejected`` in the recorder's status; re-sending cannot help). Readings the broker lost before they
    reached the recorder are not known to it, so a device drops readings on this only under the rule in
    topics.md: after every (re)connect, re-send what it kept, and trust a confirmation only once it covers a
    reading first published after that re-send.
    """

    ts: UtcDatetime
    recorder: ShortText


class ControlMode(Struct, kw_only=True, omit_defaults=True):
    """Who may command a battery now; retained per battery, settable over HTTP (``POST /control``) and MQTT.

    ``autopilot``: the planner sends each slot's command. ``manual``: an operator's commands rule and the
    planner sends none (it keeps planning, so the schedule stays visible). ``idle``: nobody but an operator's
    explicit ``mode`` change moves the battery; it is sent an idle command. With ``until``, the mode reverts to
    the planner's configured default at that instant (an operator command pauses the autopilot for its lease).
    """

    mode: ControlModeName
    set_at: UtcDatetime
    until: UtcDatetime | None = None
    source: ShortText = "operator"
    reason: Text = ""

    def mode_at(self, now: datetime) -> ControlModeName | None:
        """The mode in force at ``now``, or None once ``until`` has passed (then the default applies)."""
        if self.until is not None and now >= self.until:
            return None
        return self.mode


# -- operator requests over MQTT (Home Assistant's controls, the dashboard's panel) and what the nodes derive ------

LeaseSeconds = Annotated[int, Meta(ge=1, le=86_400, description="lease in seconds")]
ModeSeconds = Annotated[int, Meta(ge=1, le=7 * 86_400, description="seconds the mode lasts")]
RequestSource = Literal["homeassistant", "dashboard"]
"""Who sent an operator request: Home Assistant's controls or the dashboard's control panel (the renderer).

Declared by the publisher: only the ``hass`` and ``renderer`` broker users may publish the request topics at all
(the ACL), and the renderer publishes only what passed the dashboard's token and CSRF checks."""
RequestId = Annotated[
    str, Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$",
              description="the requester's id for this request, echoed in the RequestResult")
]


class ModeRequest(Struct, kw_only=True, omit_defaults=True):
    """Set a battery's control mode over MQTT: what ``POST /control`` does, checked by the same gateway code.

    Home Assistant's select sends ``{"mode": "<option>"}``. Without ``for_s`` the mode lasts until changed.
    ``request_id`` (optional) comes back in the RequestResult, so a requester can tell its own answer from
    another's on the retained result topic.
    """

    mode: ControlModeName
    for_s: ModeSeconds | None = None
    reason: Annotated[str, Meta(max_length=200)] = ""
    source: RequestSource = "homeassistant"
    request_id: RequestId | None = None


class PowerRequest(Struct, kw_only=True, omit_defaults=True):
    """A manual power setpoint over MQTT: what ``POST /mqtt/publish`` does, checked by the same gateway code.

    ``power_kw`` is signed like telemetry: + discharge (to the grid), - charge, 0 idle. The gateway turns it into
    the Command ``DISCHARGE|CHARGE <power> kW`` or ``IDLE`` with a lease (``valid_for_s``, 1 s to 24 h like
    ``POST /mqtt/publish``'s, else the gateway's ``BESS_GATEWAY_COMMAND_LEASE_S``), checked against the battery's
    spec, control mode and command rate.
    """

    power_kw: SignedPowerKw
    valid_for_s: LeaseSeconds | None = None
    source: RequestSource = "homeassistant"
    request_id: RequestId | None = None


class ReplanRequest(Struct, kw_only=True, omit_defaults=True):
    """Ask the planner to re-plan one battery now (Home Assistant's button, the dashboard's re-plan)."""

    reason: Annotated[str, Meta(max_length=200)] = ""
    source: RequestSource = "homeassistant"
    request_id: RequestId | None = None


class RequestResult(Struct, kw_only=True, omit_defaults=True):
    """What the gateway did with the latest MQTT request for a battery (retained, so Home Assistant shows it).

    ``outcome`` is ``accepted`` (the ControlMode and/or Command were published) or ``refused`` with the same
    ``error`` and ``field`` an HTTP client would get, and ``status``, the HTTP status that answer would have.
    ``source`` and ``request_id`` are the request's: the topic is retained per battery and shared by every
    requester, so a requester matches its own result by id.
    """

    ts: UtcDatetime
    request: Literal["mode", "power"]
    outcome: Literal["accepted", "refused"]
    source: ShortText = "homeassistant"
    status: Annotated[int, Meta(ge=100, le=599)] = 202
    error: Text = ""
    field: ShortText | None = None
    command_id: ShortText | None = None
    text: Text | None = None
    mode: ControlModeName | None = None
    request_id: RequestId | None = None


class OutlookSlot(Struct, kw_only=True, omit_defaults=True):
    """One upcoming slot of a plan, signed like telemetry (+ discharge, - charge)."""

    start: UtcDatetime
    end: UtcDatetime
    action: Action
    power_kw: SignedPowerKw
    price_per_mwh: PricePerMwh


MAX_OUTLOOK_SLOTS = 12


class BatteryOutlook(Struct, kw_only=True, omit_defaults=True):
    """Derived values for now: the control mode in force, the plan's slot, the next change and the price.

    Computed by the homeassistant node from the retained schedule, prices and control mode, at every slot or
    mode boundary: Home Assistant renders a template only when a message arrives, so "the price now" or "the
    plan's action now" cannot come from a forecast published once a day. Power is signed like telemetry.
    Absent fields are unknown (no plan covering now, no price slot covering now).
    """

    ts: UtcDatetime
    control_mode: ControlModeName
    control_until: UtcDatetime | None = None
    plan_id: ShortText | None = None
    action: Action | None = None
    power_kw: SignedPowerKw | None = None
    slot_end: UtcDatetime | None = None
    next_change_at: UtcDatetime | None = None
    next_action: Action | None = None
    next_power_kw: SignedPowerKw | None = None
    price_per_mwh: PricePerMwh | None = None
    price_until: UtcDatetime | None = None
    currency: Currency | None = None
    zone: ShortText | None = None
    upcoming: Annotated[list[OutlookSlot], Meta(max_length=MAX_OUTLOOK_SLOTS)] = msgspec.field(default_factory=list)


class DayRevenue(Struct, kw_only=True, omit_defaults=True):
    """Realised market revenue of a battery since the start of its current day, derived (never measured).

    Computed by the renderer with the dashboard's own KPI integrals (:mod:`nodes.renderer.ledger`) over the
    stored raw telemetry and prices from ``day_start`` up to the newest sample (``until``): measured power held
    until the next sample (or the SOC change where none is reported), each piece paid at its own price slot, +
    when discharging (selling), - when charging (buying). Energy moved while no price was known is in
    ``unpriced_energy_kwh`` and not in the revenue.
    """

    day_start: UtcDatetime
    tz: ShortText
    computed_at: UtcDatetime
    realised_revenue: Money
    currency: Currency
    until: UtcDatetime | None = None
    samples: Annotated[int, Meta(ge=0)] = 0
    energy_charged_kwh: EnergyKwh = 0.0
    energy_discharged_kwh: EnergyKwh = 0.0
    unpriced_energy_kwh: EnergyKwh = 0.0
    gap_s: Annotated[float, Meta(ge=0.0, le=1e9)] = 0.0


KpiKwh = Annotated[float, Meta(ge=-1e9, le=1e9, description="energy in kWh (an integral; may be signed)")]
KpiMoney = Annotated[float, Meta(ge=-1e12, le=1e12, description="money in the day's currency (an integral)")]
BucketSeconds = Annotated[float, Meta(ge=0.0, le=1e6, description="seconds inside the bucket")]


class KpiBucket(Struct, kw_only=True, omit_defaults=True):
    """The exact integrals of one 15-minute bucket ``[start, start + 15 min)`` (:mod:`nodes.renderer.ledger`).

    Every number but the first/last sample is additive: the value over any period is the sum over its buckets
    (an hourly rollup is a plain ``sum()``). ``first_*``/``last_*``: the first and last sample inside the bucket
    (none when it holds no sample), what a period's start/end SOC and its extent are read from.
    """

    start: UtcDatetime
    charged_kwh: KpiKwh = 0.0
    discharged_kwh: KpiKwh = 0.0
    derived_kwh: KpiKwh = 0.0
    """Energy moved (charged + discharged) over intervals whose power is derived from the SOC change."""
    revenue: KpiMoney = 0.0
    buy_money: KpiMoney = 0.0
    priced_charged_kwh: KpiKwh = 0.0
    sell_money: KpiMoney = 0.0
    priced_discharged_kwh: KpiKwh = 0.0
    unpriced_kwh: KpiKwh = 0.0
    gap_s: BucketSeconds = 0.0
    covered_s: BucketSeconds = 0.0
    loss_kwh: KpiKwh = 0.0
    samples: Annotated[float, Meta(ge=0.0, le=1e9)] = 0.0
    first_ts: UtcDatetime | None = None
    first_soc_kwh: KpiKwh | None = None
    last_ts: UtcDatetime | None = None
    last_soc_kwh: KpiKwh | None = None


KPI_SUM_FIELDS: tuple[str, ...] = (
    "charged_kwh", "discharged_kwh", "derived_kwh", "revenue", "buy_money", "priced_charged_kwh", "sell_money",
    "priced_discharged_kwh", "unpriced_kwh", "gap_s", "covered_s", "loss_kwh", "samples",
)
"""The additive fields of a KpiBucket (and columns of a ``kind="kpi"`` history answer), in the renderer's ledger
column order."""
KPI_SAMPLE_COLUMNS: tuple[str, ...] = ("first_sample_s", "first_soc_kwh", "last_sample_s", "last_soc_kwh")
"""The first/last sample of a bucket in a ``kind="kpi"`` answer: times as float epoch seconds (stored so, so that
a rollup can take their min() and max()), SOC in kWh; None where the bucket holds no sample.

``kind="kpi_day"`` answers one row per stored day (the recorder writes it with the day's buckets): the same
columns summed over the day (correctly rounded), its first/last sample, and ``buckets`` (96 for a whole day)."""


class KpiDay(Struct, kw_only=True, omit_defaults=True):
    """Derived: a final UTC day of a battery's KPI integrals, 96 buckets of 15 minutes (``day`` is 00:00 UTC).

    Computed by the renderer from the raw telemetry and prices with its one energy model (hold-last power,
    SOC-derived spans, each piece at its own price slot), once no sample can change the day any more; stored
    by the recorder as ``kpi_15m`` so that KPIs over any window are sums of stored buckets instead of raw rows.
    Revenue and money are in ``currencies`` (the currency of the day's prices; none: nothing was priced).
    """

    day: UtcDatetime
    computed_at: UtcDatetime
    buckets: Annotated[list[KpiBucket], Meta(min_length=1, max_length=96)]
    """In time order; the renderer sends all 96 (a day stored with fewer is not used: it is computed again)."""
    currencies: Annotated[list[Currency], Meta(max_length=8)] = msgspec.field(default_factory=list)


class Figure(Struct, kw_only=True, omit_defaults=True):
    """A Plotly figure as JSON (``data`` and ``layout``, ready for ``Plotly.react``) plus where it belongs."""

    figure: str
    battery: str
    generated_at: UtcDatetime
    data: list[dict[str, Any]]
    layout: dict[str, Any]


# -- alarms ----------------------------------------------------------------------------------------------------

AlarmState = Literal["raised", "cleared"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
"""In rising order of urgency (a banner shows the most urgent first)."""

AlarmValue = Annotated[float, Meta(ge=-1e9, le=1e9, description="the measured value, in the alarm's unit")]


class Alarm(Struct, kw_only=True, omit_defaults=True):
    """An alarm of one battery: raised, or cleared again (retained on ``battery/{battery}/alarm/{rule}``).

    Why retained and one topic per rule: a dashboard or Home Assistant that connects later must see every alarm
    that is up now (a binary sensor per topic), and a cleared alarm must replace its raised message rather than
    leave it standing; ``state: cleared`` does that.
    """

    rule: Identifier
    """The rule's id, as in the topic (``cell_temp_high``)."""
    state: AlarmState
    since: UtcDatetime
    """When the alarm took this state (raised or cleared)."""
    severity: Severity
    message: Text
    """What is wrong, in words, with the value and the threshold (``max cell temperature 57.2 °C above 55 °C``)."""
    value: AlarmValue | None = None
    """The value that raised it (or, when cleared, the value that cleared it); None for a rule without one."""
    threshold: AlarmValue | None = None
    """The threshold the value crossed (for a cleared alarm: the one it came back past)."""
    unit: ShortText = ""
    """Unit of ``value`` and ``threshold`` (``°C``, ``V``, ``kWh``, ``s``, ``kW``, ``codes``, ``nodes``)."""
    raised_at: UtcDatetime | None = None
    """For a cleared alarm: when it was raised (a history table shows how long it lasted)."""



ALL_MESSAGES: tuple[type[Struct], ...] = (
    Telemetry,
    BatterySpec,
    Command,
    BatteryState,
    ControlMode,
    Schedule,
    PriceForecast,
    HistoryQuery,
    HistoryResult,
    NodeStatus,
    Figure,
    StoredReceipt,
    StoredUpTo,
    Alarm,
    ModeRequest,
    PowerRequest,
    ReplanRequest,
    RequestResult,
    BatteryOutlook,
    DayRevenue,
    KpiDay,
)
