"""Findings as GitHub Actions workflow commands, so they show as annotations on the diff.

``::error file=F,line=L,col=C,title=RULE::message``; data and properties are escaped as the runner
expects (%, CR and LF everywhere; also : and , inside properties).
"""

from __future__ import annotations

from aion.config.findings import Finding, Severity
from aionctl.output.findings.interface import SET_LEVEL_RULES, Rendering

_COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def line(finding: Finding) -> str:
    props = []
    if finding.file and finding.rule not in SET_LEVEL_RULES:
        props.append(f"file={escape_property(finding.file)}")
        if finding.line:
            props.append(f"line={finding.line}")
            props.append(f"col={max(finding.column, 1)}")
    props.append(f"title={escape_property(finding.rule)}")
    message = finding.message + (f" (hint: {finding.hint})" if finding.hint else "")
    return f"::{_COMMANDS[finding.severity]} {','.join(props)}::{escape_data(message)}"


def render(rendering: Rendering) -> str:
    return "".join(line(f) + "\n" for f in rendering.findings)
