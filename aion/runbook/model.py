"""A runbook as typed values, built from a document that matches ``schemas/runbook.json``.

The model keeps values that may hold ``${...}`` references as written; the executor resolves them
when the step runs (:mod:`aion.runbook.templates`), and the checker (:mod:`aion.runbook.check`)
reports the ones that cannot resolve before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal

StepKind = Literal["run", "http", "exec", "manual", "elapsed"]
STEP_KINDS: tuple[StepKind, ...] = ("run", "http", "exec", "manual", "elapsed")

DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRY_INTERVAL = 1.0
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_WAIT_INTERVAL = 1.0
MAX_DURATION = 86400.0
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,3})?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(value: object, *, what: str = "duration") -> float:
    """A duration (``500ms``, ``30s``, ``5m``, ``1h`` or a number of seconds) in seconds, at most a
    day; ValueError naming ``what`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not a duration")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        result = float(match.group(1)) * _UNIT[match.group(2)]
    elif isinstance(value, str) and _is_number(value):
        result = float(value)
    else:
        raise ValueError(f"{what} {value!r} is not a duration: write 500ms, 30s, 5m or 1h")
    if not 0 <= result <= MAX_DURATION:
        raise ValueError(f"{what} {value!r} is out of range: 0 to 24h")
    return result


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Var:
    name: str
    default: str | int | float | bool | None
    description: str = ""
    secret: bool = False

    @property
    def required(self) -> bool:
        return self.default is None


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    pointer: str
    operator: str
    expected: Any
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    name: str
    kind: StepKind
    body: Any
    """run/exec: the argv words (each may hold references); http, elapsed: the mapping; manual: text."""
    path: tuple[str | int, ...]
    """Where the step is in the file (``("steps", 3)``), for findings."""
    description: str = ""
    expect_exit: tuple[int, ...] = (0,)
    expect_status: tuple[int, ...] | None = None
    checks: tuple[Check, ...] = ()
    when: str | bool | None = None
    timeout: Any = DEFAULT_TIMEOUT
    retries: int = 0
    retry_interval: Any = DEFAULT_RETRY_INTERVAL
    wait: tuple[Any, Any] | None = None
    """(timeout, interval) when the step repeats until it passes."""
    continue_on_failure: bool = False
    background: bool = False
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    argv_error: str | None = None
    """Why ``run``/``exec`` text could not be split into words (unclosed quote); the checker reports it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Runbook:
    name: str
    description: str
    section: str
    vars: Mapping[str, Var]
    steps: tuple[Step, ...]
    on_failure: tuple[Step, ...]
    file: str = ""

    def step(self, name: str) -> Step | None:
        return next((step for step in (*self.steps, *self.on_failure) if step.name == name), None)


def build(data: Mapping[str, Any], file: str = "") -> Runbook:
    """The runbook of a document that matches the schema (the schema is checked first)."""
    metadata = data.get("metadata", {})
    return Runbook(
        name=str(metadata.get("name", "")),
        description=str(metadata.get("description", "")),
        section=str(metadata.get("section", "")),
        vars={name: _var(name, spec) for name, spec in data.get("vars", {}).items()},
        steps=tuple(_step(raw, ("steps", i)) for i, raw in enumerate(data.get("steps", []))),
        on_failure=tuple(_step(raw, ("on_failure", i)) for i, raw in enumerate(data.get("on_failure", []))),
        file=file,
    )


def _var(name: str, spec: Any) -> Var:
    if isinstance(spec, Mapping):
        return Var(
            name, spec.get("default"), str(spec.get("description", "")), bool(spec.get("secret", False))
        )
    return Var(name, spec)


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _step(raw: Mapping[str, Any], path: tuple[str | int, ...]) -> Step:
    kind: StepKind = next((k for k in STEP_KINDS if k in raw), "run")
    body: Any
    argv_error = None
    if "action" in raw:
        kind, body = "run", action_argv(str(raw["action"]), raw.get("with") or {})
    elif kind in ("run", "exec"):
        body, argv_error = split_argv(raw.get(kind, []))
    else:
        body = raw[kind]
    expect = raw.get("expect", {})
    wait = raw.get("wait")
    return Step(
        name=str(raw["name"]),
        kind=kind,
        body=body,
        path=path,
        description=str(raw.get("description", "")),
        expect_exit=_ints(expect["exit"]) if "exit" in expect else (0,),
        expect_status=_ints(expect["status"]) if "status" in expect else None,
        checks=tuple(_check(item) for item in raw.get("check", [])),
        when=raw.get("when"),
        timeout=raw.get("timeout", DEFAULT_TIMEOUT),
        retries=int(raw.get("retries", 0)),
        retry_interval=raw.get("retry_interval", DEFAULT_RETRY_INTERVAL),
        wait=(wait.get("timeout", DEFAULT_WAIT_TIMEOUT), wait.get("interval", DEFAULT_WAIT_INTERVAL))
        if isinstance(wait, Mapping)
        else None,
        continue_on_failure=raw.get("on_failure") == "continue",
        background=bool(raw.get("background", False)),
        env=dict(raw.get("env", {})),
        argv_error=argv_error,
    )


def _check(raw: Mapping[str, Any]) -> Check:
    from aion.runbook.conditions import operator_of

    operator = next(operator_of(raw), "exists")
    expected = raw.get(operator, True)
    return Check(str(raw.get("pointer", "")), operator, expected, str(raw.get("message", "")))


def split_argv(value: Any) -> tuple[list[str], str | None]:
    """The words of a ``run``/``exec`` value: a list as it is (numbers and booleans as text), a string
    split as a POSIX shell splits words, before references are resolved (so a value with spaces stays
    one word). No expansion, globbing or pipes happen."""
    if isinstance(value, list):
        return [_word(item) for item in value], None
    try:
        return shlex.split(str(value), comments=False, posix=True), None
    except ValueError as exc:
        return [], f"cannot split {str(value)[:80]!r} into words: {exc}"


def _word(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    return str(item)


def action_argv(action: str, options: Mapping[str, Any]) -> list[str]:
    """``action: policy.apply`` with ``with: {expect_tag: v2, args: [examples]}`` as the words
    ``policy apply --expect-tag v2 examples``: true is a flag, false leaves it out, a list repeats it."""
    argv = action.split(".")
    positional: Sequence[Any] = ()
    for key, value in options.items():
        if key == "args":
            positional = value if isinstance(value, list) else [value]
            continue
        flag = "--" + str(key).replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is True:
                argv.append(flag)
            elif item is False or item is None:
                continue
            else:
                argv += [flag, _word(item)]
    return argv + [_word(item) for item in positional]


__all__ = ["STEP_KINDS", "Check", "Runbook", "Step", "Var", "action_argv", "build", "seconds", "split_argv"]
