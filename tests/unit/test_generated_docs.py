"""Generated files (openapi.json, topics.md, schemas/) are the same bytes on Python 3.11 and 3.13.

Python 3.13 strips the common indentation of docstrings at compile time; 3.11 keeps it, and msgspec up to 0.22
copies a Struct's ``__doc__`` into the JSON Schema as it finds it. These tests give every Struct the docstring
each Python version would compile and require the generated text not to change, so a generator that lets
docstring indentation through fails here on either version (and with any msgspec).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import nodes.gateway.openapi  # noqa: F401  (imports every body Struct of the gateway)
from nodes.contract import docs
from nodes.gateway.openapi import render

ROOT = Path(__file__).resolve().parents[2]


def _project_structs() -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    todo: list[type[Any]] = [msgspec.Struct]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("nodes.") and sub.__doc__:
                found.append(sub)
    return found


def _as_python_311(doc: str) -> str:
    """The docstring as 3.11 keeps it: the source's 4-space indentation on every line after the first."""
    lines = inspect.cleandoc(doc).split("\n")
    return "\n".join([lines[0], *("    " + line if line else "" for line in lines[1:])]) + "\n    "


def _as_python_313(doc: str) -> str:
    """The docstring as 3.13 compiles it: common indentation stripped."""
    return inspect.cleandoc(doc)


def _generated() -> dict[str, str]:
    return {**docs.generated_files(), "openapi.json": render()}


@pytest.fixture
def structs() -> Iterator[list[type[msgspec.Struct]]]:
    classes = _project_structs()
    original = {cls: cls.__doc__ for cls in classes}
    yield classes
    for cls, doc in original.items():
        cls.__doc__ = doc


def _rewrite(classes: list[type[msgspec.Struct]], style: Any) -> None:
    for cls in classes:
        assert cls.__doc__ is not None
        cls.__doc__ = style(cls.__doc__)


def test_multi_line_docstrings_exist_so_the_comparison_means_something(
    structs: list[type[msgspec.Struct]],
) -> None:
    multi = [cls.__name__ for cls in structs if "\n" in inspect.cleandoc(cls.__doc__ or "")]
    assert len(multi) >= 3, multi


def test_generated_files_do_not_depend_on_docstring_indentation(structs: list[type[msgspec.Struct]]) -> None:
    _rewrite(structs, _as_python_311)
    as_311 = _generated()
    _rewrite(structs, _as_python_313)
    as_313 = _generated()
    changed = [path for path in as_311 if as_311[path] != as_313[path]]
    assert changed == [], f"these generated files differ between Python 3.11 and 3.13 docstrings: {changed}"


def _descriptions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from _descriptions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _descriptions(value)


def test_checked_in_descriptions_carry_no_docstring_indentation() -> None:
    files = [ROOT / "openapi.json", *sorted((ROOT / "schemas").glob("*.schema.json"))]
    texts = [text for path in files for text in _descriptions(json.loads(path.read_text()))]
    assert texts
    indented = [text for text in texts if text != inspect.cleandoc(text)]
    assert indented == []
