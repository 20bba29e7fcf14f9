"""The formats ``aionctl validate`` can print its findings in, and what each renderer receives."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from aion.config.findings import Finding


class FindingsFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
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
