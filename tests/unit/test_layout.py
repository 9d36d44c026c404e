"""The package layout holds: one door per foreign system, and no import up the graph.

Read from the source with `ast` (nothing is imported), so a new module that reaches
psycopg2 or confluent_kafka directly, or a capability that imports one above it, fails
here rather than eroding the layout unnoticed. docs/architecture.md draws the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cdc_recon"
DOORS = {"psycopg2": "pg", "confluent_kafka": "kafka", "pymysql": "mariadb"}
# Lower numbers are imported by higher ones, never the other way round. Packages of one
# level do not import each other either (sweep and reconcile are independent).
LEVELS = {
    "exceptions": 0,
    "faults": 0,
    "events": 1,
    "batch": 2,
    "timeparse": 1,
    "fit": 1,
    "config": 3,
    "pg": 4,
    "mariadb": 4,
    "kafka": 4,
    "codecs": 4,
    "source_db": 5,
    "workload": 5,
    "apply": 6,
    "replay": 7,
    "sweep": 8,
    "reconcile": 8,
    "trace": 9,  # one key's rows in the control tables of apply, sweep and reconcile
    "retention": 9,  # reads the control tables of apply, sweep and reconcile
    "monitor": 10,  # serves the trace
    "run": 11,
    "control_schema": 11,
    "cli": 12,
    "__init__": 12,
}


def modules() -> dict[str, ast.Module]:
    """Every module of the package by its path under cdc_recon/ ("apply/applier.py")."""
    return {
        str(path.relative_to(PACKAGE)): ast.parse(path.read_text(), str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def imported(tree: ast.Module) -> set[str]:
    """The dotted names a module imports, function-local imports included."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def owner(path: str) -> str:
    """The package (or top-level module) of cdc_recon a module belongs to."""
    return path.split("/", 1)[0].removesuffix(".py")


@pytest.mark.parametrize("foreign", sorted(DOORS))
def test_one_package_imports_each_foreign_system(foreign: str) -> None:
    importers = {
        path
        for path, tree in modules().items()
        if any(name == foreign or name.startswith(foreign + ".") for name in imported(tree))
    }
    assert importers, f"nothing imports {foreign}: the door test reads the wrong tree"
    outside = sorted(path for path in importers if owner(path) != DOORS[foreign])
    assert not outside, f"only {DOORS[foreign]}/ may import {foreign}; also: {outside}"


def test_no_import_runs_up_the_graph() -> None:
    upward = []
    for path, tree in modules().items():
        mine = owner(path)
        for name in imported(tree):
            parts = name.split(".")
            if parts[0] != "cdc_recon" or len(parts) < 2 or parts[1] == mine:
                continue
            if LEVELS[parts[1]] >= LEVELS[mine]:
                upward.append(f"{path} imports {name}")
    assert not upward, "\n".join(upward)


def test_every_package_has_a_level() -> None:
    assert {owner(path) for path in modules()} == set(LEVELS)
