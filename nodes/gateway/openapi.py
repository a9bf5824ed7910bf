"""The gateway's OpenAPI 3.1 document, generated from the body Structs (:mod:`nodes.gateway.bodies`).

``python -m nodes.gateway openapi > openapi.json`` writes it to the repository root; a unit test fails when the
checked-in file differs from :func:`render`. The running gateway serves the same document at
``GET /openapi.json``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from nodes import __version__
from nodes.contract.docs import clean_descriptions
from nodes.contract.names import ID_REGEX, ID_SHAPE
from nodes.gateway.bodies import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_BATCH,
    MAX_RECORD_BYTES,
    AlarmRecord,
    CommandBody,
    ControlBody,
    ControlState,
    Health,
    PricesBody,
    PublishedBatch,
    PublishedCommand,
    PublishedControl,
    PublishedPrices,
    PublishedTelemetry,
    ReadRecord,
    WriteRequest,
)
from nodes.gateway.errors import ErrorBody
from nodes.gateway.reads import CSV_HEADER

_REF = "#/components/schemas/{name}"

_ERRORS = {
    "400": "malformed JSON",
    "401": "missing or wrong bearer token (only when BESS_GATEWAY_TOKEN is set)",
    "408": "the body did not arrive within BESS_GATEWAY_BODY_TIMEOUT_S (30 s); the connection is closed",
    "413": f"body larger than BESS_GATEWAY_MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES:,} bytes: a batch of "
    f"{MAX_BATCH:,} records of up to {MAX_RECORD_BYTES} bytes each)",
    "415": "Content-Type is not JSON (a missing Content-Type is accepted)",
    "422": "invalid content: the error names the field",
    "503": "MQTT broker unreachable or did not acknowledge: nothing was accepted",
}


def _error(description: str, error: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": error}}}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str, description: str, schema: dict[str, Any], *, required: bool = False,
           example: str | None = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "required": required, "description": description,
                             "schema": schema}
    if example is not None:
        param["example"] = example
    return param


_UNKNOWN_BATTERY = ("unknown battery: the gateway has seen no spec, telemetry or state for it and the gateway "
                    'wrote none (send "force": true to command it anyway)')
_RATE_LIMITED = ("more commands for this battery than the per-battery bound allows (BESS_COMMAND_BURST in a burst, "
                 "BESS_COMMAND_RATE_PER_MIN a minute; a stop passes beyond it once per refill interval): nothing "
                 "was published; retry after Retry-After seconds")
_READ_401 = ("missing or wrong bearer token (only when BESS_GATEWAY_TOKEN is set): BESS_GATEWAY_READ_TOKEN, by "
             "default the same token; the write token reads too")


def document() -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    types: list[Any] = [
        WriteRequest, PublishedTelemetry, PublishedBatch, CommandBody, PublishedCommand, PricesBody,
        PublishedPrices, list[ReadRecord], Health, ErrorBody, ControlBody, PublishedControl, ControlState,
        list[AlarmRecord],
    ]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    (write_req, published_t, published_b, command_req, published_c, prices_req, published_p, records, health,
     error, control_req, published_control, control_state, alarm_records) = schemas
    battery = _param("battery", "query", f"battery id ({ID_SHAPE}); default BESS_GATEWAY_DEFAULT_BATTERY",
                     {"type": "string", "pattern": ID_REGEX})
    secured: list[dict[str, list[str]]] = [{"bearer": []}, {}]

    def post(summary: str, request: dict[str, Any], ok: dict[str, Any], *, params: list[dict[str, Any]],
             example: Any, description: str | None = None, extra: dict[str, str] | None = None) -> dict[str, Any]:
        responses: dict[str, Any] = {"202": ok}
        responses.update({code: _error(text, error) for code, text in {**_ERRORS, **(extra or {})}.items()})
        operation: dict[str, Any] = {"summary": summary}
        if description is not None:
            operation["description"] = description
        return {
            "post": {
                **operation,
                "security": secured,
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request, "example": example}},
                },
                "responses": responses,
            }
        }

    written = {"oneOf": [published_t, published_b]}
    write = post(
        "Write a battery record (or an array of records) as Telemetry on battery/{battery}/telemetry",
        write_req,
        _json_body(written, "accepted by the broker (PUBACK) but not confirmed stored: with ack=broker nothing was "
                   "waited for; with ack=stored (the default) the recorder did not confirm the records listed in "
                   "unconfirmed within BESS_GATEWAY_WRITE_STORED_TIMEOUT_S. They may yet be stored, or be lost if the "
                   "broker crashes before delivering them; re-sending them is safe"),
        params=[battery, _param("ack", "query", "what the answer waits for: stored (default, "
                                "BESS_GATEWAY_WRITE_ACK): the recorder's confirmation that every record is in the "
                                "database; broker: the "
                                "broker's acknowledgement only (faster; a broker crash can still lose the records)",
                                {"type": "string", "enum": ["stored", "broker"]})],
        example={"SOC": 700, "target_discharge": 50, "target_charge": 100, "timestamp": "2025-01-16T10:00:00Z"},
        description=f"One record or an array of 1 to {MAX_BATCH:,} records. The body may be up to "
        f"BESS_GATEWAY_MAX_BODY_BYTES (default {DEFAULT_MAX_BODY_BYTES:,} bytes, room for {MAX_BATCH:,} records "
        f"of {MAX_RECORD_BYTES} bytes: a full batch of the README's records with a battery id fits); larger "
        "bodies get 413. "
        "Records are identified by battery and timestamp, so writing one again rewrites the same "
        "point: every retry is safe. 200: stored, the recorder confirmed every record in the database. 202: "
        "accepted by the broker, not (all) confirmed stored. 422: invalid, or refused by the database. 503: the "
        "broker did not acknowledge, nothing is known to be accepted; re-send.",
        extra={"422": "invalid content (the error names the field), or the database refused a record "
               "(re-sending it unchanged is refused again)",
               "503": "MQTT broker unreachable or did not acknowledge: not accepted; re-sending is safe"},
    )
    write["post"]["responses"] = {"200": _json_body(written, "stored: the recorder confirmed every record in the "
                                                    "database (ack=stored)"), **write["post"]["responses"]}
    paths: dict[str, Any] = {
        "/write": write,
        "/read": {
            "get": {
                "summary": "Read stored records back, oldest first, in the shape they were written",
                "security": secured,
                "parameters": [
                    _param("begin", "query", "RFC 3339 with a zone", {"type": "string", "format": "date-time"},
                           required=True, example="2025-01-16T09:00:00Z"),
                    _param("end", "query", "RFC 3339 with a zone; default now; must be after begin",
                           {"type": "string", "format": "date-time"}, example="2025-01-16T11:00:00Z"),
                    battery,
                    _param("every", "query", "downsample to means per interval: <n>s|m|h|d, e.g. 30s, 1m, 15m, 1h",
                           {"type": "string", "pattern": "^[0-9]+(s|m|h|d)$"}),
                    _param("format", "query", f"json (default) or csv (header: {CSV_HEADER})",
                           {"type": "string", "enum": ["json", "csv"]}),
                    _param("limit", "query", "return only the first N rows (header X-Truncated: true if more)",
                           {"type": "integer", "minimum": 1}),
                ],
                "responses": {
                    "200": {
                        "description": "records, oldest first",
                        "content": {"application/json": {"schema": records},
                                    "text/csv": {"schema": {"type": "string"}}},
                    },
                    "401": _error(_READ_401, error),
                    "422": _error("invalid parameter, begin not before end, or too many rows without every=",
                                  error),
                    "502": _error("the recorder failed to query the database", error),
                    "503": _error("MQTT broker unreachable", error),
                    "504": _error("the recorder did not answer in time", error),
                },
            }
        },
        "/alarms": {
            "get": {
                "summary": "The stored alarm transitions of a battery (raised, cleared), oldest first",
                "description": "What the alarms node published on battery/{battery}/alarm/{rule}, as the recorder "
                "stored it: one record per raise and per clear (a clear names when it was raised). An alarm "
                "raised and not cleared is up now.",
                "security": secured,
                "parameters": [
                    _param("begin", "query", "RFC 3339 with a zone; default one day before end",
                           {"type": "string", "format": "date-time"}, example="2025-01-16T09:00:00Z"),
                    _param("end", "query", "RFC 3339 with a zone; default now; must be after begin",
                           {"type": "string", "format": "date-time"}),
                    battery,
                    _param("limit", "query", "return only the first N records (header X-Truncated: true if more)",
                           {"type": "integer", "minimum": 1}),
                ],
                "responses": {
                    "200": _json_body(alarm_records, "alarm transitions, oldest first"),
                    "401": _error(_READ_401, error),
                    "422": _error("invalid parameter, or begin not before end", error),
                    "502": _error("the recorder failed to query the database", error),
                    "503": _error("MQTT broker unreachable", error),
                    "504": _error("the recorder did not answer in time", error),
                },
            }
        },
        "/mqtt/publish": post(
            "Send a command (CHARGE/DISCHARGE <power> <unit>, IDLE, STOP) to a battery on battery/{battery}/set",
            command_req,
            _json_body(published_c, "published and acknowledged by the broker; control says until when the "
                       "autopilot is paused"),
            params=[battery],
            example={"command": "DISCHARGE 50kW"},
            description="Control precedence: an operator command sets the battery's control mode to manual "
            "until the command's lease ends (a retained ControlMode on battery/{battery}/control, published "
            "before the command): the planner sends no command meanwhile and resumes at that instant. A manual "
            "mode already in force that lasts longer is kept. In mode idle only IDLE/STOP pass (409 otherwise).",
            extra={"404": _UNKNOWN_BATTERY,
                   "409": "the battery is in control mode idle: only IDLE or STOP pass until POST /control "
                   "changes the mode",
                   "429": _RATE_LIMITED},
        ),
        "/control": {
            **post(
                "Set who commands a battery: autopilot, manual or idle (retained on battery/{battery}/control)",
                control_req,
                _json_body(published_control, "published and acknowledged by the broker"),
                params=[battery],
                example={"mode": "autopilot"},
                description="autopilot: the planner sends each slot's command. manual: operator commands only; "
                "the planner keeps planning (the schedule stays visible) but sends nothing. idle: the battery is "
                "sent IDLE and held idle (only IDLE/STOP commands pass). With for_s the mode ends after that "
                "many seconds and the planner's configured default (BESS_PLANNER_AUTOPILOT) applies again.",
                extra={"404": _UNKNOWN_BATTERY, "429": _RATE_LIMITED + " (mode idle sends IDLE)"},
            ),
            "get": {
                "summary": "The control mode in force for a battery (null: the planner's configured default)",
                "security": secured,
                "parameters": [battery],
                "responses": {
                    "200": _json_body(control_state, "the mode in force and the last ControlMode seen"),
                    "401": _error(_READ_401, error),
                    "404": _error("unknown battery: no spec, telemetry, state or control mode seen", error),
                    "422": _error("invalid battery id or unknown query parameter", error),
                },
            },
        },
        "/prices": post(
            "Publish a price forecast on market/{zone}/prices (retained)",
            prices_req,
            _json_body(published_p, "published and acknowledged by the broker"),
            params=[],
            example={"zone": "de-lu", "issued_at": "2025-01-16T09:00:00Z", "slots": [
                {"start": "2025-01-16T10:00:00Z", "end": "2025-01-16T11:00:00Z", "price_per_mwh": 42.5}]},
        ),
        "/health": {
            "get": {
                "summary": "Liveness and broker connection",
                "responses": {
                    "200": _json_body(health, "connected to the MQTT broker"),
                    "503": _json_body(health, "not connected to the MQTT broker"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
    }
    for item in paths.values():
        for operation in item.values():
            limited = operation.get("responses", {}).get("429")
            if limited is not None:
                limited["headers"] = {"Retry-After": {
                    "description": "seconds until the battery's bucket allows a command again",
                    "schema": {"type": "integer", "minimum": 1},
                }}
    # descriptions come from docstrings (msgspec copies a Struct's __doc__): normalised so that Python 3.11 and
    # 3.13 write the same file
    doc: dict[str, Any] = clean_descriptions({
        "openapi": "3.1.0",
        "info": {
            "title": "BESS gateway",
            "version": __version__,
            "description": "HTTP to MQTT gateway of the battery energy storage system. Every error is "
            '{"error": "...", "field": "..." | null}. GENERATED by `python -m nodes.gateway openapi`; '
            "do not edit by hand.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
    return doc


def render() -> str:
    """The document as the JSON text kept in ``openapi.json`` (2-space indent, trailing newline)."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


__all__ = ["document", "render"]
