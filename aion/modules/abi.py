"""The module ABI: what aion sends a module, what it accepts back, and how a call can fail.

One ABI for both runtimes (WASM and subprocess), documented for module authors in
``docs/modules.md``, with JSON Schemas in ``schemas/module/``:

- the host writes one JSON **request** (:func:`request_bytes`) on the module's standard input and
  closes it;
- the module writes one JSON **response** on its standard output and exits 0: ``{"output": {"text":
  ...}}`` on success, ``{"error": {"code": ..., "message": ...}}`` when it declines the input;
- host calls (``secret_get``, ``log``, ``now``) go through the ``aion`` import namespace in WASM and
  through a private pipe in a subprocess, never through the environment.

Nothing a module writes is trusted: the response is bounded (:data:`MAX_OUTPUT_BYTES`), parsed as JSON
with its shape checked (:func:`parse_response`), and every secret value the module was handed is
replaced before its text or log lines go anywhere (:class:`Redactor`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

ABI_VERSION = 1
MAX_OUTPUT_BYTES = 1 << 20
"""Most bytes a module may write on its standard output in one call; more is a bad output."""
MAX_STDERR_BYTES = 4096
"""Most bytes of a module's standard error kept (for the log); the rest is dropped."""
MAX_LOG_LINE = 1024
"""A ``log`` host call's message is cut to this many bytes."""
MAX_LOG_LINES = 64
"""Most ``log`` lines one call of a module may emit; later ones are dropped and counted."""
MAX_SECRET_VALUE = 64 * 1024
MAX_ERROR_CODE = 64
MAX_MESSAGE = 512
"""A module's own error message is cut to this many characters before it reaches a task."""

