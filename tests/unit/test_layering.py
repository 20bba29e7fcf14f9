"""The layering rules of ARCHITECTURE.md, checked on every import statement (lazy ones included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "aion": {"aionctl", "aiond"},
    "aionctl": {"aiond"},
    "aiond": {"aionctl"},
}


def imported_roots(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {root}"
        for path in files
        for root, line in imported_roots(path)
        if root in FORBIDDEN[package]
    ]
    assert violations == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from aiond.server import Daemon\n    import aionctl.app\n")
    assert imported_roots(bad) == {("aiond", 2), ("aionctl", 3)}


def test_importing_the_core_loads_neither_program() -> None:
    code = (
        "import sys, aion, aion.errors, aion.exitcodes, aion.addresses, aion.schemas;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aionctl', 'aiond'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


ROOMS = {
    # room: the other rooms of aiond it may import (serving, the composition, may import them all)
    "state": set(),
    "events": set(),
    "security": {"state", "settings", "usage", "events"},
    "policy": {"state"},
    "execution": {"state", "policy"},
}


def imported_modules(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module, node.lineno))
    return found


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_aiond_rooms_import_only_the_rooms_below_them(room: str) -> None:
    files = sorted((REPO / "aiond" / room).rglob("*.py"))
    assert files, f"no aiond/{room}/"
    allowed = ROOMS[room] | {room}
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for module, line in imported_modules(path)
        if module.startswith("aiond.") and module.split(".")[1] not in allowed
    ]
    assert violations == []
