"""Findings: what the validator reports, each with a place (file, line, column, JSON pointer) and a rule."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse."""
        return {"info": 0, "warning": 1, "error": 2}[self.value]


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note) about one place in one file."""

    file: str
    line: int
    """1-based; 0 when the finding concerns the file (or the set) as a whole."""
    column: int
    """1-based; 0 when the finding concerns the file (or the set) as a whole."""
    pointer: str
    """RFC 6901 JSON pointer to the node ("" for the document root)."""
    rule: str
    severity: Severity
    message: str
    hint: str | None = None

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.rule, self.message)


def json_pointer(path: Sequence[str | int]) -> str:
    """RFC 6901 pointer for a path of keys and indexes."""
    return "".join("/" + str(token).replace("~", "~0").replace("/", "~1") for token in path)


__all__ = ["Finding", "Severity", "json_pointer"]
