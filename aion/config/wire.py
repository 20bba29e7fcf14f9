"""Findings on the wire: :class:`~aion.config.findings.Finding` to and from the ``aion.v1.Finding``
message, one translation for both ends. The daemon sends the findings of an activation this way, and
aionctl turns them back into the very findings ``aionctl validate`` renders, so every output format
(text, json, sarif, github, junit) shows a refused apply as it shows a failed validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aion.api.v1 import common_pb2
from aion.config.findings import Finding, Severity

_SEVERITIES = {
    Severity.ERROR: common_pb2.SEVERITY_ERROR,
    Severity.WARNING: common_pb2.SEVERITY_WARNING,
    Severity.INFO: common_pb2.SEVERITY_INFO,
}
_FROM_WIRE = {number: severity for severity, number in _SEVERITIES.items()}


def finding_message(finding: Finding) -> common_pb2.Finding:
    """The message of a finding."""
    return common_pb2.Finding(
        rule_id=finding.rule,
        severity=_SEVERITIES[finding.severity],
        message=finding.message,
        location=common_pb2.Location(
            file=finding.file, line=finding.line, column=finding.column, json_pointer=finding.pointer
        ),
        hint=finding.hint or "",
    )


def finding_from_message(message: common_pb2.Finding, file: Callable[[str], str] = str) -> Finding:
    """The finding a message carries; ``file`` maps its file name (the daemon names files as they
    are in the uploaded set, relative to its root). An unknown severity counts as an error."""
    location = message.location
    return Finding(
        file=file(location.file),
        line=location.line,
        column=location.column,
        pointer=location.json_pointer,
        rule=message.rule_id,
        severity=_FROM_WIRE.get(message.severity, Severity.ERROR),
        message=message.message,
        hint=message.hint or None,
    )


def finding_from_dict(data: dict[str, Any]) -> Finding:
    """A finding as the daemon keeps it in its last-error record (see ``finding_dict``)."""
    return Finding(
        file=str(data.get("file", "")),
        line=int(data.get("line", 0)),
        column=int(data.get("column", 0)),
        pointer=str(data.get("pointer", "")),
        rule=str(data.get("rule", "")),
        severity=Severity(data.get("severity", "error")),
        message=str(data.get("message", "")),
        hint=data.get("hint"),
    )


__all__ = ["finding_from_dict", "finding_from_message", "finding_message"]
