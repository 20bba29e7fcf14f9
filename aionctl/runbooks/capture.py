"""Running one aionctl command in-process, as a runbook step: its output captured, its time bounded.

A ``run:`` step goes through :func:`aionctl.app.run`, the very code the command line runs, rather
than a new aionctl process: the step costs no interpreter start-up, and its JSON document is the
step's result. While it runs, standard output and error go to bounded buffers and standard input
is empty (a command that would prompt sees end-of-file, and refuses, instead of hanging a run).

The step's timeout is a real-time timer (SIGALRM) that raises :class:`StepTimeout` in the command,
wherever it waits: a gRPC call, an HTTP read, a sleep between polls. StepTimeout derives from
BaseException so that no ``except Exception`` in a command swallows it, as KeyboardInterrupt
would not be. Off the main thread (an embedding program) there is no timer, and the commands' own
deadlines (``--timeout``) bound them.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

MAX_CAPTURE = 16 << 20
"""Most characters kept of a step's standard output (and, separately, its standard error)."""


class StepTimeout(BaseException):
    """A step ran past its timeout."""


class Bounded(io.StringIO):
    """A text buffer that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = MAX_CAPTURE) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def write(self, text: str) -> int:
        room = self.limit - self.tell()
        if room <= 0:
            self.dropped += len(text)
            return len(text)
        if len(text) > room:
            self.dropped += len(text) - room
            super().write(text[:room])
        else:
            super().write(text)
        return len(text)

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`StepTimeout` in this (main) thread after ``seconds``."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_aionctl(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Run ``aionctl ARGV`` in-process: (exit code, stdout, stderr). StepTimeout after ``timeout``."""
    from aionctl.app import run

    out, err = Bounded(), Bounded()
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO("")
    try:
        with deadline(timeout):
            code = run(list(argv))
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved
    return code, _text(out), _text(err)


def _text(buffer: Bounded) -> str:
    text = buffer.getvalue()
    if buffer.dropped:
        text += f"\n[{buffer.dropped} more characters not kept]\n"
    return text


__all__ = ["MAX_CAPTURE", "Bounded", "StepTimeout", "deadline", "run_aionctl"]
