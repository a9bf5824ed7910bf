"""Validate node settings exactly as each node does at start, without starting it: ``deploy/up`` runs this
before it starts anything, so an invalid value stops ``up`` with the node's own one-line complaint (exit 2).

Unlike ``deploy/stack.py`` this needs the project's dependencies (msgspec and the nodes' imports), so
``deploy/stack.py`` runs it with the venv's python::

    .venv/bin/python deploy/check_config.py ROOT < '{"simulator": {"BESS_SIM_SPEED": "fast", ...}, ...}'
    {"simulator": {"error": "simulator: invalid configuration: BESS_SIM_SPEED: Expected `float`, got `str`",
                   "variables": ["BESS_BATTERIES", ..., "BESS_SIM_SPEED", ...]}}

Which Struct a node uses is read from its own entry point: the ``main("<node>", <ConfigClass>, <Factory>)``
call in ``nodes/<node>/__main__.py`` and the import that binds ``<ConfigClass>`` (found with :mod:`ast`, so
nothing here has to be kept in step with the nodes). The check is :func:`nodes.runtime.config.load_or_exit`
itself, with its message captured. ``variables`` lists the BESS_* variables that config reads (plus
``BESS_LOG_LEVEL``), so ``up`` records and compares only settings that matter to the node; it is null when
no config class can be found or imported (``up`` then records every BESS_* variable and says the node went
unchecked; ``unchecked`` says why).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Read by every node outside its config Struct (nodes/runtime/node.py configure_logging).
EXTRA_VARIABLES: tuple[str, ...] = ("BESS_LOG_LEVEL",)


def config_class_path(main_py: Path) -> tuple[str, str] | None:
    """``(module, class name)`` of the config Struct that ``main_py`` passes to ``main(name, cls, factory)``."""
    try:
        tree = ast.parse(main_py.read_text(), filename=str(main_py))
    except (OSError, SyntaxError):
        return None
    imported: dict[str, str] = {}
    class_name: str | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                imported[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called == "main" and isinstance(node.args[1], ast.Name):
                class_name = node.args[1].id
    if class_name is None or class_name not in imported:
        return None
    return imported[class_name], class_name


def check(root: Path, node: str, env: Mapping[str, str]) -> dict[str, Any]:
    """``{"error": one line or None, "variables": [...] or None}`` for ``node`` run with ``env``."""
    found = config_class_path(root / "nodes" / node / "__main__.py")
    if found is None:
        return {"error": None, "variables": None}
    module_name, class_name = found

    from nodes.runtime.config import env_names, load_or_exit  # the project's dependencies only once a node is checked

    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # a broken node must not stop the others: it starts and fails visibly on its own
        return {"error": None, "variables": None, "unchecked": f"cannot import {module_name}.{class_name}: {exc}"}
    # the current names and the deprecated ones a node still honours: a change of either restarts it
    variables = sorted({*env_names(cls), *EXTRA_VARIABLES})
    complaint = io.StringIO()
    error: str | None = None
    with contextlib.redirect_stderr(complaint):
        try:
            load_or_exit(cls, node, env)
        except SystemExit:
            lines = complaint.getvalue().strip().splitlines()
            error = lines[-1] if lines else f"{node}: invalid configuration"
    return {"error": error, "variables": variables}


def main(argv: list[str]) -> int:
    """``check_config.py ROOT`` with ``{node: env}`` JSON on stdin; prints ``{node: result}`` JSON."""
    if len(argv) != 1:
        print("usage: check_config.py ROOT < {node: {VAR: value}} (JSON)", file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    sys.path.insert(0, str(root))
    envs = json.load(sys.stdin)
    result = {node: check(root, node, env) for node, env in envs.items()}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
