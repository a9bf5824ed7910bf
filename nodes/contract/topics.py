"""Every MQTT topic of the system, declared once and used by both publisher and subscriber.

Each is a :class:`~nodes.contract.topic.Topic` (template, payload type, QoS, retain flag, who publishes and who
consumes it; defined in :mod:`nodes.contract.topic`). Templates are written under the default root ``bess/v1``; a
deployment (or a test) may move the whole tree under another root.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nodes.contract.messages import (
    Alarm,
    BatteryOutlook,
    BatterySpec,
    BatteryState,
    Command,
    ControlMode,
    DayRevenue,
    Figure,
    HistoryQuery,
    HistoryResult,
    KpiBucket,
    KpiDay,
    ModeRequest,
    NodeStatus,
    OutlookSlot,
    PowerRequest,
    PriceForecast,
    PriceSlot,
    ReplanRequest,
    RequestResult,
    Schedule,
    ScheduleSlot,
    StoredReceipt,
    StoredUpTo,
    Telemetry,
)

# DEFAULT_ROOT, Role and id_problems are re-exported: nodes import them from here
from nodes.contract.names import DEFAULT_ROOT as DEFAULT_ROOT  # noqa: PLC0414
from nodes.contract.names import Role as Role  # noqa: PLC0414
from nodes.contract.names import id_problems as id_problems  # noqa: PLC0414

# The Topic type lives in nodes.contract.topic; it is re-exported here, where nodes import it from
from nodes.contract.topic import Request as Request  # noqa: PLC0414
from nodes.contract.topic import Topic as Topic  # noqa: PLC0414
from nodes.contract.topic import TopicError as TopicError  # noqa: PLC0414
from nodes.contract.topic import check_id as check_id  # noqa: PLC0414
from nodes.contract.topic import check_root as check_root  # noqa: PLC0414

# -- examples (also used by the docs generator and the contract tests) ---------------------------------------

_T0 = datetime(2025, 1, 16, 10, 0, tzinfo=UTC)
_HOUR = timedelta(hours=1)

TELEMETRY: Topic[Telemetry] = Topic(
    path="battery/{battery}/telemetry",
    payload=Telemetry,
    qos=1,
    retain=True,
    producers=(Role.DEVICE, Role.SIMULATOR, Role.BRIDGE, Role.GATEWAY),
    consumers=(
        Role.RECORDER, Role.PLANNER, Role.RENDERER, Role.GATEWAY, Role.ALARMS, Role.HOMEASSISTANT, Role.HASS,
    ),
    doc="A battery measurement. Devices publish it retained, so a new subscriber sees the latest reading at "
    "once; the gateway's HTTP writes are not retained (they are often backfills of older records). "
    "power_kw is + when discharging (to the grid) and - when charging. The BMS fields (pack voltage and current, "
    "min/max cell voltage and temperature, state of health, alarm codes, lifetime energy counters) are optional: "
    "a device sends those it has.",
    example=Telemetry(
        ts=_T0, soc_kwh=700.0, power_kw=-50.0, target_charge_kw=100.0, target_discharge_kw=50.0, source="device",
        pack_voltage_v=812.4, pack_current_a=-61.5, cell_voltage_min_v=3.301, cell_voltage_max_v=3.334,
        cell_temp_min_c=24.5, cell_temp_max_c=29.0, soh_pct=97.5, bms_alarms=[],
        energy_charged_kwh_total=182_340.0, energy_discharged_kwh_total=161_904.0,
    ),
    example_params={"battery": "battery-1"},
)

SPEC: Topic[BatterySpec] = Topic(
    path="battery/{battery}/spec",
    payload=BatterySpec,
    qos=1,
    retain=True,
    producers=(Role.DEVICE, Role.SIMULATOR, Role.BRIDGE),
    consumers=(Role.PLANNER, Role.GATEWAY, Role.RENDERER, Role.ALARMS, Role.HOMEASSISTANT),
    doc="What the battery can do. The gateway refuses commands beyond it; the planner plans within it.",
    example=BatterySpec(
        capacity_kwh=1000.0,
        soc_min_kwh=100.0,
        soc_max_kwh=950.0,
        max_charge_kw=250.0,
        max_discharge_kw=250.0,
        roundtrip_efficiency=0.9,
    ),
    example_params={"battery": "battery-1"},
)

COMMAND: Topic[Command] = Topic(
    path="battery/{battery}/set",
    payload=Command,
    qos=1,
    retain=False,
    producers=(Role.GATEWAY, Role.PLANNER),
    consumers=(Role.DEVICE, Role.SIMULATOR, Role.BRIDGE, Role.RECORDER, Role.ALARMS, Role.RENDERER),
    doc="An order to charge, discharge or idle, as a lease: at valid_until the device goes idle, "
    "so a dead controller cannot leave a battery discharging. Not retained: a stale command must not be "
    "replayed to a device that reconnects. The renderer reads it for the dashboard's control panel (the "
    "command a request resulted in, its lease) and the live tail of the command history.",
    example=Command(
        command_id="c-3f2a9d1e",
        action="discharge",
        power_kw=50.0,
        issued_at=_T0,
        valid_until=_T0 + timedelta(minutes=5),
        source="gateway",
        text="DISCHARGE 50kW",
    ),
    example_params={"battery": "battery-1"},
)

STATE: Topic[BatteryState] = Topic(
    path="battery/{battery}/state",
    payload=BatteryState,
    qos=1,
    retain=True,
    producers=(Role.DEVICE, Role.SIMULATOR, Role.BRIDGE),
    consumers=(Role.RECORDER, Role.RENDERER, Role.GATEWAY, Role.HASS),
    doc="What the device is doing and why: mode, the command it follows, its lease, limits it hit.",
    example=BatteryState(
        ts=_T0,
        mode="discharging",
        power_kw=50.0,
        command_id="c-3f2a9d1e",
        command_source="gateway",
        valid_until=_T0 + timedelta(minutes=5),
    ),
    example_params={"battery": "battery-1"},
)

CONTROL: Topic[ControlMode] = Topic(
    path="battery/{battery}/control",
    payload=ControlMode,
    qos=1,
    retain=True,
    producers=(Role.GATEWAY,),
    consumers=(Role.PLANNER, Role.GATEWAY, Role.RENDERER, Role.RECORDER, Role.HOMEASSISTANT),
    doc="Who commands the battery: autopilot (the planner sends each slot's command), manual (operator "
    "commands only; the planner keeps planning but sends nothing) or idle. An operator command through the "
    "gateway sets manual until its lease ends; POST /control sets any mode (with an optional end). Retained: "
    "a node that starts later knows the mode at once. No message means the planner's configured default.",
    example=ControlMode(
        mode="manual",
        set_at=_T0,
        until=_T0 + timedelta(minutes=5),
        source="gateway",
        reason="operator command c-3f2a9d1e (DISCHARGE 50kW)",
    ),
    example_params={"battery": "battery-1"},
)

SCHEDULE: Topic[Schedule] = Topic(
    path="battery/{battery}/schedule",
    payload=Schedule,
    qos=1,
    retain=True,
    producers=(Role.PLANNER,),
    consumers=(Role.RECORDER, Role.RENDERER, Role.DEVICE, Role.SIMULATOR, Role.HOMEASSISTANT, Role.HASS),
    doc="The current optimal plan. soc_kwh is the state of charge at each slot's end.",
    example=Schedule(
        plan_id="p-20250116T10-battery-1",
        created_at=_T0,
        soc_initial_kwh=500.0,
        zone="de-lu",
        slots=[
            ScheduleSlot(
                start=_T0, end=_T0 + _HOUR, price_per_mwh=42.5, charge_kw=250.0, discharge_kw=0.0, soc_kwh=737.2
            ),
            ScheduleSlot(
                start=_T0 + _HOUR,
                end=_T0 + 2 * _HOUR,
                price_per_mwh=131.0,
                charge_kw=0.0,
                discharge_kw=250.0,
                soc_kwh=500.0,
            ),
        ],
        expected_revenue=22.13,
        baseline_revenue=18.0,
        solver="PULP_CBC_CMD",
        solve_ms=31.0,
    ),
    example_params={"battery": "battery-1"},
)

FIGURE: Topic[Figure] = Topic(
    path="battery/{battery}/figure/{figure}",
    payload=Figure,
    qos=1,
    retain=True,
    producers=(Role.RENDERER,),
    consumers=(Role.DASHBOARD, Role.ANYONE),
    doc="A Plotly figure as JSON: pass data and layout to Plotly.react. Figures: soc, power, prices, "
    "schedule, insights.",
    example=Figure(
        figure="soc",
        battery="battery-1",
        generated_at=_T0,
        data=[{"type": "scatter", "x": ["2025-01-16T10:00:00Z"], "y": [700.0], "name": "SOC (kWh)"}],
        layout={"yaxis": {"title": {"text": "SOC (kWh)"}}},
    ),
    example_params={"battery": "battery-1", "figure": "soc"},
)

PRICES: Topic[PriceForecast] = Topic(
    path="market/{zone}/prices",
    payload=PriceForecast,
    qos=1,
    retain=True,
    producers=(Role.MARKET, Role.GATEWAY),
    consumers=(Role.PLANNER, Role.RECORDER, Role.RENDERER, Role.ALARMS, Role.HOMEASSISTANT),
    doc="Forecast or day-ahead prices for a market zone, hourly or 15-minute slots.",
    example=PriceForecast(
        zone="de-lu",
        issued_at=_T0,
        slots=[
            PriceSlot(start=_T0, end=_T0 + _HOUR, price_per_mwh=42.5),
            PriceSlot(start=_T0 + _HOUR, end=_T0 + 2 * _HOUR, price_per_mwh=131.0),
        ],
        source="day-ahead csv",
    ),
    example_params={"zone": "de-lu"},
)

HISTORY_REQUEST: Topic[HistoryQuery] = Topic(
    path="history/request",
    payload=HistoryQuery,
    qos=1,
    retain=False,
    producers=(Role.GATEWAY, Role.RENDERER),
    consumers=(Role.RECORDER,),
    doc="Ask the recorder for stored history. Set the MQTT 5 response topic (and correlation data); the "
    "recorder publishes a HistoryResult there.",
    example=HistoryQuery(
        kind="telemetry", battery="battery-1", begin=_T0 - _HOUR, end=_T0 + _HOUR, every_s=60, limit=10_000
    ),
)

HISTORY_RESPONSE: Topic[HistoryResult] = Topic(
    path="history/response/{client}",
    payload=HistoryResult,
    qos=1,
    retain=False,
    producers=(Role.RECORDER,),
    consumers=(Role.REQUESTER,),
    doc="Where a client asks the recorder to answer (its MQTT 5 response topic). The correlation data of "
    "the request is echoed back.",
    example=HistoryResult(
        ok=True,
        columns=["time", "soc_kwh", "power_kw", "target_charge_kw", "target_discharge_kw"],
        rows=[["2025-01-16T10:00:00Z", 700.0, None, 100.0, 50.0]],
    ),
    example_params={"client": "gateway-5000"},
)

HISTORY: Request[HistoryQuery, HistoryResult] = Request(ask=HISTORY_REQUEST, answer=HISTORY_RESPONSE)
"""Stored history from the recorder: ``await bus.request(HISTORY, query)`` is a HistoryResult (``ok=false`` with
the reason when the recorder cannot answer; ``TimeoutError`` when no recorder answers)."""

STORED_RESPONSE: Topic[StoredReceipt] = Topic(
    path="stored/{client}",
    payload=StoredReceipt,
    qos=0,
    retain=False,
    producers=(Role.RECORDER,),
    consumers=(Role.REQUESTER,),
    doc="Stored confirmations. A publisher that must know when its data is in the database (the gateway's "
    "durable POST /write, a bridge) sets this topic as the MQTT 5 response topic of each data message (telemetry, "
    "commands, states, schedules, prices) and gives it correlation data (1-64 printable ASCII characters); once "
    "the batch holding the message is written, the recorder that stored it (with shared subscriptions exactly one "
    "replica) quotes the correlation data here. QoS 0: a lost receipt only means the publisher re-sends or "
    "reports the data as not confirmed; it never makes unstored data look stored.",
    example=StoredReceipt(recorder="recorder", stored=["3f2a9d1e-0", "3f2a9d1e-1"]),
    example_params={"client": "gateway"},
)

STORED: Topic[StoredUpTo] = Topic(
    path="battery/{battery}/stored",
    payload=StoredUpTo,
    qos=0,
    retain=False,
    producers=(Role.RECORDER,),
    consumers=(Role.DEVICE, Role.SIMULATOR),
    doc="How far a battery's own telemetry (source device) is in the database, for devices and bridges that "
    "keep their readings until they are stored. The recorder publishes the newest such timestamp at most once "
    "per BESS_RECORDER_CONFIRM_INTERVAL_MS for each battery whose readings it stored since. A broker crash can "
    "lose readings it had acknowledged (PUBACK) but not yet saved or delivered, and the recorder never hears of "
    "those, so a device follows this rule: keep each reading; after every (re)connect re-send every kept "
    "reading, oldest first, before any new one (not retained); ignore confirmations until one covers a reading "
    "first published after that re-send, then drop every kept reading up to its ts. Not published by recorders "
    "on a shared subscription (the broker deals one battery's readings to several replicas, so none sees them in "
    "order); there, use response topics (stored/{client}).",
    example=StoredUpTo(ts=_T0, recorder="recorder"),
    example_params={"battery": "battery-1"},
)

STATUS: Topic[NodeStatus] = Topic(
    path="node/{node}/status",
    payload=NodeStatus,
    qos=1,
    retain=True,
    producers=(Role.EVERY_NODE,),
    consumers=(Role.ANYONE, Role.RENDERER, Role.ALARMS, Role.HOMEASSISTANT, Role.HASS),
    doc="A node's health: online, degraded (with the reason) or offline. The broker publishes offline as "
    "the node's last will when it dies without saying goodbye. The renderer shows every node's status in the "
    "dashboard's status strip; Home Assistant makes each entity unavailable while the node feeding it is offline "
    "and shows one connectivity sensor per node.",
    example=NodeStatus(
        node="recorder",
        state="online",
        since=_T0,
        version="0.1.0",
        pid=4242,
        counters={"received": 1200, "stored": 1200, "decode_errors": 0},
    ),
    example_params={"node": "recorder"},
)

ALARM: Topic[Alarm] = Topic(
    path="battery/{battery}/alarm/{rule}",
    payload=Alarm,
    qos=1,
    retain=True,
    producers=(Role.ALARMS,),
    consumers=(Role.RECORDER, Role.RENDERER, Role.ALARMS, Role.HASS, Role.ANYONE),
    doc="One alarm of one battery: raised (with since, severity, the message, the value and the threshold) or "
    "cleared again, one topic per rule (soc_below_min, soc_above_max, telemetry_stale, command_not_followed, "
    "cell_temp_high, cell_temp_low, cell_voltage_high, cell_voltage_low, bms_alarm, node_offline, node_degraded, "
    "prices_stale, plan_infeasible). Retained: whoever subscribes later sees every alarm that is up now, and a "
    "cleared message replaces the raised one. The alarms node reads its own retained alarms at start, so a "
    "restart neither raises an alarm again nor forgets one. Raised and cleared with hysteresis (README, Alarms). "
    "Home Assistant shows each as a binary sensor (device class problem) of the battery.",
    example=Alarm(
        rule="cell_temp_high",
        state="raised",
        since=_T0,
        severity="critical",
        message="max cell temperature 57.2 °C above 55 °C",
        value=57.2,
        threshold=55.0,
        unit="°C",
    ),
    example_params={"battery": "battery-1", "rule": "cell_temp_high"},
)

MODE_REQUEST: Topic[ModeRequest] = Topic(
    path="battery/{battery}/request/mode",
    payload=ModeRequest,
    qos=1,
    retain=False,
    producers=(Role.HASS, Role.RENDERER),
    consumers=(Role.GATEWAY,),
    doc="Home Assistant's control mode select and the dashboard's autopilot pause/resume (published by the "
    "renderer after the dashboard's token and CSRF checks). The gateway applies it exactly as POST /control (the "
    "same code: unknown battery, command rate) and publishes the ControlMode and, for idle, the IDLE Command, "
    "naming the request's source (homeassistant or dashboard); what it did is on battery/{battery}/request/result, "
    "with the request's request_id. Not retained: a stale request must not be replayed.",
    example=ModeRequest(mode="manual", for_s=3600, reason="maintenance", source="dashboard", request_id="r-5f0c2a91"),
    example_params={"battery": "battery-1"},
)

POWER_REQUEST: Topic[PowerRequest] = Topic(
    path="battery/{battery}/request/power",
    payload=PowerRequest,
    qos=1,
    retain=False,
    producers=(Role.HASS, Role.RENDERER),
    consumers=(Role.GATEWAY,),
    doc="A manual power setpoint, signed like telemetry (+ discharge, - charge, 0 idle): Home Assistant's number "
    "or the dashboard's manual command (with its lease, valid_for_s). The gateway applies it exactly as POST "
    "/mqtt/publish with the equivalent command text (the same code: spec limits, control precedence, command "
    "rate, lease) and publishes the ControlMode manual and the Command, both naming the request's source "
    "(homeassistant or dashboard); what it did is on battery/{battery}/request/result, with the request_id.",
    example=PowerRequest(power_kw=50.0, valid_for_s=900, source="dashboard", request_id="r-5f0c2a92"),
    example_params={"battery": "battery-1"},
)

REPLAN_REQUEST: Topic[ReplanRequest] = Topic(
    path="battery/{battery}/request/replan",
    payload=ReplanRequest,
    qos=1,
    retain=False,
    producers=(Role.HASS, Role.RENDERER),
    consumers=(Role.PLANNER,),
    doc="Home Assistant's re-plan button and the dashboard's re-plan now: the planner plans that battery again at "
    "once (a new schedule, with the usual debounce of BESS_PLANNER_MIN_REPLAN_INTERVAL_S). A battery the planner "
    "does not know is ignored and counted. No result is published: the new schedule is the answer.",
    example=ReplanRequest(reason="Home Assistant button"),
    example_params={"battery": "battery-1"},
)

REQUEST_RESULT: Topic[RequestResult] = Topic(
    path="battery/{battery}/request/result",
    payload=RequestResult,
    qos=1,
    retain=True,
    producers=(Role.GATEWAY,),
    consumers=(Role.HASS, Role.RENDERER),
    doc="What the gateway did with the latest mode or power request of the battery: accepted (with the "
    "command id), or refused with the error an HTTP client would get, with the request's source and request_id. "
    "Retained, so Home Assistant shows why its last control did nothing; shared by every requester, so the "
    "dashboard matches its own result by request_id (it reads every result live, not only the retained latest).",
    example=RequestResult(
        ts=_T0,
        request="power",
        outcome="refused",
        status=422,
        error="DISCHARGE 300 kW exceeds battery-1's max_discharge_kw of 250 kW (from its BatterySpec)",
        field="power_kw",
        source="dashboard",
        request_id="r-5f0c2a92",
    ),
    example_params={"battery": "battery-1"},
)

OUTLOOK: Topic[BatteryOutlook] = Topic(
    path="battery/{battery}/outlook",
    payload=BatteryOutlook,
    qos=1,
    retain=True,
    producers=(Role.HOMEASSISTANT,),
    consumers=(Role.HASS,),
    doc="Derived, for Home Assistant: the control mode in force, the plan's action and power now, the next "
    "change and the price now, recomputed by the homeassistant node at every slot and mode boundary (Home "
    "Assistant evaluates a template only when a message arrives, so it cannot tell 'now' from a daily forecast).",
    example=BatteryOutlook(
        ts=_T0,
        control_mode="autopilot",
        plan_id="p-20250116T10-battery-1",
        action="charge",
        power_kw=-250.0,
        slot_end=_T0 + _HOUR,
        next_change_at=_T0 + _HOUR,
        next_action="discharge",
        next_power_kw=250.0,
        price_per_mwh=42.5,
        price_until=_T0 + _HOUR,
        currency="EUR",
        zone="de-lu",
        upcoming=[
            OutlookSlot(start=_T0, end=_T0 + _HOUR, action="charge", power_kw=-250.0, price_per_mwh=42.5),
            OutlookSlot(start=_T0 + _HOUR, end=_T0 + 2 * _HOUR, action="discharge", power_kw=250.0,
                        price_per_mwh=131.0),
        ],
    ),
    example_params={"battery": "battery-1"},
)

REVENUE: Topic[DayRevenue] = Topic(
    path="battery/{battery}/revenue",
    payload=DayRevenue,
    qos=1,
    retain=True,
    producers=(Role.RENDERER,),
    consumers=(Role.HASS,),
    doc="Derived: realised revenue since the start of the battery's day (BESS_RENDERER_DAY_TZ), computed by "
    "the renderer with the dashboard's own KPI integrals over the stored telemetry and prices, published at "
    "most every BESS_RENDERER_REVENUE_INTERVAL_S while it changes. Not published while the history is still "
    "being read or unavailable (a partial sum would look like a real one).",
    example=DayRevenue(
        day_start=_T0 - 10 * _HOUR,
        tz="Europe/Berlin",
        computed_at=_T0,
        until=_T0 - timedelta(seconds=1),
        realised_revenue=12.34,
        currency="EUR",
        samples=36_000,
        energy_charged_kwh=500.0,
        energy_discharged_kwh=450.0,
    ),
    example_params={"battery": "battery-1"},
)

_DAY = datetime(2025, 1, 15, tzinfo=UTC)

KPI_DAY: Topic[KpiDay] = Topic(
    path="battery/{battery}/kpi/day",
    payload=KpiDay,
    qos=1,
    retain=False,
    producers=(Role.RENDERER,),
    consumers=(Role.RECORDER,),
    doc="Derived: the exact KPI integrals of one final UTC day, 96 buckets of 15 minutes, computed by the "
    "renderer from the raw telemetry and prices (the database cannot run the energy model: hold-last power, "
    "SOC-derived spans, pieces split at price slots). The recorder stores each bucket as a kpi_15m point "
    "(history kind kpi); a recomputed day (a back-dated sample, prices that arrived later) is published again "
    "and overwrites the same points. Not retained: the store is where days are read back. (The example shows "
    "2 of the 96 buckets.)",
    example=KpiDay(
        day=_DAY,
        computed_at=_DAY + timedelta(days=1, hours=7),
        currencies=["EUR"],
        buckets=[
            KpiBucket(
                start=_DAY + timedelta(minutes=15 * i), charged_kwh=12.5 if i % 2 else 0.0,
                discharged_kwh=0.0 if i % 2 else 11.0, revenue=-1.0 if i % 2 else 1.1,
                buy_money=1.0 if i % 2 else 0.0, priced_charged_kwh=12.5 if i % 2 else 0.0,
                sell_money=0.0 if i % 2 else 1.1, priced_discharged_kwh=0.0 if i % 2 else 11.0,
                covered_s=900.0, loss_kwh=0.4, samples=900.0,
                first_ts=_DAY + timedelta(minutes=15 * i), first_soc_kwh=500.0,
                last_ts=_DAY + timedelta(minutes=15 * i, seconds=899), last_soc_kwh=500.0,
            )
            for i in range(2)
        ],
    ),
    example_params={"battery": "battery-1"},
)

ALL_REQUESTS: tuple[Request[Any, Any], ...] = (HISTORY,)

ALL_TOPICS: tuple[Topic[Any], ...] = (
    TELEMETRY,
    SPEC,
    COMMAND,
    STATE,
    CONTROL,
    SCHEDULE,
    FIGURE,
    PRICES,
    HISTORY_REQUEST,
    HISTORY_RESPONSE,
    STORED_RESPONSE,
    STORED,
    STATUS,
    ALARM,
    MODE_REQUEST,
    POWER_REQUEST,
    REPLAN_REQUEST,
    REQUEST_RESULT,
    OUTLOOK,
    REVENUE,
    KPI_DAY,
)
