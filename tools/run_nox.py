#!/usr/bin/env python3
"""Run nox from a private virtualenv, creating it on first use: ``python3 tools/run_nox.py -s tests``.

This is how README's two commands work on any machine with Python 3.11+ and pip, including Debian's own
Python, which refuses ``pip install`` outside a virtualenv (PEP 668) and may lack the venv module's
pip (``python3-venv``). It needs neither: virtualenv is fetched with ``pip install --target`` (which
PEP 668 allows), and virtualenv brings its own pip into the environment it creates. The environment
lives in ~/.cache/aion-nox and is reused; the nox sessions then create their own environments the same
way (nox's default virtualenv backend).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NOX_VERSION = "2026.10.20"
VIRTUALENV_VERSION = "21.15.11"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aion-nox"
TAG = f"py{sys.version_info.major}{sys.version_info.minor}-nox{NOX_VERSION}"
VENV = CACHE / TAG
PYTHON = VENV / "bin" / "python"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"run_nox: failed ({result.returncode}): {' '.join(cmd)}")


def _create() -> None:
    bootstrap = CACHE / f"bootstrap-{TAG}"
    if not (bootstrap / "virtualenv").is_dir():
        print(f"run_nox: fetching virtualenv {VIRTUALENV_VERSION} into {bootstrap}", file=sys.stderr)
        _run([
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(bootstrap), f"virtualenv=={VIRTUALENV_VERSION}",
        ])  # fmt: skip
    print(f"run_nox: creating {VENV}", file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": str(bootstrap)}
    _run([sys.executable, "-m", "virtualenv", "--quiet", "--clear", str(VENV)], env=env)
    _run([
        str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"nox=={NOX_VERSION}",
    ])  # fmt: skip


def main() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script is what tells an older Python so
        sys.exit(f"run_nox: aion needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists() or subprocess.run([str(PYTHON), "-c", "import nox"], check=False).returncode != 0:
        _create()
    # The session environments must not inherit a virtualenv that happens to be active.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    os.chdir(Path(__file__).resolve().parent.parent)
    os.execve(str(PYTHON), [str(PYTHON), "-m", "nox", *sys.argv[1:]], env)  # noqa: S606 - no shell wanted


if __name__ == "__main__":
    main()
