"""Running a runbook: steps in order, each tried, judged and recorded; the first failure stops it.

The executor owns the order of a run and what a step's outcome is; the step kinds' I/O (an aionctl
command in-process, an HTTP request, a program) is in :mod:`aionctl.runbooks.steps`, and what the
operator sees in :mod:`aionctl.runbooks.progress`. A run yields a :class:`Run`: a record per
step, which the report and the resume state are written from.

A step passes when its outcome is the expected one (exit code 0 by default, an HTTP status in
200-299) and every check on its result holds. ``wait`` repeats it until it passes or the wait's
time is up; ``retries`` tries it again after a failure. A step that fails stops the run unless it
says ``on_failure: continue``; then the runbook's ``on_failure`` steps run (a rollback, say), and
the run fails all the same.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aion.errors import UsageError
from aion.runbook import conditions, templates
from aion.runbook.model import Runbook, Step, seconds

if TYPE_CHECKING:
    from aionctl.runbooks.progress import Progress
    from aionctl.runbooks.steps import Background

PASSED, FAILED, SKIPPED, NOT_RUN, REUSED, PLANNED = (
    "passed",
    "failed",
    "skipped",
    "not-run",
    "reused",
    "planned",
)
_FALSE = {"", "false", "0", "no", "null", "none", "off"}


@dataclasses.dataclass(slots=True)
class CheckRecord:
    pointer: str
    operator: str
    expected: Any
    ok: bool
    detail: str
    message: str = ""


@dataclasses.dataclass(slots=True)
class StepRecord:
    name: str
    kind: str
    status: str
    description: str = ""
    command: str = ""
    changes_state: bool = False
    started_at: float | None = None
    seconds: float = 0.0
    attempts: int = 0
    exit: int | None = None
    result: Any = None
    checks: list[CheckRecord] = dataclasses.field(default_factory=list)
    error: str | None = None
    stderr: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED


@dataclasses.dataclass(slots=True)
class Run:
    book: Runbook
    run_id: str
    started_at: float
    values: Mapping[str, Any]
    dry_run: bool = False
    finished_at: float = 0.0
    steps: list[StepRecord] = dataclasses.field(default_factory=list)
    on_failure: list[StepRecord] = dataclasses.field(default_factory=list)
    stopped_at: str | None = None
    """The step that failed and stopped the run."""
    interrupted: bool = False

    @property
    def status(self) -> str:
        if self.dry_run:
            return PLANNED
        return FAILED if self.interrupted or any(step.failed for step in self.steps) else PASSED

    @property
    def first_failure(self) -> StepRecord | None:
        return next((step for step in self.steps if step.failed), None)


def resolve_values(book: Runbook, given: Mapping[str, str]) -> dict[str, Any]:
    """The variables' values: --var over defaults; UsageError for an unknown or a missing one."""
    import difflib

    for name in given:
        if name not in book.vars:
            close = difflib.get_close_matches(name, list(book.vars), n=1)
            raise UsageError(
                f"--var {name}: runbook {book.name} has no variable {name!r}",
                hint=f"did you mean {close[0]}?"
                if close
                else f"its variables: {', '.join(book.vars) or 'none'}",
            )
    values: dict[str, Any] = {name: var.default for name, var in book.vars.items()}
    values.update(given)
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise UsageError(
            f"runbook {book.name} needs {', '.join(missing)}",
            hint=" ".join(f"--var {name}=VALUE" for name in missing),
        )
    return values


