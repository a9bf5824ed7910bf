"""The shape of the house: every node package has the same rooms, and domain code sits where its noun says."""

from __future__ import annotations

import ast
from pathlib import Path

NODES = Path(__file__).resolve().parents[2] / "nodes"
NODE_PACKAGES = ("gateway", "homeassistant", "market", "planner", "recorder", "renderer", "simulator")
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


def test_every_node_package_has_the_same_rooms() -> None:
    """``__main__.py`` runs it, ``config.py`` holds its settings Struct, ``node.py`` wires it."""
    for package in NODE_PACKAGES:
        room = NODES / package
        assert {"__main__.py", "config.py", "node.py"} <= {p.name for p in room.glob("*.py")}, package
        config = ast.parse((room / "config.py").read_text())
        classes = [n.name for n in config.body if isinstance(n, ast.ClassDef) and n.name.endswith("Config")]
        assert classes, f"{package}/config.py defines no *Config Struct"
        # the entry point takes its settings from config.py (deploy/check_config.py reads that import)
        assert f"nodes.{package}.config" in _imports(room / "__main__.py"), package


def test_no_module_is_longer_than_600_lines_without_saying_why() -> None:
    """A long module names its reason in its docstring ("Longer than 600 lines: ...")."""
    long = {}
    for path in NODES.rglob("*.py"):
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and "Longer than 600 lines:" not in doc:
            long[str(path.relative_to(NODES))] = lines
    assert long == {}
