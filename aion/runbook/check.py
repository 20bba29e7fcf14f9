"""What the schema cannot say about a runbook (AION601-AION605), found before anything runs.

``aionctl validate`` reports these with positions like every other finding, and ``aionctl runbook
run`` refuses a runbook with errors, so a typo in step 40 is found before step 1 changes anything.
Commands and their options are checked against aionctl's own command table (``verbs.json``,
generated from the commands by tools/runbook_verbs.py), read without importing the commands.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aion.config.findings import Finding, Severity
from aion.runbook import conditions, model, templates

if TYPE_CHECKING:
    from aion.config.yamlload import Document

_KINDS = ("run", "action", "http", "exec", "manual", "elapsed")


@functools.cache
def verbs() -> Mapping[str, Any]:
    """aionctl's commands: ``"policy apply" -> {options, arguments, output, changesState}``."""
    text = (Path(__file__).with_name("verbs.json")).read_text(encoding="utf-8")
    commands: Mapping[str, Any] = json.loads(text)["commands"]
    return commands


def resolve_command(words: list[str]) -> tuple[str | None, list[str]]:
    """The longest command path that starts ``words``, and the words after it."""
    table = verbs()
    for size in (3, 2, 1):
        key = " ".join(words[:size])
        if len(words) >= size and key in table:
            return key, words[size:]
    return None, words


def check(document: Document) -> list[Finding]:
    return list(_Checker(document).run())


