"""Findings as one JSON document (schema: output/validation-report)."""

from __future__ import annotations

import json
from typing import Any

from aion.config.findings import Severity
from aionctl.output.findings.interface import Rendering
from aionctl.output.interface import API_VERSION


def document(rendering: Rendering) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidationReport",
        "summary": {
            "failed": rendering.failed,
            "files": len(rendering.files),
            "errors": sum(1 for f in rendering.findings if f.severity is Severity.ERROR),
            "warnings": sum(1 for f in rendering.findings if f.severity is Severity.WARNING),
            "infos": sum(1 for f in rendering.findings if f.severity is Severity.INFO),
        },
        "files": [{"path": path, "kind": kind} for path, kind in rendering.files.items()],
        "findings": [
            {
                "file": f.file,
                "line": f.line,
                "column": f.column,
                "pointer": f.pointer,
                "rule": f.rule,
                "severity": f.severity.value,
                "message": f.message,
                "hint": f.hint,
            }
            for f in rendering.findings
        ],
    }


def render(rendering: Rendering) -> str:
    return json.dumps(document(rendering), indent=2, ensure_ascii=False) + "\n"
