"""openapi.json is generated, up to date, self-consistent, and documents every route of the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes.gateway.app import Gateway, GatewaySettings, create_app
from nodes.gateway.openapi import document, render
from nodes.gateway.specs import SpecBook
from nodes.runtime.memory import MemoryBus

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_file_is_what_the_generator_writes() -> None:
    checked_in = (ROOT / "openapi.json").read_text()
    assert checked_in == render(), "openapi.json is stale: run `python -m nodes.gateway openapi > openapi.json`"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_reference_resolves() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    refs = _refs(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_bodies_keep_the_seed_spelling_and_are_strict() -> None:
    schemas = document()["components"]["schemas"]
    write = schemas["WriteBody"]
    assert set(write["required"]) == {"SOC", "target_discharge", "target_charge", "timestamp"}
    assert write["properties"]["timestamp"]["format"] == "date-time"
    for name in ("WriteBody", "CommandBody", "PricesBody", "PriceSlotBody"):
        assert schemas[name]["additionalProperties"] is False, name


def test_every_route_is_documented() -> None:
    app = create_app(Gateway(MemoryBus("gateway"), SpecBook(), GatewaySettings()), openapi=b"{}")
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    paths = document()["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert routes == documented


def test_served_document_is_the_generated_one() -> None:
    assert json.loads(render()) == document()