class Executor:
    def __init__(
        self,
        book: Runbook,
        values: Mapping[str, Any],
        *,
        progress: Progress,
        run_id: str,
        run_dir: str,
        yes: bool = False,
        dry_run: bool = False,
        start_from: str | None = None,
        only: Sequence[str] = (),
        previous: Mapping[str, StepRecord] | None = None,
    ) -> None:
        self.book = book
        self.progress = progress
        self.yes = yes
        self.start_from = start_from
        self.only = tuple(only)
        self.previous = dict(previous or {})
        self.run = Run(book, run_id, time.time(), dict(values), dry_run=dry_run)
        self.run_dir = run_dir
        self.records: dict[str, StepRecord] = {}
        self.background: list[Background] = []
        self.secrets = [
            str(values[n]) for n, v in book.vars.items() if v.secret and values.get(n) not in (None, "")
        ]
        for name in (start_from, *self.only):
            if name is not None and book.step(name) is None:
                import difflib

                close = difflib.get_close_matches(name, [s.name for s in book.steps], n=1)
                raise UsageError(
                    f"runbook {book.name} has no step {name!r}",
                    hint=f"did you mean {close[0]}?"
                    if close
                    else "aionctl runbook show NAME lists its steps",
                )

    # -- references -----------------------------------------------------------------------------

    def resolve(self, ref: templates.Ref) -> Any:
        match ref.kind:
            case "var":
                value = self.run.values[ref.name]
                if isinstance(value, str) and "${" in value:  # a default built from ${env.X} or ${run.X}
                    return templates.render_value(value, self._outer)
                return value
            case "env":
                if ref.name not in os.environ:
                    raise _Unresolved(f"{ref.text}: environment variable {ref.name} is not set")
                return os.environ[ref.name]
            case "run":
                return {"dir": self.run_dir, "id": self.run.run_id, "started": iso(self.run.started_at)}[
                    ref.name
                ]
            case "step":
                record = self.records.get(ref.name)
                if record is None or record.status in (NOT_RUN, SKIPPED):
                    if self.run.dry_run:
                        return f"<{ref.text[2:-1]}>"
                    state = "was skipped" if record is not None else "has not run"
                    raise _Unresolved(f"{ref.text}: step {ref.name} {state}, so it has no result")
                if ref.field == "exit":
                    return record.exit
                if ref.field == "seconds":
                    return round(record.seconds, 3)
                if ref.field == "status":
                    return record.status
                found = conditions.select(record.result, ref.pointer)
                if not found:
                    raise _Unresolved(
                        f"{ref.text}: step {ref.name}'s result has nothing at {ref.pointer or '/'}"
                    )
                return found[0][1] if len(found) == 1 else [value for _, value in found]
        raise AssertionError(ref.kind)

    def _outer(self, ref: templates.Ref) -> Any:
        if ref.kind not in ("env", "run"):
            raise _Unresolved(
                f"{ref.text}: a variable's value may refer to ${{env.NAME}} and ${{run...}} only"
            )
        return self.resolve(ref)

    def render(self, value: Any) -> Any:
        return templates.render_value(value, self.resolve)

    def condition(self, when: str | bool) -> Any:
        """A step's ``when``: a value (true unless empty, false, 0, no or null), or one comparison
        ``LEFT == RIGHT`` / ``LEFT != RIGHT`` of two values (compared as checks compare)."""
        if isinstance(when, str):
            for symbol in (" == ", " != "):
                if symbol in when:
                    left, right = (
                        templates.as_text(self.render(side.strip())) for side in when.split(symbol, 1)
                    )
                    return conditions.same(left, right) is (symbol == " == ")
        return self.render(when)

    def words(self, words: Sequence[str]) -> list[str]:
        return [templates.as_text(self.render(word)) for word in words]

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    # -- the run --------------------------------------------------------------------------------

    def execute(self) -> Run:
        steps = self.book.steps
        selected = self._selected()
        try:
            for index, step in enumerate(steps):
                if step.name not in selected:
                    self._carry(step)
                    continue
                record = self._step(step, index, len(steps))
                if record.failed and not step.continue_on_failure:
                    self.run.stopped_at = step.name
                    break
        except KeyboardInterrupt:
            self.run.interrupted = True
            self.run.stopped_at = self.run.stopped_at or (self.run.steps[-1].name if self.run.steps else None)
        finally:
            if not self.run.dry_run:
                seen = {record.name for record in self.run.steps}
                self.run.steps += [
                    StepRecord(s.name, s.kind, NOT_RUN, s.description) for s in steps if s.name not in seen
                ]
            if self.run.stopped_at and not self.run.dry_run and not self.run.interrupted:
                for index, step in enumerate(self.book.on_failure):
                    self.run.on_failure.append(
                        self._step(step, index, len(self.book.on_failure), recovery=True)
                    )
            self._stop_background()
            self.run.finished_at = time.time()
        return self.run

    def _selected(self) -> set[str]:
        names = [step.name for step in self.book.steps]
        if self.only:
            return set(self.only)
        if self.start_from:
            return set(names[names.index(self.start_from) :])
        return set(names)

    def _carry(self, step: Step) -> None:
        """A step left out by --from or --only: its result from the previous run, when there is one."""
        old = self.previous.get(step.name)
        if old is not None and old.status in (PASSED, REUSED):
            record = dataclasses.replace(old, status=REUSED)
        else:
            record = StepRecord(step.name, step.kind, NOT_RUN, step.description)
        self.records[step.name] = record
        self.run.steps.append(record)

    def _step(self, step: Step, index: int, total: int, *, recovery: bool = False) -> StepRecord:
        from aionctl.runbooks import steps as kinds

        record = StepRecord(step.name, step.kind, FAILED, step.description)
        self.records[step.name] = record
        if not recovery:
            self.run.steps.append(record)
        if step.when is not None and not self.run.dry_run:
            try:
                when = self.condition(step.when)
            except _Unresolved as exc:
                record.command, record.error = self.mask(kinds.describe_raw(step)), str(exc)
                self.progress.finished(step, record)
                return record
            if str(when).strip().lower() in _FALSE or when is False or when is None:
                record.command = self.mask(kinds.describe_raw(step))
                record.status = SKIPPED
                record.result = {"when": templates.as_text(when)}
                self.progress.started(index, total, step, record)
                self.progress.finished(step, record)
                return record
        try:
            record.command = self.mask(kinds.describe(self, step))
            record.changes_state = kinds.changes_state(self, step)
        except _Unresolved as exc:
            record.command = self.mask(kinds.describe_raw(step))
            record.error = str(exc)
        if self.run.dry_run:
            record.status = PLANNED
            self.progress.planned(index, total, step, record)
            return record
        if record.error is not None:
            self.progress.finished(step, record)
            return record
        self.progress.started(index, total, step, record)
        record.started_at = time.time()
        began = time.monotonic()
        try:
            self._try(step, record, kinds)
        except _Unresolved as exc:
            record.status, record.error = FAILED, str(exc)
        except KeyboardInterrupt:
            record.status, record.error = FAILED, "interrupted"
            record.seconds = time.monotonic() - began
            self.progress.finished(step, record)
            raise
        record.seconds = time.monotonic() - began
        self.progress.finished(step, record)
        return record

    def _try(self, step: Step, record: StepRecord, kinds: Any) -> None:
        timeout = self._duration(step.timeout, "timeout")
        wait_until = None
        interval = self._duration(step.retry_interval, "retry_interval")
        if step.wait is not None:
            wait_until = time.monotonic() + self._duration(step.wait[0], "wait.timeout")
            interval = self._duration(step.wait[1], "wait.interval")
        retries_left = step.retries
        while True:
            record.attempts += 1
            budget = timeout if wait_until is None else max(0.05, min(timeout, wait_until - time.monotonic()))
            outcome = kinds.attempt(self, step, budget)
            record.exit, record.result, record.stderr = (
                outcome.exit,
                outcome.result,
                self.mask(outcome.stderr),
            )
            record.checks = []
            record.error = outcome.error or self._judge(step, outcome, record)
            if record.error is None:
                record.status = PASSED
                return
            record.status = FAILED
            if wait_until is not None and time.monotonic() + interval < wait_until:
                self.progress.waiting(step, record)
                time.sleep(interval)
                continue
            if retries_left > 0:
                retries_left -= 1
                self.progress.waiting(step, record)
                time.sleep(interval)
                continue
            if wait_until is not None:
                record.error = f"still failing after {record.attempts} tries: {record.error}"
            return

    def _duration(self, value: Any, what: str) -> float:
        rendered = self.render(value)
        try:
            return seconds(rendered, what=what)
        except ValueError as exc:
            raise _Unresolved(str(exc)) from None

    def _judge(self, step: Step, outcome: Any, record: StepRecord) -> str | None:
        if step.kind == "http":
            accepted = step.expect_status
            status = outcome.status
            if (accepted is None and not 200 <= status < 300) or (
                accepted is not None and status not in accepted
            ):
                want = "200-299" if accepted is None else " or ".join(map(str, accepted))
                return f"HTTP status {status}, expected {want}"
        elif step.kind in ("run", "exec") and outcome.exit not in step.expect_exit:
            reason = _first_error_line(outcome.stderr)
            want = " or ".join(map(str, step.expect_exit))
            return f"exit code {outcome.exit}, expected {want}" + (f": {self.mask(reason)}" if reason else "")
        failed = None
        for check in step.checks:
            expected = self.render(check.expected)
            pointer = templates.as_text(self.render(check.pointer))
            try:
                result = conditions.evaluate(outcome.result, pointer, check.operator, expected)
            except (conditions.PointerError, ValueError) as exc:
                result = conditions.Outcome(False, str(exc))
            record.checks.append(
                CheckRecord(pointer, check.operator, expected, result.ok, result.detail, check.message)
            )
            if not result.ok and failed is None:
                failed = (check.message + ": " if check.message else "") + result.detail
        return failed

    def _stop_background(self) -> None:
        for process in reversed(self.background):
            process.stop()
        self.background.clear()


class _Unresolved(Exception):
    pass


def _first_error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("error: "):
            return line[len("error: ") :].strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def iso(epoch: float) -> str:
    """A moment as the report writes it: RFC 3339, UTC, milliseconds."""
    import datetime

    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "FAILED",
    "NOT_RUN",
    "PASSED",
    "PLANNED",
    "REUSED",
    "SKIPPED",
    "Executor",
    "Run",
    "StepRecord",
    "resolve_values",
]
