"""Processes the test rig starts: launch, poll until ready (never sleep blindly), stop, and show logs.

A readiness wait polls a probe until a deadline and fails at once, with the log tail, if the process
dies first. Short pauses between polls are the only waiting there is.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.05
_PR_SET_PDEATHSIG = 1
_LIVE: set[ManagedProcess] = set()


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGKILL when the test runner dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        proc.kill()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], str | None] = lambda: None,
) -> T:
    """Call ``probe`` until it returns something other than None (or False); raise after ``timeout``.

    ``alive`` returns None while the thing being waited for can still become ready, or a reason why
    it cannot (for example "process exited with 1"), which ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except Exception as exc:  # a probe failing is the normal state until ready
            result, last_error = None, exc
        if result is not None and result is not False:
            return result
        dead = alive()
        if dead is not None:
            raise RuntimeError(f"{what}: {dead}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what}: not ready after {timeout:g}s{detail}")
        time.sleep(POLL_INTERVAL)


def http_ok(url: str, *, verify: Any = True) -> bool:
    """GET ``url`` directly (never through a proxy from the environment); True on 200."""
    import httpx

    return httpx.get(url, timeout=1, trust_env=False, verify=verify).status_code == 200


def start_with_retries(
    launch: Callable[[], ManagedProcess], ready: Callable[[], object], *, timeout: float, attempts: int = 3
) -> ManagedProcess:
    """Start a service on ports picked by :func:`free_port`, and wait until it is ready.

    Another process can take such a port between the pick and the service's bind. When the service
    dies saying so, ``launch`` runs again (it picks new ports); any other failure is raised at once.
    """
    for attempt in range(1, attempts + 1):
        proc = launch()
        try:
            proc.wait_ready(ready, timeout=timeout)
        except RuntimeError:
            conflict = "address already in use" in proc.log_tail(400).lower()
            proc.kill()
            if conflict and attempt < attempts:
                continue
            raise
        except BaseException:
            proc.kill()
            raise
        return proc
    raise AssertionError("unreachable")


class ManagedProcess:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl-C meant for pytest does not reach it first
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the rig starts no threads before this
            )
        finally:
            log.close()
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def exited(self) -> str | None:
        """None while running, else why it is not (for :func:`poll`'s ``alive``)."""
        if self.proc is None:
            return "never started"
        code = self.proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with {code}; log tail:\n{self.log_tail()}"

    def wait_ready(self, probe: Callable[[], T | None], *, timeout: float) -> T:
        return poll(probe, timeout=timeout, what=f"{self.name} readiness", alive=self.exited)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        _LIVE.discard(self)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        _LIVE.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
