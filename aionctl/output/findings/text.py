"""Findings for people: ``file:line:col: severity RULE pointer: message``, then the hint."""

from __future__ import annotations

import typer

from aion.config.findings import Finding, Severity
from aionctl.output.findings.interface import Rendering

_COLOURS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def where(finding: Finding) -> str:
    name = finding.file or "(set)"
    return f"{name}:{finding.line}:{finding.column}" if finding.line else name


def finding_line(finding: Finding, *, color: bool = False) -> str:
    """One finding as people read it (two lines with its hint), newline-terminated."""
    severity = finding.severity.value
    if color:
        severity = typer.style(
            severity, fg=_COLOURS[finding.severity], bold=finding.severity is Severity.ERROR
        )
    pointer = f" {finding.pointer}" if finding.pointer else ""
    line = f"{where(finding)}: {severity} {finding.rule}{pointer}: {finding.message}\n"
    return line + (f"    hint: {finding.hint}\n" if finding.hint else "")


def render(rendering: Rendering, *, color: bool, quiet: bool) -> str:
    return "".join(
        finding_line(finding, color=color)
        for finding in rendering.findings
        if not (quiet and finding.severity is not Severity.ERROR)
    )


def summary(rendering: Rendering) -> str:
    counts = {s: sum(1 for f in rendering.findings if f.severity is s) for s in Severity}
    recognised = sum(1 for kind in rendering.files.values() if kind)

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    verdict = "FAILED" if rendering.failed else "ok"
    parts = [plural(counts[Severity.ERROR], "error"), plural(counts[Severity.WARNING], "warning")]
    parts.append(plural(counts[Severity.INFO], "note"))
    return f"{verdict}: {', '.join(parts)} in {plural(recognised, 'file')}"
