"""The output formats every data-printing aionctl command accepts."""

from __future__ import annotations

import enum

API_VERSION = "aion/v1"
"""Version of the JSON/YAML documents aionctl prints; bumped only with an incompatible change."""


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"
