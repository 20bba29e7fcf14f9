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
    "aionctl": {"aiond", "opentelemetry"},  # its start-up is measured; it makes no spans
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


TRACING = {"aion/tracing.py", "aiond/tracing.py"}
"""The only modules that import OpenTelemetry, and only once traces are switched on."""


def module_level_imports(path: Path) -> set[tuple[str, int]]:
    """The roots imported by statements that run when the module is imported (not in a function, nor
    under ``if TYPE_CHECKING``)."""
    found: set[tuple[str, int]] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((node.module.split(".")[0], node.lineno))
            elif isinstance(node, ast.If) and not (
                isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            ):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body)
    return found


def test_opentelemetry_is_imported_only_when_traces_are_on() -> None:
    files = [path for package in FORBIDDEN for path in sorted((REPO / package).rglob("*.py"))]
    elsewhere = [
        f"{path.relative_to(REPO)}:{line}"
        for path in files
        if str(path.relative_to(REPO)) not in TRACING
        for root, line in imported_roots(path)
        if root == "opentelemetry"
    ]
    at_import = [
        f"{name}:{line}"
        for name in sorted(TRACING)
        for root, line in module_level_imports(REPO / name)
        if root == "opentelemetry"
    ]
    assert elsewhere == []
    assert at_import == []


def test_the_cli_and_the_core_load_no_opentelemetry() -> None:
    code = (
        "import sys, aion.envelopes, aion.providers, aion.tracing, aion.modules.install, aiond.logs;"
        "from aionctl.app import run; rc = run(['--help']);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry');"
        "print(bad, file=sys.stderr); sys.exit(rc or (1 if bad else 0))"
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