_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""What a module's log line may not carry into aiond's log: control characters (a newline would
forge a line), line separators and bidirectional overrides."""


class FailureKind(enum.StrEnum):
    """Why a module call produced no answer; the ``kind`` label of the failure metric."""

    TIMEOUT = "timeout"
    """Its wall-clock limit (``timeout_ms``, or what is left of the task's deadline) passed."""
    FUEL = "fuel"
    """It used up its CPU budget (WASM fuel, or the subprocess CPU rlimit)."""
    TRAP = "trap"
    """A WebAssembly trap: an out-of-bounds access, an unreachable, a bad pointer in a host call."""
    OOM = "oom"
    """It asked for more memory than its limit."""
    CRASH = "crash"
    """It exited non-zero or was killed by a signal."""
    BAD_OUTPUT = "bad_output"
    """Its standard output was too large, not JSON, or not a response."""
    DECLINED = "declined"
    """It answered with an ``error`` object."""
    SECRET = "secret"  # noqa: S105 - the name of a failure kind
    """A secret its manifest requires could not be resolved; it was not started."""
    UNAVAILABLE = "unavailable"
    """It is not installed, failed verification, or its runtime cannot run here; it was not started."""
    SATURATED = "saturated"
    """Its parallelism and queue were full."""


RETRYABLE = frozenset({FailureKind.TIMEOUT, FailureKind.SATURATED})
"""Failures worth another attempt on the same module; the rest move on to the next target."""


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """What one call of a module may use."""

    timeout_s: float
    memory_bytes: int
    fuel: int
    """WASM instructions (roughly); for a subprocess, the CPU rlimit is derived from the timeout."""
    max_output_bytes: int = MAX_OUTPUT_BYTES


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    text: str
    output: Mapping[str, Any]
    elapsed_s: float
    logs_dropped: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str
    elapsed_s: float = 0.0

    @property
    def code(self) -> str:
        """The task error code: MODULE_TIMEOUT, MODULE_TRAP, ..."""
        return "MODULE_" + self.kind.value.upper()

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


Outcome = Answer | Failure


@dataclasses.dataclass(frozen=True, slots=True)
class SecretGrant:
    """The secrets a module's manifest declares, and the values resolved for one call.

    ``values`` holds the resolved ones only: a declared optional secret that is not set is absent
    from it, and a required one that is not set means the call never starts.
    """

    declared: frozenset[str]
    values: Mapping[str, str]

    @staticmethod
    def parse(names: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
        """The manifest's ``permissions.secrets`` as (required, optional) names; ``NAME?`` is optional."""
        required, optional = set(), set()
        for name in names:
            if name.endswith("?"):
                optional.add(name[:-1])
            else:
                required.add(name)
        return frozenset(required), frozenset(optional - required)


# Host-call results for secret_get: a length (>= 0), or one of these.
SECRET_DENIED = -1
"""The name is not declared in the manifest's ``permissions.secrets``."""
SECRET_ABSENT = -2
"""The name is declared optional (``NAME?``) and has no value."""


class Redactor:
    """Replaces every secret value a module was handed with ``[redacted]`` in text it produced."""

    __slots__ = ("_pattern",)

    def __init__(self, values: Iterable[str]) -> None:
        secrets = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub("[redacted]", text)


LogSink = Callable[[int, str], None]
"""Where a module's log lines go: (level, message), level one of :data:`LOG_LEVELS`' indexes."""
LOG_LEVELS = ("debug", "info", "warning", "error")


class Host:
    """The host side of one module call: its secrets and its log, shared by both runtimes.

    Made fresh for every call. ``secret_get`` answers only the names the manifest declares; ``log``
    keeps at most :data:`MAX_LOG_LINES` lines of at most :data:`MAX_LOG_LINE` bytes, with every
    secret value replaced, and counts the rest.
    """

    __slots__ = ("_grant", "_sink", "dropped", "lines", "redact")

    def __init__(self, grant: SecretGrant, sink: LogSink) -> None:
        self._grant = grant
        self._sink = sink
        self.redact = Redactor(grant.values.values())
        self.lines = 0
        self.dropped = 0

    def secret_get(self, name: str) -> str | int:
        """The value, or :data:`SECRET_DENIED` / :data:`SECRET_ABSENT`."""
        if name not in self._grant.declared:
            return SECRET_DENIED
        value = self._grant.values.get(name)
        return SECRET_ABSENT if value is None else value

    def log(self, level: int, message: bytes) -> None:
        if self.lines >= MAX_LOG_LINES:
            self.dropped += 1
            return
        self.lines += 1
        text = _CONTROL.sub(" ", message[:MAX_LOG_LINE].decode("utf-8", "replace"))
        self._sink(min(max(level, 0), len(LOG_LEVELS) - 1), self.redact(text))

    def stderr(self, data: bytes) -> None:
        """What the module wrote on its standard error (already cut to :data:`MAX_STDERR_BYTES`):
        one debug line, redacted like its log."""
        text = _CONTROL.sub(" ", data[:MAX_STDERR_BYTES].decode("utf-8", "replace")).strip()
        if text:
            self._sink(0, "stderr: " + self.redact(text))


def request_bytes(*, task_id: str, intent: str, step: str, text: str) -> bytes:
    """The request a module reads on its standard input."""
    document = {
        "abi": ABI_VERSION,
        "task_id": task_id,
        "intent": intent,
        "step": step,
        "input": {"text": text},
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def parse_response(raw: bytes, redact: Redactor, elapsed_s: float) -> Outcome:
    """A module's standard output as an answer, its own error, or a bad output; never raises."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return Failure(FailureKind.BAD_OUTPUT, "its output is not a JSON document", elapsed_s)
    if not isinstance(document, dict) or ("output" in document) == ("error" in document):
        return Failure(
            FailureKind.BAD_OUTPUT, 'its output must be an object with exactly one of "output" or "error"',
            elapsed_s,
        )  # fmt: skip
    if "error" in document:
        error = document["error"]
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        code = code if isinstance(code, str) and _CODE.fullmatch(code) else "ERROR"
        message = redact(message[:MAX_MESSAGE]) if isinstance(message, str) else "no message"
        return Failure(FailureKind.DECLINED, f"{code}: {message}", elapsed_s)
    output = document["output"]
    if not isinstance(output, dict) or not isinstance(output.get("text"), str):
        return Failure(FailureKind.BAD_OUTPUT, 'its "output" has no "text" string', elapsed_s)
    output = _redacted(output, redact)
    return Answer(output["text"], output, elapsed_s)


def _redacted(value: Any, redact: Redactor) -> Any:
    """``value`` with every string in it (keys included) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    return value


__all__ = [
    "ABI_VERSION",
    "LOG_LEVELS",
    "MAX_LOG_LINE",
    "MAX_LOG_LINES",
    "MAX_OUTPUT_BYTES",
    "MAX_STDERR_BYTES",
    "RETRYABLE",
    "SECRET_ABSENT",
    "SECRET_DENIED",
    "Answer",
    "Failure",
    "FailureKind",
    "Host",
    "Limits",
    "Outcome",
    "Redactor",
    "SecretGrant",
    "parse_response",
    "request_bytes",
]
