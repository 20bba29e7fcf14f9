"""The wheel is what users install: it carries the schemas, the generated API and both programs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.rig.daemon import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("aion-*.whl")
    return built


def test_wheel_carries_schemas_api_and_programs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = {p.relative_to(REPO / "schemas").as_posix() for p in (REPO / "schemas").rglob("*.json")}
    assert schemas
    assert {f"aion/_data/schemas/{s}" for s in schemas} <= names
    assert {"aion/py.typed", "aion/api/v1/admin_pb2.py", "aion/api/v1/admin_pb2.pyi"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "tools/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "aionctl = aionctl.main:main" in text
    assert "aiond = aiond.main:main" in text


def test_installed_schemas_load_without_a_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from aion import schemas;"
        "print(json.dumps({'root': str(schemas.root()), 'names': schemas.names(),"
        " 'id': schemas.load('output/health')['$id']}))"
    )
    # -I: no user site, no current directory on sys.path, so the checkout cannot leak in.
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    found = json.loads(result.stdout)
    assert found["root"] == str(site / "aion" / "_data" / "schemas")
    assert "output/health" in found["names"]
    assert found["id"] == "urn:aion:schema:v1:output:health"
