"""The Go-built peers run, and are the builds of the versions the rig pins."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.rig import install
from tests.rig.services import GoTools, OciRegistry

VERSION_ARGS = {
    "cosign": ["version"],
    "oras": ["version"],
    "grpcurl": ["-version"],
    "grpc_health_probe": ["-version"],
    "sops": ["--version", "--disable-version-check"],  # else it asks GitHub for the latest release
    "kubeconform": ["-v"],
    "kustomize": ["version"],
}


@pytest.mark.parametrize("tool", sorted(install.GO_TOOLS))
def test_tool_runs(go_tools: GoTools, tool: str) -> None:
    result = go_tools.run(tool, *VERSION_ARGS[tool])
    assert (result.stdout + result.stderr).strip()


@pytest.mark.parametrize("tool", sorted(install.GO_TOOLS))
def test_tool_is_built_from_the_pinned_module_version(go_tools: GoTools, tool: str) -> None:
    go = shutil.which("go") or str(install.RIG_HOME / "go" / install.GO_FALLBACK_TOOLCHAIN / "bin" / "go")
    info = subprocess.run(
        [go, "version", "-m", str(go_tools.path(tool))], capture_output=True, text=True, check=True
    )
    package, version = install.GO_TOOLS[tool]
    main_module = next(line.split() for line in info.stdout.splitlines() if line.strip().startswith("mod\t"))
    assert package.startswith(main_module[1])
    assert main_module[2] == version


def test_oras_pushes_and_pulls_through_the_rig_registry(
    go_tools: GoTools, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    src = tmp_path / "hello.txt"
    src.write_text("hello from the rig\n")
    ref = f"{oci_registry.host}/rig/oras:smoke"
    go_tools.run("oras", "push", "--plain-http", ref, f"{src.name}:text/plain", cwd=tmp_path)
    out = tmp_path / "out"
    go_tools.run("oras", "pull", "--plain-http", "-o", str(out), ref)
    assert (out / src.name).read_text() == "hello from the rig\n"
