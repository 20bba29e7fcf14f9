"""What the operator sees while a runbook runs, on standard error (standard output is the report).

On a terminal: a spinner with the step's name and elapsed time while it runs (and its tries while
it waits), then one line per step with its outcome. Elsewhere (CI logs, pipes): plain lines, one
when a step starts and one when it ends, with nothing that redraws. The rich console is bound to
the real standard error when the run starts, so the capture of a step's output never sees it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.spinner import Spinner

    from aion.runbook.model import Step
    from aionctl.runbooks.executor import StepRecord

_MARK = {"passed": "ok", "failed": "FAILED", "skipped": "skipped", "planned": "plan"}


class Progress(Protocol):
    def planned(self, index: int, total: int, step: Step, record: StepRecord) -> None: ...
    def started(self, index: int, total: int, step: Step, record: StepRecord) -> None: ...
    def waiting(self, step: Step, record: StepRecord) -> None: ...
    def finished(self, step: Step, record: StepRecord) -> None: ...
    def confirm(self, step: Step, text: str) -> bool | None:
        """The operator's answer to a manual step; None when there is no terminal to ask on."""
        ...

    def close(self) -> None: ...


class Silent:
    """No progress (``--quiet``); manual steps still need --yes."""

    def planned(self, index: int, total: int, step: Step, record: StepRecord) -> None:
        pass

    def started(self, index: int, total: int, step: Step, record: StepRecord) -> None:
        pass

    def waiting(self, step: Step, record: StepRecord) -> None:
        pass

    def finished(self, step: Step, record: StepRecord) -> None:
        pass

    def confirm(self, step: Step, text: str) -> bool | None:
        return _ask_tty(text)

    def close(self) -> None:
        pass


class Plain(Silent):
    """Lines for logs: ``[3/9] readiness ...`` then ``[3/9] readiness ok 0.21s``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.where: dict[str, str] = {}

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def planned(self, index: int, total: int, step: Step, record: StepRecord) -> None:
        pass  # the plan is the report

    def started(self, index: int, total: int, step: Step, record: StepRecord) -> None:
        self.where[step.name] = f"[{index + 1}/{total}] {step.name}"
        self._line(f"{self.where[step.name]} ... {record.command}")

    def waiting(self, step: Step, record: StepRecord) -> None:
        where = self.where.get(step.name, step.name)
        self._line(f"{where} try {record.attempts} failed: {record.error}; trying again")

    def finished(self, step: Step, record: StepRecord) -> None:
        where = self.where.get(step.name, step.name)
        mark = _MARK.get(record.status, record.status)
        tail = f": {record.error}" if record.error and record.status == "failed" else ""
        self._line(f"{where} {mark} {record.seconds:.2f}s{tail}")

    def confirm(self, step: Step, text: str) -> bool | None:
        return _ask_tty(text)


class Live(Plain):
    """A terminal: a spinner line for the running step, a line per finished step."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        from rich.console import Console

        self.console = Console(file=stream, highlight=False, soft_wrap=False)
        self.live: object | None = None
        self.began = 0.0
        self.label = ""

    def _status(self) -> Spinner:
        from rich.spinner import Spinner

        return Spinner("dots", text=f"{self.label}  {time.monotonic() - self.began:.1f}s")

    def started(self, index: int, total: int, step: Step, record: StepRecord) -> None:
        from rich.live import Live as RichLive

        self.where[step.name] = f"[{index + 1}/{total}] {step.name}"
        self.label = f"{self.where[step.name]}  [dim]{_clip(record.command)}[/dim]"
        self.began = time.monotonic()
        live = RichLive(
            console=self.console,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self._status,
        )
        live.start()
        self.live = live

    def waiting(self, step: Step, record: StepRecord) -> None:
        where = self.where.get(step.name, step.name)
        self.label = f"{where}  [dim]try {record.attempts + 1}: {_clip(record.error or '')}[/dim]"

    def _stop(self) -> None:
        if self.live is not None:
            self.live.stop()  # type: ignore[attr-defined]
            self.live = None

    def finished(self, step: Step, record: StepRecord) -> None:
        self._stop()
        style = {"passed": "green", "failed": "bold red", "skipped": "yellow"}.get(record.status, "")
        mark = {"passed": "✓", "failed": "✗", "skipped": "-"}.get(record.status, "·")
        where = self.where.get(step.name, step.name)
        tail = f": {_clip(record.error, 300)}" if record.error and record.status == "failed" else ""
        self.console.print(
            f"[{style}]{mark}[/{style}] {where} [dim]{record.seconds:.2f}s[/dim]{tail}"
            if style
            else f"{mark} {where}{tail}",
            markup=True,
        )

    def confirm(self, step: Step, text: str) -> bool | None:
        self._stop()
        return _ask_tty(text)

    def close(self) -> None:
        self._stop()


def _clip(text: str, size: int = 70) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= size else text[: size - 1] + "…")


def _ask_tty(text: str) -> bool | None:
    """Ask on the controlling terminal (not standard input, which a pipe may hold)."""
    try:
        tty = Path("/dev/tty").open("r+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with tty:
        if not tty.isatty():
            return None
        tty.write(f"\n  manual step: {text}\n  done? [y/N] ")
        tty.flush()
        answer = tty.readline(64).strip().lower()
    return answer in ("y", "yes")


def choose(quiet: bool) -> Progress:
    stream = sys.stderr
    if quiet:
        return Silent()
    if stream.isatty():
        return Live(stream)
    return Plain(stream)


__all__ = ["Live", "Plain", "Progress", "Silent", "choose"]
