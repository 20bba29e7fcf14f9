"""Run the real ``aiond`` and ``aionctl`` programs, as installed in the test environment.

End-to-end tests go through these: a real daemon process on free loopback ports, and the real CLI as
a subprocess, so that exit codes, stdout/stderr separation and signal handling are what users get.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

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
    # Never the developer's own client contexts (~/.config/aion/config.yaml): a file that does not exist.
    env["AION_CLIENT_CONFIG"] = str(Path(os.devnull).parent / "nonexistent-aion-client-config.yaml")
    env.update(extra or {})
    return env


def mint_token(state_dir: Path, name: str, role: str) -> str:
    """What ``aiond token --state-dir STATE_DIR create NAME --role ROLE`` prints, run in this process:
    the same entry point (aiond.main.main), without the second or so a new interpreter takes."""
    from aiond.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["token", "--state-dir", str(state_dir), "create", name, "--role", role])
    if code != 0:
        raise RuntimeError(f"aiond token create failed (exit {code}): {err.getvalue()}")
    return out.getvalue().strip()


class Aiond:
    """A real aiond process on free loopback ports."""

    def __init__(
        self,
        workdir: Path,
        *,
        config_dir: Path = EXAMPLES,
        extra_args: Sequence[str] = (),
        command_prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        """``command_prefix`` runs aiond under another program, for example
        ``("prlimit", "--nofile=256:256")`` to start it with a small open-file limit; ``env`` adds to
        its environment. ``tokens`` (role -> token) are those of a state directory made elsewhere
        (a restored backup): then none is created."""
        self.workdir = workdir
        self.env = dict(env or {})
        self.config_dir = config_dir
        self.extra_args = list(extra_args)
        self.command_prefix = list(command_prefix)
        self.state_dir = workdir / "state"
        self.grpc_addr = self.http_addr = ""
        # One token per role, written into the state directory before the daemon starts: by the code
        # behind `aiond token create`, run in this process (the command itself, as a subprocess, is
        # tested through create_token and in tests/e2e/test_auth.py and test_tokens.py).
        self.tokens = (
            dict(tokens)
            if tokens is not None
            else {
                role: mint_token(self.state_dir, f"test-{role}", role)
                for role in ("viewer", "operator", "admin")
            }
        )
        self.process = self._process()

    def _process(self) -> ManagedProcess:
        self.grpc_addr = f"127.0.0.1:{free_port()}"
        self.http_addr = f"127.0.0.1:{free_port()}"
        argv = [
            *self.command_prefix,
            program("aiond"),
            "--config", str(self.config_dir),
            "--state-dir", str(self.state_dir),
            "--grpc-listen", self.grpc_addr,
            "--http-listen", self.http_addr,
            # API keys come from here alone (tests that need one write it there)
            "--secrets-dir", str(self.workdir / "secrets"),
            *self.extra_args,
        ]  # fmt: skip
        return ManagedProcess("aiond", argv, log_path=self.workdir / "aiond.log", env=clean_env(self.env))

    def start(self, timeout: float = 30.0) -> Aiond:
        def launch() -> ManagedProcess:
            if self.process.proc is not None:  # a retry: the last ports were taken
                self.process = self._process()
            return self.process.start()

        start_with_retries(launch, self.ready, timeout=timeout)
        return self

    @property
    def tls(self) -> bool:
        return "--tls-cert" in self.extra_args

    def ready(self) -> bool:
        if self.tls:  # readiness only: the tests check certificates themselves
            return http_ok(f"https://{self.http_addr}/readyz", verify=False)
        return http_ok(f"http://{self.http_addr}/readyz")

    def stop(self) -> int | None:
        return self.process.stop()

    def create_token(self, name: str, role: str, *extra: str) -> str:
        """`aiond token create` on this daemon's state directory; returns the token."""
        result = subprocess.run(
            [program("aiond"), "token", "--state-dir", str(self.state_dir),
             "create", name, "--role", role, *extra],
            capture_output=True, text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"aiond token create failed: {result.stderr}")
        return result.stdout.strip()

    def aionctl_env(self, role: str = "admin") -> dict[str, str]:
        """Environment that points aionctl at this daemon, with a token of ``role`` ("" for none)."""
        env = {
            "AION_ADDR": self.grpc_addr,
            "AION_HTTP_ADDR": self.http_addr,
            "AION_CLIENT_CONFIG": str(self.workdir / "aionctl.yaml"),
        }
        if role:
            env["AION_TOKEN"] = self.tokens[role]
        return env

    def channel(self, role: str = "admin") -> grpc.Channel:
        """A gRPC channel to this daemon whose calls carry a token of ``role``; close it after use."""
        plain = grpc.insecure_channel(self.grpc_addr, options=[("grpc.enable_http_proxy", 0)])
        return grpc.intercept_channel(plain, _BearerToken(self.tokens[role]))

    def metadata(self, role: str = "admin") -> tuple[tuple[str, str], ...]:
        """gRPC call metadata with a token of ``role``."""
        return (("authorization", f"Bearer {self.tokens[role]}"),)


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _with_token(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self._token}")]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)


def aionctl(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,  # noqa: A002 - mirrors subprocess.run
    timeout: float = 60.0,
    memory_cap: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real aionctl; never raises on a non-zero exit (tests assert on it). ``memory_cap``
    bounds its address space, so that a read that is not bounded fails the test instead of the host."""

    def cap() -> None:
        import resource

        assert memory_cap is not None
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    return subprocess.run(
        [program("aionctl"), *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=input,
        timeout=timeout,
        check=False,
        preexec_fn=cap if memory_cap is not None else None,
    )
