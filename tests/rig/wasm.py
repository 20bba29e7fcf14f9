"""WASM modules for the tests, compiled from C with Debian's clang and wasi-libc.

:func:`build` compiles one C file (a test module under ``tests/fixtures/modules/``, or any other)
into a WASI command with exactly the flags of ``tools/build_modules.py``, which builds the example
modules: the command line comes from there, so the two cannot differ. Results are cached by a hash
of everything that goes into them (the source, the shared header ``aion_module.h``, the command line
and the compiler's version), so a warm run compiles nothing.

:func:`toolchain_missing` says what is not installed. Tests go through :func:`require_toolchain`,
which fails under ``CI=true`` and skips otherwise, with the command that installs it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

from tests.rig import install

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "modules"
CACHE = install.RIG_HOME / "wasm"
TOOLCHAIN = ("clang", "lld", "wasi-libc", "libclang-rt-14-dev-wasm32")
"""The Debian packages a build needs (their commands and files are in install.APT_PACKAGES)."""


@functools.cache
def build_modules() -> ModuleType:
    """tools/build_modules.py, loaded from its file (tools/ is not a package)."""
    path = REPO / "tools" / "build_modules.py"
    spec = importlib.util.spec_from_file_location("aion_tools_build_modules", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toolchain_missing() -> str | None:
    """What is missing to build a module, or None when everything is installed."""
    absent = [package for package in TOOLCHAIN if not install.provided(install.APT_PACKAGES[package])]
    if not absent:
        return None
    return f"the Debian package{'s' if len(absent) > 1 else ''} {', '.join(absent)} not installed"


def require_toolchain() -> None:
    """Fail (CI=true) or skip the calling test when the toolchain is missing."""
    reason = toolchain_missing()
    if reason is not None:
        from tests.rig.plugin import unavailable

        unavailable("the WASM toolchain", reason, "sudo python3 tests/rig/install.py apt")


@functools.cache
def _compiler_version() -> str:
    result = subprocess.run([build_modules().CLANG, "--version"], capture_output=True, text=True, check=False)
    return result.stdout


def fixture(name: str) -> Path:
    """The C source of a test module: ``fixture("loop")`` is tests/fixtures/modules/loop.c."""
    return FIXTURES / f"{name}.c"


def build(source: Path, out_dir: Path = CACHE) -> Path:
    """``source`` compiled into a ``.wasm`` under ``out_dir`` (reused when it is already there).

    Raises RuntimeError with clang's message when it does not compile."""
    tool = build_modules()
    headers = sorted(tool.INCLUDE.glob("*.h"))
    command = tool.compile_command([source], Path("out.wasm"), cwd=REPO)
    digest = hashlib.sha256()
    for part in (source.read_bytes(), *(h.read_bytes() for h in headers)):
        digest.update(hashlib.sha256(part).digest())
    digest.update("\0".join(command).encode())
    digest.update(_compiler_version().encode())
    target = out_dir / f"{source.stem}-{digest.hexdigest()[:20]}.wasm"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
        built = Path(tmp) / "out.wasm"
        result = subprocess.run(
            tool.compile_command([source], built, cwd=REPO),
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{source.name} did not compile:\n{result.stderr.strip()}")
        built.replace(target)
    return target


__all__ = ["CACHE", "FIXTURES", "build", "fixture", "require_toolchain", "toolchain_missing"]
