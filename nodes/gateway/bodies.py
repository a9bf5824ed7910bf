"""The HTTP bodies of the gateway, as strict msgspec Structs (the OpenAPI document is generated from them).

Request bodies are strict (``forbid_unknown_fields=True``): a misspelt field is a 422, not a silently ignored
value. They reuse the contract's constrained scalar types, so the HTTP edge refuses what the wire would refuse
(negative or non-finite numbers, ``1e400``, timestamps without a zone, ids outside ``[a-z0-9_-]{1,64}``).

The write body keeps the seed's spelling (``SOC`` in kWh, ``target_charge``/``target_discharge`` in kW,
``timestamp``); Python attributes carry the units (``soc_kwh``...) and ``msgspec.field(name=...)`` maps them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from nodes.contract.messages import (
    DEFAULT_CURRENCY,
    Command,
    ControlMode,
    ControlModeName,
    Currency,
    EnergyKwh,
    Identifier,
    PowerKw,
    PriceForecast,
    PricePerMwh,
    SignedPowerKw,
    Telemetry,
    UtcDatetime,
)

MAX_BATCH = 10_000
MAX_PRICE_SLOTS = 10_000
MAX_RECORD_BYTES = 400
"""Room per record of a full batch: the README's record with a 64-character battery id, ``power_kw``, numbers of
full precision and a timestamp with microseconds and an offset is about 240 bytes, pretty-printed about 290."""
DEFAULT_MAX_BODY_BYTES = MAX_BATCH * MAX_RECORD_BYTES
"""The default body limit (BESS_GATEWAY_MAX_BODY_BYTES): a full batch of any plausible records fits."""

# -- requests ------------------------------------------------------------------------------------------------


class WriteBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """One battery record, as in the seed: ``{"SOC": 700, "target_discharge": 50, "target_charge": 100,
    "timestamp": "2025-01-16T10:00:00Z"}`` (SOC in kWh, targets in kW). ``timestamp`` needs a zone and must lie
    between 2000-01-01 and one day ahead of the gateway's clock. ``POST /write`` also takes a JSON array."""

    soc_kwh: EnergyKwh = msgspec.field(name="SOC")
    target_discharge_kw: PowerKw = msgspec.field(name="target_discharge")
    target_charge_kw: PowerKw = msgspec.field(name="target_charge")
    timestamp: UtcDatetime
    power_kw: SignedPowerKw | None = None
    battery: Identifier | None = None


WriteRequest = WriteBody | Annotated[list[WriteBody], Meta(min_length=1, max_length=MAX_BATCH)]
"""What ``POST /write`` decodes: one record or a batch of 1 to MAX_BATCH records."""


class CommandBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /mqtt/publish``: a command text such as ``DISCHARGE 50kW``, ``CHARGE 0.1MW`` or ``IDLE``."""

    command: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=200,
            description="CHARGE|DISCHARGE <number> <W|kW|MW>, IDLE or STOP; case and spaces are forgiven",
            examples=["DISCHARGE 50kW"],
        ),
    ]
    battery: Identifier | None = None
    valid_for_s: Annotated[int, Meta(ge=1, le=86_400, description="lease in seconds")] | None = None
    force: Annotated[
        bool,
        Meta(description="send even to a battery the gateway has never seen (no spec, telemetry or state): "
             "without it such a command is refused with 404, so a misspelt id commands nothing"),
    ] = False


MAX_CONTROL_S = 7 * 86_400


class ControlBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /control``: who commands the battery. ``autopilot``: the planner sends each slot's command;
    ``manual``: operator commands only (the planner keeps planning, the schedule stays visible); ``idle``: the
    battery is sent IDLE and held idle (only IDLE/STOP commands pass). With ``for_s`` the mode ends after that
    many seconds and the planner's configured default applies again; without it, it lasts until changed."""

    mode: ControlModeName
    battery: Identifier | None = None
    for_s: Annotated[int, Meta(ge=1, le=MAX_CONTROL_S, description="seconds the mode lasts")] | None = None
    reason: Annotated[str, Meta(max_length=200, description="why, for the log and the dashboard")] | None = None
    force: Annotated[bool, Meta(description="set it even for a battery the gateway has never seen")] = False


class PriceSlotBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """One delivery period: ``end`` must be after ``start``."""

    start: UtcDatetime
    end: UtcDatetime
    price_per_mwh: PricePerMwh


class PricesBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /prices``: a price forecast for a market zone (the contract PriceForecast, strictly)."""

    zone: Identifier
    issued_at: UtcDatetime
    slots: Annotated[list[PriceSlotBody], Meta(min_length=1, max_length=MAX_PRICE_SLOTS)]
    currency: Currency = DEFAULT_CURRENCY
    source: Annotated[str, Meta(max_length=64)] = ""


# -- responses -----------------------------------------------------------------------------------------------


WriteStatus = Annotated[
    Literal["stored", "accepted"],
    Meta(description="stored: every record is confirmed in the database (HTTP 200). accepted: the broker "
         "acknowledged every record (PUBACK) but not all are confirmed stored (HTTP 202): with ack=broker none "
         "was waited for; with ack=stored the unconfirmed ones are listed"),
]
AckMode = Annotated[
    Literal["stored", "broker"],
    Meta(description="what the answer waited for: the recorder's stored confirmation (default) or the broker's"),
]


class PublishedTelemetry(Struct, kw_only=True):
    """200 or 202 of ``POST /write`` (one record): the topic and the message published on it, and how far it got
    (``status``: stored or only accepted by the broker; ``unconfirmed``: ``[0]`` when it was not confirmed
    stored in time)."""

    topic: str
    message: Telemetry
    status: WriteStatus
    ack: AckMode
    stored: Annotated[int, Meta(description="records confirmed stored (null with ack=broker)")] | None
    unconfirmed: Annotated[
        list[int], Meta(description="indexes of the records not confirmed stored in time (null with ack=broker)")
    ] | None
    note: str


class PublishedBatch(Struct, kw_only=True):
    """200 or 202 of ``POST /write`` with an array: how many records were published, on which topics, and how
    far they got (``unconfirmed`` lists the indexes in the array of the records not confirmed stored in time)."""

    count: int
    topics: list[str]
    status: WriteStatus
    ack: AckMode
    stored: Annotated[int, Meta(description="records confirmed stored (null with ack=broker)")] | None
    unconfirmed: Annotated[
        list[int], Meta(description="indexes of the records not confirmed stored in time (null with ack=broker)")
    ] | None
    note: str


class CommandControl(Struct, kw_only=True):
    """What an operator command did to the battery's control mode: it is ``manual`` (the autopilot sends no
    command) until ``autopilot_paused_until``, the end of the command's lease or of a longer manual mode
    already in force (null: until ``POST /control`` changes it). An IDLE command in mode ``idle`` keeps it."""

    mode: ControlModeName
    until: UtcDatetime | None
    autopilot_paused_until: UtcDatetime | None
    topic: str
    note: str


class PublishedCommand(Struct, kw_only=True):
    """202 of ``POST /mqtt/publish``. ``spec_known`` is false when no BatterySpec was seen for the battery,
    so its power limits could not be checked. ``control`` says how long the autopilot is paused."""

    topic: str
    message: Command
    spec_known: bool
    control: CommandControl


class PublishedControl(Struct, kw_only=True):
    """202 of ``POST /control``: the retained ControlMode published, and the IDLE command for mode ``idle``."""

    topic: str
    control: ControlMode
    command: Command | None = None
    note: str


class ControlState(Struct, kw_only=True):
    """``GET /control``: the mode in force (null: none is, the planner's configured default applies), and the
    last ControlMode seen on the battery's retained control topic (in force or expired)."""

    battery: str
    mode: ControlModeName | None
    until: UtcDatetime | None
    control: ControlMode | None
    note: str


class PublishedPrices(Struct, kw_only=True):
    """202 of ``POST /prices``."""

    topic: str
    message: PriceForecast


class ReadRecord(Struct, kw_only=True, omit_defaults=True):
    """One record of ``GET /read``, in the shape it was written. With ``every=`` the values are means over
    the interval starting at ``timestamp``. Fields without a value are left out."""

    soc_kwh: float | None = msgspec.field(default=None, name="SOC")
    target_discharge_kw: float | None = msgspec.field(default=None, name="target_discharge")
    target_charge_kw: float | None = msgspec.field(default=None, name="target_charge")
    timestamp: Annotated[str, Meta(description="RFC 3339 UTC", extra_json_schema={"format": "date-time"})]
    power_kw: float | None = None
    # what a BMS reports (Telemetry's optional fields, from devices over MQTT): left out when not reported
    pack_voltage_v: float | None = None
    pack_current_a: float | None = None
    cell_voltage_min_v: float | None = None
    cell_voltage_max_v: float | None = None
    cell_temp_min_c: float | None = None
    cell_temp_max_c: float | None = None
    soh_pct: float | None = None
    energy_charged_kwh_total: float | None = None
    energy_discharged_kwh_total: float | None = None
    bms_alarms: Annotated[list[str], Meta(description="BMS alarm codes reported with the reading (raw rows only; "
                                          "[]: none; absent: not reported)")] | None = None


class AlarmRecord(Struct, kw_only=True, omit_defaults=True):
    """One stored alarm transition of ``GET /alarms`` (oldest first): a raise, or the clear that ended it."""

    time: Annotated[str, Meta(description="when the alarm took this state (RFC 3339 UTC)",
                              extra_json_schema={"format": "date-time"})]
    rule: str
    state: Literal["raised", "cleared"]
    severity: Literal["info", "warning", "critical"]
    message: str
    value: float | None = None
    threshold: float | None = None
    unit: str | None = None
    raised_at: Annotated[str, Meta(description="for a clear: when it was raised (RFC 3339 UTC)")] | None = None


class Health(Struct, kw_only=True):
    """``GET /health``: 200 when the broker is connected, 503 otherwise."""

    mqtt: Literal["connected", "disconnected"]
    node: str
    state: str
    version: str
    uptime_s: float
    specs_known: list[str]


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_BATCH",
    "MAX_CONTROL_S",
    "MAX_RECORD_BYTES",
    "AlarmRecord",
    "CommandBody",
    "CommandControl",
    "ControlBody",
    "ControlState",
    "Health",
    "PriceSlotBody",
    "PricesBody",
    "PublishedBatch",
    "PublishedCommand",
    "PublishedControl",
    "PublishedPrices",
    "PublishedTelemetry",
    "ReadRecord",
    "WriteBody",
    "WriteRequest",
]
