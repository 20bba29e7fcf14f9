"""Run the real ``aiond`` and ``aionctl`` programs, as installed in the test environment.

End-to-end tests go through these: a real daemon process on free loopback ports, and the real CLI as
a subprocess, so that exit codes, stdout/stderr separation and signal handling are what users get.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.rig.procs import ManagedProcess, free_port, http_ok, start_with_retries

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def program(name: str) -> str:
    """The console script installed next to the running interpreter (the test virtualenv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed in this environment; run: pip install -e .")
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without aion settings that would leak in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AION_", "AIOND_"))}
    env.update(extra or {})
    return env


class Aiond:
    """A real aiond process on free loopback ports."""

    def __init__(self, workdir: Path, *, config_dir: Path = EXAMPLES, extra_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.config_dir = config_dir
        self.extra_args = list(extra_args)
        self.state_dir = workdir / "state"
        self.grpc_addr = self.http_addr = ""
        self.process = self._process()

    def _process(self) -> ManagedProcess:
        self.grpc_addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}"
        argv = [
            program("aiond"),
            "--config", str(self.config_dir),
            "--state-dir", str(self.state_dir),
            "--grpc-listen", self.grpc_addr,
            "--http-listen", self.http_addr,
            *self.extra_args,
        ]  # fmt: skip
        return ManagedProcess("aiond", argv, log_path=self.workdir / "aiond.log", env=clean_env())

    def start(self, timeout: float = 30.0) -> Aiond:
        def launch() -> ManagedProcess:
            if self.process.proc is not None:  # a retry: the last ports were taken
                self.process = self._process()
            return self.process.start()

        start_with_retries(launch, self.ready, timeout=timeout)
        return self

    def ready(self) -> bool:
        return http_ok(f"http://{self.http_addr}/readyz")

    def stop(self) -> int | None:
        return self.process.stop()

    def aionctl_env(self) -> dict[str, str]:
        """Environment that points aionctl at this daemon."""
        return {"AION_ADDR": self.grpc_addr, "AION_HTTP_ADDR": self.http_addr}


def aionctl(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run the real aionctl; never raises on a non-zero exit (tests assert on it)."""
    return subprocess.run(
        [program("aionctl"), *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=input,
        timeout=timeout,
        check=False,
    )
