"""The shape of the house: every node package has the same rooms, and domain code sits where its noun says."""

from __future__ import annotations

import ast
from pathlib import Path

NODES = Path(__file__).resolve().parents[2] / "nodes"
NODE_PACKAGES = ("gateway", "market", "planner", "recorder", "renderer", "simulator")
MAX_LINES = 600


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_market_side_does_not_import_the_planner() -> None:
    """The price file format belongs to the market; the planner's CLI reads it from there, not the other way."""
    offenders = {
        str(path.relative_to(NODES)): sorted(m for m in _imports(path) if m.startswith("nodes.planner"))
        for path in (NODES / "market").rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    assert "nodes.market.prices_csv" in _imports(NODES / "planner" / "cli.py")
