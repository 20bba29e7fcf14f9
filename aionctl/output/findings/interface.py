"""The formats ``aionctl validate`` can print its findings in, and what each renderer receives."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from aion.config.findings import Finding

SET_LEVEL_RULES = frozenset({"AION010"})
"""Findings about a set as a whole, not about one of its files."""


def clean(text: str) -> str:
    """``text`` safe for every output: control characters, lone surrogates (undecodable bytes in file
    names) and the line breaks editors do not show are escaped, so that a file name or a value from
    a file can neither break a JUnit or SARIF document nor send escape codes to a terminal."""
    out = []
    for ch in text:
        code = ord(ch)
        if (
            code < 0x20
            or code == 0x7F
            or 0x80 <= code < 0xA0
            or code in (0x2028, 0x2029)
            or 0xD800 <= code < 0xE000
        ):
            if 0xDC80 <= code <= 0xDCFF:  # surrogateescape of an undecodable byte
                out.append(f"\\x{code - 0xDC00:02x}")
            else:
                out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def clean_finding(finding: Finding) -> Finding:
    return dataclasses.replace(
        finding,
        file=clean(finding.file),
        pointer=clean(finding.pointer),
        message=clean(finding.message),
        hint=None if finding.hint is None else clean(finding.hint),
    )


class FindingsFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"
    SARIF = "sarif"
    GITHUB = "github"
    JUNIT = "junit"


@dataclasses.dataclass(frozen=True, slots=True)
class Rendering:
    """Everything a renderer needs: the findings, the files read, and how the run was judged."""

    findings: tuple[Finding, ...]
    files: Mapping[str, str | None]
    """File -> kind it was recognised as (None: not recognised)."""
    failed: bool
    fail_on_warn: bool
    tool_version: str
