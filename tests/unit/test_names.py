"""nodes/contract/names.py: the one definition of roles, the node list and the id rule.

The id rule used to be written in five places (contract, messages, deploy/auth.py, the renderer, the gateway's
OpenAPI) with a test keeping two of them equal; now every one of them reads names.py, and a scan of the code
keeps it that way.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.contract import names
from nodes.contract.topics import ALL_TOPICS, TopicError, check_id

REPO = Path(__file__).resolve().parents[2]
#: The id character class (lower case only): the root and share-group rules ([A-Za-z0-9_-]) are other rules.
ID_CLASS_IN_TEXT = re.compile(r"(?<!A-Z)a-z0-9_-")


def _code_strings(path: Path) -> Iterator[tuple[int, str]]:
    """Every string constant of ``path`` that is not a docstring (prose may mention the rule; code must not)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_the_id_rule_is_written_only_in_names_py() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for folder in ("nodes", "deploy")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "nodes" / "contract" / "names.py"
        for line, text in _code_strings(path)
        if ID_CLASS_IN_TEXT.search(text)
    ]
    assert found == [], "use nodes.contract.names (ID_REGEX, ID_SHAPE, ID_RULE, id_problems) instead"


@pytest.mark.parametrize(
    ("value", "valid"),
    [("battery-1", True), ("a_b", True), ("x" * 64, True), ("x" * 65, False), ("", False), ("B1", False),
     ("a/b", False), ("+", False), ("#", False)],
)
def test_id_rule(value: str, valid: bool) -> None:
    assert (names.id_problems(value) == []) is valid
    assert bool(names.ID_PATTERN.fullmatch(value)) is valid
    if not valid:
        with pytest.raises(TopicError, match=re.escape(names.ID_RULE)):
            check_id(value)


def test_roles_of_the_contract_are_documented_and_nodes_are_roles() -> None:
    assert set(names.ROLE_DOCS) == set(names.Role)
    assert set(names.NODES) <= set(names.Role)
    assert tuple(role.value for role in names.NODES) == names.NODE_NAMES
    used = {role for topic in ALL_TOPICS for role in (*topic.producers, *topic.consumers)}
    assert used == set(names.Role), "a role no topic uses is dead weight; a topic role must be a Role"
    for node in names.NODE_NAMES:
        assert (REPO / "nodes" / node / "__main__.py").exists(), f"names.NODES lists {node}, which has no package"
