"""The step kinds' I/O: what each kind does when tried once, and how it is shown in a plan.

- ``run``: an aionctl command, in-process (:mod:`aionctl.runbooks.capture`), with ``-o json`` added
  when the command has ``--output``; the result is its JSON document (a list for JSON Lines).
- ``http``: one request with httpx; the result is ``{status, headers, json | text}``, the body read
  up to ``max_bytes`` and refused beyond.
- ``exec``: a program, without a shell; ``{exit, stdout, stderr, json?}``, or for ``background``
  ``{pid, log}`` with the program stopped when the run ends.
- ``manual``: the operator's confirmation (``--yes`` off a terminal).
- ``elapsed``: the time since an earlier step started, against a limit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aion.runbook.check import resolve_command, verbs
from aion.runbook.model import Step
from aionctl.runbooks.capture import MAX_CAPTURE, StepTimeout, run_aionctl

if TYPE_CHECKING:
    from aionctl.runbooks.executor import Executor

DEFAULT_HTTP_MAX = 4 << 20
STOP_GRACE = 10.0


@dataclasses.dataclass(slots=True)
class Outcome:
    exit: int | None = None
    status: int = 0
    result: Any = None
    stderr: str = ""
    error: str | None = None
    """Why the try failed before its result could be judged (timed out, unreachable, not found)."""


class Background:
    """A program an ``exec`` step left running; stopped (TERM, then KILL) when the run ends."""

    def __init__(self, process: subprocess.Popen[bytes], name: str) -> None:
        self.process = process
        self.name = name

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def describe_raw(step: Step) -> str:
    """The step as written, references unresolved."""
    if step.kind in ("run", "exec"):
        return shlex.join(step.body)
    if step.kind == "http":
        return f"{step.body.get('method', 'GET')} {step.body.get('url', '')}"
    if step.kind == "elapsed":
        return f"elapsed since {step.body.get('since')}"
    return str(step.body)


def describe(executor: Executor, step: Step) -> str:
    """The step as it runs, references resolved: the command line a person could type."""
    if step.kind == "run":
        return "aionctl " + shlex.join(_argv(executor, step))
    if step.kind == "exec":
        return shlex.join(executor.words(step.body))
    if step.kind == "http":
        body = executor.render(dict(step.body))
        return f"{body.get('method', 'GET')} {body['url']}"
    if step.kind == "elapsed":
        limit = step.body.get("max")
        return f"elapsed since {step.body['since']}" + (
            f" (at most {executor.render(limit)})" if limit is not None else ""
        )
    return str(executor.render(step.body))


def changes_state(executor: Executor, step: Step) -> bool:
    """Whether the step may change something: a command marked so in aionctl's table, any program
    (``exec``: aionctl cannot know), a POST, or a manual instruction."""
    if step.kind == "run":
        command, _ = resolve_command(executor.words(step.body))
        return command is None or bool(verbs()[command]["changesState"])
    if step.kind == "http":
        return str(step.body.get("method", "GET")) == "POST"
    return step.kind in ("exec", "manual")


def _argv(executor: Executor, step: Step) -> list[str]:
    words = executor.words(step.body)
    command, rest = resolve_command(words)
    if command is not None and verbs()[command]["output"] and not _has_output(rest):
        words += ["-o", "json"]
    return words


def _has_output(words: list[str]) -> bool:
    return any(
        w == "--output" or w.startswith("--output=") or (w.startswith("-o") and not w.startswith("--"))
        for w in words
    )


def attempt(executor: Executor, step: Step, timeout: float) -> Outcome:
    match step.kind:
        case "run":
            return _run(executor, step, timeout)
        case "http":
            return _http(executor, step, timeout)
        case "exec":
            return _exec(executor, step, timeout)
        case "manual":
            return _manual(executor, step)
        case "elapsed":
            return _elapsed(executor, step)
    raise AssertionError(step.kind)


def _run(executor: Executor, step: Step, timeout: float) -> Outcome:
    argv = _argv(executor, step)
    try:
        code, out, err = run_aionctl(argv, timeout)
    except StepTimeout:
        return Outcome(error=f"timed out after {timeout:g}s")
    return Outcome(exit=code, result=parse_output(out), stderr=err[-8192:])


def parse_output(text: str) -> Any:
    """A command's output as data: one JSON document, JSON Lines as a list (even of one line: a
    streamed command's documents are one per line, a single document is indented), else
    ``{"text": ...}``."""
    stripped = text.strip()
    if not stripped:
        return None
    lines = [line for line in stripped.splitlines() if line.strip()]
    first = lines[0].strip()
    if not (first.startswith("{") and first.endswith("}")):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    try:
        return [json.loads(line) for line in lines]
    except ValueError:
        return {"text": text}


def _http(executor: Executor, step: Step, timeout: float) -> Outcome:
    import httpx

    spec = executor.render(dict(step.body))
    limit = int(spec.get("max_bytes", DEFAULT_HTTP_MAX))
    method = str(spec.get("method", "GET"))
    body = spec.get("body")
    kwargs: dict[str, Any] = {"headers": {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}}
    if body is not None:
        kwargs["content" if isinstance(body, str) else "json"] = body
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream(method, str(spec["url"]), **kwargs) as answer,
        ):
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > limit:
                    return Outcome(
                        status=answer.status_code,
                        error=f"the answer is larger than max_bytes ({limit} bytes)",
                    )
            status, headers = answer.status_code, {k.lower(): v for k, v in answer.headers.items()}
    except httpx.TimeoutException:
        return Outcome(error=f"{spec['url']}: no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        return Outcome(error=f"{spec['url']}: {str(exc) or type(exc).__name__}")
    result: dict[str, Any] = {"status": status, "headers": headers}
    text = data.decode("utf-8", errors="replace")
    try:
        result["json"] = json.loads(text) if text.strip() else None
    except ValueError:
        result["text"] = text[:65536]
    return Outcome(status=status, result=result)


def _exec(executor: Executor, step: Step, timeout: float) -> Outcome:
    argv = executor.words(step.body)
    env = {**os.environ, **{k: str(executor.render(v)) for k, v in step.env.items()}}
    logs = Path(executor.run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{step.name}.out", logs / f"{step.name}.err"
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=err if not step.background else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=step.background,
            )
    except OSError as exc:
        return Outcome(error=f"cannot start {argv[0]}: {exc.strerror or exc}")
    if step.background:
        executor.background.append(Background(process, step.name))
        time.sleep(0.05)  # a program that cannot start (bad flag) exits at once: say so here
        if (code := process.poll()) is not None:
            return Outcome(
                exit=code,
                result={"pid": process.pid, "log": str(out_path)},
                stderr=_tail(out_path),
                error=f"{argv[0]} exited at once with code {code}",
            )
        return Outcome(exit=0, result={"pid": process.pid, "log": str(out_path)})
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return Outcome(error=f"timed out after {timeout:g}s", stderr=_tail(err_path))
    stdout = _head(out_path)
    result: dict[str, Any] = {"exit": code, "stdout": stdout, "stderr": _tail(err_path)}
    parsed = parse_output(stdout)
    if parsed is not None and not (isinstance(parsed, Mapping) and set(parsed) == {"text"}):
        result["json"] = parsed
    return Outcome(exit=code, result=result, stderr=result["stderr"])


def _head(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(MAX_CAPTURE).decode("utf-8", errors="replace")


def _tail(path: Path, size: int = 8192) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", errors="replace")


def _manual(executor: Executor, step: Step) -> Outcome:
    text = str(executor.render(step.body))
    if executor.yes:
        return Outcome(result={"confirmed": True, "by": "--yes", "instruction": text})
    answer = executor.progress.confirm(step, text)
    if answer is None:
        return Outcome(
            error="a manual step needs a terminal to confirm it, or --yes", result={"instruction": text}
        )
    if not answer:
        return Outcome(error="not confirmed", result={"confirmed": False, "instruction": text})
    return Outcome(result={"confirmed": True, "by": "terminal", "instruction": text})


def _elapsed(executor: Executor, step: Step) -> Outcome:
    since = str(step.body["since"])
    record = executor.records.get(since)
    if record is None or record.started_at is None:
        return Outcome(error=f"step {since} has not run, so there is no time to measure from")
    spent = time.time() - record.started_at
    limit = step.body.get("max")
    max_seconds = executor._duration(limit, "elapsed.max") if limit is not None else None
    result = {"seconds": round(spent, 3), "since": since, "max_seconds": max_seconds}
    if max_seconds is not None and spent > max_seconds:
        return Outcome(
            result=result, error=f"{spent:.1f}s since {since} started, over the limit of {max_seconds:g}s"
        )
    return Outcome(result=result)


__all__ = ["Background", "Outcome", "attempt", "changes_state", "describe", "describe_raw", "parse_output"]
