"""The arrows only point down: storage <- sync <- {app, server_stub}; UI code never writes SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Which of our packages (and which UI toolkits) each package must never import.
FORBIDDEN: dict[str, set[str]] = {
    "storage": {"sync", "maps", "app", "server_stub", "PySide6", "pyqtgraph", "pycrdt", "starlette"},
    "sync": {"maps", "app", "server_stub", "PySide6", "pyqtgraph", "starlette"},
    "maps": {"app", "server_stub", "sync", "storage", "PySide6"},
    "server_stub": {"app", "maps", "PySide6", "pyqtgraph"},
}


def imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations(package: str, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, line in sorted(imported_top_levels(path))
        if name in forbidden
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package, FORBIDDEN[package]) == []


def test_layering_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom app.main import main\nimport PySide6.QtCore\n")
    assert {name for name, _ in imported_top_levels(bad)} == {"os", "app", "PySide6"}


def test_app_never_writes_sql() -> None:
    sql_verbs = ("INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE", ".execute(")
    offenders = [
        f"{path.relative_to(ROOT)}: {verb}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        for verb in sql_verbs
        if verb in path.read_text()
    ]
    assert offenders == []