class _Checker:
    """One runbook's checks; remembers the names seen and the variables used along the way."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.book = model.build(document.data, document.file)
        self.used: set[str] = set()
        self.seen: dict[str, tuple[str | int, ...]] = {}
        self.main_names = [step.name for step in self.book.steps]

    def finding(
        self,
        rule: str,
        path: tuple[str | int, ...],
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> Finding:
        severity = Severity.WARNING if rule == "AION605" else Severity.ERROR
        return self.document.finding(rule, severity, list(path), message, hint=hint, key=key)

    def run(self) -> Iterator[Finding]:
        data = self.document.data
        for raw_list, steps, in_main in (
            (data.get("steps", []), self.book.steps, True),
            (data.get("on_failure", []), self.book.on_failure, False),
        ):
            for index, (raw, step) in enumerate(zip(raw_list, steps, strict=True)):
                if in_main:
                    earlier = set(self.main_names[:index])
                else:
                    earlier = set(self.main_names) | {s.name for s in steps[:index]}
                yield from self.step(raw, step, earlier)
        for name in self.book.vars:
            if name not in self.used:
                yield self.finding(
                    "AION605",
                    ("vars", name),
                    f"variable {name!r} is not used by any step",
                    "remove it, or refer to it as ${" + name + "}",
                    key=True,
                )

    def step(self, raw: Mapping[str, Any], step: model.Step, earlier: set[str]) -> Iterator[Finding]:
        if step.name in self.seen:
            yield self.finding(
                "AION603",
                (*step.path, "name"),
                f"step name {step.name!r} is used twice (first at {_where(self.seen[step.name])})",
                "give each step its own name: --from, --only and ${steps.NAME} refer to it",
            )
        else:
            self.seen[step.name] = step.path
        yield from _kind(self.finding, raw, step)
        yield from _command(self.finding, raw, step)
        yield from _values(self.finding, raw, step)
        for path, text in templates.walk(dict(raw)):
            if "$" in text and path[:1] != ("name",):
                yield from self.references((*step.path, *path), text, step, earlier)
        if step.kind == "elapsed" and isinstance(step.body, Mapping):
            since = str(step.body.get("since", ""))
            if since not in earlier:
                yield self.finding(
                    "AION603",
                    (*step.path, "elapsed", "since"),
                    f"elapsed since {since!r}: no earlier step has that name",
                    "name a step that runs before this one (the start of what is measured)",
                )

    def references(
        self, at: tuple[str | int, ...], text: str, step: model.Step, earlier: set[str]
    ) -> Iterator[Finding]:
        try:
            parsed = templates.parse(text)
        except templates.TemplateError as exc:
            yield self.finding("AION604", at, str(exc), "write $$ for a literal $; see docs/runbooks.md")
            return
        for ref in parsed.refs:
            if ref.kind == "var":
                self.used.add(ref.name)
                if ref.name not in self.book.vars:
                    yield self.finding(
                        "AION603",
                        at,
                        f"{ref.text}: no variable {ref.name!r} in vars",
                        _closest(ref.name, self.book.vars)
                        or "declare it under vars: (with a default, or given with --var)",
                    )
            elif ref.kind == "step":
                yield from self.step_ref(at, ref, step, earlier)

    def step_ref(
        self, at: tuple[str | int, ...], ref: templates.Ref, step: model.Step, earlier: set[str]
    ) -> Iterator[Finding]:
        if ref.name == step.name:
            yield self.finding(
                "AION603", at, f"{ref.text}: a step cannot read its own result", "read an earlier step's"
            )
        elif ref.name not in earlier:
            known = ref.name in self.main_names or ref.name in self.seen
            later = "runs later, so it has no result yet" if known else "does not exist"
            yield self.finding(
                "AION603",
                at,
                f"{ref.text}: step {ref.name!r} {later}",
                _closest(ref.name, sorted(earlier)) or "refer to a step that runs before this one",
            )
        if ref.pointer:
            try:
                conditions.segments(ref.pointer)
            except conditions.PointerError as exc:
                yield self.finding("AION604", at, f"{ref.text}: {exc}")


def _where(path: tuple[str | int, ...]) -> str:
    return "/" + "/".join(str(p) for p in path)


def _closest(name: str, names: Mapping[str, Any] | list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def _kind(finding: Any, raw: Mapping[str, Any], step: model.Step) -> Iterator[Finding]:
    named = [key for key in _KINDS if key in raw]
    if len(named) != 1:
        yield finding(
            "AION601",
            step.path,
            f"step {step.name!r} " + ("does nothing" if not named else f"has {' and '.join(named)}"),
            "give each step exactly one of run, action (with with:), http, exec, manual or elapsed",
        )
    only = {"with": "action", "background": "exec", "env": "exec"}
    for key, owner in only.items():
        if key in raw and owner not in raw:
            yield finding(
                "AION601",
                (*step.path, key),
                f"{key} is for {owner} steps",
                f"remove it, or make the step an {owner} step",
                key=True,
            )
    if "status" in raw.get("expect", {}) and "http" not in raw:
        yield finding(
            "AION601",
            (*step.path, "expect", "status"),
            "expect.status is for http steps",
            "use expect.exit",
            key=True,
        )
    if step.kind == "manual" and ("retries" in raw or "wait" in raw):
        yield finding(
            "AION601", step.path, "a manual step is confirmed once; it has no retries or wait", "remove them"
        )


def _command(finding: Any, raw: Mapping[str, Any], step: model.Step) -> Iterator[Finding]:
    if step.kind not in ("run", "exec") or not any(key in raw for key in ("run", "action", "exec")):
        return
    where = (*step.path, "action" if "action" in raw else step.kind)
    if step.argv_error:
        yield finding("AION604", where, step.argv_error, "close the quote, or write the words as a list")
        return
    if step.kind == "exec":
        if step.body and Path(step.body[0]).name == "aionctl":
            yield finding(
                "AION602",
                where,
                "exec runs aionctl as another process",
                "write the command as run: (the same code, in-process, with its JSON result)",
            )
        return
    words = list(step.body)
    if words and words[0] == "aionctl":
        yield finding(
            "AION602",
            where,
            "run: takes the command without `aionctl`",
            f"write run: {' '.join(words[1:])[:60]}",
        )
        return
    command, rest = resolve_command(words)
    if command is None:
        shown = " ".join(words[:2])
        tops = sorted({key.split()[0] for key in verbs()})
        yield finding(
            "AION602",
            where,
            f"aionctl has no command {shown!r}",
            _closest(words[0] if words else "", tops) or "see aionctl --help",
        )
        return
    if command == "runbook run":
        yield finding(
            "AION602",
            where,
            "a runbook cannot run a runbook",
            "put the steps in this runbook, or run the two one after the other",
        )
    yield from _arguments(finding, where, command, rest)


def _arguments(
    finding: Any, where: tuple[str | int, ...], command: str, rest: list[str]
) -> Iterator[Finding]:
    """The words after the command: each option known, and no more arguments than it takes."""
    spec = verbs()[command]
    options: Mapping[str, bool] = spec["options"]
    positional = 0
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "--":
            positional += len(rest) - i - 1
            break
        if word.startswith("-") and len(word) > 1 and not _is_ref(word):
            name = word.split("=", 1)[0]
            if name not in options and name not in ("--help", "-h"):
                yield finding(
                    "AION602",
                    where,
                    f"aionctl {command} has no option {name}",
                    _closest(name, list(options)) or f"see aionctl {command} --help",
                )
                if "=" not in word and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                    i += 1  # its value, most likely: not an argument too
            elif options.get(name) and "=" not in word:
                i += 1
        else:
            positional += 1
        i += 1
    arguments = spec["arguments"]
    if not any(arg["many"] for arg in arguments) and positional > len(arguments):
        yield finding(
            "AION602",
            where,
            f"aionctl {command} takes {len(arguments)} argument(s), and the step gives {positional}",
            f"see aionctl {command} --help",
        )


def _is_ref(word: str) -> bool:
    return word.startswith("${")


def _values(finding: Any, raw: Mapping[str, Any], step: model.Step) -> Iterator[Finding]:
    durations: list[tuple[tuple[str | int, ...], Any]] = [
        ((key,), raw[key]) for key in ("timeout", "retry_interval") if key in raw
    ]
    wait = raw.get("wait") or {}
    durations += [(("wait", key), wait[key]) for key in ("timeout", "interval") if key in wait]
    if step.kind == "elapsed" and "max" in raw["elapsed"]:
        durations.append((("elapsed", "max"), raw["elapsed"]["max"]))
    for path, value in durations:
        if isinstance(value, str) and "${" in value:
            continue
        try:
            model.seconds(value)
        except ValueError as exc:
            yield finding("AION604", (*step.path, *path), str(exc), "for example 500ms, 30s, 5m or 1h")
    yield from _checks(finding, raw, step)
    if step.kind == "http" and isinstance(step.body, Mapping):
        url = str(step.body.get("url", ""))
        if "${" not in url and not url.startswith(("http://", "https://")):
            yield finding(
                "AION604", (*step.path, "http", "url"), f"{url!r} is not an http:// or https:// URL"
            )


def _checks(finding: Any, raw: Mapping[str, Any], step: model.Step) -> Iterator[Finding]:
    for index, item in enumerate(raw.get("check", [])):
        at = (*step.path, "check", index)
        try:
            conditions.segments(str(item.get("pointer", "")))
        except conditions.PointerError as exc:
            yield finding(
                "AION604", (*at, "pointer"), str(exc), "a JSON pointer: /status, /items/0/name, /items/*/ok"
            )
        operators = list(conditions.operator_of(item))
        if len(operators) > 1:
            yield finding(
                "AION601",
                at,
                f"a check compares once; this one has {', '.join(operators)}",
                "split it into one check per comparison",
            )
        for operator in operators:
            yield from _operand(finding, (*at, operator), operator, item[operator])


def _operand(finding: Any, at: tuple[str | int, ...], operator: str, expected: Any) -> Iterator[Finding]:
    if isinstance(expected, str) and "${" in expected:
        return
    if operator in ("lt", "le", "gt", "ge") and conditions.number(expected) is None:
        yield finding("AION604", at, f"{operator} compares numbers; {expected!r} is not one")
    elif operator == "matches":
        try:
            re.compile(str(expected))
        except re.error as exc:
            yield finding("AION604", at, f"not a regular expression: {exc}")
    elif operator == "length" and (not isinstance(expected, int) or expected < 0):
        yield finding("AION604", at, f"length {expected!r} is not a count")


__all__ = ["check", "resolve_command", "verbs"]
