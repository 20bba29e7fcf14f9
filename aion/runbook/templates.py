"""``${...}`` references in runbook values: parsed once, resolved when a step runs.

A reference names one of:

- ``${NAME}``: a runbook variable (its default, or ``--var NAME=VALUE``);
- ``${env.NAME}``: an environment variable of the run (an unset one is an error, not an empty string);
- ``${run.dir}``, ``${run.id}``, ``${run.started}``: the run's working directory, id and start time;
- ``${steps.STEP}`` or ``${steps.STEP/json/pointer}``: an earlier step's result, or a value in it;
- ``${steps.STEP.exit}``, ``${steps.STEP.seconds}``, ``${steps.STEP.status}``: how it ended.

``$$`` is a literal ``$``. A value that is exactly one reference takes the referenced value as it is
(a number stays a number, a mapping a mapping), so a check can compare two results; anywhere else
the value is written into the text (JSON for lists and mappings). There is no expression syntax:
nothing in a runbook is evaluated as code.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

MAX_TEMPLATE = 8192
"""Longest text parsed for references; runbook values are short."""

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_STEP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
RUN_FIELDS = ("dir", "id", "started")
STEP_FIELDS = ("exit", "seconds", "status")


class TemplateError(ValueError):
    """A ``${...}`` that is not a reference; the message says which and what the forms are."""


RefKind = Literal["var", "env", "run", "step"]


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    kind: RefKind
    name: str
    """The variable, environment variable, run field or step name."""
    field: str | None = None
    """For a step: exit, seconds or status (None: the result)."""
    pointer: str = ""
    """For a step's result: the JSON pointer into it ("" is the whole result)."""
    text: str = ""
    """The reference as written, ``${...}`` included, for messages."""


Part = str | Ref


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[Part, ...]

    @property
    def refs(self) -> Iterator[Ref]:
        return (part for part in self.parts if isinstance(part, Ref))

    @property
    def single(self) -> Ref | None:
        """The reference when the whole value is exactly one."""
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], Ref) else None

    def render(self, resolve: Callable[[Ref], Any]) -> Any:
        """The value: the referenced value itself for a lone reference, else the text."""
        if (ref := self.single) is not None:
            return resolve(ref)
        return "".join(part if isinstance(part, str) else as_text(resolve(part)) for part in self.parts)


def as_text(value: Any) -> str:
    """How a value is written into text: strings as they are, the rest as JSON (true, 3, null)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_FORMS = (
    "${NAME}, ${env.NAME}, ${run.dir|id|started}, ${steps.STEP}, ${steps.STEP/pointer} "
    "or ${steps.STEP.exit|seconds|status}"
)


def parse(text: str) -> Template:
    """The parts of ``text``; :class:`TemplateError` for a malformed reference."""
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(f"a value of {len(text)} characters is longer than {MAX_TEMPLATE}")
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        at = text.find("$", i)
        if at < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:at])
        nxt = text[at + 1 : at + 2]
        if nxt == "$":
            literal.append("$")
            i = at + 2
            continue
        if nxt != "{":
            literal.append("$")
            i = at + 1
            continue
        end = text.find("}", at + 2)
        if end < 0:
            raise TemplateError(f"{text[at : at + 40]!r}: ${{ without a closing }}; write $$ for a literal $")
        if joined := "".join(literal):
            parts.append(joined)
        literal = []
        parts.append(parse_ref(text[at + 2 : end], text[at : end + 1]))
        i = end + 1
    if literal and (joined := "".join(literal)):
        parts.append(joined)
    return Template(tuple(parts))


def parse_ref(body: str, written: str) -> Ref:
    body = body.strip()
    if _VAR.fullmatch(body):
        return Ref("var", body, text=written)
    head, dot, rest = body.partition(".")
    if dot and head == "env" and _VAR.fullmatch(rest):
        return Ref("env", rest, text=written)
    if dot and head == "run":
        if rest in RUN_FIELDS:
            return Ref("run", rest, text=written)
        raise TemplateError(f"{written}: the run has {', '.join(RUN_FIELDS)}, not {rest!r}")
    if dot and head == "steps":
        name, slash, pointer = rest.partition("/")
        step, fdot, field = name.partition(".")
        if not _STEP.fullmatch(step):
            raise TemplateError(f"{written}: {step!r} is not a step name")
        if fdot:
            if field not in STEP_FIELDS or slash:
                raise TemplateError(
                    f"{written}: a step has {', '.join(STEP_FIELDS)}, or a result read with /pointer"
                )
            return Ref("step", step, field=field, text=written)
        return Ref("step", step, pointer=slash + pointer, text=written)
    raise TemplateError(f"{written} is not a reference: the forms are {_FORMS}")


def walk(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string in a nested value, with its path: what a checker parses for references."""
    if isinstance(value, str):
        yield (), value
    elif isinstance(value, dict):
        for key, item in value.items():
            for path, text in walk(item):
                yield (key, *path), text
    elif isinstance(value, list):
        for index, item in enumerate(value):
            for path, text in walk(item):
                yield (index, *path), text


def render_value(value: Any, resolve: Callable[[Ref], Any]) -> Any:
    """``value`` with the references in every string of it resolved."""
    if isinstance(value, str):
        return parse(value).render(resolve) if "$" in value else value
    if isinstance(value, dict):
        return {key: render_value(item, resolve) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, resolve) for item in value]
    return value


__all__ = ["Ref", "Template", "TemplateError", "as_text", "parse", "render_value", "walk"]
