"""A SIGKILLed aiond leaves no process behind: its validation worker and multiprocessing's resource
tracker end with it. Processes are read from /proc, as an operator counting leftovers would."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.daemon import Aiond
from tests.rig.procs import poll

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """One process, named by its pid and its start time so that a reused pid is not taken for it."""

    pid: int
    started: int
    command: str


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces and parentheses of its own.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def children_of(parent: int) -> list[Child]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != parent:
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(Child(int(entry.name), stat[2], command.strip()))
    return found


def running(child: Child) -> bool:
    stat = _stat(child.pid)
    # A zombie has ended; only whoever adopted it has yet to reap it.
    return stat is not None and stat[2] == child.started and stat[0] not in ("Z", "X")


def test_a_sigkilled_aiond_takes_its_validation_worker_and_resource_tracker_with_it(tmp_path: Path) -> None:
    daemon = Aiond(tmp_path).start()  # startup validated the config directory in the worker
    children: list[Child] = []
    try:
        children = children_of(daemon.process.pid)
        assert any("multiprocessing" in c.command for c in children), children
        daemon.process.signal(signal.SIGKILL)  # aiond alone, not its process group
        assert daemon.process.wait(timeout=10) == -signal.SIGKILL
        poll(
            lambda: not any(running(c) for c in children),
            timeout=20,
            what=f"the end of aiond's children {children}",
        )
    finally:
        daemon.stop()
        _end_leftovers(children)


def _end_leftovers(children: list[Child]) -> None:
    """After a failure: SIGTERM first, which ends the worker while the tracker ignores it, so that
    the tracker still sees the last holder of its pipe go and unlinks the semaphores; then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for child in children:
            if running(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)
        with contextlib.suppress(TimeoutError):
            poll(lambda: not any(running(c) for c in children), timeout=10, what="leftover children")


@pytest.mark.parametrize(
    ("daemon_pid", "code"),
    [("os.getppid()", 5), ("os.getppid() + 1", 0)],
    ids=["aiond-alive", "aiond-already-gone"],
)
def test_the_validation_worker_ends_at_once_when_aiond_went_before_it_could_ask_to_die_with_it(
    daemon_pid: str, code: int
) -> None:
    # A worker whose parent is not the aiond that started it was adopted: aiond is gone already.
    script = (
        "import os; from aiond.policy.validation import _die_with_daemon; "
        f"_die_with_daemon({daemon_pid}); raise SystemExit(5)"
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=60, check=False).returncode == code
