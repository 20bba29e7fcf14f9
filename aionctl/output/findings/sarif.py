"""Findings as SARIF 2.1.0, for code-scanning dashboards (GitHub, GitLab, Azure DevOps).

Every rule of the catalogue is listed under tool.driver.rules with its documentation, and each result
points at its file (a relative URI) and, when it has one, its line and column.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aion.config import rules
from aion.config.findings import Finding, Severity
from aionctl.output.findings.interface import SET_LEVEL_RULES, Rendering

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def document(rendering: Rendering) -> dict[str, Any]:
    catalogue = list(rules.RULES.values())
    index = {rule.id: i for i, rule in enumerate(catalogue)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "aionctl",
                        "semanticVersion": rendering.tool_version,
                        "rules": [
                            {
                                "id": rule.id,
                                "name": rule.name,
                                "shortDescription": {"text": rule.summary},
                                "fullDescription": {"text": rule.explain()},
                                "defaultConfiguration": {"level": _LEVELS[rule.severity]},
                            }
                            for rule in catalogue
                        ],
                    }
                },
                # Results need a location for code-scanning uploads; notes about the set as a
                # whole are tool notifications instead.
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": [
                            {
                                "descriptor": {"id": f.rule},
                                "level": _LEVELS[f.severity],
                                "message": {"text": f.message},
                            }
                            for f in rendering.findings
                            if f.rule in SET_LEVEL_RULES
                        ],
                    }
                ],
                "columnKind": "unicodeCodePoints",
                "results": [_result(f, index) for f in rendering.findings if f.rule not in SET_LEVEL_RULES],
            }
        ],
    }


def _result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": _LEVELS[finding.severity],
        "message": {"text": finding.message + (f" ({finding.hint})" if finding.hint else "")},
    }
    if finding.file:
        physical: dict[str, Any] = {"artifactLocation": {"uri": quote(finding.file.replace("\\", "/"))}}
        if finding.line:
            physical["region"] = {"startLine": finding.line, "startColumn": max(finding.column, 1)}
        location: dict[str, Any] = {"physicalLocation": physical}
        if finding.pointer:
            location["logicalLocations"] = [{"fullyQualifiedName": finding.pointer, "kind": "member"}]
        result["locations"] = [location]
    return result


def render(rendering: Rendering) -> str:
    return json.dumps(document(rendering), indent=2, ensure_ascii=False) + "\n"
